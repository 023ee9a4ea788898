//! The mountable Settings → Users console: server-rendered HTML pages over [`Tenantry`](crate::Tenantry), for
//! the users the host's [`Identify`](crate::Identify) names.
//!
//! [`router`] returns an axum [`Router`] the host nests wherever it likes
//! (`Router::new().nest("/settings", console::router(guard, config))`); every link, form
//! action, redirect and the cookie path follow the prefix it is nested under.
//!
//! # Pages
//!
//! | path | what | needs |
//! |---|---|---|
//! | `/users` | the user table (status filter, search, sort, cursor pages), the seat indicator with the at-limit warning, the role templates | `users:view` |
//! | `/users/invite` | invite a user (disabled at the seat limit) | `users:create` |
//! | `/users/{id}/edit` | email, role, status, role template, CRM access and the 6 × 5 permission grid, with the selected template's permissions marked | `users:edit` |
//! | `/users/{id}/identity` (POST) | set, replace or clear the host's identity id (D28), from the card on the edit page (read-only there for non-admins) | active admin |
//! | `/users/{id}/resend` (POST) | a fresh invitation | `users:create` |
//! | `/users/{id}/delete` | the confirmation explaining the impact, then the delete | `users:delete` |
//! | `/templates` | the role templates with their users | `users:view` |
//! | `/templates/new`, `/templates/{id}/edit` | create and edit a template | `users:manage` |
//! | `/templates/{id}/delete` | who uses it, and refuse / detach / reassign | `users:manage` |
//! | `/audit` | the audit log, paged | `users:view` |
//! | `/deliveries` | invitation mail: recipient, state, attempts, last error | `users:view` |
//! | `/webhooks` | the tenant's webhook endpoints with their delivery state; register, rotate the secret, enable, disable, remove (feature `webhooks`, with `ConsoleConfig::webhooks`) | active admin |
//! | `/accept?token=…` | the public page an invitation link opens | nobody signed in |
//!
//! Nobody identified: a `401` page linking [`ConsoleConfig::sign_in_url`]. Identified but
//! lacking the permission: a `403` page saying why. Actions a user may not take are not
//! shown. The service decides every change (the console only offers what it would allow).
//!
//! # Security model
//!
//! - **No accept link or token on any page** ([live links are secrets
//!   (D26)](tenantry_core::Rule::LiveLinksAreSecrets)): invitations are delivered by mail
//!   only; the delivery page shows state, never a body. The accept page is the invitee's
//!   own (its token came in the link).
//! - **No sessions.** The console keeps no server state per visitor. CSRF protection is a
//!   signed double-submit: a random value in an `HttpOnly; SameSite=Strict` cookie scoped
//!   to the mount path (`Secure` with [`ConsoleConfig::secure_cookies`]), and in each form
//!   the HMAC-SHA256 of that value under the configured secret, bound to the identified
//!   (tenant, user), or to "anonymous". Every POST is checked before any handler runs; a
//!   failure is a `403` page. [`clear_cookie`] removes the cookie at sign-out.
//! - **The accept page never switches users.** When the request is identified it says who
//!   is signed in and refuses (`409`); an anonymous accept activates the account and links
//!   the host's sign-in page. The console signs nobody in.
//! - **Headers on every response**: `Content-Security-Policy` (`default-src 'none'`, the
//!   page's one inline style by its hash, `form-action 'self'; frame-ancestors 'none';
//!   base-uri 'none'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY`, `Cache-Control: no-store`. Form bodies are limited to 64 KiB
//!   (`413` page). No script, no external asset.
//! - **Errors**: storage failures are a `503` page with a generic text (the detail goes to
//!   the log, see [`crate::problem`]); bad form fields a `422` page (nothing changed); bad
//!   query parameters (a garbled cursor, one of another sort order) are ignored with a
//!   notice. Results of a POST redirect (`303`) with a fixed message code.
//!
//! # What the host provides
//!
//! An [`Identify`](crate::Identify) (in the [`Guard`]), its sign-in page
//! ([`ConsoleConfig::sign_in_url`]), a sign-out that also sends [`clear_cookie`], the
//! service's accept link base URL pointing at `<mount>/accept`
//! ([`Builder::base_url`](tenantry_service::Builder::base_url)), https with
//! `secure_cookies(true)`, and server timeouts (header read, request) and a body limit on its
//! listener. See `docs/console.md`.
//!
//! # Example
//!
//! ```
//! use axum::Router;
//! use axum::http::request::Parts;
//! use tenantry_axum::console::{self, ConsoleConfig};
//! use tenantry_axum::{Guard, Identify, async_trait};
//! use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
//!
//! /// The host's authentication (here: a header set by a trusted gateway).
//! struct FromGateway;
//!
//! #[async_trait]
//! impl Identify for FromGateway {
//!     async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
//!         let (tenant, user) = parts.headers.get("x-identity")?.to_str().ok()?.split_once('/')?;
//!         Some((tenant.parse().ok()?, user.parse().ok()?))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Tenantry::builder(InMemoryStore::new())
//!     // Invitation links open the console's accept page.
//!     .base_url("https://app.example.com/settings/accept")
//!     .build()?;
//! let guard = Guard::new(app, FromGateway);
//! let secret = [7u8; 32]; // in production: 32 random bytes, kept secret and stable
//! let config = ConsoleConfig::new(secret)
//!     .secure_cookies(true)
//!     .sign_in_url("/login");
//! let host: Router = Router::new().nest("/settings", console::router(guard, config));
//! # let _ = host; Ok(()) }
//! ```

