//! The guard: who is calling ([`Identify`]), and the decision for one request.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenantry_service::{Decision, Reason, Request, TenantId, Tenantry, UserId};

/// How the host tells who is calling: the tenant and the user, from the request's parts.
///
/// tenantry does no authentication; this is where the host's own sign-in (a session
/// cookie, a bearer token, a header set by a trusted gateway) plugs in. Answer `None` when
/// nobody is signed in: the guard then answers `401 Unauthorized`. The guard still checks
/// the answer against the store on every request, so a user that was deleted meanwhile is
/// treated as unknown (401) and a suspended one is denied (403).
///
/// ```
/// use axum::http::request::Parts;
/// use tenantry_service::{TenantId, UserId};
/// use tenantry_axum::{Identify, async_trait};
///
/// /// Everyone is the same demo user.
/// struct Fixed(TenantId, UserId);
///
/// #[async_trait]
/// impl Identify for Fixed {
///     async fn identify(&self, _parts: &mut Parts) -> Option<(TenantId, UserId)> {
///         Some((self.0, self.1))
///     }
/// }
/// ```
#[async_trait]
pub trait Identify: Send + Sync + 'static {
    /// The calling tenant and user, or `None` when nobody is signed in.
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)>;
}

#[async_trait]
impl<I: Identify + ?Sized> Identify for Arc<I> {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        (**self).identify(parts).await
    }
}

/// The [`Tenantry`] service and the host's [`Identify`], as the extractors and the layer
/// need them. Cheap to clone; keep one in the app state and hand it out with
/// [`FromRef`].
///
/// ```
/// use axum::http::request::Parts;
/// use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
/// use tenantry_axum::{Guard, Identify, async_trait};
///
/// struct Nobody;
/// #[async_trait]
/// impl Identify for Nobody {
///     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
/// }
///
/// # fn main() -> Result<(), tenantry_service::SettingsError> {
/// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
/// assert_eq!(guard.tenantry().settings().max_attempts, 64);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Guard {
    tenantry: Tenantry,
    identify: Arc<dyn Identify>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("tenantry", &self.tenantry)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard deciding with `tenantry` for the callers `identify` names (a shared
    /// `Arc<dyn Identify>` is an `Identify` too).
    ///
    /// ```
    /// # use axum::http::request::Parts;
    /// # use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
    /// # use tenantry_axum::{Guard, Identify, async_trait};
    /// # struct Nobody;
    /// # #[async_trait]
    /// # impl Identify for Nobody {
    /// #     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
    /// # }
    /// # fn main() -> Result<(), tenantry_service::SettingsError> {
    /// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
    /// # let _ = guard; Ok(()) }
    /// ```
    pub fn new(tenantry: Tenantry, identify: impl Identify) -> Self {
        Self {
            tenantry,
            identify: Arc::new(identify),
        }
    }

    /// The service the guard asks.
    ///
    /// ```
    /// # use axum::http::request::Parts;
    /// # use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
    /// # use tenantry_axum::{Guard, Identify, async_trait};
    /// # struct Nobody;
    /// # #[async_trait]
    /// # impl Identify for Nobody {
    /// #     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
    /// # }
    /// # fn main() -> Result<(), tenantry_service::SettingsError> {
    /// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
    /// let app: &Tenantry = guard.tenantry();
    /// # let _ = app; Ok(()) }
    /// ```
    #[must_use]
    pub fn tenantry(&self) -> &Tenantry {
        &self.tenantry
    }

    /// Who is calling, as the host's [`Identify`] says (not checked against the store).
    ///
    /// # Errors
    /// [`GuardRejection::Unauthenticated`] when nobody is signed in.
    ///
    /// ```
    /// # use axum::http::request::Parts;
    /// # use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
    /// # use tenantry_axum::{Guard, GuardRejection, Identify, async_trait};
    /// # struct Nobody;
    /// # #[async_trait]
    /// # impl Identify for Nobody {
    /// #     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
    /// let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    /// assert!(matches!(guard.identify(&mut parts).await, Err(GuardRejection::Unauthenticated)));
    /// # Ok(()) }
    /// ```
    pub async fn identify(&self, parts: &mut Parts) -> Result<Identified, GuardRejection> {
        match self.identify.identify(parts).await {
            Some((tenant, user)) => Ok(Identified { tenant, user }),
            None => Err(GuardRejection::Unauthenticated),
        }
    }

    /// Identifies the caller and decides `request` for it now, on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
    ///
    /// # Errors
    /// [`GuardRejection::Unauthenticated`] when nobody known is calling (no identity, or a
    /// user the tenant does not have, e.g. deleted); [`GuardRejection::Forbidden`] with the
    /// decision when denied; [`GuardRejection::Unavailable`] when the store failed.
    ///
    /// ```
    /// # use axum::http::request::Parts;
    /// # use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
    /// # use tenantry_axum::{Guard, GuardRejection, Identify, async_trait};
    /// # struct Nobody;
    /// # #[async_trait]
    /// # impl Identify for Nobody {
    /// #     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
    /// let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    /// let denied = guard.check(&mut parts, tenantry_service::Request::Crm).await;
    /// assert_eq!(denied.err().map(|r| r.status().as_u16()), Some(401));
    /// # Ok(()) }
    /// ```
    pub async fn check(
        &self,
        parts: &mut Parts,
        request: Request,
    ) -> Result<Authorized, GuardRejection> {
        let who = self.identify(parts).await?;
        let decision = match self.tenantry.authorize(who.tenant, who.user, request).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "authorization could not be decided; denying");
                return Err(GuardRejection::Unavailable(Arc::new(e)));
            }
        };
        if decision.is_allowed() {
            Ok(Authorized {
                tenant: who.tenant,
                user: who.user,
                request,
                decision,
            })
        } else if decision.reason() == Reason::UnknownUser {
            Err(GuardRejection::Unauthenticated)
        } else {
            Err(GuardRejection::Forbidden { request, decision })
        }
    }
}

