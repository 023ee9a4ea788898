//! The console's `/webhooks` page (feature `webhooks`) end to end, through
//! `tower::ServiceExt::oneshot`, over the in-memory tenantry store and the in-memory
//! endpoint store: an admin lists, registers, rotates, disables, enables and removes
//! endpoints and sees their delivery state; a secret is shown exactly once (never on a later
//! page, the audit page included, nor in a header or a log line); non-admins are refused
//! (D7) and do not see the page in their navigation; a POST without its CSRF token changes
//! nothing; bad URLs are a 422 in the form; every link and form follows the mount.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, StatusCode, header};
use tenantry_axum::console::{self, ConsoleConfig};
use tenantry_axum::{Guard, Identify, async_trait};
use tenantry_service::prelude::*;
use tenantry_service::{ActorRef, AuditAction, InMemoryStore, Outcome, TenantId, UserId};
use tenantry_webhooks::{
    Dispatcher, DispatcherSettings, EndpointId, EndpointStore, InMemoryEndpointStore, Webhooks,
};
use tower::ServiceExt;

const SECRET: [u8; 32] = [0x5b; 32];

/// The test's "authentication": `x-identity: <tenant>/<user>`.
struct HeaderIdentity;

#[async_trait]
impl Identify for HeaderIdentity {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        let text = parts.headers.get("x-identity")?.to_str().ok()?;
        let (tenant, user) = text.split_once('/')?;
        Some((tenant.parse().ok()?, user.parse().ok()?))
    }
}

struct World {
    app: Tenantry,
    endpoints: Arc<InMemoryEndpointStore>,
    hooks: Webhooks,
    tenant: TenantId,
    ada: UserId,
    erin: UserId,
    bob: UserId,
    prefix: String,
    router: Router,
}

/// Acme: ada (admin), erin (a user holding `users:view`), bob (a user without it). The
/// console at `prefix`, with the webhook admin when `with_webhooks`.
async fn world_at(prefix: &str, with_webhooks: bool) -> World {
    let app = Tenantry::builder(InMemoryStore::new())
        .mailer(InMemoryMailer::new())
        .base_url(format!("https://host.test{prefix}/accept"))
        .build()
        .unwrap();
    let (tenant, ada) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (email, grants) in [("erin@acme.test", "users:view"), ("bob@acme.test", "")] {
        let invited = app
            .invite(
                tenant,
                ada,
                &InviteRequest {
                    email: Email::parse(email).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants: Permissions::parse_list(grants.split(',').filter(|s| !s.is_empty()))
                        .unwrap(),
                },
            )
            .await
            .unwrap();
        let token = invited.accept_link.token().unwrap();
        app.accept_invitation(&token, email).await.unwrap();
        ids.push(invited.user.id);
    }
    let endpoints = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), endpoints.clone());
    let mut config = ConsoleConfig::new(SECRET);
    if with_webhooks {
        config = config.webhooks(hooks.clone());
    }
    let guard = Guard::new(app.clone(), HeaderIdentity);
    let router = Router::new().nest(prefix, console::router(guard, config));
    World {
        app,
        endpoints,
        hooks,
        tenant,
        ada,
        erin: ids[0],
        bob: ids[1],
        prefix: prefix.to_owned(),
        router,
    }
}

/// One response, read whole.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn csrf(&self) -> String {
        between(&self.body, r#"name="csrf" value=""#, "\"").expect("a form with a CSRF token")
    }

    /// The secret the page shows, if any.
    fn secret(&self) -> Option<String> {
        between(&self.body, r#"id="new-secret">"#, "</code>")
    }

    /// Everything a client receives, headers included.
    fn everything(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (k, v) in &self.headers {
            let _ = writeln!(out, "{k}: {}", v.to_str().unwrap_or(""));
        }
        out.push_str(&self.body);
        out
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].to_owned())
}

/// A browser signed in as `who`, holding the console's cookie.
struct Browser<'w> {
    w: &'w World,
    who: Option<UserId>,
    cookie: Option<String>,
    /// Every page this browser received, in order.
    seen: Vec<(String, String)>,
}

