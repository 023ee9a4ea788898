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
//! Wiring it up: an admin registers an endpoint, the dispatcher delivers to it. Here the
//! endpoint is down, so the attempt fails, and the host reads where the endpoint stands:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tenantry_service::{ActorRef, AuditAction, Email, InMemoryStore, Tenantry};
//! use tenantry_webhooks::{Dispatcher, DispatcherSettings, InMemoryEndpointStore, Webhooks};
//!
//! let app = Tenantry::builder(InMemoryStore::new()).build()?;
//! let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
//! let endpoints = Arc::new(InMemoryEndpointStore::new());
//! let hooks = Webhooks::new(app.clone(), endpoints.clone());
//!
//! // A port nobody listens on.
//! let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! let url = format!("http://127.0.0.1:{port}/hooks");
//! let made = hooks.register(tenant, ActorRef::User(admin), &url, &[]).await?;
//! println!("give the receiver its secret, once: {}", made.secret.expose());
//!
//! let dispatcher = Dispatcher::new(&app, endpoints, DispatcherSettings::default())?;
//! let report = dispatcher.run_once().await?; // a host would `dispatcher.spawn()`
//! assert_eq!((report.delivered, report.failed), (0, 1));
//!
//! let (endpoint, status) = hooks.endpoint_status(tenant, made.endpoint.id).await?;
//! assert!(endpoint.enabled);
//! assert_eq!(status.last_error.as_deref(), Some("connection failed"));
//! assert_eq!(status.attempts, 1);
//! assert!(status.next_attempt_at.is_some()); // retried after the backoff
//! // The cursor is still before the endpoint's own `webhook_endpoint_added` event.
//! let log = app.audit_log(tenant, ActorRef::System, status.delivered_seq, 10).await?;
//! assert_eq!(log[0].event.action, AuditAction::WebhookEndpointAdded);
//! # Ok(()) }
//! ```
//!
//! The repository's `docs/webhooks.md` describes the payload, the headers, retries,
//! disabling and rotation.
//!
//! ## Features
//!
//! - `sqlite`: `SqliteEndpointStore` (sqlx).
//! - `postgres`: `PgEndpointStore` (sqlx).

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
