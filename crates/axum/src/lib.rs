//! # tenantry-axum
//!
//! tenantry for axum hosts, in three layers that share one guard and one error mapping:
//!
//! - [`api`] (feature `api`, on by default): every use case of the Settings → Users page as a
//!   JSON API router, with its OpenAPI 3.1 document ([`api::openapi`], also served at
//!   `GET /openapi.json`). `docs/http-api.md` in the repository describes it.
//! - [`console`] (feature `console`): the whole Settings → Users page as a mountable router
//!   of server-rendered HTML: no script, no sessions, signed CSRF tokens, security headers.
//!   `docs/console.md` in the repository describes it.
//! - [`problem`]: the one mapping from a tenantry error to an HTTP status and an RFC 9457
//!   problem document, used by both.
//! - The guard, below: for the host's own routes.
//!
//! The host brings its authentication as an [`Identify`] and nests the routers wherever it
//! likes; it also sets, on its listener, a header-read and a request time-out and a body
//! limit (the example host app shows how), since a router cannot.
//!
//! ## The guard
//!
//! - [`Identify`]: the host says who is calling (tenant and user), from the request's parts
//!   (a session cookie, a token, a header set by a gateway…). tenantry does no
//!   authentication of its own.
//! - [`Guard`]: the [`Tenantry`] service plus the host's [`Identify`]. Put it in the app
//!   state; the extractors find it through [`FromRef`](axum::extract::FromRef).
//! - [`Require<P>`]: an extractor that asks [`Tenantry::authorize`] for the permission `P`
//!   at request time ([current access (D6)](tenantry_core::Rule::CurrentAccess): no cache, so an edit of a user or of its role template applies at
//!   the very next request). `P` is one of the 31 markers in [`perm`] (30 permissions and
//!   [`perm::Crm`]).
//! - [`RequireLayer`]: a tower layer doing the same for a whole router; handlers read the
//!   [`Authorized`] it leaves in the request's extensions.
//! - [`GuardRejection`]: `401 Unauthorized` when nobody known is calling, `403 Forbidden`
//!   with the decision's reason as JSON when denied, `500` when the decision could not be
//!   made (never fail open).
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, extract::FromRef, http::request::Parts, routing::get};
//! use tenantry_service::{InMemoryStore, Store, TenantId, Tenantry, UserId};
//! use tenantry_axum::{Guard, Identify, Require, async_trait, perm};
//!
//! /// The host's authentication: here a header set by a trusted gateway.
//! struct FromGateway;
//!
//! #[async_trait]
//! impl Identify for FromGateway {
//!     async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
//!         let text = parts.headers.get("x-identity")?.to_str().ok()?;
//!         let (tenant, user) = text.split_once('/')?;
//!         Some((tenant.parse().ok()?, user.parse().ok()?))
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct AppState {
//!     guard: Guard,
//! }
//!
//! impl FromRef<AppState> for Guard {
//!     fn from_ref(state: &AppState) -> Guard {
//!         state.guard.clone()
//!     }
//! }
//!
//! async fn users_page(auth: Require<perm::UsersView>) -> String {
//!     format!("user {} of tenant {} may view users", auth.user, auth.tenant)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
//! let app = Tenantry::builder(store).build()?;
//! let state = AppState { guard: Guard::new(app, FromGateway) };
//! let router: Router = Router::new().route("/users", get(users_page)).with_state(state);
//! # let _ = router; Ok(()) }
//! ```

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "console")]
pub mod console;
mod guard;
mod layer;
pub mod perm;
pub mod problem;
mod require;

pub use async_trait::async_trait;
pub use guard::{Authorized, Guard, GuardRejection, Identified, Identify, reason_text};
pub use layer::{RequireLayer, RequireService};
pub use require::{Require, Requirement};
#[doc(no_inline)]
pub use tenantry_service::{Decision, Reason, Request, Tenantry};
