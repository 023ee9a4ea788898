//! Errors as HTTP: one mapping from a tenantry [`Error`] to an RFC 9457 problem document.
//!
//! The JSON API answers every failure with `application/problem+json` built here, and the
//! console picks its status codes and messages from the same [`Problem`], so the two never
//! disagree. The mapping follows [`Error::kind()`]:
//!
//! | kind | status |
//! |---|---|
//! | `not_found` | 404 |
//! | `forbidden` | 403 |
//! | `conflict`, `limit_reached` | 409 |
//! | `invalid_input` | 422 |
//! | `rate_limited` | 429, with `Retry-After` |
//! | `unavailable` | 503, with `Retry-After: 1` |
//! | `internal` | 500 |
//!
//! The HTTP layer's own refusals (a malformed body, a wrong content type, an unknown route, a
//! wrong method) are problems too, built with [`Problem::for_status`]: their `kind` names the
//! status (`bad_request`, `unsupported_media_type`, `payload_too_large`, …).
//!
//! A store, settings or randomness failure never shows its detail to the caller: the
//! problem says only that the service is unavailable, and the detail goes to the log
//! (`tracing` at `error` level, target `tenantry_axum::problem`).
//!
//! ```
//! use tenantry_axum::problem::Problem;
//! use tenantry_service::{Error, RuleError};
//!
//! let p = Problem::from_error(&Error::from(RuleError::SeatLimitReached { used: 5, limit: 5 }));
//! assert_eq!(p.status, 409);
//! assert_eq!(p.kind, "limit_reached");
//! assert_eq!(p.rule.as_deref(), Some("seat_limit"));
//! assert_eq!(p.rule_id.as_deref(), Some("D9"));
//! assert_eq!((p.seats_used, p.seat_limit), (Some(5), Some(5)));
//! assert_eq!(p.r#type, "urn:tenantry:problem:seat_limit");
//! ```

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tenantry_core::{ErrorKind, Permissions};
use tenantry_service::{Error, RuleError};
use time::OffsetDateTime;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, with the fields a UI needs to explain the refusal.
///
/// Absent fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tenantry:problem:<rule name>` for a refusal
    /// by a product rule, `urn:tenantry:problem:<kind>` otherwise.
    pub r#type: String,
    /// A short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened, in words. Never holds a backend's own error text.
    pub detail: String,
    /// The stable classification ([`ErrorKind::as_str`]): `not_found`, `forbidden`,
    /// `conflict`, `invalid_input`, `limit_reached`, `rate_limited`, `unavailable` or
    /// `internal`.
    pub kind: String,
    /// The product rule that refused, by name (for example `seat_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The same rule's short id (for example `D9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// Seat limit (D9): the seats in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats_used: Option<u32>,
    /// Seat limit (D9): the tenant's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_limit: Option<u32>,
    /// The permission the caller lacks (`users:create`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_permission: Option<String>,
    /// Permissions the caller would need to hold for this (escalation, D21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_permissions: Option<Vec<String>>,
    /// Whether CRM access is part of what is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_crm: Option<bool>,
    /// When the refused action is allowed again (RFC 3339); also sent as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Seconds until then, as in `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Wrong-address accept attempts left on the link (D24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
    /// Users still assigned to the template (a refused delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
}

