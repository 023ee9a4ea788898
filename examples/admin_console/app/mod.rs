//! The admin console: the Settings → Users page of one demo tenant, served by axum on the
//! tenantry service over SQLite.
//!
//! The browser test includes this module too (`#[path]`), so the console it drives is
//! built by exactly this code: [`open`] (store, service, demo data), [`router`], [`serve`].

// Used by the page modules below (textual scope).
/// Unwraps the guard's answer or returns the refusal page.
macro_rules! guarded {
    ($ctx:expr, $auth:expr) => {
        match $auth {
            Ok(a) => a,
            Err(r) => return $ctx.refused(&r),
        }
    };
}

/// Unwraps a service result or returns an error page.
macro_rules! or_error_page {
    ($ctx:expr, $result:expr) => {
        match $result {
            Ok(v) => v,
            Err(e) => {
                let status = match e.as_rule() {
                    Some(
                        tenantry::RuleError::UserNotFound | tenantry::RuleError::TemplateNotFound,
                    ) => axum::http::StatusCode::NOT_FOUND,
                    Some(tenantry::RuleError::NotAllowed { .. }) => {
                        axum::http::StatusCode::FORBIDDEN
                    }
                    _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                };
                let title = match status {
                    axum::http::StatusCode::NOT_FOUND => "Not found",
                    axum::http::StatusCode::FORBIDDEN => "Not allowed",
                    _ => "Something went wrong",
                };
                return $ctx.error_page(status, title, &super::error_text(&e));
            }
        }
    };
}

mod access;
mod html;
mod session;
mod templates;
mod users;

use std::error::Error as StdError;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tenantry::prelude::*;
use tenantry::sqlite::SqliteStore;
use tenantry::{Mailer, Message, Store, TenantId, User};
use tenantry_axum::{Guard, GuardRejection, async_trait};
use tokio::net::TcpListener;

use session::{Flash, SessionId, SessionIdentity, Sessions};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How the console is set up.
pub(crate) struct Setup {
    /// The SQLite database file (created and seeded when new).
    pub(crate) db: PathBuf,
    /// The console's own URL, e.g. `http://127.0.0.1:8080` (invitation links start with it).
    pub(crate) public_url: String,
    /// A real transport to deliver invitations through, besides recording them for the
    /// outbox page.
    pub(crate) forward: Option<Arc<dyn Mailer>>,
    /// How mail is delivered, for the outbox page.
    pub(crate) mailer_label: String,
}

/// The app state: the service, the guard and the demo sessions.
#[derive(Clone)]
pub(crate) struct Console {
    app: Tenantry,
    guard: Guard,
    tenant: TenantId,
    sessions: Arc<Sessions>,
    outbox: InMemoryMailer,
    mailer_label: String,
}

impl FromRef<Console> for Guard {
    fn from_ref(console: &Console) -> Guard {
        console.guard.clone()
    }
}

/// Records every delivered message for the outbox page, after handing it to the real
/// transport if there is one.
#[derive(Debug)]
struct RecordingMailer {
    record: InMemoryMailer,
    forward: Option<Arc<dyn Mailer>>,
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, message: &Message) -> Result<(), tenantry::MailError> {
        if let Some(forward) = &self.forward {
            forward.send(message).await?;
        }
        self.record.send(message).await
    }
}

/// What [`open`] found.
pub(crate) struct Opened {
    /// The console.
    pub(crate) console: Console,
    /// Whether the demo data was created now (a new database).
    pub(crate) seeded: bool,
}

