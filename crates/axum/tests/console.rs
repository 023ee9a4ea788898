//! The console end to end over SQLite, through `tower::ServiceExt::oneshot`: every page for
//! an admin, each action, the views of a viewer and of a user without `users:view`, and the
//! security regressions (no live link anywhere, the accept page never switches users,
//! stateless CSRF, headers on every response, body limit, storage errors, cursors, bad
//! forms), nested at two prefixes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, StatusCode, header};
use tenantry_axum::console::{self, ConsoleConfig};
use tenantry_axum::{Guard, Identify, async_trait};
use tenantry_service::prelude::*;
use tenantry_service::{AuditAction, Cursor, Store, TemplateId, TenantId, UserId, token_from_link};
use tenantry_sqlite::SqliteStore;
use tower::ServiceExt;

const SECRET: [u8; 32] = [0x5a; 32];
const SIGN_IN: &str = "https://host.test/login";

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
    sqlite: SqliteStore,
    mailer: InMemoryMailer,
    tenant: TenantId,
    ada: UserId,
    bob: UserId,
    erin: UserId,
    carol: UserId,
    agent: TemplateId,
    manager: TemplateId,
    prefix: String,
    router: Router,
}

fn invite_request(
    email: &str,
    template_id: Option<TemplateId>,
    grants: Permissions,
) -> InviteRequest {
    InviteRequest {
        email: Email::parse(email).unwrap(),
        role: Role::User,
        template_id,
        crm_access: false,
        grants,
    }
}

/// The demo tenant: 5 seats; ada (admin), bob (Support agent, active), erin (`users:view`,
/// active), carol (Sales manager, invited): 4 seats used.
async fn world_at(prefix: &str, limit: Option<u32>) -> World {
    let sqlite = SqliteStore::in_memory().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(store)
        .mailer(mailer.clone())
        .base_url(format!("https://host.test{prefix}/accept"))
        .build()
        .unwrap();
    let (tenant, ada) = app
        .create_tenant(
            "Acme Support",
            limit,
            Email::parse("ada@acme.test").unwrap(),
        )
        .await
        .unwrap();
    let agent = app
        .create_template(
            tenant,
            ada,
            "Support agent",
            "conversations:view,conversations:create".parse().unwrap(),
        )
        .await
        .unwrap()
        .id;
    let manager = app
        .create_template(
            tenant,
            ada,
            "Sales manager",
            "analytics:view,integrations:view".parse().unwrap(),
        )
        .await
        .unwrap()
        .id;
    let mut ids = Vec::new();
    for (email, template, grants, accept) in [
        ("bob@acme.test", Some(agent), Permissions::empty(), true),
        (
            "erin@acme.test",
            None,
            "users:view,analytics:view".parse().unwrap(),
            true,
        ),
        (
            "carol@acme.test",
            Some(manager),
            Permissions::empty(),
            false,
        ),
    ] {
        let invited = app
            .invite(tenant, ada, &invite_request(email, template, grants))
            .await
            .unwrap();
        if accept {
            let token = invited.accept_link.token().unwrap();
            app.accept_invitation(&token, email).await.unwrap();
        }
        ids.push(invited.user.id);
    }
    let guard = Guard::new(app.clone(), HeaderIdentity);
    let config = ConsoleConfig::new(SECRET).sign_in_url(SIGN_IN);
    let router = Router::new().nest(prefix, console::router(guard, config));
    World {
        app,
        sqlite,
        mailer,
        tenant,
        ada,
        bob: ids[0],
        erin: ids[1],
        carol: ids[2],
        agent,
        manager,
        prefix: prefix.to_owned(),
        router,
    }
}

async fn world() -> World {
    world_at("/settings", Some(5)).await
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

    /// The value of the console's cookie this response sets.
    fn new_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("tenantry_csrf="))
            .map(|v| v.split(';').next().unwrap_or("").to_owned())
    }

    /// The CSRF token of the page's first form.
    fn csrf(&self) -> String {
        attr_after(&self.body, r#"name="csrf" value=""#)
            .expect("the page has a form with a CSRF token")
    }
}

fn attr_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

/// A browser: who it is signed in as (the host's identity) and the cookie it holds.
struct Browser<'w> {
    w: &'w World,
    who: Option<(TenantId, UserId)>,
    cookie: Option<String>,
}

impl<'w> Browser<'w> {
    fn new(w: &'w World, who: Option<UserId>) -> Self {
        Browser {
            w,
            who: who.map(|u| (w.tenant, u)),
            cookie: None,
        }
    }

    fn request(&self, method: &str, path: &str, body: Body) -> Request<Body> {
        let uri = format!("{}{path}", self.w.prefix);
        let mut b = Request::builder().method(method).uri(uri);
        if let Some((t, u)) = self.who {
            b = b.header("x-identity", format!("{t}/{u}"));
        }
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, format!("tenantry_csrf={c}"));
        }
        if method == "POST" {
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        b.body(body).unwrap()
    }

    async fn send(&mut self, request: Request<Body>) -> Page {
        let response = self.w.router.clone().oneshot(request).await.unwrap();
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
        if let Some(c) = page.new_cookie() {
            self.cookie = Some(c);
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.request("GET", path, Body::empty());
        self.send(r).await
    }

    async fn post_raw(&mut self, path: &str, body: String) -> Page {
        let r = self.request("POST", path, Body::from(body));
        self.send(r).await
    }

    /// Posts `fields` with `token` as the CSRF field.
    async fn post_with(&mut self, path: &str, token: &str, fields: &[(&str, &str)]) -> Page {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("csrf", token);
        for (k, v) in fields {
            s.append_pair(k, v);
        }
        self.post_raw(path, s.finish()).await
    }

    /// Opens `form_page` and posts `fields` to `path` with its CSRF token.
    async fn submit(&mut self, form_page: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_page).await;
        assert_eq!(page.status, StatusCode::OK, "{form_page}: {}", page.body);
        let token = page.csrf();
        self.post_with(path, &token, fields).await
    }

    /// Follows a `303` to the page it names (within the console).
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

