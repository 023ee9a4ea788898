//! The operators' tenant list (`GET /operator/tenants`): every tenant of the service, paged
//! and sorted by name in byte order, then id ([`Tenantry::tenants`]), with its id, seats
//! used, seat limit and creation time. Server-rendered HTML, no script.
//!
//! The library's console is one tenant's settings, for that tenant's admins; a list of all
//! tenants is for the people who run the service, so it is the host's page, behind the
//! host's own operator authentication.
//!
//! **Access in this demo:** the page is shown to a visitor signed in (the demo sign-in
//! cookie) as an active admin of any tenant; anyone else gets 401 (not signed in) or 403.
//! That is a stand-in: an admin of one customer's tenant is no operator of the service,
//! and a real host must put its own operator authentication in front of this route
//! (staff accounts, a separate admin site, a VPN), never a tenant role. The page shows no
//! user, no address and no link that is a secret: only what the listing returns about
//! tenants.
//!
//! The query: `?limit=N` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `after=` the
//! cursor of the page's "Next page" link (opaque text, [`TenantCursor`]'s `Display`). A bad
//! limit or cursor, or either given twice, is a 400 page.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use tenantry::prelude::*;
use tenantry::{ErrorKind, TenantCursor, TenantState};
use time::format_description::well_known::Rfc3339;

use super::Host;

/// Where the page is served.
pub(crate) const PATH: &str = "/operator/tenants";
/// Tenants per page when the query names no limit.
pub(crate) const DEFAULT_LIMIT: u32 = 20;
/// The most tenants per page.
pub(crate) const MAX_LIMIT: u32 = 100;

/// What the query asks for: the page size and where the page starts.
#[derive(Debug)]
struct Wanted {
    limit: u32,
    after: Option<TenantCursor>,
}

/// Reads `limit` and `after` from the raw query; the text says what is wrong.
fn wanted(raw: Option<&str>) -> Result<Wanted, &'static str> {
    let mut limit: Option<u32> = None;
    let mut after: Option<TenantCursor> = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "limit" => {
                if limit.is_some() {
                    return Err("Give the limit once.");
                }
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or("The limit must be a whole number from 1 to 100.")?;
                limit = Some(n);
            }
            "after" => {
                if after.is_some() {
                    return Err("Give the cursor once.");
                }
                let cursor = value
                    .parse::<TenantCursor>()
                    .map_err(|_| "That page cursor is not valid; start from the first page.")?;
                after = Some(cursor);
            }
            // Other parameters (a cache buster, say) change nothing.
            _ => {}
        }
    }
    Ok(Wanted {
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        after,
    })
}

/// Whether the request's sign-in cookie names an active admin (the demo's operator
/// stand-in): `Ok(())`, or the refusal page's status and text.
async fn operator(host: &Host, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let not_signed_in = (
        StatusCode::UNAUTHORIZED,
        "Sign in first: in this demo, the tenant list is for admins.",
    );
    let Some((tenant, id)) = super::signin::signed_in(host, headers) else {
        return Err(not_signed_in);
    };
    match host.app.user(tenant, ActorRef::System, id).await {
        Ok(u) if u.role == Role::Admin && u.status == Status::Active => Ok(()),
        Ok(_) => Err((
            StatusCode::FORBIDDEN,
            "Only operators may see the tenant list (in this demo: an active admin of any tenant).",
        )),
        // The user was deleted since the cookie was signed: nobody is signed in.
        Err(e) if e.kind() == ErrorKind::NotFound => Err(not_signed_in),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "The sign-in could not be checked; try again.",
        )),
    }
}

/// `GET /operator/tenants`: the page, or a 400, 401, 403 or 503 page.
pub(crate) async fn page(
    State(host): State<Host>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err((status, text)) = operator(&host, &headers).await {
        return refusal(status, text);
    }
    let w = match wanted(raw.as_deref()) {
        Ok(w) => w,
        Err(text) => return refusal(StatusCode::BAD_REQUEST, text),
    };
    match host.app.tenants(w.after.as_ref(), w.limit).await {
        Ok(page) => listing(&page.items, page.next.as_ref(), w.limit, w.after.is_some()),
        // The detail of a store failure is no page's business.
        Err(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "The tenants could not be read; try again.",
        ),
    }
}