/// The caller as the host's [`Identify`] names it, without any permission check. As an
/// extractor it answers `401` when nobody is signed in.
///
/// ```
/// use tenantry_axum::Identified;
///
/// // A handler for pages every signed-in user may open (their own profile, say).
/// async fn me(who: Identified) -> String {
///     format!("you are user {} of tenant {}", who.user, who.tenant)
/// }
/// # let _ = me;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identified {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller.
    pub user: UserId,
}

impl<S> FromRequestParts<S> for Identified
where
    S: Send + Sync,
    Guard: FromRef<S>,
{
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Guard::from_ref(state).identify(parts).await
    }
}

/// An allowed request: who, for what, and the decision. [`RequireLayer`](crate::RequireLayer)
/// leaves one in the request's extensions; as an extractor it reads it back (a `500` when
/// the route is not behind the layer).
///
/// ```
/// use tenantry_axum::Authorized;
///
/// async fn handler(auth: Authorized) -> String {
///     format!("allowed because {:?}", auth.decision.reason())
/// }
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Authorized {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller.
    pub user: UserId,
    /// What was asked for.
    pub request: Request,
    /// The decision (allowed), with the reason that decided it.
    pub decision: Decision,
}

impl<S: Send + Sync> FromRequestParts<S> for Authorized {
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authorized>()
            .copied()
            .ok_or(GuardRejection::NotGuarded)
    }
}

/// Why the guard refused a request. As a response: `401`, `403` or `500` with a JSON body.
///
/// ```
/// use tenantry_service::{Action, Category, Decision, Permission, Reason, Request};
/// use tenantry_axum::GuardRejection;
///
/// let view = Permission::new(Category::Users, Action::View);
/// let r = GuardRejection::Forbidden {
///     request: Request::Permission(view),
///     decision: Decision::new(Reason::MissingPermission { permission: view }),
/// };
/// assert_eq!(r.status().as_u16(), 403);
/// assert_eq!(r.body()["reason"]["reason"], "missing_permission");
/// assert_eq!(r.body()["required"], "users:view");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GuardRejection {
    /// Nobody known is calling: no identity, or a user the tenant does not have (`401`).
    #[error("sign in first: nobody known is calling")]
    Unauthenticated,
    /// The decision denied the request (`403`).
    #[error("forbidden: {}", reason_text(&decision.reason()))]
    Forbidden {
        /// What was asked for.
        request: Request,
        /// The decision, with its reason.
        decision: Decision,
    },
    /// The decision could not be made, so the request is denied (`500`).
    #[error("authorization could not be decided: {0}")]
    Unavailable(Arc<tenantry_service::Error>),
    /// [`Authorized`] was extracted on a route that is not behind a
    /// [`RequireLayer`](crate::RequireLayer) (`500`, a wiring mistake of the host).
    #[error("this route is not behind a RequireLayer")]
    NotGuarded,
}

