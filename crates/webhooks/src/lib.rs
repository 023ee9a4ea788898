//! # tenantry-webhooks
//!
//! Signed webhooks for tenantry: each tenant's audit feed pushed to the endpoints its admins
//! register, signed by the Standard Webhooks scheme. (Work in progress.)
