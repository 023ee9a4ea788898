//! One scenario per behaviour a storage backend can break, named after its rule.
//!
//! Every scenario takes a fresh, empty store, builds a [`tenantry_service::Tenantry`] on it (with a
//! [`tenantry_service::ManualClock`] and an [`tenantry_service::InMemoryMailer`]) and asserts through the
//! public service, so the same checks run on every backend.
//!
//! The scenarios live in one file per rule family and are all re-exported here, so each
//! one is `tenantry_conformance::scenarios::<name>` whichever file holds it; [`suite!`](crate::suite!)
//! lists every one of them (a test checks that it misses none).

mod helpers;

mod audit;
mod consistency;
mod invitations;
mod isolation;
mod listing;
mod mail;
mod names_and_tenants;
mod people;
mod roles_and_access;
mod templates;
mod users;
mod within_own_access;

pub use audit::*;
pub use consistency::*;
pub use invitations::*;
pub use isolation::*;
pub use listing::*;
pub use mail::*;
pub use names_and_tenants::*;
pub use people::*;
pub use roles_and_access::*;
pub use templates::*;
pub use users::*;
pub use within_own_access::*;
