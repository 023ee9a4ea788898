//! The JSON API: every use case of the service over HTTP, described by an OpenAPI 3.1
//! document that the router serves at `GET /openapi.json` (and that is checked in as
//! `crates/axum/openapi.json`). `docs/http-api.md` in the repository describes it for
//! front-end authors.
//!
//! - **Who calls** is the host's [`Identify`](crate::Identify), through the [`Guard`]: the
//!   actor of every call is that user in that tenant, and the service decides what it may
//!   do. Nobody identified, or a user the tenant does not have, is `401`. The accept
//!   endpoint is the one public route.
//! - **Errors** are RFC 9457 `application/problem+json` documents ([`Problem`]), one
//!   mapping for the service's errors and for the HTTP layer's own (malformed JSON `400`,
//!   wrong content type `415`, body over 64 KiB `413`, bad path ids and query values `400`,
//!   unknown fields `422`, unknown routes `404`, wrong methods `405`).
//! - **CSRF**: every request that changes something (POST, PUT, PATCH, DELETE) must carry
//!   `Content-Type: application/json`, also when it has no body, or it is refused with
//!   `415`. A cross-site HTML form cannot send that content type, and a cross-site script
//!   cannot without a CORS preflight, so a host that identifies callers by cookie is safe
//!   as long as it does not allow other origins with CORS.
//! - **Secrets** never leave: no response carries an invitation token or accept link
//!   ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)). The link
//!   reaches the invitee by mail; a host that must show it calls
//!   [`Tenantry::invite`](tenantry_service::Tenantry::invite) from its own Rust code.
//! - Every response carries `Cache-Control: no-store`.
//!
//! Nest the router anywhere in the host's app:
//!
//! ```
//! use axum::{Router, http::request::Parts};
//! use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
//! use tenantry_axum::{Guard, Identify, async_trait};
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Tenantry::builder(InMemoryStore::new()).build()?;
//! let guard = Guard::new(app, FromGateway);
//! let host: Router = Router::new().nest("/api/users", tenantry_axum::api::router(guard));
//! // GET /api/users/users lists users, POST /api/users/invitations invites,
//! // GET /api/users/openapi.json serves the document.
//! let doc = tenantry_axum::api::openapi();
//! assert!(doc.paths.paths.contains_key("/users/{id}"));
//! # let _ = host; Ok(()) }
//! ```

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::Guard;
use crate::problem::Problem;

mod audit;
mod extractors;
mod invitations;
mod openapi;
mod outbox;
mod templates;
mod tenant;
pub mod types;
mod users;

pub use audit::{
    AuditFeed, AuditPage, AuditParams, AuditRecordOut, ChangeOut, OutcomeName, TargetKind,
    TargetOut,
};
pub use invitations::{
    AcceptBody, BulkBody, BulkItemOut, BulkOut, BulkOutcomeName, InviteBody, InvitedOut, PurgedOut,
    ResentOut,
};
pub use outbox::{DeliveryName, MessageOut, OutboxList, OutboxParams};
pub use templates::{
    DeleteParams, DeletionMode, TemplateBody, TemplateDeletedOut, TemplateList, TemplatePatch,
};
pub use tenant::{
    LimitBody, MeOut, MembershipOut, MembershipPage, MembershipParams, NameBody, SeatsOut,
    TenantOut,
};
pub use users::{
    AttributionKind, AttributionOut, IdentityBody, InactiveParams, UserListParams, UserPatch,
};

/// A refusal of the API: its problem document, boxed (a `Result` carrying it stays small).
#[derive(Debug, Clone)]
pub(crate) struct Refusal(Box<Problem>);

impl From<Problem> for Refusal {
    fn from(p: Problem) -> Self {
        Refusal(Box::new(p))
    }
}

impl From<tenantry_service::Error> for Refusal {
    fn from(e: tenantry_service::Error) -> Self {
        Refusal(Box::new(Problem::from_error(&e)))
    }
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (*self.0).into_response()
    }
}

/// The largest request body the API reads (64 KiB); a larger one is `413`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The body of a change that takes no input: `{}` (an empty body is read the same).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInputBody {}

/// The API's routes, with `guard` deciding who is calling. Nest it anywhere:
/// `Router::new().nest("/api", tenantry_axum::api::router(guard))`. See the
/// [module documentation](self) for an example.
pub fn router(guard: Guard) -> Router {
    let (routes, _) = openapi::routes().split_for_parts();
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(guard)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(no_store))
}

/// The OpenAPI 3.1 document of [`router`], generated from its handlers (the same document
/// the router serves at `GET /openapi.json`).
///
/// ```
/// let doc = tenantry_axum::api::openapi();
/// let json = doc.to_pretty_json()?;
/// assert!(json.contains("\"openapi\": \"3.1.0\""));
/// assert!(doc.paths.paths.contains_key("/invitations/accept"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document().clone()
}

async fn unknown_route() -> Problem {
    Problem::for_status(StatusCode::NOT_FOUND, "no such route in this API")
}

async fn wrong_method() -> Problem {
    Problem::for_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see the Allow header",
    )
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
