//! The JSON API: every use case of the service over HTTP, described by an OpenAPI 3.1
//! document. STUB: being written.

use axum::Router;

use crate::Guard;

/// The API's routes, with `guard` deciding who is calling. Nest it anywhere:
/// `Router::new().nest("/api", tenantry_axum::api::router(guard))`.
pub fn router(guard: Guard) -> Router {
    let _ = guard;
    Router::new()
}

/// The OpenAPI document of [`router`].
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApiBuilder::new().build()
}
