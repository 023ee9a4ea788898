//! # tenantry-webhooks
//!
//! Signed webhooks for tenantry: each tenant's audit feed pushed to the endpoints its admins
//! register, signed by the Standard Webhooks scheme.
//!
//! - [`Webhooks`]: the admin use cases (register, list, update, rotate the secret, remove),
//!   for active admins of the tenant only, each recorded in the audit log (never a secret).
//! - [`Dispatcher`]: per endpoint, the audit records after its durable cursor, in order,
//!   filtered by kind, POSTed with `webhook-id`, `webhook-timestamp` and `webhook-signature`;
//!   the cursor saved after each 2xx (at least once); retries with backoff; disabling of an
//!   endpoint that keeps failing.
//! - [`EndpointStore`]: where endpoints, secrets and delivery status live:
//!   [`InMemoryEndpointStore`], and with the features `sqlite` / `postgres` SQL stores.
//!
//! A receiver verifies a delivery by recomputing the signature:
//!
//! ```
//! use tenantry_webhooks::Secret;
//! let secret = Secret::generate()?; // tenantry shows it once, at registration
//! let (id, timestamp, body) = ("evt_0194b2a0000070008000000000000001_7", 1_767_225_600, br#"{"type":"user_invited"}"#);
//! let header = secret.sign(id, timestamp, body); // what `webhook-signature` holds
//! assert!(header.starts_with("v1,"));
//! # Ok::<(), tenantry_webhooks::SecretError>(())
//! ```
//!
//! The repository's `docs/webhooks.md` describes the payload, the headers, retries,
//! disabling and rotation.

mod admin;
mod dispatch;
mod model;
mod payload;
mod secret;
mod store;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use admin::{EndpointUpdate, Registered, WebhookError, Webhooks, check_url};
pub use dispatch::{DispatchReport, Dispatcher, DispatcherSettings};
pub use model::{DeliveryStatus, Endpoint, EndpointId, Secrets, StoredEndpoint};
pub use payload::{body, event_kind, webhook_id};
#[cfg(feature = "postgres")]
pub use postgres::PgEndpointStore;
pub use secret::{SECRET_BYTES, SECRET_PREFIX, Secret, SecretError, signature_header};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteEndpointStore;
pub use store::{EndpointStore, EndpointStoreError, InMemoryEndpointStore};
