//! The host's own demo sign-in: a page that asks for an address (or lists the demo
//! tenant's users to pick from), a tenant picker when that address is a user of several
//! tenants (D28), the choice kept in a stateless signed cookie, and the [`Identify`] the
//! console and the API use.
//!
//! A real host authenticates the person first (password, OpenID Connect, …) and only then
//! asks tenantry where that address is a user ([`Tenantry::memberships_by_email`], or
//! `memberships_by_identity` with its own subject id). This demo trusts the typed address:
//! it is a stand-in, and it tells who has an address, which a real sign-in must not.
//!
//! The cookie is `demo_signin=<tenant>.<user>.<issued>.<mac>`: the MAC is HMAC-SHA256 over
//! the first three fields with a key only this process knows, so a visitor cannot forge or
//! alter it. Nothing is stored on the server, so no number of anonymous requests can push
//! a signed-in user out (the old session map could be flooded). The price of keeping no
//! state: sign-out removes the cookie from the browser, but a copy taken earlier stays valid
//! until it expires (12 hours); a host that must revoke sessions keeps a server-side list
//! of revoked ones, or short lifetimes. A real host reads its own authentication here.

use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use maud::{DOCTYPE, Markup, html};
use sha2::Sha256;
use tenantry::prelude::*;
use tenantry::{Membership, TenantId, User, UserId};
use tenantry_axum::{Identify, async_trait};

use super::Host;

/// The sign-in cookie's name.
pub(crate) const COOKIE: &str = "demo_signin";
/// How long a sign-in lasts, in seconds (12 hours).
pub(crate) const LIFETIME_SECS: i64 = 12 * 60 * 60;
/// How far in the future an issue time may lie (clock steps), in seconds.
const SKEW_SECS: i64 = 5 * 60;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key the sign-in cookies are signed with (32 random bytes, never shown).
#[derive(Clone)]
pub(crate) struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A key from 32 bytes.
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The MAC state over `payload` (HMAC takes keys of any length, so this is always
    /// `Some`; no panic path either way).
    fn mac(&self, payload: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(payload.as_bytes());
        Some(mac)
    }

    /// The cookie value naming `user` of `tenant`, issued at `issued` (Unix seconds).
    pub(crate) fn sign(&self, tenant: TenantId, user: UserId, issued: i64) -> Option<String> {
        let payload = format!("{tenant}.{user}.{issued}");
        let tag = B64.encode(self.mac(&payload)?.finalize().into_bytes());
        Some(format!("{payload}.{tag}"))
    }

    /// The tenant and user a cookie value names, if this key signed it and it was issued
    /// within [`LIFETIME_SECS`] before `now` (Unix seconds).
    pub(crate) fn verify(&self, value: &str, now: i64) -> Option<(TenantId, UserId)> {
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = B64.decode(tag).ok()?;
        // Constant time comparison of the tag.
        self.mac(payload)?.verify_slice(&tag).ok()?;
        let mut fields = payload.split('.');
        let tenant: TenantId = fields.next()?.parse().ok()?;
        let user: UserId = fields.next()?.parse().ok()?;
        let issued: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        let age = now.checked_sub(issued)?;
        (-SKEW_SECS..LIFETIME_SECS)
            .contains(&age)
            .then_some((tenant, user))
    }
}

/// The value of the cookie `name` among the request's cookies.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Who is calling: the user the request's sign-in cookie names, if its signature holds.
/// The guard then checks that user against the store on every request.
pub(crate) struct CookieIdentity {
    pub(crate) key: SigningKey,
}

#[async_trait]
impl Identify for CookieIdentity {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.key.verify(cookie(&parts.headers, COOKIE)?, now)
    }
}

/// Who the request's cookie names, as [`CookieIdentity`] reads it.
pub(crate) fn signed_in(host: &Host, headers: &HeaderMap) -> Option<(TenantId, UserId)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    host.key.verify(cookie(headers, COOKIE)?, now)
}

/// Whether a form post comes from this site's own pages: browsers say where a request comes
/// from (`Sec-Fetch-Site`, `Origin`); a post from another site is refused, so no other site
/// can sign a visitor in as someone else or out. Clients that send neither (not browsers)
/// are let through: they are no cross-site threat.
fn same_site(host: &Host, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => origin.to_str().is_ok_and(|o| o == host.origin),
        None => true,
    }
}

