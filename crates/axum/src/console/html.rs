//! The page layout with its one inline style sheet, and the widgets the pages share (seat
//! indicator, messages, badges, the 6 × 5 permission grid). Everything is maud, which
//! escapes every spliced value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use sha2::{Digest, Sha256};
use tenantry_service::{
    Action, Category, Permission, Permissions, Role, RoleTemplate, SeatUsage, Status,
};
use time::OffsetDateTime;

/// The style sheet of every page (inline, allowed by its hash in the CSP).
pub(super) const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;color:#1f2933;background:#f4f6f8}
a{color:#1d4ed8}
header.top{background:#1e293b;color:#e2e8f0;padding:10px 24px;display:flex;align-items:center;gap:18px;flex-wrap:wrap}
header.top .brand{font-weight:600;font-size:16px;color:#fff}
header.top nav a{color:#e2e8f0;margin-right:14px}
header.top .who{margin-left:auto}
main{max-width:1180px;margin:22px auto;padding:0 24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:0}
.crumb{color:#475569;font-size:13px;margin-bottom:14px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:18px 20px;margin-bottom:18px}
.toolbar{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:14px 0}
.toolbar form{display:flex;gap:8px;align-items:center;margin:0;flex-wrap:wrap}
.spacer{flex:1}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0}
caption{text-align:left;font-weight:600;padding:6px 0}
th,td{text-align:left;padding:9px 12px;border-bottom:1px solid #eef2f6;vertical-align:middle}
thead th{background:#f8fafc;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#334155}
td.actions{white-space:nowrap}
td.actions form{display:inline;margin:0}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;background:#f1f5f9;color:#334155}
.badge.active{background:#dcfce7;color:#166534}
.badge.invited{background:#dbeafe;color:#1e40af}
.badge.suspended{background:#fee2e2;color:#991b1b}
.badge.admin{background:#ede9fe;color:#5b21b6}
.muted{color:#475569}
.small{font-size:13px}
.button,button{display:inline-block;font:inherit;font-size:14px;padding:6px 14px;border-radius:6px;border:1px solid #94a3b8;background:#fff;color:#1f2933;cursor:pointer;text-decoration:none}
.button.primary,button.primary{background:#1d4ed8;border-color:#1d4ed8;color:#fff}
.button.danger,button.danger{background:#b91c1c;border-color:#b91c1c;color:#fff}
button.link{border:0;background:none;color:#1d4ed8;padding:0 4px;text-decoration:underline}
button[disabled]{opacity:.6;cursor:not-allowed}
td.actions a,td.actions button.link{margin-right:8px;font-size:14px}
.seats{display:inline-block;padding:6px 12px;border-radius:6px;background:#e0f2fe;color:#075985;font-weight:600}
.seats.full{background:#fee2e2;color:#991b1b}
.flash{padding:10px 14px;border-radius:6px;margin:12px 0;border:1px solid}
.flash.ok{background:#f0fdf4;border-color:#86efac;color:#14532d}
.flash.error{background:#fef2f2;border-color:#fca5a5;color:#7f1d1d}
.flash.warn{background:#fffbeb;border-color:#fcd34d;color:#78350f}
form.stack label.field{display:block;margin:12px 0 4px;font-weight:600}
form.stack input[type=text],form.stack select{font:inherit;padding:6px 8px;border:1px solid #94a3b8;border-radius:6px;min-width:320px}
input[type=text],select{font:inherit;padding:5px 8px;border:1px solid #94a3b8;border-radius:6px}
.hint{font-size:13px;color:#475569;margin:2px 0 0}
table.grid{width:auto}
table.grid td,table.grid th{padding:6px 10px;text-align:center}
table.grid th[scope=row]{text-align:left}
.via{display:none;font-size:11px;color:#14532d;background:#dcfce7;border-radius:4px;padding:0 4px;margin-left:3px}
.via.key{display:inline-block}
.admin-note{display:none}
form.role-aware:has(#role option[value=admin]:checked) .crm-field{display:none}
form.role-aware:has(#role option[value=admin]:checked) .admin-note{display:block}
.actions-row{margin-top:18px;display:flex;gap:10px;align-items:center}
ul.plain{margin:6px 0;padding-left:20px}
fieldset{border:1px solid #e2e8f0;border-radius:6px;margin:12px 0;padding:8px 14px}
legend{font-weight:600}
code{background:#f1f5f9;padding:1px 4px;border-radius:4px;font-size:13px}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
"#;

/// What the frame of a page shows around its content.
pub(super) struct Chrome<'a> {
    /// Where the console is mounted (`""` for the root).
    pub(super) mount: &'a str,
    /// The tenant's name, when someone of it is signed in.
    pub(super) tenant: Option<&'a str>,
    /// The signed-in user's address and role.
    pub(super) who: Option<(&'a str, Role)>,
    /// Whether the console has the webhooks page (linked for admins only).
    pub(super) webhooks: bool,
}

/// The `Content-Security-Policy` for a page whose one `<style>` holds `css`.
pub(super) fn csp_for(css: &str) -> String {
    let hash = STANDARD.encode(Sha256::digest(css.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A whole page as a response: `extra_css` is appended to the style sheet (and covered by
/// the CSP hash the response carries).
pub(super) fn page(
    status: StatusCode,
    title: &str,
    chrome: &Chrome<'_>,
    extra_css: &str,
    body: Markup,
) -> Response {
    let css = format!("{STYLE}{extra_css}");
    let brand = chrome.tenant.unwrap_or("Settings");
    let m = chrome.mount;
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (brand) }
                style { (PreEscaped(&css)) }
            }
            body {
                header.top {
                    span.brand { (brand) }
                    @if chrome.who.is_some() {
                        nav aria-label="Settings" {
                            a href={(m) "/users"} { "Users" }
                            a href={(m) "/templates"} { "Role templates" }
                            a href={(m) "/audit"} { "Audit log" }
                            a href={(m) "/deliveries"} { "Invitation delivery" }
                            a href={(m) "/tenant"} { "Tenant" }
                            @if chrome.webhooks && matches!(chrome.who, Some((_, Role::Admin))) {
                                a #nav-webhooks href={(m) "/webhooks"} { "Webhooks" }
                            }
                        }
                    }
                    @if let Some((email, role)) = chrome.who {
                        div.who {
                            "Signed in as " strong #signed-in-as { (email) } " " (role_badge(role))
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    let mut response = (status, doc.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp_for(&css)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// The kinds of message box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tone {
    /// Something was done.
    Ok,
    /// Something was refused or failed.
    Error,
    /// Something to know before acting.
    Warn,
}

/// A message box; its first word says what it is, so colour is never the only sign.
pub(super) fn message(tone: Tone, text: &str) -> Markup {
    let (class, word) = match tone {
        Tone::Ok => ("flash ok", "Done:"),
        Tone::Error => ("flash error", "Error:"),
        Tone::Warn => ("flash warn", "Note:"),
    };
    html! {
        div class=(class) role="status" { strong { (word) } " " (text) }
    }
}

/// `2025-01-31 14:05 UTC`, or `never`.
pub(super) fn when(t: Option<OffsetDateTime>) -> String {
    let Some(t) = t else {
        return "never".to_owned();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// "N of M seats used" (or "N seats used (no limit)").
pub(super) fn seats_text(usage: &SeatUsage) -> String {
    match usage.limit {
        Some(limit) => format!("{} of {limit} seats used", usage.used),
        None => format!("{} seats used (no limit)", usage.used),
    }
}

/// The seat indicator ([seat limit (D9)](tenantry_core::Rule::SeatLimit)).
pub(super) fn seats(usage: &SeatUsage) -> Markup {
    html! {
        span #seats class=(if usage.at_limit { "seats full" } else { "seats" }) {
            (seats_text(usage))
        }
    }
}

/// The warning shown at the seat limit.
pub(super) fn seat_warning(usage: &SeatUsage) -> Markup {
    html! {
        @if usage.at_limit {
            div.flash.warn #seat-warning role="status" {
                strong { "Seat limit reached:" } " "
                "You have reached your user limit, so new invitations are disabled. Remove unused \
                 users or upgrade your plan on Settings → Billing to add more seats."
            }
        }
    }
}

/// A status badge.
pub(super) fn status_badge(status: Status) -> Markup {
    html! { span class={"badge " (status)} { (status) } }
}

/// A role badge.
pub(super) fn role_badge(role: Role) -> Markup {
    html! { span class={"badge " (role)} { (role) } }
}

/// `<option>`s of the role dropdown.
pub(super) fn role_options(selected: Role) -> Markup {
    html! {
        @for (role, label) in [(Role::User, "User"), (Role::Admin, "Admin")] {
            option value=(role) selected[role == selected] { (label) }
        }
    }
}

/// `<option>`s of a role template dropdown, starting with "none".
pub(super) fn template_options(
    templates: &[RoleTemplate],
    selected: Option<tenantry_service::TemplateId>,
    none_label: &str,
) -> Markup {
    html! {
        option value="" selected[selected.is_none()] { (none_label) }
        @for t in templates {
            option value=(t.id) selected[Some(t.id) == selected] { (t.name) }
        }
    }
}

/// The style rules that show, in the form `form_id`, the marks of the template selected in
/// its `#template` dropdown (CSS `:has`, no script). Template ids are UUIDs, so the rules
/// hold nothing a user typed.
pub(super) fn template_mark_rules(templates: &[RoleTemplate], form_id: &str) -> String {
    templates
        .iter()
        .map(|t| {
            format!(
                "#{form_id}:has(#template option[value=\"{id}\"]:checked) .via-{id}{{display:inline-block}}\n",
                id = t.id
            )
        })
        .collect()
}

/// The 6 × 5 permission grid: a table of labelled checkboxes (`name="perm"`, value
/// `category:action`). With `templates`, each cell carries a "template" mark per template
/// granting it, shown when that template is selected (see [`template_mark_rules`]).
pub(super) fn permission_grid(
    checked: Permissions,
    templates: &[RoleTemplate],
    caption: &str,
) -> Markup {
    html! {
        table.grid #permissions {
            caption { (caption) }
            thead {
                tr {
                    th scope="col" { "Category" }
                    @for a in Action::ALL { th scope="col" { (a.label()) } }
                }
            }
            tbody {
                @for c in Category::ALL {
                    tr {
                        th scope="row" { (c.label()) }
                        @for a in Action::ALL {
                            @let p = Permission::new(c, a);
                            td {
                                input type="checkbox" name="perm" value=(p)
                                    id={"perm-" (c) "-" (a)}
                                    aria-label={(c.label()) " " (a.as_str())}
                                    checked[checked.has(p)];
                                @for t in templates.iter().filter(|t| t.permissions.has(p)) {
                                    span class={"via via-" (t.id)} { "template" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A comma-separated list of permissions, or "none".
pub(super) fn permission_list(p: Permissions) -> String {
    if p.is_empty() {
        "none".to_owned()
    } else {
        p.to_strings().join(", ")
    }
}

/// The hidden CSRF field every form carries.
pub(super) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(super::csrf::FIELD) value=(token); }
}
