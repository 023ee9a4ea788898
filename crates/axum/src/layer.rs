//! The tower layer: one requirement for every route of a router.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use tenantry_service::Request;
use tower::{Layer, Service};

use crate::{Guard, Requirement};

/// A tower [`Layer`] that lets a request through only if the caller holds one permission
/// (or CRM access) now, deciding on every request ([current access (D6)](tenantry_core::Rule::CurrentAccess)). Refusals are the same as
/// [`Require<P>`](crate::Require)'s: `401`, `403` with the reason as JSON, `500`. An allowed
/// request carries an [`Authorized`](crate::Authorized) in its extensions for the handler.
///
/// ```
/// use axum::{Router, routing::get};
/// use tenantry_axum::{Authorized, Guard, RequireLayer, perm};
///
/// async fn report(auth: Authorized) -> String {
///     format!("report for {}", auth.user)
/// }
///
/// fn analytics_routes(guard: Guard) -> Router {
///     Router::new()
///         .route("/reports", get(report))
///         .route_layer(RequireLayer::of::<perm::AnalyticsView>(guard))
/// }
/// # let _ = analytics_routes;
/// ```
#[derive(Debug, Clone)]
pub struct RequireLayer {
    guard: Guard,
    request: Request,
}

impl RequireLayer {
    /// Requires `request` (a permission or CRM access).
    ///
    /// ```
    /// use tenantry_service::{Action, Category, Permission};
    /// use tenantry_axum::{Guard, RequireLayer};
    /// fn layer(guard: Guard) -> RequireLayer {
    ///     RequireLayer::new(guard, Permission::new(Category::Users, Action::View))
    /// }
    /// # let _ = layer;
    /// ```
    pub fn new(guard: Guard, request: impl Into<Request>) -> Self {
        Self {
            guard,
            request: request.into(),
        }
    }

    /// Requires the marker `P`'s request (see [`crate::perm`]).
    ///
    /// ```
    /// use tenantry_axum::{Guard, RequireLayer, perm};
    /// fn layer(guard: Guard) -> RequireLayer {
    ///     RequireLayer::of::<perm::Crm>(guard)
    /// }
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn of<P: Requirement>(guard: Guard) -> Self {
        Self::new(guard, P::REQUEST)
    }

    /// What this layer requires.
    ///
    /// ```
    /// use tenantry_axum::{Guard, RequireLayer, perm};
    /// fn required(guard: Guard) -> tenantry_service::Request {
    ///     RequireLayer::of::<perm::Crm>(guard).request()
    /// }
    /// # let _ = required;
    /// ```
    #[must_use]
    pub fn request(&self) -> Request {
        self.request
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            guard: self.guard.clone(),
            request: self.request,
        }
    }
}

/// The service [`RequireLayer`] wraps around a route.
///
/// ```
/// use tower::Layer;
/// use tenantry_axum::{Guard, RequireLayer, RequireService, perm};
/// fn wrap<S>(guard: Guard, inner: S) -> RequireService<S> {
///     RequireLayer::of::<perm::UsersView>(guard).layer(inner)
/// }
/// # let _ = wrap::<()>;
/// ```
#[derive(Debug, Clone)]
pub struct RequireService<S> {
    inner: S,
    guard: Guard,
    request: Request,
}

impl<S, B> Service<axum::http::Request<B>> for RequireService<S>
where
    S: Service<axum::http::Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call (the usual tower pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let request = self.request;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match guard.check(&mut parts, request).await {
                Ok(allowed) => {
                    parts.extensions.insert(allowed);
                    let req = axum::http::Request::from_parts(parts, body);
                    inner.call(req).await.map(IntoResponse::into_response)
                }
                Err(refused) => Ok(refused.into_response()),
            }
        })
    }
}
