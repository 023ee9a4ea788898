//! Extractors whose every refusal is a problem document: the caller, JSON bodies, empty
//! bodies of body-less changes, path ids and query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tenantry_service::{
    Action, Category, Error, Permission, Reason, Request as Asked, RuleError, TenantId, UserId,
};

use super::Refusal;
use crate::Guard;
use crate::problem::Problem;

/// The identified caller, checked against the store: a user the tenant has (deleted or
/// unknown users are `401`). The service decides what it may do; `admin` and `view` are
/// what this request's one authorization read said, for the few endpoints the service
/// leaves to the host (seat limit, attribution).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub tenant: TenantId,
    pub user: UserId,
    pub admin: bool,
    pub view: bool,
}

impl Caller {
    /// Refuses unless the caller holds `users:view` (D7).
    pub(crate) fn require_view(&self) -> Result<(), Refusal> {
        if self.view {
            Ok(())
        } else {
            Err(Refusal::from(Problem::from_error(&Error::from(
                RuleError::NotAllowed {
                    needed: users_view(),
                },
            ))))
        }
    }
}

fn users_view() -> Permission {
    Permission::new(Category::Users, Action::View)
}

impl FromRequestParts<Guard> for Caller {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, guard: &Guard) -> Result<Self, Refusal> {
        let who = guard
            .identify(parts)
            .await
            .map_err(|_| Problem::unauthenticated())?;
        let decision = guard
            .tenantry()
            .authorize(who.tenant, who.user, Asked::Permission(users_view()))
            .await
            .map_err(|e| Problem::from_error(&e))?;
        if decision.reason() == Reason::UnknownUser {
            return Err(Refusal::from(Problem::unauthenticated()));
        }
        Ok(Caller {
            tenant: who.tenant,
            user: who.user,
            admin: decision.reason() == Reason::Admin,
            view: decision.is_allowed(),
        })
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn says_json(parts_headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = parts_headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn unsupported_media_type() -> Problem {
    Problem::for_status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a request that changes something must carry Content-Type: application/json",
    )
}

/// A JSON body: `415` without a JSON content type, `413` over the body limit, `400` for
/// malformed JSON, `422` for JSON of the wrong shape (unknown fields included).
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        if !says_json(req.headers()) {
            return Err(unsupported_media_type().into());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::for_status(e.status(), body_problem(e.status())))?;
        match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Ok(ApiJson(v)),
            Err(e) if e.is_data() => Err(Refusal::from(Problem::for_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the body does not fit the schema: {e}"),
            ))),
            Err(e) => Err(Refusal::from(Problem::for_status(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {e}"),
            ))),
        }
    }
}

fn body_problem(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the body is larger than this API accepts (64 KiB)"
    } else {
        "the body could not be read"
    }
}

/// The body of a change that takes no input (a delete, a resend, a purge): it must still
/// carry `Content-Type: application/json` (the CSRF rule), and be `{}` (or empty).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoInput;

impl<S: Send + Sync> FromRequest<S> for NoInput {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        if !says_json(req.headers()) {
            return Err(unsupported_media_type().into());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::for_status(e.status(), body_problem(e.status())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoInput);
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) if map.is_empty() => Ok(NoInput),
            Ok(_) => Err(Refusal::from(Problem::for_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this request takes no input: send no body or {}",
            ))),
            Err(e) => Err(Refusal::from(Problem::for_status(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {e}"),
            ))),
        }
    }
}

/// A path parameter: `400` when it does not parse (a bad id).
#[derive(Debug, Clone)]
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(Refusal::from(Problem::for_status(
                StatusCode::BAD_REQUEST,
                format!("bad path parameter: {}", e.body_text()),
            ))),
        }
    }
}

/// A query string: `400` when it does not parse.
#[derive(Debug, Clone)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(Refusal::from(Problem::for_status(
                StatusCode::BAD_REQUEST,
                format!("bad query parameter: {}", e.body_text()),
            ))),
        }
    }
}