mod csrf;
mod ctx;
mod form;
mod gate;
mod html;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::{get, post};

use crate::Guard;

/// The largest form body the console reads (64 KiB); larger ones get a `413` page.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How the console is set up by its host.
///
/// ```
/// use tenantry_axum::console::ConsoleConfig;
///
/// let config = ConsoleConfig::new([42u8; 32])
///     .secure_cookies(true)
///     .sign_in_url("https://app.example.com/login")
///     .mount_path("/settings");
/// // The secret never shows in debug output.
/// assert!(!format!("{config:?}").contains("42"));
/// ```
#[derive(Clone)]
pub struct ConsoleConfig {
    csrf_secret: [u8; 32],
    secure_cookies: bool,
    sign_in_url: String,
    mount_path: Option<String>,
    #[cfg(feature = "webhooks")]
    webhooks: Option<tenantry_webhooks::Webhooks>,
    #[cfg(feature = "webhooks")]
    rotation_grace: time::Duration,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("secure_cookies", &self.secure_cookies)
            .field("sign_in_url", &self.sign_in_url)
            .field("mount_path", &self.mount_path)
            .field("webhooks", &self.has_webhooks())
            .finish_non_exhaustive()
    }
}

impl ConsoleConfig {
    /// A configuration signing its CSRF tokens with `csrf_secret` (32 random bytes the host
    /// keeps secret and stable across restarts; changing it invalidates the forms open in
    /// browsers, nothing else).
    ///
    /// ```
    /// let config = tenantry_axum::console::ConsoleConfig::new([1u8; 32]);
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn new(csrf_secret: [u8; 32]) -> Self {
        Self {
            csrf_secret,
            secure_cookies: false,
            sign_in_url: "/signin".to_owned(),
            mount_path: None,
            #[cfg(feature = "webhooks")]
            webhooks: None,
            #[cfg(feature = "webhooks")]
            rotation_grace: time::Duration::hours(24),
        }
    }

    /// Whether the console has the `/webhooks` page.
    fn has_webhooks(&self) -> bool {
        #[cfg(feature = "webhooks")]
        {
            self.webhooks.is_some()
        }
        #[cfg(not(feature = "webhooks"))]
        {
            false
        }
    }

    /// Adds the `/webhooks` page (feature `webhooks`): the tenant's endpoints with their
    /// delivery state, for active admins, over `admin` (which checks the actor and records
    /// every change in the audit log). A new or rotated secret is shown once, on the page
    /// answering the form that made it, and never again. Without it the page does not
    /// exist (`404`) and the navigation does not link it.
    ///
    /// ```
    /// # fn main() -> Result<(), tenantry_service::SettingsError> {
    /// use std::sync::Arc;
    /// use tenantry_axum::console::ConsoleConfig;
    /// use tenantry_service::{InMemoryStore, Tenantry};
    /// use tenantry_webhooks::{InMemoryEndpointStore, Webhooks};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let admin = Webhooks::new(app, Arc::new(InMemoryEndpointStore::new()));
    /// let config = ConsoleConfig::new([1u8; 32]).webhooks(admin);
    /// assert!(format!("{config:?}").contains("webhooks: true"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "webhooks")]
    #[must_use]
    pub fn webhooks(mut self, admin: tenantry_webhooks::Webhooks) -> Self {
        self.webhooks = Some(admin);
        self
    }

    /// How long a rotated-out webhook secret keeps signing beside the new one (feature
    /// `webhooks`; default 24 hours), so receivers can switch without refusing a delivery.
    /// A negative value is taken as zero (the old secret stops at once).
    ///
    /// ```
    /// use tenantry_axum::console::ConsoleConfig;
    /// let config = ConsoleConfig::new([1u8; 32]).webhook_rotation_grace(time::Duration::hours(1));
    /// # let _ = config;
    /// ```
    #[cfg(feature = "webhooks")]
    #[must_use]
    pub fn webhook_rotation_grace(mut self, grace: time::Duration) -> Self {
        self.rotation_grace = grace.max(time::Duration::ZERO);
        self
    }