fn set_cookie(host: &Host, value: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if host.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// `GET /`: the console when signed in, else the demo sign-in.
pub(crate) async fn root(State(host): State<Host>, headers: HeaderMap) -> Redirect {
    if signed_in(&host, &headers).is_some() {
        Redirect::to(super::CONSOLE_HOME)
    } else {
        Redirect::to("/signin")
    }
}

/// The query of the sign-in page.
#[derive(serde::Deserialize, Default)]
pub(crate) struct PageQuery {
    #[serde(default)]
    signed_out: Option<String>,
}

/// `GET /signin`: pick who you are.
pub(crate) async fn page(
    State(host): State<Host>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let note = q.signed_out.is_some().then_some("Signed out.");
    render(&host, &headers, note, None, StatusCode::OK).await
}

async fn render(
    host: &Host,
    headers: &HeaderMap,
    note: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let users = host
        .app
        .list_users(
            host.tenant,
            ActorRef::System,
            &UserQuery {
                limit: 200,
                ..UserQuery::default()
            },
        )
        .await
        .map(|p| p.items);
    let current = match signed_in(host, headers) {
        Some((tenant, id)) => {
            let user = host.app.user(tenant, ActorRef::System, id).await.ok();
            let name = host.app.tenant(tenant).await.ok().map(|s| s.tenant.name);
            user.map(|u| {
                let admin = u.role == Role::Admin && u.status == Status::Active;
                (u.email.as_str().to_owned(), name.unwrap_or_default(), admin)
            })
        }
        None => None,
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Demo sign-in" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "Demo sign-in" }
                    p.muted { "A stand-in for your application's real authentication." }
                    @if let Some(n) = note { p.note role="status" { (n) } }
                    @if let Some(e) = error { p.error role="alert" id="signin-error" { (e) } }
                    @if let Some((email, tenant, admin)) = &current {
                        p id="current" {
                            "Signed in as " strong id="signed-in-as" { (email) }
                            " in " strong id="signed-in-tenant" { (tenant) } ". "
                            a href=(super::CONSOLE_HOME) { "Open Settings → Users" }
                        }
                        @if *admin {
                            p id="operator" {
                                "Operators: "
                                a id="operator-tenants-link" href=(super::tenants::PATH) { "all tenants" }
                                " (in this demo, any active admin may look; a real host puts its own operator sign-in in front)."
                            }
                        }
                        form method="post" action="/signout" {
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                    p {
                        "tenantry does not authenticate anyone: the host application does, and tells \
                         tenantry who is calling. Here you type an address, or pick a user of the demo \
                         tenant. Signing in records a last login; invited and suspended users are refused."
                    }
                    form id="signin-email" method="post" action="/signin" {
                        label for="email" { "Email address" }
                        " "
                        input id="email" type="email" name="email" autocomplete="username"
                            aria-describedby="email-hint" required;
                        " "
                        button type="submit" id="continue" { "Continue" }
                        p.muted id="email-hint" {
                            "An address that is a user of several tenants gets a choice of tenant: try "
                            code { (MULTI_TENANT_DEMO) } "."
                        }
                    }
                    @match &users {
                        Ok(list) => {
                            table id="signin-users" {
                                caption { "Users of the demo tenant" }
                                thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Status" } th scope="col" { "Sign in" } } }
                                tbody {
                                    @for u in list {
                                        (user_row(u))
                                    }
                                }
                            }
                        }
                        Err(_) => p.error role="alert" { "The users could not be read; try again." }
                    }
                }
            }
        }
    };
    (status, body).into_response()
}

fn user_row(u: &User) -> Markup {
    html! {
        tr data-email=(u.email.as_str()) {
            td { (u.email.as_str()) }
            td { (u.role.to_string()) }
            td { (u.status.to_string()) }
            td {
                form method="post" action="/signin" {
                    input type="hidden" name="user" value=(u.id.to_string());
                    button type="submit" data-email=(u.email.as_str()) {
                        "Sign in as " (u.email.as_str())
                    }
                }
            }
        }
    }
}

/// The demo address that is a user of two tenants (the seed makes it so).
pub(crate) const MULTI_TENANT_DEMO: &str = "ada@acme.test";

/// The sign-in form: a user of the demo tenant (the table's buttons), or an address (the
/// address form), with the tenant chosen on the picker.
#[derive(serde::Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    tenant: String,
}

/// The most tenants the picker lists.
const PICKER_LIMIT: u32 = 100;

