//! # tenantry
//!
//! Tenant user management as a library: the Settings → Users page of a multi-tenant
//! product. Tenants with a seat limit; users with email, role, status, role template, CRM
//! access and last login; fine-grained permissions (6 categories × 5 actions); invitations
//! with expiring single-use links; resend; edit; permanent delete with audit retention; role
//! templates whose edits reach every referencing user at the next check; an audit log; and a
//! policy evaluator that explains every decision.
//!
//! This crate is the facade: it re-exports the service ([`Tenantry`], its requests, results
//! and errors, the domain types) and, behind features, the storage backends and the SMTP
//! mailer. Every rule the library enforces is described by name in `docs/rules.md` of the
//! repository; each refusal is an [`Error`] whose [`Error::rule`] names its [`Rule`] and whose
//! [`Error::kind`] classifies it for an HTTP status or a UI message.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tenantry::Error> {
//! use tenantry::prelude::*;
//!
//! let app = Tenantry::builder(InMemoryStore::new())
//!     .base_url("https://app.example.com/accept")
//!     .build()?;
//! let (tenant, admin) = app.create_tenant("Acme", Some(5), Email::parse("ada@acme.test")?).await?;
//!
//! // Invite a user; the invitation mail is queued in the same commit and delivered after it.
//! let invited = app.invite(tenant, admin, &InviteRequest {
//!     email: Email::parse("bob@acme.test")?,
//!     role: Role::User,
//!     template_id: None,
//!     crm_access: true,
//!     grants: Permissions::CONVERSATIONS_VIEW,
//! }).await?;
//!
//! // The accept link is returned this once (a "copy invite link" button).
//! let token = invited.accept_link.token().unwrap_or_default();
//! let bob = app.accept_invitation(&token, "Bob@acme.test").await?;
//! assert_eq!(bob.status, Status::Active);
//!
//! let view = Permission::new(Category::Conversations, Action::View);
//! assert!(app.authorize(tenant, bob.id, view.into()).await?.is_allowed());
//!
//! // Refusals are typed and name their rule.
//! let err = app.delete_user(tenant, admin, admin).await.unwrap_err();
//! assert!(matches!(err, tenantry::Error::Rule(tenantry::RuleError::LastAdmin)));
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `sqlite` | yes | [`sqlite`]: the SQLite backend, the embedded default |
//! | `postgres` | no | `postgres`: the PostgreSQL backend |
//! | `smtp` | no | `smtp`: SMTP delivery of invitations |

pub use tenantry_service::*;

#[cfg(feature = "postgres")]
pub use tenantry_postgres as postgres;
#[cfg(feature = "smtp")]
pub use tenantry_smtp as smtp;
#[cfg(feature = "sqlite")]
pub use tenantry_sqlite as sqlite;
#[cfg(feature = "webhooks")]
pub use tenantry_webhooks as webhooks;

/// What only implementors of a storage backend need: the change a store commits and its
/// writes, the decide functions, the shared SQL row readers, the store-side records, and the
/// snapshot a use case reads (`Store::snapshot`, with its row-by-row default `read_snapshot`).
/// Hosts do not need this module.
pub mod backend {
    pub use tenantry_core::decide;
    pub use tenantry_core::{
        Change, Counters, Invitation, InvitationKind, Subject, TokenHash, Write,
    };
    pub use tenantry_store::{
        Constraint, DeliveryUpdate, Snapshot, SnapshotRequest, read_snapshot, sql,
    };
}