    /// Mark the console's cookie `Secure` (serve it over https; then browsers send it only
    /// over https).
    ///
    /// ```
    /// let config = tenantry_axum::console::ConsoleConfig::new([1u8; 32]).secure_cookies(true);
    /// assert!(tenantry_axum::console::clear_cookie(&config).to_str()?.contains("Secure"));
    /// # Ok::<(), axum::http::header::ToStrError>(())
    /// ```
    #[must_use]
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// Where the host's sign-in page is (linked when nobody is signed in, and after an
    /// invitation is accepted). Default `/signin`.
    ///
    /// ```
    /// let config = tenantry_axum::console::ConsoleConfig::new([1u8; 32]).sign_in_url("/login");
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn sign_in_url(mut self, url: impl Into<String>) -> Self {
        self.sign_in_url = url.into();
        self
    }

    /// The path the console is nested under (`/settings`), when the host wants to fix it
    /// rather than let the console read it from each request. [`clear_cookie`] needs it to
    /// name the cookie's path: set it whenever the console is not mounted at `/`.
    /// A path with characters other than letters, digits, `-._~%:@/` is ignored.
    ///
    /// ```
    /// use tenantry_axum::console::{ConsoleConfig, clear_cookie};
    /// let config = ConsoleConfig::new([1u8; 32]).mount_path("/settings/");
    /// assert!(clear_cookie(&config).to_str()?.contains("Path=/settings;"));
    /// # Ok::<(), axum::http::header::ToStrError>(())
    /// ```
    #[must_use]
    pub fn mount_path(mut self, path: impl Into<String>) -> Self {
        self.mount_path = gate::clean_mount(&path.into());
        self
    }
}

/// The shared state of the console's routes.
#[derive(Clone)]
struct Console {
    guard: Guard,
    config: Arc<ConsoleConfig>,
}

/// The console's routes. Nest it anywhere: `Router::new().nest("/settings", router(..))`.
///
/// See the [module documentation](self) for the pages, the security model and what the host
/// provides.
///
/// ```
/// # use axum::http::request::Parts;
/// # use tenantry_axum::{Guard, Identify, async_trait};
/// # use tenantry_service::{InMemoryStore, TenantId, Tenantry, UserId};
/// # struct Nobody;
/// # #[async_trait]
/// # impl Identify for Nobody {
/// #     async fn identify(&self, _: &mut Parts) -> Option<(TenantId, UserId)> { None }
/// # }
/// # fn main() -> Result<(), tenantry_service::SettingsError> {
/// use tenantry_axum::console::{ConsoleConfig, router};
/// let guard = Guard::new(Tenantry::builder(InMemoryStore::new()).build()?, Nobody);
/// let app: axum::Router = axum::Router::new().nest("/admin", router(guard, ConsoleConfig::new([9; 32])));
/// # let _ = app; Ok(()) }
/// ```
pub fn router(guard: Guard, config: ConsoleConfig) -> Router {
    let console = Console {
        guard,
        config: Arc::new(config),
    };
    let router = Router::new()
        .route("/", get(pages::root))
        .route("/users", get(pages::users::list))
        .route(
            "/users/invite",
            get(pages::users::invite_page).post(pages::users::invite),
        )
        .route(
            "/users/{id}/edit",
            get(pages::users::edit_page).post(pages::users::edit),
        )
        .route("/users/{id}/resend", post(pages::users::resend))
        .route("/users/{id}/identity", post(pages::users::set_identity))
        .route(
            "/users/{id}/delete",
            get(pages::users::delete_page).post(pages::users::delete),
        )
        .route("/templates", get(pages::templates::list))
        .route(
            "/templates/new",
            get(pages::templates::new_page).post(pages::templates::create),
        )
        .route(
            "/templates/{id}/edit",
            get(pages::templates::edit_page).post(pages::templates::edit),
        )
        .route(
            "/templates/{id}/delete",
            get(pages::templates::delete_page).post(pages::templates::delete),
        )
        .route(
            "/tenant",
            get(pages::tenant::page).post(pages::tenant::rename),
        )
        .route("/audit", get(pages::audit::audit))
        .route("/deliveries", get(pages::audit::deliveries))
        .route(
            "/accept",
            get(pages::accept::accept_page).post(pages::accept::accept),
        );
    #[cfg(feature = "webhooks")]
    let router = if console.config.has_webhooks() {
        pages::webhooks::routes(router)
    } else {
        router
    };
    router
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            gate::gate,
        ))
        .with_state(console)
}

/// The `Set-Cookie` header value that removes the console's CSRF cookie; a host's sign-out
/// response sends it so that no token outlives its session. The cookie's path is
/// [`ConsoleConfig::mount_path`] (`/` when unset).
///
/// ```
/// use tenantry_axum::console::{ConsoleConfig, clear_cookie};
/// let value = clear_cookie(&ConsoleConfig::new([1u8; 32]).mount_path("/settings"));
/// let text = value.to_str()?;
/// assert!(text.starts_with("tenantry_csrf=;"));
/// assert!(text.contains("Max-Age=0"));
/// # Ok::<(), axum::http::header::ToStrError>(())
/// ```
#[must_use]
pub fn clear_cookie(config: &ConsoleConfig) -> HeaderValue {
    csrf::cookie_header("", config.mount_path.as_deref().unwrap_or(""), config, true)
}