/// The link to the page after `cursor`, keeping the page size.
fn next_href(cursor: &TenantCursor, limit: u32) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("after", &cursor.to_string());
    q.append_pair("limit", &limit.to_string());
    format!("{PATH}?{}", q.finish())
}

/// The first page's link, keeping the page size.
fn first_href(limit: u32) -> String {
    if limit == DEFAULT_LIMIT {
        PATH.to_owned()
    } else {
        format!("{PATH}?limit={limit}")
    }
}

/// A creation time as RFC 3339 in UTC, to the second (`2026-12-01T17:38:10Z`).
fn created(state: &TenantState) -> String {
    let utc = state.tenant.created_at.to_offset(time::UtcOffset::UTC);
    utc.replace_nanosecond(0)
        .unwrap_or(utc)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn row(state: &TenantState) -> Markup {
    let t = &state.tenant;
    let when = created(state);
    html! {
        tr data-tenant=(t.id.to_string()) {
            th scope="row" class="name" { (t.name) }
            td.id { code { (t.id.to_string()) } }
            td.used { (state.counters.seats_used) }
            td.limit {
                @match t.user_limit {
                    Some(n) => (n),
                    None => "unlimited",
                }
            }
            td.created { time datetime=(when) { (when) } }
        }
    }
}

fn listing(
    items: &[TenantState],
    next: Option<&TenantCursor>,
    limit: u32,
    later_page: bool,
) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Tenants"))
            body {
                main {
                    h1 { "Tenants" }
                    p.muted {
                        "Every tenant of this service, by name (byte order), then id. "
                        "For operators: in this demo, any active admin; a real host puts its own "
                        "operator sign-in in front of this page."
                    }
                    @if items.is_empty() {
                        p id="no-tenants" { "No tenants on this page." }
                    } @else {
                        table id="operator-tenants" {
                            caption {
                                "Tenants, " (items.len()) " on this page"
                                @if later_page { " (not the first)" }
                            }
                            thead {
                                tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Tenant id" }
                                    th scope="col" { "Seats used" }
                                    th scope="col" { "Seat limit" }
                                    th scope="col" { "Created (UTC)" }
                                }
                            }
                            tbody {
                                @for s in items { (row(s)) }
                            }
                        }
                    }
                    nav aria-label="Pages" {
                        ul.pages {
                            @if later_page {
                                li { a id="first-page" href=(first_href(limit)) { "First page" } }
                            }
                            @if let Some(c) = next {
                                li { a id="next-page" rel="next" href=(next_href(c, limit)) { "Next page" } }
                            }
                            li { a href="/signin" { "Back to the sign-in page" } }
                        }
                    }
                }
            }
        }
    };
    (StatusCode::OK, body).into_response()
}

/// A refusal page (400, 401, 403, 503) with a way on.
fn refusal(status: StatusCode, text: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Tenants: not shown"))
            body {
                main {
                    h1 { "Tenants" }
                    p.error role="alert" id="refused" {
                        (status.as_u16()) " " (status.canonical_reason().unwrap_or_default())
                        ": " (text)
                    }
                    p {
                        @if status == StatusCode::BAD_REQUEST {
                            a id="first-page" href=(PATH) { "First page" } " · "
                        }
                        a href="/signin" { "Sign-in page" }
                    }
                }
            }
        }
    };
    (status, body).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) }
            style { (maud::PreEscaped(STYLE)) }
        }
    }
}

const STYLE: &str = "body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1f2933;background:#f4f6f8}\
main{max-width:1000px;margin:24px auto;padding:0 24px}\
table{border-collapse:collapse;width:100%;background:#fff}\
caption{text-align:left;font-weight:600;padding:6px 0}\
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #e2e8f0}\
tbody th{font-weight:600}\
a{color:#1d4ed8}\
.muted{color:#52606d}.error{color:#991b1b;font-weight:600}\
ul.pages{list-style:none;padding:0;display:flex;gap:18px}";
