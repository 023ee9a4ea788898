//! The host glue around the library's console and API: the SQLite store with its demo data,
//! the mailer, the demo sign-in and its [`Identify`](tenantry_axum::Identify), the operators'
//! tenant list ([`tenants`]), the routers nested under paths, and a hardened server.
//!
//! The tests include this module too (`#[path]`), so what they drive is built by exactly
//! this code: [`open`] (store, service, demo data), [`router`], [`serve`].

pub(crate) mod mail;
pub(crate) mod signin;
pub(crate) mod tenants;

use std::error::Error as StdError;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tenantry::prelude::*;
use tenantry::sqlite::SqliteStore;
use tenantry::{Mailer, Store, TenantId};
use tenantry_axum::Guard;
use tenantry_axum::console::ConsoleConfig;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use signin::SigningKey;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where the console is nested.
pub(crate) const CONSOLE: &str = "/console";
/// The console's first page (where `/` and a sign-in lead).
pub(crate) const CONSOLE_HOME: &str = "/console/users";
/// Where the JSON API is nested.
pub(crate) const API: &str = "/api";
/// The console's accept page below [`CONSOLE`]: invitation links point here.
pub(crate) const ACCEPT: &str = "/console/accept";

/// How invitation mail leaves.
pub(crate) enum Mail {
    /// Recorded in memory only; nothing leaves the machine. Nothing shows the recorded
    /// mail (its accept links are secrets, D26); tests read it in process.
    Memory,
    /// Handed to a real transport (SMTP).
    #[cfg_attr(test, allow(dead_code, reason = "the tests record mail in memory"))]
    Transport(Arc<dyn Mailer>),
}

/// How the host is set up.
pub(crate) struct Setup {
    /// The SQLite database file (created and seeded when new).
    pub(crate) db: PathBuf,
    /// The site's public URL, e.g. `http://127.0.0.1:8080` (invitation links start with it;
    /// `https://` marks the cookies `Secure`).
    pub(crate) public_url: String,
    /// The mailer.
    pub(crate) mail: Mail,
}

/// The server's limits: what keeps slow or half-sent requests from holding it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a client may take to send a request's header.
    pub(crate) header_read: Duration,
    /// How long a whole request may take (reading its body included).
    pub(crate) request: Duration,
    /// The largest request body, in bytes.
    pub(crate) body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            body: 1024 * 1024,
        }
    }
}

/// The host's state: the service, the guard, the demo tenant and the keys.
#[derive(Clone)]
pub(crate) struct Host {
    pub(crate) app: Tenantry,
    pub(crate) guard: Guard,
    pub(crate) tenant: TenantId,
    key: SigningKey,
    console: ConsoleConfig,
    /// `scheme://host[:port]` of the public URL, for the same-site check of form posts.
    origin: String,
    /// Whether cookies are `Secure` (the public URL is https).
    secure: bool,
}

/// What [`open`] found.
pub(crate) struct Opened {
    /// The host.
    pub(crate) host: Host,
    /// Whether the demo data was created now (a new database).
    pub(crate) seeded: bool,
    /// The in-memory mailer's record, with [`Mail::Memory`].
    #[allow(
        dead_code,
        reason = "the tests read the mail in process; the binary never shows it (D26)"
    )]
    pub(crate) recorded: Option<InMemoryMailer>,
}

/// 32 random bytes from the OS.
fn random_key() -> Result<[u8; 32], BoxError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(key)
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// Opens (or creates and seeds) the database and builds the host.
pub(crate) async fn open(setup: Setup) -> Result<Opened, BoxError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&setup.db).await?);
    let public = setup.public_url.trim_end_matches('/');
    let base_url = format!("{public}{ACCEPT}");
    let builder = Tenantry::builder(Arc::clone(&store)).base_url(base_url.clone());
    let (app, recorded) = match setup.mail {
        Mail::Memory => {
            let memory = InMemoryMailer::new();
            (builder.mailer(memory.clone()).build()?, Some(memory))
        }
        Mail::Transport(mailer) => (builder.mailer(mailer).build()?, None),
    };
    // The demo tenant is the first in the operators' listing (the seed makes one).
    let first = app.tenants(None, 1).await?.items.into_iter().next();
    let (tenant, seeded) = match first {
        Some(state) => (state.tenant.id, false),
        None => {
            // The demo invitations go to made-up addresses: they are only recorded in a
            // throwaway mailer, never handed to a real transport.
            let seeder = Tenantry::builder(store)
                .mailer(InMemoryMailer::new())
                .base_url(base_url)
                .build()?;
            (seed(&seeder).await?, true)
        }
    };
    let secure = public.starts_with("https://");
    let key = SigningKey::new(random_key()?);
    let console = ConsoleConfig::new(random_key()?)
        .secure_cookies(secure)
        .sign_in_url("/signin")
        .mount_path(CONSOLE)
        // The Webhooks page for admins (endpoints in memory here; nothing is delivered, as
        // this demo runs no `tenantry_webhooks::Dispatcher`).
        .webhooks(tenantry_webhooks::Webhooks::new(
            app.clone(),
            Arc::new(tenantry_webhooks::InMemoryEndpointStore::new()),
        ));
    let guard = Guard::new(app.clone(), signin::CookieIdentity { key: key.clone() });
    Ok(Opened {
        host: Host {
            app,
            guard,
            tenant,
            key,
            console,
            origin: origin_of(public),
            secure,
        },
        seeded,
        recorded,
    })
}

