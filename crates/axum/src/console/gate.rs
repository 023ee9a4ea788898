//! The middleware every request of the console passes: where the console is mounted, who is
//! calling (asked once), the CSRF cookie, the CSRF check of every POST (before any handler),
//! the body limit, and the security headers on every response.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{NestedPath, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use maud::html;

use crate::Identified;

use super::html::{self, Chrome, Tone};
use super::{BODY_LIMIT, Console, csrf, form::Fields};

/// What the gate learned about a request, for the pages (in the request's extensions).
#[derive(Debug, Clone)]
pub(super) struct Visit {
    /// Where the console is mounted, without a trailing slash (`""` at the root).
    pub(super) mount: Arc<str>,
    /// The CSRF cookie value (the request's, or the one this response sets).
    pub(super) cookie: Arc<str>,
    /// Who the host's `Identify` says is calling.
    pub(super) who: Option<Identified>,
}

/// A mount path as links and the cookie may use it: only letters, digits and `-._~%:@/`,
/// one leading slash, no trailing one (`""` for the root). `None` when it holds anything
/// else.
pub(super) fn clean_mount(path: &str) -> Option<String> {
    let ok = path.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%' | ':' | '@' | '/')
    });
    if !ok {
        return None;
    }
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        Some(String::new())
    } else {
        Some(format!("/{trimmed}"))
    }
}

/// Where the console is mounted: the configured path, else the original request path
/// minus the path the console's router sees, else axum's nested path (when it holds no
/// parameter), else the root.
fn mount_of(parts: &Parts, configured: Option<&str>) -> String {
    if let Some(m) = configured {
        return m.to_owned();
    }
    let inner = parts.uri.path();
    if let Some(OriginalUri(original)) = parts.extensions.get::<OriginalUri>() {
        let full = original.path();
        let prefix = full
            .strip_suffix(inner)
            .or_else(|| (inner == "/").then_some(full));
        if let Some(found) = prefix.and_then(clean_mount) {
            return found;
        }
    }
    parts
        .extensions
        .get::<NestedPath>()
        .map(NestedPath::as_str)
        .filter(|p| !p.contains('{'))
        .and_then(clean_mount)
        .unwrap_or_default()
}

/// The middleware.
pub(super) async fn gate(State(console): State<Console>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let mount = mount_of(&parts, console.config.mount_path.as_deref());
    let existing = csrf::read(&parts.headers);
    let who = console.guard.identify(&mut parts).await.ok();
    let mut set_cookie = None;
    let mut response = if parts.method == Method::POST {
        post(&console, parts, body, &mount, existing, who, next).await
    } else {
        let cookie = match existing {
            Some(c) => Some(c),
            None => {
                let fresh = csrf::new_value();
                set_cookie.clone_from(&fresh);
                fresh
            }
        };
        match cookie {
            Some(cookie) => {
                parts.extensions.insert(Visit {
                    mount: Arc::from(mount.as_str()),
                    cookie: Arc::from(cookie.as_str()),
                    who,
                });
                next.run(Request::from_parts(parts, body)).await
            }
            None => {
                tracing::error!("the system's random source failed; no CSRF cookie");
                refusal(
                    &mount,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again shortly",
                    "The console could not prepare this page. Try again in a moment.",
                )
            }
        }
    };
    if let Some(value) = set_cookie {
        response.headers_mut().append(
            header::SET_COOKIE,
            csrf::cookie_header(&value, &mount, &console.config, false),
        );
    }
    secure(response.headers_mut());
    response
}

/// A POST: the body within the limit, then the CSRF check, then the handler.
async fn post(
    console: &Console,
    mut parts: Parts,
    body: Body,
    mount: &str,
    cookie: Option<String>,
    who: Option<Identified>,
    next: Next,
) -> Response {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large(mount);
    }
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return too_large(mount);
    };
    let fields = Fields::parse(&bytes);
    let token = fields.get(csrf::FIELD).unwrap_or("");
    let valid = cookie
        .as_deref()
        .is_some_and(|c| csrf::verify(&console.config.csrf_secret, c, who, token));
    let Some(cookie) = cookie.filter(|_| valid) else {
        return refusal(
            mount,
            StatusCode::FORBIDDEN,
            "The form has expired",
            "This form could not be checked (it is old, was sent from elsewhere, or you signed \
             in or out since it was shown). Nothing was changed. Open the page again and retry.",
        );
    };
    parts.extensions.insert(Visit {
        mount: Arc::from(mount),
        cookie: Arc::from(cookie.as_str()),
        who,
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(mount: &str) -> Response {
    refusal(
        mount,
        StatusCode::PAYLOAD_TOO_LARGE,
        "The form is too large",
        "The console reads forms of at most 64 KiB. Nothing was changed.",
    )
}

/// A page the gate answers itself (nothing of the tenant on it).
fn refusal(mount: &str, status: StatusCode, title: &str, text: &str) -> Response {
    let chrome = Chrome {
        mount,
        tenant: None,
        who: None,
        webhooks: false,
    };
    let users = format!("{mount}/users");
    html::page(
        status,
        title,
        &chrome,
        "",
        html! {
            h1 #refused { (title) }
            (html::message(Tone::Error, text))
            p { a href=(users) { "Back to the Users page" } }
        },
    )
}

/// The security headers every response carries; a page's own CSP (with its style hash) is
/// kept, any other response gets the CSP of the plain style sheet.
pub(super) fn secure(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY)
        && let Ok(v) = HeaderValue::from_str(&html::csp_for(html::STYLE))
    {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::clean_mount;

    #[test]
    fn mounts_are_cleaned() {
        assert_eq!(clean_mount("/settings/").as_deref(), Some("/settings"));
        assert_eq!(
            clean_mount("//evil.test/x").as_deref(),
            Some("/evil.test/x")
        );
        assert_eq!(clean_mount("/").as_deref(), Some(""));
        assert_eq!(clean_mount(""), Some(String::new()));
        assert_eq!(clean_mount("/a;b"), None);
        assert_eq!(clean_mount("/a\"b"), None);
        assert_eq!(clean_mount("/a\\b"), None);
    }
}