impl<'w> Browser<'w> {
    fn new(w: &'w World, who: Option<UserId>) -> Self {
        Browser {
            w,
            who,
            cookie: None,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: String) -> Page {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.w.prefix));
        if let Some(u) = self.who {
            b = b.header("x-identity", format!("{}/{u}", self.w.tenant));
        }
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, format!("tenantry_csrf={c}"));
        }
        if method == "POST" {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let response = self
            .w
            .router
            .clone()
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        };
        if let Some(c) = page
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("tenantry_csrf="))
        {
            self.cookie = Some(c.split(';').next().unwrap_or("").to_owned());
        }
        self.seen
            .push((format!("{method} {path}"), page.everything()));
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, String::new()).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        token: Option<&str>,
        fields: &[(&str, &str)],
    ) -> Page {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = token {
            s.append_pair("csrf", t);
        }
        for (k, v) in fields {
            s.append_pair(k, v);
        }
        self.send("POST", path, s.finish()).await
    }

    /// Opens `/webhooks` and posts `fields` to `path` with its token.
    async fn submit(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get("/webhooks").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let token = page.csrf();
        self.post_with(path, Some(&token), fields).await
    }

    async fn follow(&mut self, page: &Page) -> Page {
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let location = page.location().to_owned();
        let path = location
            .strip_prefix(&self.w.prefix)
            .unwrap_or_else(|| panic!("{location} is outside {}", self.w.prefix))
            .to_owned();
        self.get(&path).await
    }
}