/// The second demo tenant, where ada is a user too (D28: one person, several tenants).
pub(crate) const SECOND_TENANT: &str = "Globex Sales";

/// The demo data: a tenant with 5 seats, its admin ada, two role templates, erin (only
/// `users:view` and `analytics:view`), bob (a support agent, no access to the page) and
/// carol (invited): 4 seats used. And a second tenant, [`SECOND_TENANT`], with its admin
/// gil and ada as a user, so that ada's sign-in shows the tenant picker.
async fn seed(app: &Tenantry) -> Result<TenantId, BoxError> {
    let tenant = seed_first(app).await?;
    let (globex, gil) = app
        .create_tenant(SECOND_TENANT, Some(3), Email::parse("gil@globex.test")?)
        .await?;
    let invited = app
        .invite(
            globex,
            gil,
            &InviteRequest {
                email: Email::parse(signin::MULTI_TENANT_DEMO)?,
                role: Role::User,
                template_id: None,
                crm_access: true,
                grants: "users:view,analytics:view".parse()?,
            },
        )
        .await?;
    let token = invited.accept_link.token().ok_or("no token in the link")?;
    app.accept_invitation(&token, signin::MULTI_TENANT_DEMO)
        .await?;
    Ok(tenant)
}

async fn seed_first(app: &Tenantry) -> Result<TenantId, BoxError> {
    let (tenant, ada) = app
        .create_tenant("Acme Support", Some(5), Email::parse("ada@acme.test")?)
        .await?;
    let agent = app
        .create_template(
            tenant,
            ada,
            "Support agent",
            "conversations:view,conversations:create,conversations:edit".parse()?,
        )
        .await?;
    let manager = app
        .create_template(
            tenant,
            ada,
            "Sales manager",
            "conversations:view,analytics:view,analytics:create,integrations:view".parse()?,
        )
        .await?;
    let people = [
        (
            "bob@acme.test",
            Some(agent.id),
            true,
            Permissions::empty(),
            true,
        ),
        (
            "erin@acme.test",
            None,
            false,
            "users:view,analytics:view".parse()?,
            true,
        ),
        (
            "carol@acme.test",
            Some(manager.id),
            true,
            Permissions::empty(),
            false,
        ),
    ];
    for (email, template_id, crm_access, grants, accept) in people {
        let invited = app
            .invite(
                tenant,
                ada,
                &InviteRequest {
                    email: Email::parse(email)?,
                    role: Role::User,
                    template_id,
                    crm_access,
                    grants,
                },
            )
            .await?;
        if accept {
            let token = invited.accept_link.token().ok_or("no token in the link")?;
            app.accept_invitation(&token, email).await?;
        }
    }
    Ok(tenant)
}

/// Adds the security headers a page lacks (the console sets its own; this covers the
/// sign-in page and the 408 and 413 answers of the limits).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

/// Every route: `/` and the demo sign-in, the operators' tenant list at [`tenants::PATH`]
/// (demo access: an active admin of any tenant), the console at [`CONSOLE`], the API at [`API`],
/// behind the request timeout and the body limit of `limits`.
pub(crate) fn router(host: &Host, limits: Limits) -> Router {
    Router::new()
        .route("/", get(signin::root))
        .route("/signin", get(signin::page).post(signin::sign_in))
        .route("/signout", post(signin::sign_out))
        .route(tenants::PATH, get(tenants::page))
        .with_state(host.clone())
        .nest(
            CONSOLE,
            tenantry_axum::console::router(host.guard.clone(), host.console.clone()),
        )
        .nest(API, tenantry_axum::api::router(host.guard.clone()))
        .layer(RequestBodyLimitLayer::new(limits.body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ))
        // Outermost, so the 408 and 413 answers get the headers too.
        .layer(axum::middleware::map_response(security_headers))
}

/// Serves the host until `shutdown` resolves, delivering queued invitation mail in the
/// background (retries of failed deliveries).
///
/// Every connection gets `limits.header_read` to send its request header (then it is
/// closed), every request `limits.request` in all, and bodies are capped at `limits.body`:
/// a client that opens connections and sends half a header, or a body byte by byte, holds
/// them for seconds, not forever. A host serving the console must set the same kind of
/// limits (here with hyper-util's server builder and tower-http's layers).
pub(crate) async fn serve(
    listener: TcpListener,
    host: Host,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = host.app.clone();
    let dispatcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            if let Err(e) = app.dispatch_all().await {
                eprintln!("mail delivery pass failed: {e}");
            }
        }
    });
    let router = router(&host, limits);
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let service = TowerToHyperService::new(router.clone());
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    // A connection's failure (a client gone, a timeout) is that client's.
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Out of file descriptors or a connection reset before it was accepted: wait a
            // moment rather than spin, and go on serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    dispatcher.abort();
    Ok(())
}