fn row<'a>(body: &'a str, email: &str) -> Option<&'a str> {
    let start = body.find(&format!(r#"data-email="{email}""#))?;
    let end = body[start..].find("</tr>")?;
    Some(&body[start..start + end])
}

fn cell(row: &str, class: &str) -> String {
    let start = row.find(&format!(r#"<td class="{class}">"#)).unwrap();
    let end = row[start..].find("</td>").unwrap();
    strip_tags(&row[start..start + end])
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
    out.trim().to_owned()
}

fn seats(body: &str) -> String {
    let start = body.find(r#"id="seats""#).unwrap();
    let open = body[start..].find('>').unwrap() + start + 1;
    let end = body[open..].find("</span>").unwrap() + open;
    body[open..end].to_owned()
}

/// Every opening tag `<name …>` of the page.
fn tags<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if after.starts_with([' ', '>', '/']) {
            let end = after.find('>').unwrap();
            out.push(&rest[i..i + open.len() + end + 1]);
        }
        rest = &rest[i + open.len()..];
    }
    out
}

/// The href of the page's "Next page" link.
fn next_link(body: &str) -> Option<String> {
    tags(body, "a")
        .into_iter()
        .find(|t| t.contains(r#"id="next-page""#))
        .and_then(|t| attr(t, "href"))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    attr_after(tag, &format!(r#" {name}=""#))
}

/// The accessibility rules the console keeps on every page.
fn assert_accessible(path: &str, body: &str) {
    assert!(
        body.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{path}: lang"
    );
    assert_eq!(body.matches("<h1").count(), 1, "{path}: one h1");
    assert!(!body.contains("tabindex"), "{path}: no tabindex");
    assert!(!body.contains("<script"), "{path}: no script");
    assert!(
        !body.contains(" style=\""),
        "{path}: no style attribute (CSP)"
    );
    let labels: Vec<String> = tags(body, "label")
        .iter()
        .filter_map(|t| attr(t, "for"))
        .collect();
    for control in tags(body, "input").into_iter().chain(tags(body, "select")) {
        if attr(control, "type").as_deref() == Some("hidden") {
            continue;
        }
        let labelled = attr(control, "aria-label").is_some()
            || attr(control, "id").is_some_and(|id| labels.contains(&id));
        assert!(labelled, "{path}: unlabelled control {control}");
    }
    for label in &labels {
        assert!(
            body.contains(&format!(r#"id="{label}""#)),
            "{path}: label for a missing control {label}"
        );
    }
    let tables = body.matches("<table").count();
    assert_eq!(body.matches("<caption").count(), tables, "{path}: captions");
    assert!(
        body.matches("<th ").count() >= tables,
        "{path}: header cells"
    );
}

fn assert_secure_headers(what: &str, page: &Page) {
    let h = |name: header::HeaderName| {
        page.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    let csp = h(header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "style-src 'sha256-",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp} lacks {directive}"
        );
    }
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
    assert_eq!(h(header::REFERRER_POLICY), "no-referrer", "{what}");
    assert_eq!(h(header::X_FRAME_OPTIONS), "DENY", "{what}");
    assert_eq!(h(header::CACHE_CONTROL), "no-store", "{what}");
}

/// The page's style block hashes to the CSP's style source.
fn assert_style_hash(what: &str, page: &Page) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let start = page.body.find("<style>").unwrap() + "<style>".len();
    let end = page.body.find("</style>").unwrap();
    let hash = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(&page.body.as_bytes()[start..end]));
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{what}: {csp}");
}

// ------------------------------------------------------------------- pages and actions

#[tokio::test]
async fn every_page_renders_for_an_admin() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let pages = [
        "/users".to_owned(),
        "/users?status=invited".to_owned(),
        "/users/invite".to_owned(),
        format!("/users/{}/edit", w.bob),
        format!("/users/{}/edit", w.carol),
        format!("/users/{}/delete", w.bob),
        "/templates".to_owned(),
        "/templates/new".to_owned(),
        format!("/templates/{}/edit", w.agent),
        format!("/templates/{}/delete", w.agent),
        "/audit".to_owned(),
        "/deliveries".to_owned(),
        "/tenant".to_owned(),
    ];
    for path in &pages {
        let page = ada.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            page.body
                .contains(r#"<strong id="signed-in-as">ada@acme.test</strong>"#),
            "{path}"
        );
        assert_eq!(
            page.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_secure_headers(path, &page);
        assert_style_hash(path, &page);
        assert_accessible(path, &page.body);
    }
    // The Users page: the seed's columns and rows, seats, and every action for an admin.
    let users = ada.get("/users").await;
    for column in [
        "Email",
        "Role",
        "Role template",
        "Status",
        "CRM access",
        "Last login",
        "Actions",
    ] {
        assert!(
            users
                .body
                .contains(&format!(r#"<th scope="col">{column}</th>"#)),
            "{column}"
        );
    }
    let bob = row(&users.body, "bob@acme.test").unwrap();
    assert_eq!(cell(bob, "template"), "Support agent");
    assert_eq!(cell(bob, "status"), "active");
    let carol = row(&users.body, "carol@acme.test").unwrap();
    assert_eq!(cell(carol, "status"), "invited");
    assert_eq!(cell(carol, "last-login"), "never");
    assert!(carol.contains("Resend invite"));
    assert_eq!(seats(&users.body), "4 of 5 seats used");
    for action in [
        r#"id="invite-user""#,
        r#"class="edit""#,
        r#"class="delete""#,
        r#"id="new-template""#,
    ] {
        assert!(users.body.contains(action), "{action}");
    }
    // `/` goes to the Users page.
    let root = ada.get("").await;
    assert_eq!(root.location(), "/settings/users");
}

#[tokio::test]
async fn invite_adds_an_invited_row_takes_a_seat_and_disables_inviting_at_the_limit() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let sent = ada
        .submit(
            "/users/invite",
            "/users/invite",
            &[
                ("email", "dana@acme.test"),
                ("role", "user"),
                ("template", ""),
                ("crm", "on"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert!(
        sent.location()
            .starts_with("/settings/users?done=invited&user=")
    );
    assert!(
        !sent.location().contains("dana"),
        "no user text in the redirect"
    );
    let users = ada.follow(&sent).await;
    assert!(
        users.body.contains("Invitation sent to dana@acme.test"),
        "{}",
        users.body
    );
    let dana = row(&users.body, "dana@acme.test").unwrap();
    assert_eq!(cell(dana, "status"), "invited");
    assert_eq!(cell(dana, "crm"), "Yes");
    assert_eq!(seats(&users.body), "5 of 5 seats used");
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 5);
    // At the limit: the warning, and the action disabled on the table and the form.
    assert!(users.body.contains(r#"id="seat-warning""#));
    let button = tags(&users.body, "button")
        .into_iter()
        .find(|t| t.contains(r#"id="invite-user""#))
        .unwrap();
    assert!(button.contains(" disabled"), "{button}");
    assert!(!users.body.contains(r#"href="/settings/users/invite""#));
    let form = ada.get("/users/invite").await;
    let submit = tags(&form.body, "button")
        .into_iter()
        .find(|t| t.contains(r#"id="send-invite""#))
        .unwrap();
    assert!(submit.contains(" disabled"), "{submit}");
    assert!(form.body.contains(r#"id="seat-warning""#));
    // A request sent anyway is refused by the seat limit and adds nothing.
    let token = form.csrf();
    let refused = ada
        .post_with(
            "/users/invite",
            &token,
            &[
                ("email", "eve@acme.test"),
                ("role", "user"),
                ("template", ""),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains("seat"), "{}", refused.body);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 5);
}

#[tokio::test]
async fn edit_with_the_grid_saves_the_template_and_permissions_and_marks_the_templates() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let edit = format!("/users/{}/edit", w.erin);
    let page = ada.get(&edit).await;
    // The 6 × 5 grid of labelled checkboxes, erin's grants checked.
    assert_eq!(
        page.body.matches(r#"type="checkbox" name="perm""#).count(),
        30
    );
    let users_view = tags(&page.body, "input")
        .into_iter()
        .find(|t| t.contains(r#"id="perm-users-view""#))
        .unwrap();
    assert!(users_view.contains(" checked"), "{users_view}");
    // A mark per template on each cell it grants, shown by a rule for that template.
    for (id, perms) in [
        (w.agent, ["conversations-view", "conversations-create"]),
        (w.manager, ["analytics-view", "integrations-view"]),
    ] {
        for p in perms {
            let cell_start = page.body.find(&format!(r#"id="perm-{p}""#)).unwrap();
            let cell_end = cell_start + page.body[cell_start..].find("</td>").unwrap();
            assert!(
                page.body[cell_start..cell_end].contains(&format!("via-{id}")),
                "{p} marked for {id}"
            );
        }
        assert!(page.body.contains(&format!(
            r#"#edit-form:has(#template option[value="{id}"]:checked) .via-{id}{{display:inline-block}}"#
        )));
    }
    assert_eq!(
        page.body.matches(&format!("via via-{}", w.agent)).count(),
        2
    );
    // Apply a template and a permission.
    let token = page.csrf();
    let agent = w.agent.to_string();
    let saved = ada
        .post_with(
            &edit,
            &token,
            &[
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
                ("template", &agent),
                ("perm", "users:view"),
                ("perm", "analytics:view"),
                ("perm", "experiments:edit"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let users = ada.follow(&saved).await;
    assert!(
        users.body.contains("Saved erin@acme.test"),
        "{}",
        users.body
    );
    assert_eq!(
        cell(row(&users.body, "erin@acme.test").unwrap(), "template"),
        "Support agent"
    );
    let erin = w
        .app
        .user(w.tenant, ActorRef::System, w.erin)
        .await
        .unwrap();
    assert_eq!(erin.template_id, Some(w.agent));
    assert_eq!(
        erin.grants,
        "users:view,analytics:view,experiments:edit"
            .parse::<Permissions>()
            .unwrap()
    );
    // Opened again: the template is selected (its marks shown), the new box checked.
    let again = ada.get(&edit).await;
    assert!(again.body.contains(&format!(
        r#"<option value="{}" selected>Support agent</option>"#,
        w.agent
    )));
    let box_ = tags(&again.body, "input")
        .into_iter()
        .find(|t| t.contains(r#"id="perm-experiments-edit""#))
        .unwrap();
    assert!(box_.contains(" checked"));
    assert!(again.body.contains("Holds now: "));
    // Saving the same again changes nothing and says so.
    let token = again.csrf();
    let same = ada
        .post_with(
            &edit,
            &token,
            &[
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
                ("template", &agent),
                ("perm", "users:view"),
                ("perm", "analytics:view"),
                ("perm", "experiments:edit"),
            ],
        )
        .await;
    assert!(
        same.location().contains("done=unchanged"),
        "{}",
        same.location()
    );
    // Suspending works through the same form.
    let token = ada.get(&edit).await.csrf();
    let suspended = ada
        .post_with(
            &edit,
            &token,
            &[
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "suspended"),
                ("template", ""),
            ],
        )
        .await;
    assert_eq!(
        suspended.status,
        StatusCode::SEE_OTHER,
        "{}",
        suspended.body
    );
    let erin = w
        .app
        .user(w.tenant, ActorRef::System, w.erin)
        .await
        .unwrap();
    assert_eq!(
        (erin.status, erin.template_id, erin.grants),
        (Status::Suspended, None, Permissions::empty())
    );
}

#[tokio::test]
async fn resend_sends_a_fresh_invitation_by_mail_only() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let before = w.mailer.sent().len();
    let resent = ada
        .submit("/users", &format!("/users/{}/resend", w.carol), &[])
        .await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER, "{}", resent.body);
    assert_eq!(w.mailer.sent().len(), before + 1);
    let mail = w.mailer.sent().pop().unwrap();
    assert_eq!(mail.to, "carol@acme.test");
    let token = token_from_link(&mail.text).unwrap();
    let users = ada.follow(&resent).await;
    assert!(
        users
            .body
            .contains("A fresh invitation was sent to carol@acme.test")
    );
    assert!(!users.body.contains(&token));
    // An active user has nothing to resend: refused, nothing sent.
    let refused = ada
        .submit("/users", &format!("/users/{}/resend", w.bob), &[])
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert_eq!(w.mailer.sent().len(), before + 1);
}

#[tokio::test]
async fn delete_asks_for_confirmation_then_the_row_is_gone_and_the_seat_freed() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let path = format!("/users/{}/delete", w.bob);
    let confirm = ada.get(&path).await;
    for words in [
        "cannot sign back in",
        "remain",
        "seat is freed",
        "3 of 5 seats",
    ] {
        assert!(confirm.body.contains(words), "{words}");
    }
    assert!(row(&ada.get("/users").await.body, "bob@acme.test").is_some());
    let token = confirm.csrf();
    let deleted = ada.post_with(&path, &token, &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let users = ada.follow(&deleted).await;
    assert!(
        users.body.contains("Deleted bob@acme.test"),
        "{}",
        users.body
    );
    assert!(row(&users.body, "bob@acme.test").is_none());
    assert_eq!(seats(&users.body), "3 of 5 seats used");
    // Its pages are gone too.
    assert_eq!(ada.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        ada.get("/users/not-a-uuid/edit").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn templates_are_created_edited_and_deleted_with_each_choice() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    // Create.
    let created = ada
        .submit(
            "/templates/new",
            "/templates/new",
            &[
                ("name", "Auditor"),
                ("perm", "analytics:view"),
                ("perm", "settings:view"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let list = ada.follow(&created).await;
    assert!(
        list.body.contains("The role template Auditor was created"),
        "{}",
        list.body
    );
    assert!(list.body.contains(r#"data-template="Auditor""#));
    let auditor = w
        .app
        .templates(w.tenant, ActorRef::System)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name.as_str() == "Auditor")
        .unwrap();
    assert_eq!(
        auditor.permissions,
        "analytics:view,settings:view"
            .parse::<Permissions>()
            .unwrap()
    );
    // Edit: rename and change permissions.
    let edit = format!("/templates/{}/edit", auditor.id);
    let saved = ada
        .submit(
            &edit,
            &edit,
            &[("name", "Reviewer"), ("perm", "analytics:view")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let list = ada.follow(&saved).await;
    assert!(
        list.body.contains("The role template Reviewer was saved"),
        "{}",
        list.body
    );
    let t = w
        .app
        .template(w.tenant, ActorRef::System, auditor.id)
        .await
        .unwrap();
    assert_eq!(
        (t.name.as_str(), t.permissions),
        ("Reviewer", "analytics:view".parse().unwrap())
    );
    // Delete, refuse: the agent template has bob, so it stays.
    let agent_delete = format!("/templates/{}/delete", w.agent);
    let page = ada.get(&agent_delete).await;
    assert!(
        page.body.contains("1 user(s) reference this template"),
        "{}",
        page.body
    );
    assert!(page.body.contains("bob@acme.test"));
    let refused = ada
        .post_with(&agent_delete, &page.csrf(), &[("mode", "refuse")])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        w.app
            .template(w.tenant, ActorRef::System, w.agent)
            .await
            .is_ok()
    );
    // Reassign bob to the manager template.
    let manager = w.manager.to_string();
    let moved = ada
        .submit(
            &agent_delete,
            &agent_delete,
            &[("mode", "reassign"), ("to", &manager)],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    assert!(
        ada.follow(&moved)
            .await
            .body
            .contains("1 user(s) were updated")
    );
    assert!(
        w.app
            .template(w.tenant, ActorRef::System, w.agent)
            .await
            .is_err()
    );
    let bob = w.app.user(w.tenant, ActorRef::System, w.bob).await.unwrap();
    assert_eq!(bob.template_id, Some(w.manager));
    // Detach: bob and carol lose the manager template.
    let manager_delete = format!("/templates/{}/delete", w.manager);
    let detached = ada
        .submit(&manager_delete, &manager_delete, &[("mode", "detach")])
        .await;
    assert_eq!(detached.status, StatusCode::SEE_OTHER, "{}", detached.body);
    for id in [w.bob, w.carol] {
        let u = w.app.user(w.tenant, ActorRef::System, id).await.unwrap();
        assert_eq!(u.template_id, None);
    }
    // Refuse on an unused template deletes it.
    let reviewer_delete = format!("/templates/{}/delete", auditor.id);
    let gone = ada
        .submit(&reviewer_delete, &reviewer_delete, &[("mode", "refuse")])
        .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "{}", gone.body);
    assert!(
        w.app
            .templates(w.tenant, ActorRef::System)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_audit_page_lists_the_events_and_pages_through_them() {
    let w = world_at("/settings", None).await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get("/audit").await;
    for action in [
        "tenant created",
        "template created",
        "user invited",
        "invitation accepted",
    ] {
        assert!(
            page.body.contains(&format!(r#"data-action="{action}""#)),
            "{action}"
        );
    }
    assert!(page.body.contains("ada@acme.test"));
    // A refused attempt is listed with its rule.
    let _ = w
        .app
        .invite(
            w.tenant,
            w.bob,
            &invite_request("x@acme.test", None, Permissions::empty()),
        )
        .await
        .unwrap_err();
    // Enough events for a second page.
    for i in 0..50 {
        w.app
            .invite(
                w.tenant,
                w.ada,
                &invite_request(&format!("u{i}@acme.test"), None, Permissions::empty()),
            )
            .await
            .unwrap();
    }
    let first = ada.get("/audit").await;
    assert_eq!(first.body.matches(r#"<tr class="event""#).count(), 50);
    let next = next_link(&first.body).unwrap();
    let next = next.replace("&amp;", "&");
    let second = ada.get(next.strip_prefix("/settings").unwrap()).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(second.body.contains(r#"data-action="user invited""#));
    assert!(
        first.body.contains("refused ("),
        "the refused attempt is listed"
    );
    let refused = first
        .body
        .split("<tr class=\"event\"")
        .find(|r| r.contains("refused ("))
        .unwrap();
    assert!(refused.contains("bob@acme.test"), "{refused}");
    let total = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap();
    assert!(total.len() > 50);
    let shown = first.body.matches(r#"<tr class="event""#).count()
        + second.body.matches(r#"<tr class="event""#).count();
    assert_eq!(shown, total.len().min(100));
    // Oldest first.
    assert_eq!(total[0].event.action, AuditAction::TenantCreated);
    let seq_cell = format!("<td>{}</td>", total[0].seq);
    assert!(first.body.find(&seq_cell) < first.body.find(&format!("<td>{}</td>", total[1].seq)));
    // A garbled page link is ignored with a note.
    let garbled = ada.get("/audit?after=zzz").await;
    assert_eq!(garbled.status, StatusCode::OK);
    assert!(garbled.body.contains("The page link is not valid"));
}

#[tokio::test]
async fn the_delivery_page_shows_state_never_a_link_or_a_body() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get("/deliveries").await;
    assert_eq!(page.status, StatusCode::OK);
    for to in ["bob@acme.test", "erin@acme.test", "carol@acme.test"] {
        assert!(page.body.contains(&format!(r#"data-to="{to}""#)), "{to}");
    }
    assert!(page.body.contains("sent "));
    assert!(!page.body.contains("token="), "no accept link");
    for mail in w.mailer.sent() {
        assert!(!page.body.contains(&token_from_link(&mail.text).unwrap()));
    }
}

#[tokio::test]
async fn the_delivery_page_shows_a_failed_delivery_without_anything_token_like() {
    let w = world().await;
    w.mailer.fail_next(tenantry_service::MailError::Transient(
        "421 try later; your message https://host.test/accept?token=abc.SECRET-part was kept"
            .to_owned(),
    ));
    w.mailer.fail_next(tenantry_service::MailError::Permanent(
        "550 no such mailbox for token=zz.OTHER_secret".to_owned(),
    ));
    let mut ada = Browser::new(&w, Some(w.ada));
    let sent = ada
        .submit(
            "/users/invite",
            "/users/invite",
            &[
                ("email", "dana@acme.test"),
                ("role", "user"),
                ("template", ""),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    // The retry fails for good.
    let _ = w.app.dispatch_all().await;
    let page = ada.get("/deliveries").await;
    let dana = page.body.find(r#"data-to="dana@acme.test""#).unwrap();
    let row = &page.body[dana..dana + page.body[dana..].find("</tr>").unwrap()];
    assert!(row.contains("<td class=\"attempts\">"), "{row}");
    assert!(row.contains("pending") || row.contains("failed"), "{row}");
    for secret in ["SECRET-part", "OTHER_secret"] {
        assert!(!page.body.contains(secret), "{secret} shown: {row}");
    }
    assert!(
        row.contains("421") || row.contains("550"),
        "the error is shown: {row}"
    );
}

#[tokio::test]
async fn an_anonymous_visitor_accepts_with_the_mailed_token_and_is_sent_to_sign_in() {
    let w = world().await;
    let carol_mail = w
        .mailer
        .sent()
        .into_iter()
        .rev()
        .find(|m| m.to == "carol@acme.test")
        .unwrap();
    let link = carol_mail
        .text
        .split_whitespace()
        .find(|s| s.contains("token="))
        .unwrap();
    assert!(
        link.starts_with("https://host.test/settings/accept?token="),
        "{link}"
    );
    let token = token_from_link(&carol_mail.text).unwrap();
    let mut visitor = Browser::new(&w, None);
    let form = visitor.get(&format!("/accept?token={token}")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains(r#"id="accept-form""#));
    assert_accessible("/accept", &form.body);
    // A wrong address counts down and accepts nothing.
    let wrong = visitor
        .post_with(
            "/accept",
            &form.csrf(),
            &[("token", &token), ("email", "mallory@acme.test")],
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.body
    );
    assert_eq!(
        w.app
            .user(w.tenant, ActorRef::System, w.carol)
            .await
            .unwrap()
            .status,
        Status::Invited
    );
    let done = visitor
        .post_with(
            "/accept",
            &wrong.csrf(),
            &[("token", &token), ("email", "Carol@acme.test")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Your account is active"));
    assert!(done.body.contains(&format!(r#"href="{SIGN_IN}""#)));
    assert!(
        done.headers.get(header::SET_COOKIE).is_none(),
        "nobody is signed in by the console"
    );
    assert_eq!(
        w.app
            .user(w.tenant, ActorRef::System, w.carol)
            .await
            .unwrap()
            .status,
        Status::Active
    );
    // Used once.
    let fresh = done_token(&mut visitor).await;
    let again = visitor
        .post_with(
            "/accept",
            &fresh,
            &[("token", &token), ("email", "carol@acme.test")],
        )
        .await;
    assert!(again.status.is_client_error(), "{}", again.status);
    // No token at all.
    assert_eq!(visitor.get("/accept").await.status, StatusCode::BAD_REQUEST);
}

/// A fresh anonymous token for the visitor's cookie.
async fn done_token(visitor: &mut Browser<'_>) -> String {
    visitor.get("/accept?token=x.y").await.csrf()
}

#[tokio::test]
async fn an_admin_renames_the_tenant_and_a_viewer_cannot() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get("/tenant").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"<dd id="tenant-name">Acme Support</dd>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="rename-form""#));
    // An invisible character is refused in the form (422), and nothing changes.
    let refused = ada
        .submit("/tenant", "/tenant", &[("name", "Acme\u{200b}")])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("U+200B"), "{}", refused.body);
    assert_accessible("/tenant (refused)", &refused.body);
    assert_eq!(
        w.app.tenant(w.tenant).await.unwrap().tenant.name,
        "Acme Support"
    );
    let renamed = ada
        .submit("/tenant", "/tenant", &[("name", "  Acme Help Desk ")])
        .await;
    assert_eq!(renamed.status, StatusCode::SEE_OTHER, "{}", renamed.body);
    let after = ada.follow(&renamed).await;
    assert!(after.body.contains("The tenant was renamed."));
    assert!(
        after
            .body
            .contains(r#"<dd id="tenant-name">Acme Help Desk</dd>"#)
    );
    assert!(
        after
            .body
            .contains(r#"<span class="brand">Acme Help Desk</span>"#)
    );
    assert_eq!(
        w.app.tenant(w.tenant).await.unwrap().tenant.name,
        "Acme Help Desk"
    );
    // A viewer sees the name but no form, and a forged POST is refused.
    let mut erin = Browser::new(&w, Some(w.erin));
    let page = erin.get("/tenant").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(r#"id="rename-form""#));
    assert!(page.body.contains("Only an admin can rename the tenant."));
    let token = viewer_token(&erin);
    let forged = erin
        .post_with("/tenant", &token, &[("name", "Erin's")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert_eq!(
        w.app.tenant(w.tenant).await.unwrap().tenant.name,
        "Acme Help Desk"
    );
}

#[tokio::test]
async fn a_viewer_with_only_users_view_sees_no_actions() {
    let w = world().await;
    let mut erin = Browser::new(&w, Some(w.erin));
    let users = erin.get("/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(row(&users.body, "bob@acme.test").is_some());
    for action in [
        r#"id="invite-user""#,
        r#"class="edit""#,
        r#"class="delete""#,
        "Resend invite",
        r#"id="new-template""#,
        "<form method=\"post\"",
    ] {
        assert!(!users.body.contains(action), "{action} shown to a viewer");
    }
    for path in ["/templates", "/audit", "/deliveries"] {
        let page = erin.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains(r#"class="edit""#), "{path}");
    }
    // The management pages answer 403.
    for path in [
        "/users/invite".to_owned(),
        format!("/users/{}/edit", w.bob),
        format!("/users/{}/delete", w.bob),
        "/templates/new".to_owned(),
        format!("/templates/{}/delete", w.agent),
    ] {
        let page = erin.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert_secure_headers(&path, &page);
    }
    // And a POST with a valid token (her page has no form; the token is the one the
    // console would give her) is still refused, changing nothing.
    let token = viewer_token(&erin);
    let mut ada = Browser::new(&w, Some(w.ada));
    let ada_page = ada.get("/users").await;
    assert_eq!(
        viewer_token(&ada),
        ada_page.csrf(),
        "the test computes the console's tokens"
    );
    let refused = erin
        .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(w.app.user(w.tenant, ActorRef::System, w.bob).await.is_ok());
}

/// The token the console would put in `b`'s forms (same construction, same secret).
fn viewer_token(b: &Browser<'_>) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let (t, u) = b.who.unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&SECRET).unwrap();
    mac.update(b"tenantry-console-csrf-v1\0");
    mac.update(b.cookie.as_deref().unwrap().as_bytes());
    mac.update(b"\0");
    mac.update(format!("user:{t}/{u}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_user_without_users_view_gets_403_and_nobody_gets_401() {
    let w = world().await;
    let mut bob = Browser::new(&w, Some(w.bob));
    for path in ["/users", "/templates", "/audit", "/deliveries"] {
        let page = bob.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains(r#"id="refused">403"#), "{path}");
        assert!(page.body.contains("users:view"));
        assert!(!page.body.contains(r#"id="users""#), "{path}: no table");
        assert!(
            !page.body.contains("carol@acme.test"),
            "{path}: no user data"
        );
    }
    let mut nobody = Browser::new(&w, None);
    for path in ["/users", "/users/invite", "/audit"] {
        let page = nobody.get(path).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            page.body.contains(&format!(r#"href="{SIGN_IN}""#)),
            "{path}"
        );
        assert!(!page.body.contains("acme.test"));
    }
    // A deleted user the host still names is nobody known: 401.
    w.app.delete_user(w.tenant, w.ada, w.erin).await.unwrap();
    let mut gone = Browser::new(&w, Some(w.erin));
    assert_eq!(gone.get("/users").await.status, StatusCode::UNAUTHORIZED);
    // A suspended user is refused.
    w.app
        .edit_user(
            w.tenant,
            w.ada,
            w.bob,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            },
        )
        .await
        .unwrap();
    let page = bob.get("/users").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("suspended"));
}

// ------------------------------------------------------------------- security regressions

#[tokio::test]
async fn no_page_shows_an_accept_link_or_token_to_anyone() {
    let w = world_at("/settings", Some(20)).await;
    // A manager holding users:view and users:create.
    let cid = w
        .app
        .invite(
            w.tenant,
            w.ada,
            &invite_request(
                "cid@acme.test",
                None,
                "users:view,users:create".parse().unwrap(),
            ),
        )
        .await
        .unwrap();
    w.app
        .accept_invitation(&cid.accept_link.token().unwrap(), "cid@acme.test")
        .await
        .unwrap();
    let cid = cid.user.id;
    // The admin invites an admin through the console.
    let mut ada = Browser::new(&w, Some(w.ada));
    let sent = ada
        .submit(
            "/users/invite",
            "/users/invite",
            &[
                ("email", "root@acme.test"),
                ("role", "admin"),
                ("template", ""),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let mail = w
        .mailer
        .sent()
        .into_iter()
        .rev()
        .find(|m| m.to == "root@acme.test")
        .unwrap();
    let token = token_from_link(&mail.text).unwrap();
    let secret_part = token.split_once('.').unwrap().1.to_owned();
    let root = w
        .app
        .list_users(
            w.tenant,
            ActorRef::System,
            &UserQuery {
                email_contains: Some("root@".into()),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap()
        .items[0]
        .id;
    // A resend makes a second live link; neither may show.
    let resent = ada
        .submit("/users", &format!("/users/{root}/resend"), &[])
        .await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER, "{}", resent.body);
    let mail = w.mailer.sent().pop().unwrap();
    let token2 = token_from_link(&mail.text).unwrap();
    let secrets = [secret_part, token2.split_once('.').unwrap().1.to_owned()];
    let mut pages = vec![
        "/users".to_owned(),
        "/users?status=invited".to_owned(),
        sent.location()
            .strip_prefix("/settings")
            .unwrap()
            .to_owned(),
        resent
            .location()
            .strip_prefix("/settings")
            .unwrap()
            .to_owned(),
        "/users/invite".to_owned(),
        "/templates".to_owned(),
        "/audit".to_owned(),
        "/deliveries".to_owned(),
        "/accept".to_owned(),
    ];
    for u in [w.ada, w.bob, w.erin, w.carol, root, cid] {
        pages.push(format!("/users/{u}/edit"));
        pages.push(format!("/users/{u}/delete"));
    }
    for who in [Some(w.ada), Some(cid), Some(w.erin), Some(w.bob), None] {
        let mut b = Browser::new(&w, who);
        for path in &pages {
            let page = b.get(path).await;
            for s in &secrets {
                assert!(
                    !page.body.contains(s.as_str()),
                    "{path} as {who:?} shows a live token"
                );
            }
            assert!(
                !page.body.contains("token="),
                "{path} as {who:?} shows an accept link"
            );
            for v in page.headers.values() {
                assert!(
                    !secrets
                        .iter()
                        .any(|s| v.to_str().unwrap_or("").contains(s.as_str()))
                );
            }
        }
    }
    // Nor the admin's own POST responses.
    for s in &secrets {
        assert!(!sent.body.contains(s.as_str()) && !sent.location().contains(s.as_str()));
        assert!(!resent.body.contains(s.as_str()) && !resent.location().contains(s.as_str()));
    }
}

#[tokio::test]
async fn the_accept_page_refuses_a_signed_in_visitor_and_accepts_nothing() {
    let w = world().await;
    let mail = w
        .mailer
        .sent()
        .into_iter()
        .rev()
        .find(|m| m.to == "carol@acme.test")
        .unwrap();
    let token = token_from_link(&mail.text).unwrap();
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get(&format!("/accept?token={token}")).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(
        page.body
            .contains("You are signed in as <strong>ada@acme.test</strong>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Sign out"));
    assert!(
        !page.body.contains(&token),
        "the refusal does not echo the token"
    );
    assert!(!page.body.contains(r#"id="accept-form""#));
    // A POST with a valid token for ada is refused the same way.
    let token_for_ada = ada.get("/users").await.csrf();
    let posted = ada
        .post_with(
            "/accept",
            &token_for_ada,
            &[("token", &token), ("email", "carol@acme.test")],
        )
        .await;
    assert_eq!(posted.status, StatusCode::CONFLICT, "{}", posted.body);
    assert_eq!(
        w.app
            .user(w.tenant, ActorRef::System, w.carol)
            .await
            .unwrap()
            .status,
        Status::Invited
    );
    // The invitation still works for carol, signed out.
    let mut carol = Browser::new(&w, None);
    let form = carol.get(&format!("/accept?token={token}")).await;
    let done = carol
        .post_with(
            "/accept",
            &form.csrf(),
            &[("token", &token), ("email", "carol@acme.test")],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

#[tokio::test]
async fn anonymous_requests_keep_no_state_and_a_signed_in_token_keeps_working() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get(&format!("/users/{}/delete", w.bob)).await;
    let token = page.csrf();
    let cookie = ada.cookie.clone().unwrap();
    // 10,000 cookieless visitors: each gets its own cookie, nothing is kept for them.
    let mut cookies = std::collections::HashSet::new();
    for i in 0..10_000 {
        let path = if i % 2 == 0 {
            "/accept?token=a.b"
        } else {
            "/users"
        };
        let mut visitor = Browser::new(&w, None);
        let p = visitor.get(path).await;
        assert!(p.status == StatusCode::OK || p.status == StatusCode::UNAUTHORIZED);
        cookies.insert(p.new_cookie().unwrap());
    }
    assert_eq!(
        cookies.len(),
        10_000,
        "every visitor got its own random value"
    );
    // The admin's token from before the flood still works.
    assert_eq!(ada.cookie.as_deref(), Some(cookie.as_str()));
    let deleted = ada
        .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert!(w.app.user(w.tenant, ActorRef::System, w.bob).await.is_err());
}

#[tokio::test]
async fn a_token_of_user_a_fails_for_user_b() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let token = ada.get(&format!("/users/{}/delete", w.bob)).await.csrf();
    // Same browser (same cookie), now identified as erin: ada's token is not erin's.
    let mut erin = Browser::new(&w, Some(w.erin));
    erin.cookie = ada.cookie.clone();
    let refused = erin
        .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains(r#"id="refused""#));
    // An anonymous visitor with that cookie and token fails too.
    let mut anon = Browser::new(&w, None);
    anon.cookie = ada.cookie.clone();
    let refused = anon
        .post_with(
            "/accept",
            &token,
            &[("token", "a.b"), ("email", "x@acme.test")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // A user of another tenant with the same user id string cannot reuse it either.
    let mut other = Browser::new(&w, Some(w.ada));
    other.who = Some((
        w.app
            .create_tenant("Other", None, Email::parse("o@o.test").unwrap())
            .await
            .unwrap()
            .0,
        w.ada,
    ));
    other.cookie = ada.cookie.clone();
    assert_eq!(
        other
            .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert!(
        w.app.user(w.tenant, ActorRef::System, w.bob).await.is_ok(),
        "nothing changed"
    );
    // Ada's own token still works.
    assert_eq!(
        ada.post_with(&format!("/users/{}/delete", w.bob), &token, &[])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_token_without_its_cookie_fails() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let token = ada.get(&format!("/users/{}/delete", w.bob)).await.csrf();
    ada.cookie = None;
    let refused = ada
        .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Nor with another cookie, nor with no token at all.
    let mut other = Browser::new(&w, Some(w.ada));
    other.get("/users").await;
    assert_ne!(other.cookie, None);
    assert_eq!(
        other
            .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        other
            .post_raw(&format!("/users/{}/delete", w.bob), String::new())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert!(w.app.user(w.tenant, ActorRef::System, w.bob).await.is_ok());
}

#[tokio::test]
async fn a_cleared_cookie_fails() {
    let w = world().await;
    let config = ConsoleConfig::new(SECRET)
        .mount_path("/settings")
        .secure_cookies(true);
    let cleared = console::clear_cookie(&config);
    let text = cleared.to_str().unwrap();
    assert!(text.starts_with("tenantry_csrf=;"), "{text}");
    for part in [
        "Path=/settings;",
        "Max-Age=0",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
    ] {
        assert!(text.contains(part), "{text} lacks {part}");
    }
    let mut ada = Browser::new(&w, Some(w.ada));
    let token = ada.get(&format!("/users/{}/delete", w.bob)).await.csrf();
    // What the browser sends after the host's sign-out cleared it: the emptied value.
    ada.cookie = Some(String::new());
    let refused = ada
        .post_with(&format!("/users/{}/delete", w.bob), &token, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(w.app.user(w.tenant, ActorRef::System, w.bob).await.is_ok());
    // The next page sets a new cookie, whose tokens differ from the old ones.
    let fresh = ada.get(&format!("/users/{}/delete", w.bob)).await;
    assert!(fresh.new_cookie().is_some());
    assert_ne!(fresh.csrf(), token);
}

#[tokio::test]
async fn the_cookie_is_http_only_strict_scoped_to_the_mount_and_secure_when_asked() {
    for secure in [false, true] {
        let w = world().await;
        let guard = Guard::new(w.app.clone(), HeaderIdentity);
        let config = ConsoleConfig::new(SECRET).secure_cookies(secure);
        let router = Router::new().nest("/settings", console::router(guard, config));
        let response = router
            .oneshot(
                Request::get("/settings/accept?token=a.b")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/settings;"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert_eq!(cookie.contains("Secure"), secure, "{cookie}");
        assert!(!cookie.contains("Max-Age"), "{cookie}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let ok = ada.get("/users").await;
    assert_secure_headers("200", &ok);
    let token = ok.csrf();
    let redirect = ada
        .post_with(
            &format!("/users/{}/edit", w.erin),
            &token,
            &[
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
                ("template", ""),
                ("perm", "users:view"),
                ("perm", "analytics:view"),
            ],
        )
        .await;
    assert_eq!(redirect.status, StatusCode::SEE_OTHER);
    assert_secure_headers("303", &redirect);
    let csrf = ada.post_with("/users/invite", "forged", &[]).await;
    assert_eq!(csrf.status, StatusCode::FORBIDDEN);
    assert_secure_headers("CSRF 403", &csrf);
    assert_style_hash("CSRF 403", &csrf);
    let missing = ada.get("/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_secure_headers("404", &missing);
    let method = ada
        .send(ada.request("DELETE", "/users", Body::empty()))
        .await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_secure_headers("405", &method);
    assert!(method.body.contains("<h1"), "405 is a page");
    let post_only = ada.get(&format!("/users/{}/resend", w.carol)).await;
    assert_eq!(post_only.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_secure_headers("405 GET", &post_only);
    let big = ada.post_raw("/users/invite", "x".repeat(70 * 1024)).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_secure_headers("413", &big);
    assert!(big.body.contains("<h1"), "413 is a page");
    let mut nobody = Browser::new(&w, None);
    let unauth = nobody.get("/users").await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    assert_secure_headers("401", &unauth);
    let form = ada.get("/users/invite").await.csrf();
    let bad = ada
        .post_with(
            "/users/invite",
            &form,
            &[("email", "nope"), ("role", "user"), ("template", "")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_secure_headers("422", &bad);
}

#[tokio::test]
async fn a_body_over_64_kib_gets_a_413_page_and_changes_nothing() {
    let w = world_at("/settings", None).await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let token = ada.get("/users/invite").await.csrf();
    let padding = "a".repeat(65 * 1024);
    let before = w.app.seat_usage(w.tenant).await.unwrap().used;
    let big = ada
        .post_with(
            "/users/invite",
            &token,
            &[
                ("email", "big@acme.test"),
                ("role", "user"),
                ("template", ""),
                ("pad", &padding),
            ],
        )
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.body);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, before);
    // A declared length over the limit is refused before the body is read.
    let mut declared = ada.request("POST", "/users/invite", Body::from("csrf=x"));
    declared
        .headers_mut()
        .insert(header::CONTENT_LENGTH, "1000000".parse().unwrap());
    let refused = ada.send(declared).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, before);
    // Just under the limit is read (and then judged by the form).
    let fine = ada
        .post_with(
            "/users/invite",
            &token,
            &[
                ("email", "small@acme.test"),
                ("role", "user"),
                ("template", ""),
                ("pad", &"a".repeat(60 * 1024)),
            ],
        )
        .await;
    assert_eq!(fine.status, StatusCode::SEE_OTHER, "{}", fine.body);
}

#[tokio::test]
async fn storage_errors_are_a_503_with_a_generic_text() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    assert_eq!(ada.get("/users").await.status, StatusCode::OK);
    w.sqlite.close().await;
    let detail = w
        .app
        .list_users(w.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap_err()
        .to_string();
    for path in ["/users", "/audit", "/deliveries", "/templates"] {
        let page = ada.get(path).await;
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains("temporarily unavailable"), "{path}");
        assert!(
            !page.body.contains(&detail),
            "{path} shows the store's error"
        );
        for word in ["sqlite", "SQLite", "pool", "closed", "sqlx"] {
            assert!(!page.body.contains(word), "{path} shows {word}");
        }
        assert_eq!(page.headers[header::RETRY_AFTER], "1");
        assert_secure_headers(path, &page);
    }
}

#[tokio::test]
async fn a_cursor_of_another_sort_order_or_a_garbled_one_is_ignored() {
    let w = world().await;
    let mut ada = Browser::new(&w, Some(w.ada));
    // Two rows a page: the next link carries an email cursor.
    let first = ada.get("/users?limit=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let next = next_link(&first.body).unwrap().replace("&amp;", "&");
    let second = ada.get(next.strip_prefix("/settings").unwrap()).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(row(&second.body, "carol@acme.test").is_some(), "page two");
    assert!(row(&second.body, "ada@acme.test").is_none());
    // A cursor of the created-at order on the email order: first page, with a note.
    let created = Cursor::CreatedAt(0, w.bob).to_string();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("sort", "email")
        .append_pair("after", &created);
    let mismatched = ada.get(&format!("/users?{}", q.finish())).await;
    assert_eq!(mismatched.status, StatusCode::OK, "{}", mismatched.body);
    assert!(mismatched.body.contains("another sort order"));
    assert!(
        row(&mismatched.body, "ada@acme.test").is_some(),
        "the first page"
    );
    // Garbled cursor, limit, status and sort: ignored with notes.
    let garbled = ada
        .get("/users?after=%FF%00garbage&limit=0&status=sleeping&sort=shoe%20size")
        .await;
    assert_eq!(garbled.status, StatusCode::OK, "{}", garbled.body);
    for note in [
        "page link is not valid",
        "page size",
        "status filter",
        "sort order",
    ] {
        assert!(garbled.body.contains(note), "{note}");
    }
    // Sorting by creation, newest first, pages with its own cursor.
    let newest = ada.get("/users?sort=created&order=desc&limit=1").await;
    assert!(
        row(&newest.body, "carol@acme.test").is_some(),
        "{}",
        newest.body
    );
    let next = next_link(&newest.body).unwrap().replace("&amp;", "&");
    let older = ada.get(next.strip_prefix("/settings").unwrap()).await;
    assert!(
        row(&older.body, "erin@acme.test").is_some(),
        "{}",
        older.body
    );
}

#[tokio::test]
async fn forms_with_missing_or_garbled_fields_get_422_and_change_nothing() {
    let w = world().await;
    let before = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap()
        .len();
    let edit = format!("/users/{}/edit", w.erin);
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            edit.clone(),
            vec![
                ("email", "erin@acme.test"),
                ("role", "superuser"),
                ("status", "active"),
                ("template", ""),
            ],
        ),
        (
            edit.clone(),
            vec![("role", "user"), ("status", "active"), ("template", "")],
        ),
        (
            edit.clone(),
            vec![
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("template", ""),
            ],
        ),
        (
            edit.clone(),
            vec![
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
            ],
        ),
        (
            edit.clone(),
            vec![
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
                ("template", "not-an-id"),
            ],
        ),
        (
            edit.clone(),
            vec![
                ("email", "erin@acme.test"),
                ("role", "user"),
                ("status", "active"),
                ("template", ""),
                ("perm", "users:fly"),
            ],
        ),
        (
            edit.clone(),
            vec![
                ("email", "not an address"),
                ("role", "user"),
                ("status", "active"),
                ("template", ""),
            ],
        ),
        (
            "/users/invite".to_owned(),
            vec![("role", "user"), ("template", "")],
        ),
        (
            "/users/invite".to_owned(),
            vec![("email", "new@acme.test"), ("template", "")],
        ),
        (
            "/users/invite".to_owned(),
            vec![
                ("email", "new@acme.test"),
                ("role", "owner"),
                ("template", ""),
            ],
        ),
        ("/templates/new".to_owned(), vec![("perm", "users:view")]),
        (
            "/templates/new".to_owned(),
            vec![("name", "Bad"), ("perm", "nope")],
        ),
        (
            "/templates/new".to_owned(),
            vec![("name", "   "), ("perm", "users:view")],
        ),
        (
            format!("/templates/{}/edit", w.agent),
            vec![("perm", "users:view")],
        ),
        (
            format!("/templates/{}/delete", w.agent),
            vec![("mode", "obliterate")],
        ),
        (format!("/templates/{}/delete", w.agent), vec![]),
        (
            format!("/templates/{}/delete", w.agent),
            vec![("mode", "reassign"), ("to", "garbage")],
        ),
        ("/accept".to_owned(), vec![("email", "x@acme.test")]),
    ];
    for (path, fields) in &cases {
        let mut b = if path == "/accept" {
            Browser::new(&w, None)
        } else {
            Browser::new(&w, Some(w.ada))
        };
        let form_page = if path == "/accept" {
            "/accept?token=a.b".to_owned()
        } else if path.ends_with("/new")
            || path.ends_with("/invite")
            || path.ends_with("/edit")
            || path.ends_with("/delete")
        {
            path.clone()
        } else {
            "/users".to_owned()
        };
        let page = b.submit(&form_page, path, fields).await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {fields:?}: {}",
            page.body
        );
        assert!(page.body.contains("Error:"), "{path} {fields:?}");
        assert_accessible(path, &page.body);
    }
    // Nothing changed: no event, erin as she was, no new user or template.
    let after = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap()
        .len();
    assert_eq!(after, before, "no change and no refusal was recorded");
    let erin = w
        .app
        .user(w.tenant, ActorRef::System, w.erin)
        .await
        .unwrap();
    assert_eq!(
        (erin.role, erin.status, erin.template_id),
        (Role::User, Status::Active, None)
    );
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 4);
    assert_eq!(
        w.app
            .templates(w.tenant, ActorRef::System)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn links_forms_redirects_and_the_cookie_follow_the_mount() {
    for prefix in ["/settings", "/org/acme/admin/users-console"] {
        let w = world_at(prefix, Some(5)).await;
        let mut ada = Browser::new(&w, Some(w.ada));
        for path in [
            "/users".to_owned(),
            format!("/users/{}/edit", w.bob),
            "/templates".to_owned(),
            "/audit".to_owned(),
        ] {
            let page = ada.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{prefix}{path}");
            for tag in tags(&page.body, "a")
                .into_iter()
                .chain(tags(&page.body, "form"))
            {
                let target = attr(tag, "href").or_else(|| attr(tag, "action")).unwrap();
                assert!(
                    target.starts_with(&format!("{prefix}/")),
                    "{prefix}{path}: {tag}"
                );
            }
        }
        let fresh = Browser::new(&w, Some(w.ada)).get("/users").await;
        let cookie = fresh.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cookie.contains(&format!("Path={prefix};")), "{cookie}");
        let sent = ada
            .submit(
                "/users/invite",
                "/users/invite",
                &[
                    ("email", "dana@acme.test"),
                    ("role", "user"),
                    ("template", ""),
                ],
            )
            .await;
        assert!(
            sent.location()
                .starts_with(&format!("{prefix}/users?done=invited")),
            "{}",
            sent.location()
        );
        let root = ada.get("").await;
        assert_eq!(root.location(), format!("{prefix}/users"));
    }
    // Mounted with a path parameter: links use the actual path.
    let w = world().await;
    let guard = Guard::new(w.app.clone(), HeaderIdentity);
    let router = Router::new().nest(
        "/t/{slug}",
        console::router(guard, ConsoleConfig::new(SECRET)),
    );
    let response = router
        .oneshot(
            Request::get("/t/acme/users")
                .header("x-identity", format!("{}/{}", w.tenant, w.ada))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains(r#"href="/t/acme/users/invite""#),
        "nested with a parameter"
    );
}

#[tokio::test]
async fn text_from_users_is_escaped_never_markup() {
    let w = world_at("/settings", None).await;
    let mut ada = Browser::new(&w, Some(w.ada));
    let evil = r#"<script>alert("x")</script>"#;
    let created = ada
        .submit(
            "/templates/new",
            "/templates/new",
            &[("name", evil), ("perm", "users:view")],
        )
        .await;
    // Names refuse markup characters or keep them as text; either way no tag appears.
    let list = if created.status == StatusCode::SEE_OTHER {
        ada.follow(&created).await
    } else {
        created
    };
    assert!(!list.body.contains("<script>"), "{}", list.body);
    let search = ada.get("/users?q=%3Cb%3Ebold%3C%2Fb%3E").await;
    assert!(!search.body.contains("<b>bold</b>"));
    assert!(search.body.contains("&lt;b&gt;bold&lt;/b&gt;"));
}

#[tokio::test]
async fn d28_an_admin_sets_and_clears_the_identity_id_others_only_see_it() {
    let w = world().await;
    let path = format!("/users/{}/identity", w.bob);
    let edit = format!("/users/{}/edit", w.bob);
    let identity = |user: UserId| {
        let app = &w.app;
        let tenant = w.tenant;
        async move {
            app.user(tenant, ActorRef::System, user)
                .await
                .unwrap()
                .identity
                .map(|i| i.as_str().to_owned())
        }
    };
    let mut ada = Browser::new(&w, Some(w.ada));
    let page = ada.get(&edit).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="identity-form""#), "{}", page.body);
    assert!(!page.body.contains(r#"id="clear-identity""#));
    assert_accessible(&edit, &page.body);

    let saved = ada.submit(&edit, &path, &[("identity", "oidc|bob")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let after = ada.follow(&saved).await;
    assert!(
        after
            .body
            .contains("Saved the sign-in identity of bob@acme.test."),
        "{}",
        after.body
    );
    assert_eq!(identity(w.bob).await.as_deref(), Some("oidc|bob"));
    let page = ada.get(&edit).await;
    assert!(page.body.contains(r#"value="oidc|bob""#), "{}", page.body);
    assert!(page.body.contains(r#"id="clear-identity""#));

    // The same value again changes nothing.
    let same = ada.submit(&edit, &path, &[("identity", "oidc|bob")]).await;
    assert!(
        same.location().contains("done=unchanged"),
        "{}",
        same.location()
    );

    // An invalid id is a 422 in the form, with what was typed, and nothing changes.
    let refused = ada.submit(&edit, &path, &[("identity", " oidc|x")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("white space"), "{}", refused.body);
    assert!(refused.body.contains(r#"value=" oidc|x""#));
    assert_accessible("identity (refused)", &refused.body);
    let missing = ada.submit(&edit, &path, &[]).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(identity(w.bob).await.as_deref(), Some("oidc|bob"));

    // Unique in the tenant: another user cannot take it (409 in the form).
    let erin_edit = format!("/users/{}/edit", w.erin);
    let taken = ada
        .submit(
            &erin_edit,
            &format!("/users/{}/identity", w.erin),
            &[("identity", "oidc|bob")],
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert!(
        taken.body.contains("already has this identity id"),
        "{}",
        taken.body
    );
    assert_eq!(identity(w.erin).await, None);

    // A non-admin who may edit users sees the id read-only, and a forged POST with a
    // valid token is refused (403), changing nothing.
    let dan = w
        .app
        .invite(
            w.tenant,
            w.ada,
            &invite_request(
                "dan@acme.test",
                None,
                "users:view,users:edit".parse().unwrap(),
            ),
        )
        .await
        .unwrap();
    let token = dan.accept_link.token().unwrap();
    w.app
        .accept_invitation(&token, "dan@acme.test")
        .await
        .unwrap();
    let mut dan = Browser::new(&w, Some(dan.user.id));
    let page = dan.get(&edit).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains(r#"id="identity-form""#));
    assert!(
        page.body
            .contains(r#"<p id="identity-value">Identity id: <code>oidc|bob</code></p>"#),
        "{}",
        page.body
    );
    assert_accessible("identity (read-only)", &page.body);
    let forged = dan
        .submit(&edit, &path, &[("identity", "oidc|dan-was-here")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let forged = dan.submit(&edit, &path, &[("clear", "on")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert_eq!(identity(w.bob).await.as_deref(), Some("oidc|bob"));
    // A viewer without users:edit gets no page at all; a POST without a token is refused.
    let mut erin = Browser::new(&w, Some(w.erin));
    assert_eq!(erin.get(&edit).await.status, StatusCode::FORBIDDEN);
    let no_token = ada
        .post_raw(&path, "identity=oidc%7Cforged".to_owned())
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert_eq!(identity(w.bob).await.as_deref(), Some("oidc|bob"));

    // Clear: the button, or an empty value.
    let cleared = ada.submit(&edit, &path, &[("clear", "on")]).await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    assert_eq!(identity(w.bob).await, None);
    ada.submit(&edit, &path, &[("identity", "oidc|bob2")]).await;
    assert_eq!(identity(w.bob).await.as_deref(), Some("oidc|bob2"));
    let cleared = ada.submit(&edit, &path, &[("identity", "")]).await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER, "{}", cleared.body);
    assert_eq!(identity(w.bob).await, None);

    // Every change and refusal is in the audit log.
    let log = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap();
    let changed = log
        .iter()
        .filter(|r| {
            r.event
                .changes
                .iter()
                .any(|c| c.field == tenantry_service::Field::Identity)
        })
        .count();
    assert_eq!(changed, 4, "set, clear, set, clear");
    let refused = log
        .iter()
        .filter(|r| {
            r.event.action == AuditAction::UserEdited
                && matches!(r.event.outcome, tenantry_service::Outcome::Refused { .. })
        })
        .count();
    assert_eq!(refused, 3, "taken, and dan's two forged posts");
}
