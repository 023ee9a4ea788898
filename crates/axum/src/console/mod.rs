//! The mountable Settings → Users console. STUB: being written.

use axum::Router;

use crate::Guard;

/// How the console is set up by its host.
#[derive(Clone)]
pub struct ConsoleConfig {
    csrf_secret: [u8; 32],
    secure_cookies: bool,
    sign_in_url: String,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("secure_cookies", &self.secure_cookies)
            .field("sign_in_url", &self.sign_in_url)
            .finish_non_exhaustive()
    }
}

impl ConsoleConfig {
    /// A configuration signing its CSRF tokens with `csrf_secret` (32 random bytes the host
    /// keeps secret and stable across restarts).
    #[must_use]
    pub fn new(csrf_secret: [u8; 32]) -> Self {
        Self {
            csrf_secret,
            secure_cookies: false,
            sign_in_url: "/signin".to_owned(),
        }
    }
    /// Mark the console's cookies `Secure` (serve it over https).
    #[must_use]
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }
    /// Where the host's sign-in page is (linked when nobody is signed in, and after an
    /// invitation is accepted).
    #[must_use]
    pub fn sign_in_url(mut self, url: impl Into<String>) -> Self {
        self.sign_in_url = url.into();
        self
    }
}

/// The console's routes. Nest it anywhere: `Router::new().nest("/settings", router(..))`.
pub fn router(guard: Guard, config: ConsoleConfig) -> Router {
    let _ = (guard, config.csrf_secret);
    Router::new()
}

/// The `Set-Cookie` header value that removes the console's CSRF cookie; a host's sign-out
/// response sends it so that no token outlives its session.
#[must_use]
pub fn clear_cookie(config: &ConsoleConfig) -> axum::http::HeaderValue {
    let _ = config;
    axum::http::HeaderValue::from_static(
        "tenantry_csrf=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
    )
}