/// Opens (or creates and seeds) the database and builds the console.
pub(crate) async fn open(setup: Setup) -> Result<Opened, BoxError> {
    let sqlite = SqliteStore::open(&setup.db).await?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let outbox = InMemoryMailer::new();
    let public = setup.public_url.trim_end_matches('/');
    let base_url = format!("{public}/accept");
    let app = Tenantry::builder(Arc::clone(&store))
        .mailer(RecordingMailer {
            record: outbox.clone(),
            forward: setup.forward,
        })
        .base_url(base_url.clone())
        .build()?;
    // The demo tenant is the database's first one. The store has no "list tenants" call
    // (a host knows its tenants), so the console asks the SQLite schema directly.
    let first: Option<String> =
        sqlx::query_scalar("SELECT id FROM tenants ORDER BY created_at, id LIMIT 1")
            .fetch_optional(sqlite.pool())
            .await?;
    let (tenant, seeded) = match first {
        Some(id) => (id.parse::<TenantId>()?, false),
        None => {
            // The demo invitations go to made-up addresses: they are only recorded, never
            // handed to a real transport.
            let seeder = Tenantry::builder(store)
                .mailer(outbox.clone())
                .base_url(base_url)
                .build()?;
            (seed(&seeder, &outbox).await?, true)
        }
    };
    let sessions = Arc::new(Sessions::default());
    let guard = Guard::new(
        app.clone(),
        SessionIdentity {
            sessions: Arc::clone(&sessions),
            tenant,
        },
    );
    Ok(Opened {
        console: Console {
            app,
            guard,
            tenant,
            sessions,
            outbox,
            mailer_label: setup.mailer_label,
        },
        seeded,
    })
}

/// The demo data: a tenant with 5 seats, its admin, two role templates, two active users
/// and one pending invitation (4 seats used).
async fn seed(app: &Tenantry, outbox: &InMemoryMailer) -> Result<TenantId, BoxError> {
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
            let mail = outbox
                .sent()
                .into_iter()
                .rev()
                .find(|m| m.user_id == invited.user.id)
                .ok_or("the seed invitation was not delivered")?;
            let token = tenantry::token_from_link(&mail.text).ok_or("no link in the mail")?;
            app.accept_invitation(&token, email).await?;
        }
    }
    Ok(tenant)
}

/// Every route of the console.
pub(crate) fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(access::root))
        .route("/signin", get(access::signin_page).post(access::signin))
        .route("/signout", post(access::signout))
        .route("/me", get(access::me))
        .route("/accept", get(access::accept_page).post(access::accept))
        .route("/outbox", get(access::outbox))
        .route("/users", get(users::list))
        .route("/users/invite", get(users::invite_page).post(users::invite))
        .route("/users/{id}/edit", get(users::edit_page).post(users::edit))
        .route("/users/{id}/resend", post(users::resend))
        .route(
            "/users/{id}/delete",
            get(users::delete_page).post(users::delete),
        )
        .route(
            "/templates/new",
            get(templates::new_page).post(templates::create),
        )
        .route(
            "/templates/{id}/edit",
            get(templates::edit_page).post(templates::edit),
        )
        .route(
            "/templates/{id}/delete",
            get(templates::delete_page).post(templates::delete),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            console.clone(),
            session::middleware,
        ))
        .with_state(console)
}

/// Serves the console until `shutdown` resolves, delivering queued invitation mail in the
/// background (retries of failed deliveries, D17).
pub(crate) async fn serve(
    listener: TcpListener,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = console.app.clone();
    let dispatcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            if let Err(e) = app.dispatch_all().await {
                eprintln!("mail delivery pass failed: {e}");
            }
        }
    });
    let served = axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await;
    dispatcher.abort();
    served
}

async fn not_found(ctx: Ctx) -> Response {
    ctx.error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in this console.",
    )
}

// ------------------------------------------------------------------- request context

/// What every page needs: the console, the session and who is signed in.
pub(crate) struct Ctx {
    console: Console,
    sid: SessionId,
    csrf: String,
    viewer: Option<User>,
    holds: Permissions,
    tenant_name: String,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let Some(sid) = parts.extensions.get::<SessionId>().cloned() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "no session").into_response());
        };
        let c = console.clone();
        let csrf = c.sessions.csrf(&sid);
        let viewer = match c.sessions.user(&sid) {
            Some(id) => c.app.user(c.tenant, ActorRef::System, id).await.ok(),
            None => None,
        };
        let holds = match &viewer {
            Some(v) => c
                .app
                .effective_permissions(c.tenant, v.id)
                .await
                .map(|(p, _)| p)
                .unwrap_or_else(|_| Permissions::empty()),
            None => Permissions::empty(),
        };
        let tenant_name = c
            .app
            .tenant(c.tenant)
            .await
            .map(|t| t.tenant.name)
            .unwrap_or_else(|_| "tenantry".to_owned());
        Ok(Ctx {
            console: c,
            sid,
            csrf,
            viewer,
            holds,
            tenant_name,
        })
    }
}