impl GuardRejection {
    /// The HTTP status this rejection answers with.
    ///
    /// ```
    /// assert_eq!(tenantry_axum::GuardRejection::Unauthenticated.status().as_u16(), 401);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            GuardRejection::Unauthenticated => StatusCode::UNAUTHORIZED,
            GuardRejection::Forbidden { .. } => StatusCode::FORBIDDEN,
            GuardRejection::Unavailable(_) | GuardRejection::NotGuarded => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The denying decision, for a `403`.
    ///
    /// ```
    /// assert!(tenantry_axum::GuardRejection::Unauthenticated.decision().is_none());
    /// ```
    #[must_use]
    pub fn decision(&self) -> Option<Decision> {
        match self {
            GuardRejection::Forbidden { decision, .. } => Some(*decision),
            _ => None,
        }
    }

    /// The JSON body of the response: `error` (`unauthenticated`, `forbidden`,
    /// `unavailable`), a human `message`, and for a `403` the `required` permission (or
    /// `crm`) and the decision's `reason` as tenantry serializes it.
    ///
    /// ```
    /// let body = tenantry_axum::GuardRejection::Unauthenticated.body();
    /// assert_eq!(body["error"], "unauthenticated");
    /// ```
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        match self {
            GuardRejection::Unauthenticated => serde_json::json!({
                "error": "unauthenticated",
                "message": self.to_string(),
            }),
            GuardRejection::Forbidden { request, decision } => serde_json::json!({
                "error": "forbidden",
                "required": request_text(request),
                "allowed": decision.is_allowed(),
                "reason": serde_json::to_value(decision.reason()).unwrap_or(serde_json::Value::Null),
                "message": self.to_string(),
            }),
            // The store's error may say more than a caller should see; it is logged.
            GuardRejection::Unavailable(_) => serde_json::json!({
                "error": "unavailable",
                "message": "authorization could not be decided; try again later",
            }),
            GuardRejection::NotGuarded => serde_json::json!({
                "error": "unavailable",
                "message": "this route is not behind a RequireLayer",
            }),
        }
    }
}

impl IntoResponse for GuardRejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// `"users:view"` for a permission, `"crm"` for CRM access.
fn request_text(request: &Request) -> String {
    match request {
        Request::Permission(p) => p.to_string(),
        Request::Crm => "crm".to_owned(),
    }
}

/// A sentence saying what decided, for messages and refusal pages.
///
/// ```
/// use tenantry_service::Reason;
/// assert_eq!(tenantry_axum::reason_text(&Reason::Suspended), "the user is suspended");
/// ```
#[must_use]
pub fn reason_text(reason: &Reason) -> String {
    match reason {
        Reason::Admin => "the user is an admin".to_owned(),
        Reason::DirectGrant => "the user holds the permission directly".to_owned(),
        Reason::Template { .. } => "the user's role template grants it".to_owned(),
        Reason::CrmAccess => "the user has CRM access".to_owned(),
        Reason::Invited => "the user has not accepted the invitation yet".to_owned(),
        Reason::Suspended => "the user is suspended".to_owned(),
        Reason::UnknownUser => "the user does not exist".to_owned(),
        Reason::MissingPermission { permission } => {
            format!("the user does not hold the {permission} permission")
        }
        Reason::NoCrmAccess => "the user has no CRM access".to_owned(),
    }
}
