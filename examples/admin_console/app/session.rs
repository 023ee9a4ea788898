//! Demo sessions, CSRF protection and the [`Identify`] the guard uses.
//!
//! A session lives in memory, named by a random id in an `HttpOnly`, `SameSite=Lax`
//! cookie. It holds a random CSRF token and, once someone picked a user on the demo
//! sign-in page (or accepted an invitation), that user. Every POST must carry the
//! session's token in its `csrf` field: the middleware checks it before any handler runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use tenantry::{TenantId, UserId};
use tenantry_axum::{Identify, async_trait};

use super::Console;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "tenantry_console_session";
/// The most sessions kept; the least recently used go first.
const MAX_SESSIONS: usize = 10_000;
/// Sessions idle this long are dropped.
const IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// The largest form body read.
pub(crate) const MAX_FORM: usize = 256 * 1024;

/// A message shown once on the next page.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    /// `ok`, `error` or `warn`.
    pub(crate) kind: &'static str,
    /// The text (escaped when shown).
    pub(crate) text: String,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    user: Option<UserId>,
    flash: Option<Flash>,
    seen: Instant,
}

/// The id of the request's session, put in the request's extensions by [`middleware`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionId(pub(crate) String);

/// Every session of the console.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the OS, URL-safe base64.
pub(crate) fn random_token() -> Option<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// Compares two tokens in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a new empty session; `None` if the OS gave no randomness.
    fn create(&self, user: Option<UserId>) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| now.duration_since(s.seen) < IDLE);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id.clone(),
            Session {
                csrf,
                user,
                flash: None,
                seen: now,
            },
        );
        Some(id)
    }

    /// Whether the session exists (and marks it used).
    fn touch(&self, id: &str) -> bool {
        match self.lock().get_mut(id) {
            Some(s) => {
                s.seen = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The session's CSRF token.
    pub(crate) fn csrf(&self, id: &SessionId) -> String {
        self.lock()
            .get(&id.0)
            .map(|s| s.csrf.clone())
            .unwrap_or_default()
    }

    /// The signed-in user.
    pub(crate) fn user(&self, id: &SessionId) -> Option<UserId> {
        self.lock().get(&id.0).and_then(|s| s.user)
    }

    /// Replaces the session by a fresh one for `user` (a new id and token, so a session id
    /// planted before sign-in is worthless after it), carrying the flash over. Returns the
    /// new id.
    pub(crate) fn sign_in(&self, old: &SessionId, user: UserId, flash: Flash) -> Option<String> {
        let new = self.create(Some(user))?;
        let mut map = self.lock();
        map.remove(&old.0);
        if let Some(s) = map.get_mut(&new) {
            s.flash = Some(flash);
        }
        Some(new)
    }

    /// Forgets the signed-in user.
    pub(crate) fn sign_out(&self, id: &SessionId) {
        if let Some(s) = self.lock().get_mut(&id.0) {
            s.user = None;
        }
    }

    /// Leaves a message for the next page.
    pub(crate) fn flash(&self, id: &SessionId, kind: &'static str, text: impl Into<String>) {
        if let Some(s) = self.lock().get_mut(&id.0) {
            s.flash = Some(Flash {
                kind,
                text: text.into(),
            });
        }
    }

    /// Takes the message left for this page.
    pub(crate) fn take_flash(&self, id: &SessionId) -> Option<Flash> {
        self.lock().get_mut(&id.0).and_then(|s| s.flash.take())
    }
}

/// The `Set-Cookie` value for a session id.
pub(crate) fn cookie_header(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")).ok()
}

/// The session id named by the request's cookies, if any.
fn cookie_value(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn plain_error(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head><body style="font-family:sans-serif;max-width:640px;margin:40px auto"><h1>{title}</h1><p>{text}</p><p><a href="/users">Back to the Users page</a></p></body></html>"#,
        title = super::html::esc(title),
        text = super::html::esc(text),
    );
    (status, Html(body)).into_response()
}

/// Finds or starts the session, checks the CSRF token of every POST, sets the cookie and
/// the security headers.
pub(crate) async fn middleware(
    State(console): State<Console>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let (id, fresh) = match cookie_value(&parts) {
        Some(id) if console.sessions.touch(&id) => (id, false),
        _ => match console.sessions.create(None) {
            Some(id) => (id, true),
            None => {
                return plain_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No randomness",
                    "The operating system's random number source failed; try again.",
                );
            }
        },
    };
    let sid = SessionId(id.clone());
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => {
                return plain_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large",
                    "The form sent more data than this console accepts.",
                );
            }
        };
        let sent = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let expected = console.sessions.csrf(&sid);
        if fresh || expected.is_empty() || !same_token(&sent, &expected) {
            let mut response = plain_error(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from a page of this session (cross-site request forgery protection). Go back, reload the page and try again.",
            );
            if let Some(v) = cookie_header(&id).filter(|_| fresh) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            return response;
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(sid);
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let headers = response.headers_mut();
    let handler_set_cookie = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with(COOKIE)));
    if fresh
        && !handler_set_cookie
        && let Some(v) = cookie_header(&id)
    {
        headers.append(header::SET_COOKIE, v);
    }
    // No scripts at all; styles only inline; forms only to this origin; accept links (bearer
    // secrets) never leak through Referer.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Who is calling: the user of the request's session, in the console's tenant. This is the
/// host-supplied part of the tenantry-axum guard; a real application reads its own
/// authentication here.
pub(crate) struct SessionIdentity {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) tenant: TenantId,
}

#[async_trait]
impl Identify for SessionIdentity {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        let sid = parts.extensions.get::<SessionId>()?;
        Some((self.tenant, self.sessions.user(sid)?))
    }
}