/// The tenant picker: every tenant where `email` is a user, with its role and status there.
fn picker(email: &str, memberships: &[Membership], more: bool) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Choose a tenant" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "Choose a tenant" }
                    p id="picker-intro" {
                        strong { (email) } " is a user of " (memberships.len()) " tenants. \
                         Each tenant keeps its own user, with its own role and status."
                    }
                    table id="tenant-picker" {
                        caption { "Tenants where " (email) " is a user" }
                        thead { tr { th scope="col" { "Tenant" } th scope="col" { "Role" } th scope="col" { "Status" } th scope="col" { "Sign in" } } }
                        tbody {
                            @for m in memberships {
                                tr data-tenant=(m.tenant_id.to_string()) {
                                    td.tenant { (m.tenant_name) }
                                    td.role { (m.role.to_string()) }
                                    td.status { (m.status.to_string()) }
                                    td {
                                        form method="post" action="/signin" {
                                            input type="hidden" name="email" value=(email);
                                            input type="hidden" name="tenant" value=(m.tenant_id.to_string());
                                            button type="submit" data-tenant=(m.tenant_id.to_string()) {
                                                "Sign in to " (m.tenant_name)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if more {
                        p.muted id="picker-more" { "Only the first " (PICKER_LIMIT) " tenants are listed." }
                    }
                    p { a href="/signin" { "Use another address" } }
                }
            }
        }
    };
    (StatusCode::OK, body).into_response()
}

/// `POST /signin`: a user of the demo tenant (`user`), or an address (`email`): with one
/// membership it signs in there, with several it shows the tenant picker, whose buttons
/// post the address again with the chosen `tenant`. Records the sign-in (refused for
/// invited and suspended users, as the service decides) and sets the signed cookie.
pub(crate) async fn sign_in(
    State(host): State<Host>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !same_site(&host, &headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-in refused").into_response();
    }
    let unprocessable = |text: &'static str| {
        let (host, headers) = (&host, &headers);
        async move {
            render(
                host,
                headers,
                None,
                Some(text),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    if form.email.trim().is_empty() {
        let Ok(id) = form.user.parse::<UserId>() else {
            return unprocessable("Pick a user, or type an address.").await;
        };
        return finish(&host, &headers, host.tenant, id).await;
    }
    let Ok(email) = Email::parse(&form.email) else {
        return unprocessable("That is not an email address.").await;
    };
    let page = match host
        .app
        .memberships_by_email(&email, None, PICKER_LIMIT)
        .await
    {
        Ok(page) => page,
        Err(_) => {
            return render(
                &host,
                &headers,
                None,
                Some("The sign-in could not be looked up; try again."),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .await;
        }
    };
    let chosen = if form.tenant.is_empty() {
        match page.items.as_slice() {
            [] => return unprocessable("No user has that address.").await,
            [only] => only,
            several => return picker(email.as_str(), several, page.next.is_some()),
        }
    } else {
        let tenant = form.tenant.parse::<TenantId>().ok();
        match page.items.iter().find(|m| Some(m.tenant_id) == tenant) {
            Some(m) => m,
            None => return unprocessable("That address is not a user of that tenant.").await,
        }
    };
    finish(&host, &headers, chosen.tenant_id, chosen.user_id).await
}

/// Records the sign-in of `user` in `tenant` and answers with the signed cookie, or the
/// sign-in page with the refusal.
async fn finish(host: &Host, headers: &HeaderMap, tenant: TenantId, user: UserId) -> Response {
    match host.app.record_sign_in(tenant, user).await {
        Ok(user) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let Some(v) = host
                .key
                .sign(tenant, user.id, now)
                .and_then(|value| set_cookie(host, &value, LIFETIME_SECS))
            else {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the sign-in could not be signed",
                )
                    .into_response();
            };
            let mut response = Redirect::to(super::CONSOLE_HOME).into_response();
            response.headers_mut().append(header::SET_COOKIE, v);
            response
        }
        Err(e) => {
            // A refusal by a rule (suspended, still invited, unknown) is the visitor's to
            // read; any other failure gets a generic text (its detail is no page's business).
            let (status, text) = match e.as_rule() {
                Some(rule) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Sign-in refused: {rule}."),
                ),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The sign-in could not be recorded; try again.".to_owned(),
                ),
            };
            render(host, headers, None, Some(&text), status).await
        }
    }
}

/// `POST /signout`: clears the sign-in cookie and the console's CSRF cookie.
pub(crate) async fn sign_out(State(host): State<Host>, headers: HeaderMap) -> Response {
    if !same_site(&host, &headers) {
        return (StatusCode::FORBIDDEN, "cross-site sign-out refused").into_response();
    }
    let mut response = Redirect::to("/signin?signed_out=1").into_response();
    let h = response.headers_mut();
    if let Some(v) = set_cookie(&host, "", 0) {
        h.append(header::SET_COOKIE, v);
    }
    h.append(
        header::SET_COOKIE,
        tenantry_axum::console::clear_cookie(&host.console),
    );
    response
}

const STYLE: &str = "body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1f2933;background:#f4f6f8}\
main{max-width:900px;margin:24px auto;padding:0 24px}\
table{border-collapse:collapse;width:100%;background:#fff}\
caption{text-align:left;font-weight:600;padding:6px 0}\
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #e2e8f0}\
td form{margin:0}\
button{font:inherit;padding:5px 12px;border:1px solid #1d4ed8;border-radius:6px;background:#1d4ed8;color:#fff;cursor:pointer}\
a{color:#1d4ed8}\
.muted{color:#52606d}.error{color:#991b1b;font-weight:600}.note{color:#166534;font-weight:600}\
input{font:inherit;padding:4px 8px}\
#signin-email{margin:16px 0}";