/// The token the console would put in `b`'s forms (same construction, same secret): for
/// a page without a form.
fn token_of(b: &Browser<'_>) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&SECRET).unwrap();
    mac.update(b"tenantry-console-csrf-v1\0");
    mac.update(b.cookie.as_deref().unwrap().as_bytes());
    mac.update(b"\0");
    mac.update(format!("user:{}/{}", b.w.tenant, b.who.unwrap()).as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The row of the endpoint `id`.
fn row(body: &str, id: EndpointId) -> String {
    between(body, &format!(r#"data-endpoint="{id}""#), "</tr>")
        .unwrap_or_else(|| panic!("no row for {id} in {body}"))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The accessibility rules the console keeps on every page.
fn assert_accessible(what: &str, body: &str) {
    assert!(
        body.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{what}"
    );
    assert_eq!(body.matches("<h1").count(), 1, "{what}: one h1");
    assert!(!body.contains("<script"), "{what}: no script");
    assert!(!body.contains(" style=\""), "{what}: no style attribute");
    assert_eq!(
        body.matches("<caption").count(),
        body.matches("<table").count(),
        "{what}: captions"
    );
    let mut rest = body;
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..i + rest[i..].find('>').unwrap()];
        rest = &rest[i + 6..];
        if tag.contains(r#"type="hidden""#) {
            continue;
        }
        let id = between(tag, r#"id=""#, "\"").unwrap_or_else(|| panic!("{what}: {tag}"));
        assert!(
            body.contains(&format!(r#"for="{id}""#)),
            "{what}: unlabelled {tag}"
        );
    }
}

/// Records every event and span field logged on this thread.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut log = self.0.lock().unwrap();
        log.push('\n');
        span.record(&mut Fields(&mut log));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut log = self.0.lock().unwrap();
        log.push('\n');
        event.record(&mut Fields(&mut log));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------------- tests

/// The whole admin flow at one mount; returns nothing, asserts everything.
async fn admin_flow(prefix: &str) {
    let w = world_at(prefix, true).await;
    let capture = Capture::default();
    let _logging = tracing::subscriber::set_default(capture.clone());
    tracing::info!(marker = "capture-works");
    let mut ada = Browser::new(&w, Some(w.ada));

    // The navigation links the page for an admin; the page starts empty.
    let users = ada.get("/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(
        users
            .body
            .contains(&format!(r#"id="nav-webhooks" href="{prefix}/webhooks""#)),
        "{}",
        users.body
    );
    let empty = ada.get("/webhooks").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert!(empty.body.contains(r#"id="no-endpoints""#));
    assert!(
        empty
            .body
            .contains(&format!(r#"action="{prefix}/webhooks""#))
    );
    assert_accessible("empty list", &empty.body);

    // Register: the answer shows the secret, once.
    let made = ada
        .submit(
            "/webhooks",
            &[
                ("url", "https://hooks.acme.test/in?k=1"),
                ("event-user_invited", "on"),
                ("event-user_deleted", "on"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.secret().expect("the new secret is shown");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(made.everything().matches(&secret).count(), 1);
    assert_accessible("registered", &made.body);
    let listed = w.hooks.list(w.tenant, ActorRef::User(w.ada)).await.unwrap();
    assert_eq!(listed.len(), 1);
    let id = listed[0].id;
    assert_eq!(
        listed[0].events,
        [AuditAction::UserInvited, AuditAction::UserDeleted]
    );
    let stored = w.endpoints.get(w.tenant, id).await.unwrap().unwrap();
    assert_eq!(
        stored.secrets.current.expose(),
        secret,
        "the shown secret signs"
    );
    let r = row(&made.body, id);
    assert!(r.contains("https://hooks.acme.test/in?k=1"), "{r}");
    assert!(
        r.contains("user_invited") && r.contains("user_deleted"),
        "{r}"
    );
    assert!(r.contains("enabled"), "{r}");
    for action in ["rotate", "disable", "remove"] {
        assert!(
            r.contains(&format!(r#"action="{prefix}/webhooks/{id}/{action}""#)),
            "{action}: {r}"
        );
    }

    // A bad URL is refused in the form (422, what was typed kept), nothing registered.
    let bad = ada
        .submit(
            "/webhooks",
            &[
                ("url", "ftp://hooks.acme.test/x"),
                ("event-signed_in", "on"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(
        strip_tags(&bad.body).contains("Invalid webhook URL: the scheme must be http or https."),
        "{}",
        bad.body
    );
    assert!(bad.body.contains(r#"value="ftp://hooks.acme.test/x""#));
    assert!(
        bad.body
            .contains(r#"id="event-signed_in" type="checkbox" name="event-signed_in" checked"#)
    );
    assert!(bad.secret().is_none());
    assert_eq!(w.endpoints.list(w.tenant).await.unwrap().len(), 1);

    // Delivery state: the dispatcher tries a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = w
        .hooks
        .register(
            w.tenant,
            ActorRef::User(w.ada),
            &format!("http://127.0.0.1:{port}/hooks"),
            &[],
        )
        .await
        .unwrap();
    let dispatcher =
        Dispatcher::new(&w.app, w.endpoints.clone(), DispatcherSettings::default()).unwrap();
    let report = dispatcher.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let listing = ada.get("/webhooks").await;
    let r = strip_tags(&row(&listing.body, down.endpoint.id));
    assert!(r.contains("all events"), "{r}");
    assert!(r.contains("Last error: connection failed"), "{r}");
    assert!(r.contains("Failed attempts in a row: 1"), "{r}");
    assert!(r.contains("Next attempt 20"), "{r}");
    assert!(!listing.body.contains(down.secret.expose()));

    // Rotate: a new secret shown once; the old one keeps signing for the grace period.
    let rotated = ada.submit(&format!("/webhooks/{id}/rotate"), &[]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.secret().expect("the rotated secret is shown");
    assert_ne!(second, secret);
    assert_eq!(rotated.everything().matches(&second).count(), 1);
    assert!(
        !rotated.body.contains(&secret),
        "the old secret is not shown again"
    );
    assert!(
        strip_tags(&rotated.body).contains("The previous secret keeps signing beside it until")
    );
    let stored = w.endpoints.get(w.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.secrets.current.expose(), second);
    let (old, until) = stored
        .secrets
        .previous
        .clone()
        .expect("the old secret in its grace");
    assert_eq!(old.expose(), secret);
    let grace = until - w.app.now();
    assert!(
        grace > time::Duration::hours(23) && grace <= time::Duration::hours(24),
        "{grace}"
    );

    // Disable, then enable: a redirect with a fixed message; the state follows.
    let off = ada.submit(&format!("/webhooks/{id}/disable"), &[]).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.body);
    assert_eq!(off.location(), format!("{prefix}/webhooks?done=disabled"));
    let page = ada.follow(&off).await;
    assert!(strip_tags(&page.body).contains("The endpoint was disabled."));
    let r = strip_tags(&row(&page.body, id));
    assert!(
        r.contains("disabled") && r.contains("Disabled by an admin."),
        "{r}"
    );
    assert!(row(&page.body, id).contains(&format!("{prefix}/webhooks/{id}/enable")));
    assert!(
        !w.endpoints
            .get(w.tenant, id)
            .await
            .unwrap()
            .unwrap()
            .endpoint
            .enabled
    );
    let on = ada.submit(&format!("/webhooks/{id}/enable"), &[]).await;
    assert_eq!(on.location(), format!("{prefix}/webhooks?done=enabled"));
    let page = ada.follow(&on).await;
    assert!(strip_tags(&page.body).contains("The endpoint was enabled."));
    assert!(
        w.endpoints
            .get(w.tenant, id)
            .await
            .unwrap()
            .unwrap()
            .endpoint
            .enabled
    );

    // Disabled by the dispatcher: the page says so, with when.
    assert!(
        w.endpoints
            .disable(w.tenant, down.endpoint.id, w.app.now())
            .await
            .unwrap()
    );
    let page = ada.get("/webhooks").await;
    let r = strip_tags(&row(&page.body, down.endpoint.id));
    assert!(r.contains("Disabled automatically 20"), "{r}");
    assert!(r.contains("after failing too long"), "{r}");

    // Remove.
    let gone = ada.submit(&format!("/webhooks/{id}/remove"), &[]).await;
    assert_eq!(gone.location(), format!("{prefix}/webhooks?done=removed"));
    let page = ada.follow(&gone).await;
    assert!(strip_tags(&page.body).contains("The endpoint was removed."));
    assert!(!page.body.contains(&format!(r#"data-endpoint="{id}""#)));
    assert!(w.endpoints.get(w.tenant, id).await.unwrap().is_none());
    // A removed or garbled id: 404, nothing changed.
    let again = ada.submit(&format!("/webhooks/{id}/remove"), &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let garbled = ada.submit("/webhooks/not-an-id/rotate", &[]).await;
    assert_eq!(garbled.status, StatusCode::NOT_FOUND, "{}", garbled.body);

    // The audit log has the changes, never a secret.
    let audit = ada.get("/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let text = strip_tags(&audit.body);
    assert!(text.contains("webhook endpoint added"), "{text}");
    assert!(text.contains("webhook endpoint removed"), "{text}");
    for path in [
        "/webhooks",
        "/users",
        "/deliveries",
        "/tenant",
        "/templates",
    ] {
        ada.get(path).await;
    }

    // Each secret was on exactly one page: the one answering the form that made it.
    for s in [&secret, &second] {
        let on: Vec<&str> = ada
            .seen
            .iter()
            .filter(|(_, page)| page.contains(s.as_str()))
            .map(|(what, _)| what.as_str())
            .collect();
        assert_eq!(on.len(), 1, "a secret was shown on {on:?}");
    }
    let log = capture.0.lock().unwrap().clone();
    assert!(log.contains("capture-works"), "the capture records: {log}");
    for s in [&secret, &second, &down.secret.expose().to_owned()] {
        assert!(!log.contains(s.as_str()), "a secret was logged");
    }
}

#[tokio::test]
async fn d13_an_admin_registers_rotates_disables_enables_and_removes_and_sees_the_delivery_state() {
    admin_flow("/settings").await;
}

#[tokio::test]
async fn d13_the_page_works_mounted_under_another_prefix() {
    admin_flow("/t/acme/admin/console").await;
}

#[tokio::test]
async fn d7_non_admins_are_refused_and_do_not_see_the_page() {
    let w = world_at("/settings", true).await;
    let made = w
        .hooks
        .register(
            w.tenant,
            ActorRef::User(w.ada),
            "https://hooks.acme.test/in",
            &[],
        )
        .await
        .unwrap();
    let id = made.endpoint.id;

    // erin holds users:view but is no admin.
    let mut erin = Browser::new(&w, Some(w.erin));
    let users = erin.get("/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(!users.body.contains("/webhooks"), "no link for a non-admin");
    let page = erin.get("/webhooks").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        strip_tags(&page.body).contains("Only an active admin of the tenant manages its webhooks.")
    );
    assert!(!page.body.contains("hooks.acme.test"), "no endpoint shown");
    assert!(!page.body.contains("/webhooks"), "no link for a non-admin");

    // Her forged POSTs (with a valid token of another page) are refused, and recorded.
    let token = token_of(&erin);
    let before = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap()
        .len();
    let forged = erin
        .post_with("/webhooks", Some(&token), &[("url", "https://evil.test/")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert!(forged.secret().is_none());
    for action in ["rotate", "disable", "remove"] {
        let p = erin
            .post_with(&format!("/webhooks/{id}/{action}"), Some(&token), &[])
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{action}: {}", p.body);
        assert!(p.secret().is_none());
    }
    let stored = w.endpoints.get(w.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.secrets.current, made.secret, "not rotated");
    assert!(stored.secrets.previous.is_none());
    assert!(stored.endpoint.enabled);
    assert_eq!(w.endpoints.list(w.tenant).await.unwrap().len(), 1);
    let log = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap();
    let refused = log[before..]
        .iter()
        .filter(|r| matches!(r.event.outcome, Outcome::Refused { .. }))
        .count();
    assert_eq!(refused, 4, "each refused attempt is recorded");

    // bob holds nothing: 403 too. Nobody signed in: 401.
    let mut bob = Browser::new(&w, Some(w.bob));
    assert_eq!(bob.get("/webhooks").await.status, StatusCode::FORBIDDEN);
    let mut nobody = Browser::new(&w, None);
    assert_eq!(
        nobody.get("/webhooks").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn d7_a_post_without_its_csrf_token_changes_nothing() {
    let w = world_at("/settings", true).await;
    let made = w
        .hooks
        .register(
            w.tenant,
            ActorRef::User(w.ada),
            "https://hooks.acme.test/in",
            &[],
        )
        .await
        .unwrap();
    let id = made.endpoint.id;
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get("/webhooks").await;
    assert_eq!(page.status, StatusCode::OK);
    let token = page.csrf();
    for (path, fields) in [
        ("/webhooks".to_owned(), vec![("url", "https://other.test/")]),
        (format!("/webhooks/{id}/rotate"), vec![]),
        (format!("/webhooks/{id}/disable"), vec![]),
        (format!("/webhooks/{id}/remove"), vec![]),
    ] {
        for t in [None, Some("garbled"), Some(&token[1..])] {
            let p = ada.post_with(&path, t, &fields).await;
            assert_eq!(p.status, StatusCode::FORBIDDEN, "{path} {t:?}: {}", p.body);
            assert!(
                strip_tags(&p.body).contains("The form has expired"),
                "{}",
                p.body
            );
            assert!(p.secret().is_none());
        }
    }
    let rows = w.endpoints.list(w.tenant).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].secrets.current, made.secret);
    assert!(rows[0].endpoint.enabled);
    // The same form with its token goes through.
    let ok = ada
        .post_with(&format!("/webhooks/{id}/disable"), Some(&token), &[])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
}

#[tokio::test]
async fn without_a_webhook_admin_the_page_does_not_exist() {
    let w = world_at("/settings", false).await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let users = ada.get("/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(!users.body.contains("/webhooks"));
    assert_eq!(ada.get("/webhooks").await.status, StatusCode::NOT_FOUND);
    let token = token_of(&ada);
    assert_eq!(
        token,
        ada.get("/tenant").await.csrf(),
        "the token construction"
    );
    let p = ada
        .post_with(
            "/webhooks",
            Some(&token),
            &[("url", "https://hooks.acme.test/")],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(w.endpoints.list(w.tenant).await.unwrap().is_empty());
}

/// An endpoint store that fails every call, with a detail that must stay in the log.
#[derive(Debug)]
struct Failing;

fn broken() -> tenantry_webhooks::EndpointStoreError {
    tenantry_webhooks::EndpointStoreError::Backend {
        backend: "memory",
        source: "disk on fire at /var/lib/hooks".into(),
    }
}

#[async_trait]
impl EndpointStore for Failing {
    async fn insert(
        &self,
        _: &tenantry_webhooks::StoredEndpoint,
    ) -> Result<(), tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn get(
        &self,
        _: TenantId,
        _: EndpointId,
    ) -> Result<Option<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError>
    {
        Err(broken())
    }
    async fn list(
        &self,
        _: TenantId,
    ) -> Result<Vec<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn all(
        &self,
    ) -> Result<Vec<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn update(
        &self,
        _: TenantId,
        _: EndpointId,
        _: &str,
        _: &[AuditAction],
        _: bool,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn set_secrets(
        &self,
        _: TenantId,
        _: EndpointId,
        _: &tenantry_webhooks::Secrets,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn save_status(
        &self,
        _: TenantId,
        _: EndpointId,
        _: &tenantry_webhooks::DeliveryStatus,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn disable(
        &self,
        _: TenantId,
        _: EndpointId,
        _: time::OffsetDateTime,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
    async fn remove(
        &self,
        _: TenantId,
        _: EndpointId,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        Err(broken())
    }
}

#[tokio::test]
async fn a_failing_endpoint_store_is_a_503_with_a_generic_text_and_the_detail_in_the_log() {
    let mut w = world_at("/settings", true).await;
    let failing = Webhooks::new(w.app.clone(), Arc::new(Failing));
    let guard = Guard::new(w.app.clone(), HeaderIdentity);
    w.router = Router::new().nest(
        "/settings",
        console::router(guard, ConsoleConfig::new(SECRET).webhooks(failing)),
    );
    let capture = Capture::default();
    let _logging = tracing::subscriber::set_default(capture.clone());
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get("/webhooks").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert!(strip_tags(&page.body).contains("The webhook settings are unavailable right now."));
    let token = token_of(&ada);
    let post = ada
        .post_with(
            "/webhooks",
            Some(&token),
            &[("url", "https://hooks.acme.test/")],
        )
        .await;
    assert_eq!(
        post.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        post.body
    );
    for p in [&page, &post] {
        assert!(!p.body.contains("disk on fire"), "{}", p.body);
        assert!(p.secret().is_none());
    }
    assert!(capture.0.lock().unwrap().contains("disk on fire"));
}

#[tokio::test]
async fn a_zero_grace_drops_the_old_secret_and_user_text_is_escaped() {
    let w = world_at("/settings", true).await;
    let guard = Guard::new(w.app.clone(), HeaderIdentity);
    let config = ConsoleConfig::new(SECRET)
        .webhooks(w.hooks.clone())
        .webhook_rotation_grace(time::Duration::seconds(-5));
    let w = World {
        router: Router::new().nest("/settings", console::router(guard, config)),
        ..w
    };
    let mut ada = Browser::new(&w, Some(w.ada));
    let made = ada
        .submit(
            "/webhooks",
            &[("url", "https://hooks.acme.test/in?q=<b>x</b>&r=\"y\"")],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert!(!made.body.contains("<b>x</b>"), "escaped");
    assert!(made.body.contains("&lt;b&gt;x&lt;/b&gt;"), "{}", made.body);
    let id = w.endpoints.list(w.tenant).await.unwrap()[0].endpoint.id;
    assert!(row(&made.body, id).contains("all events"));
    let rotated = ada.submit(&format!("/webhooks/{id}/rotate"), &[]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert!(!strip_tags(&rotated.body).contains("The previous secret keeps signing"));
    let stored = w.endpoints.get(w.tenant, id).await.unwrap().unwrap();
    assert!(
        stored.secrets.previous.is_none(),
        "a negative grace is taken as zero"
    );
    assert_eq!(
        Some(stored.secrets.current.expose().to_owned()),
        rotated.secret()
    );
}