impl Problem {
    /// A problem of `status` with the given kind name and detail, and no rule.
    #[must_use]
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            r#type: format!("urn:tenantry:problem:{kind}"),
            title: title_of(status).to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            kind: kind.to_owned(),
            rule: None,
            rule_id: None,
            seats_used: None,
            seat_limit: None,
            needed_permission: None,
            missing_permissions: None,
            missing_crm: None,
            retry_at: None,
            retry_after_seconds: None,
            attempts_left: None,
            users: None,
        }
    }

    /// A problem the HTTP layer itself found (a malformed body, a wrong content type, an
    /// unknown route…), its kind named after the status: `bad_request` (400),
    /// `unauthenticated` (401), `not_found` (404), `method_not_allowed` (405),
    /// `payload_too_large` (413), `unsupported_media_type` (415), `invalid_input` (422),
    /// `internal` otherwise.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use tenantry_axum::problem::Problem;
    ///
    /// let p = Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON");
    /// assert_eq!((p.status, p.kind.as_str()), (415, "unsupported_media_type"));
    /// assert_eq!(p.r#type, "urn:tenantry:problem:unsupported_media_type");
    /// assert_eq!(p.title, "Unsupported Media Type");
    /// ```
    #[must_use]
    pub fn for_status(status: StatusCode, detail: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthenticated",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "invalid_input",
            503 => "unavailable",
            _ => "internal",
        };
        Problem::new(status, kind, detail)
    }

    /// `401 Unauthorized`: nobody known is calling.
    ///
    /// ```
    /// let p = tenantry_axum::problem::Problem::unauthenticated();
    /// assert_eq!((p.status, p.kind.as_str()), (401, "unauthenticated"));
    /// ```
    #[must_use]
    pub fn unauthenticated() -> Self {
        Problem::for_status(
            StatusCode::UNAUTHORIZED,
            "sign in first: nobody known is calling",
        )
    }

    /// The problem for a tenantry error (see the module's table). `now` is used only to
    /// compute `retry_after_seconds`; [`Problem::from_error`] uses the system clock.
    #[must_use]
    pub fn from_error_at(error: &Error, now: OffsetDateTime) -> Self {
        let kind = error.kind();
        let status = status_of(kind);
        let hidden = matches!(kind, ErrorKind::Unavailable | ErrorKind::Internal)
            && !matches!(error, Error::Contention { .. });
        let detail = if hidden {
            tracing::error!(target: "tenantry_axum::problem", error = %error, "request failed");
            match kind {
                ErrorKind::Internal => "the service failed; the detail is in its log".to_owned(),
                _ => "the service is temporarily unavailable; try again shortly".to_owned(),
            }
        } else {
            error.to_string()
        };
        let mut p = Problem::new(status, kind.as_str(), detail);
        if let Some(rule) = error.rule() {
            p.r#type = format!("urn:tenantry:problem:{}", rule.name());
            p.rule = Some(rule.name().to_owned());
            p.rule_id = Some(rule.id().to_owned());
        }
        if let Some(rule_error) = error.as_rule() {
            match rule_error {
                RuleError::SeatLimitReached { used, limit } => {
                    p.seats_used = Some(*used);
                    p.seat_limit = Some(*limit);
                }
                RuleError::NotAllowed { needed } => {
                    p.needed_permission = Some(needed.to_string());
                }
                RuleError::Escalation { missing, crm }
                | RuleError::BeyondOwnAccess { missing, crm } => {
                    p.missing_permissions = Some(names(*missing));
                    p.missing_crm = Some(*crm);
                }
                RuleError::ResendRateLimited { retry_at } => {
                    p.retry_at = retry_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok();
                    let wait = (*retry_at - now).whole_seconds().max(1);
                    p.retry_after_seconds = u64::try_from(wait).ok();
                }
                RuleError::InvitationEmailMismatch { attempts_left } => {
                    p.attempts_left = Some(*attempts_left);
                }
                RuleError::TemplateInUse { users } => p.users = Some(*users),
                _ => {}
            }
        }
        if kind == ErrorKind::Unavailable && p.retry_after_seconds.is_none() {
            p.retry_after_seconds = Some(1);
        }
        p
    }

    /// The problem for a tenantry error, timed by the system clock.
    #[must_use]
    pub fn from_error(error: &Error) -> Self {
        Self::from_error_at(error, OffsetDateTime::now_utc())
    }

    /// The status as an [`StatusCode`] (500 if the stored number is not one).
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        Problem::from_error(error)
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Problem::from_error(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.retry_after_seconds;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The HTTP status for an error kind (the module's table).
///
/// ```
/// use axum::http::StatusCode;
/// use tenantry_axum::problem::status_of;
/// use tenantry_service::ErrorKind;
/// assert_eq!(status_of(ErrorKind::LimitReached), StatusCode::CONFLICT);
/// assert_eq!(status_of(ErrorKind::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
/// ```
#[must_use]
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Conflict | ErrorKind::LimitReached => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_of(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

fn names(permissions: Permissions) -> Vec<String> {
    permissions.to_strings()
}