impl Ctx {
    fn app(&self) -> &Tenantry {
        &self.console.app
    }

    fn tenant(&self) -> TenantId {
        self.console.tenant
    }

    fn may(&self, action: Action) -> bool {
        self.holds.has(Permission::new(Category::Users, action))
    }

    fn header(&self) -> html::Header<'_> {
        html::Header {
            tenant: &self.tenant_name,
            who: self
                .viewer
                .as_ref()
                .map(|v| (v.email.as_str().to_owned(), v.role)),
            csrf: &self.csrf,
            outbox: self.may(Action::Create),
        }
    }

    fn flash_html(&self) -> String {
        self.console
            .sessions
            .take_flash(&self.sid)
            .map(|Flash { kind, text }| html::message(kind, &text))
            .unwrap_or_default()
    }

    fn flash(&self, kind: &'static str, text: impl Into<String>) {
        self.console.sessions.flash(&self.sid, kind, text);
    }

    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        (status, Html(html::page(title, &self.header(), body))).into_response()
    }

    fn error_page(&self, status: StatusCode, title: &str, text: &str) -> Response {
        let body = format!(
            r#"<h1>{}</h1>{}<p><a href="/users">Back to the Users page</a></p>"#,
            html::esc(title),
            html::message("error", text)
        );
        self.page(status, title, &body)
    }

    /// The page for a guard refusal: 401 (sign in), 403 (with the decision's reason) or 500.
    fn refused(&self, rejection: &GuardRejection) -> Response {
        let status = rejection.status();
        let body = match rejection {
            GuardRejection::Unauthenticated => r#"<h1 id="refused">Sign in first</h1>
<p>You are not signed in. The Users page is only for admins and users with the <code>users:view</code> permission.</p>
<p><a class="button primary" href="/signin">Go to the demo sign-in</a></p>"#
                .to_owned(),
            GuardRejection::Forbidden { request, decision } => {
                let needed = match request {
                    tenantry::Request::Permission(p) => p.to_string(),
                    tenantry::Request::Crm => "crm".to_owned(),
                };
                format!(
                    r#"<h1 id="refused">403 · You cannot open this page</h1>
<p>Only admins and users holding the <code>{needed}</code> permission can open it. Non-admin users cannot view or change tenant users, roles and permissions unless they were given that permission.</p>
{}
<p><a class="button" href="/me">See your access</a> <a class="button" href="/signin">Switch user</a></p>"#,
                    html::message(
                        "error",
                        &format!("Denied: {}.", tenantry_axum::reason_text(&decision.reason()))
                    )
                )
            }
            _ => format!(
                r#"<h1 id="refused">Access could not be decided</h1>{}"#,
                html::message("error", "The authorization check failed; nothing was shown. Try again.")
            ),
        };
        self.page(status, "Access refused", &body)
    }

    /// The 404 page for an id that names nothing of this tenant.
    fn no_such(&self, what: &str) -> Response {
        self.error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("That {what} does not exist in this tenant."),
        )
    }

    /// Redirects to the Users page after a change (POST/redirect/GET).
    fn back_to_users(&self) -> Response {
        Redirect::to("/users").into_response()
    }
}

/// A message as a sentence: capitalised, ending with a period.
fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// A service error as a sentence for the page, naming its rule.
fn error_text(e: &tenantry::Error) -> String {
    match e.rule() {
        Some(rule) => sentence(&format!("{e} ({rule})")),
        None => sentence(&e.to_string()),
    }
}

// ------------------------------------------------------------------- forms

/// A URL-encoded form body as name/value pairs (repeated names allowed, e.g. `perm`).
pub(crate) struct Fields(Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| (StatusCode::BAD_REQUEST, "the form could not be read").into_response())?;
        Ok(Fields(
            form_urlencoded::parse(&bytes).into_owned().collect(),
        ))
    }
}

impl Fields {
    /// The first value of `name`, or "".
    fn text(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether a checkbox was checked.
    fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Every value of `name`.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The checked permission boxes (D4: an unknown one is an error).
    fn permissions(&self) -> Result<Permissions, String> {
        Permissions::parse_list(self.all("perm")).map_err(|e| sentence(&e.to_string()))
    }
}

/// Reads a query string into pairs.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
