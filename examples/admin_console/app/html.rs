//! Server-rendered HTML: escaping, the page layout with its inline style sheet, and the
//! widgets the pages share (seat indicator, selects, the 6×5 permission grid).
//!
//! Every piece of user data goes through [`esc`]; nothing here loads an external asset.

use std::fmt::Write as _;

use tenantry::{Action, Category, Permission, Permissions, Role, RoleTemplate, SeatUsage, Status};
use time::OffsetDateTime;

/// Escapes text for element content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub(crate) fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `2025-01-31 14:05 UTC`, or `never`.
pub(crate) fn when(t: Option<OffsetDateTime>) -> String {
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

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;color:#1f2933;background:#f4f6f8}
a{color:#1d4ed8}
header.top{background:#1e293b;color:#e2e8f0;padding:10px 24px;display:flex;align-items:center;gap:18px;flex-wrap:wrap}
header.top .brand{font-weight:600;font-size:16px;color:#fff}
header.top nav a{color:#cbd5e1;margin-right:14px;text-decoration:none}
header.top nav a:hover{color:#fff}
header.top .who{margin-left:auto;display:flex;gap:10px;align-items:center}
header.top .who form{margin:0}
.demo{background:#fef3c7;color:#78350f;padding:6px 24px;font-size:13px;border-bottom:1px solid #fcd34d}
main{max-width:1180px;margin:22px auto;padding:0 24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px}
.crumb{color:#64748b;font-size:13px;margin-bottom:14px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:18px 20px;margin-bottom:18px}
.toolbar{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:14px 0}
.toolbar form{display:flex;gap:8px;align-items:center;margin:0}
.spacer{flex:1}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0;border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:9px 12px;border-bottom:1px solid #eef2f6;vertical-align:middle}
th{background:#f8fafc;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#64748b}
tr:last-child td{border-bottom:0}
td.actions{white-space:nowrap}
td.actions form{display:inline;margin:0}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600}
.badge.active{background:#dcfce7;color:#166534}
.badge.invited{background:#dbeafe;color:#1e40af}
.badge.suspended{background:#fee2e2;color:#991b1b}
.badge.admin{background:#ede9fe;color:#5b21b6}
.badge.user{background:#f1f5f9;color:#334155}
.muted{color:#64748b}
.small{font-size:13px}
.button,button{display:inline-block;font:inherit;font-size:14px;padding:6px 14px;border-radius:6px;border:1px solid #cbd5e1;background:#fff;color:#1f2933;cursor:pointer;text-decoration:none}
.button.primary,button.primary{background:#2563eb;border-color:#2563eb;color:#fff}
.button.danger,button.danger{background:#dc2626;border-color:#dc2626;color:#fff}
button.link{border:0;background:none;color:#1d4ed8;padding:0 4px;text-decoration:underline}
button[disabled],.button.disabled{opacity:.5;cursor:not-allowed}
td.actions a,td.actions button.link{margin-right:8px;font-size:14px}
.seats{display:inline-flex;align-items:center;gap:8px;padding:6px 12px;border-radius:6px;background:#e0f2fe;color:#075985;font-weight:600}
.seats.full{background:#fee2e2;color:#991b1b}
.flash{padding:10px 14px;border-radius:6px;margin:12px 0;border:1px solid}
.flash.ok{background:#f0fdf4;border-color:#86efac;color:#14532d}
.flash.error{background:#fef2f2;border-color:#fca5a5;color:#7f1d1d}
.flash.warn{background:#fffbeb;border-color:#fcd34d;color:#78350f}
form.stack label.field{display:block;margin:12px 0 4px;font-weight:600}
form.stack input[type=text],form.stack select{font:inherit;padding:6px 8px;border:1px solid #cbd5e1;border-radius:6px;min-width:320px}
.hint{font-size:13px;color:#64748b;margin:2px 0 0}
table.grid{width:auto}
table.grid td,table.grid th{padding:6px 10px;text-align:center}
table.grid td:first-child,table.grid th:first-child{text-align:left}
.via{display:none;font-size:11px;color:#166534;background:#dcfce7;border-radius:4px;padding:0 4px;margin-left:3px}
.admin-note{display:none}
form.role-aware:has(select[name=role] option[value=admin]:checked) .crm-field{display:none}
form.role-aware:has(select[name=role] option[value=admin]:checked) .admin-note{display:block}
form.role-aware:has(select[name=role] option[value=admin]:checked) table.grid{opacity:.45}
.actions-row{margin-top:18px;display:flex;gap:10px}
ul.plain{margin:6px 0;padding-left:20px}
code{background:#f1f5f9;padding:1px 4px;border-radius:4px;font-size:13px}
"#;

/// What the header shows about the signed-in user.
pub(crate) struct Header<'a> {
    /// The tenant's name.
    pub(crate) tenant: &'a str,
    /// The signed-in user's address and role, if any.
    pub(crate) who: Option<(String, Role)>,
    /// The session's CSRF token (for the sign-out form).
    pub(crate) csrf: &'a str,
    /// Whether to show the outbox link.
    pub(crate) outbox: bool,
}

/// A whole page.
pub(crate) fn page(title: &str, header: &Header<'_>, body: &str) -> String {
    let who = match &header.who {
        Some((email, role)) => format!(
            r#"<span>Signed in as <strong id="signed-in-as">{}</strong> <span class="badge {role}">{role}</span></span>
<a class="button" href="/signin">Switch user</a>
<form method="post" action="/signout"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
            esc(email),
            esc(header.csrf),
        ),
        None => r#"<a class="button" href="/signin">Sign in</a>"#.to_owned(),
    };
    let outbox = if header.outbox {
        r#"<a href="/outbox">Outbox</a>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {tenant}</title><style>{STYLE}</style></head>
<body>
<header class="top"><span class="brand">{tenant}</span>
<nav><a href="/users">Settings → Users</a>{outbox}<a href="/me">My access</a></nav>
<div class="who">{who}</div></header>
<div class="demo">Demo console: the sign-in here is a stand-in for your application's real authentication. Pick who you are on the <a href="/signin">demo sign-in</a> page.</div>
<main>{body}</main>
</body></html>"#,
        title = esc(title),
        tenant = esc(header.tenant),
    )
}

/// A flash or inline message box.
pub(crate) fn message(kind: &str, text: &str) -> String {
    format!(
        r#"<div class="flash {kind}" role="status">{}</div>"#,
        esc(text)
    )
}

/// The seat indicator (D9): "N of M seats used", and a warning at the limit.
pub(crate) fn seats(usage: &SeatUsage) -> String {
    match usage.limit {
        Some(limit) => {
            let class = if usage.at_limit {
                "seats full"
            } else {
                "seats"
            };
            format!(
                r#"<span class="{class}" id="seats">{} of {limit} seats used</span>"#,
                usage.used
            )
        }
        None => format!(
            r#"<span class="seats" id="seats">{} seats used (no limit)</span>"#,
            usage.used
        ),
    }
}

/// The warning shown at the seat limit.
pub(crate) fn seat_warning(usage: &SeatUsage) -> String {
    if usage.at_limit {
        r#"<div class="flash warn" id="seat-warning">You have reached your user limit, so new invitations are disabled. Remove unused users or upgrade your plan on Settings → Billing to add more seats.</div>"#.to_owned()
    } else {
        String::new()
    }
}

/// A status badge.
pub(crate) fn status_badge(status: Status) -> String {
    format!(r#"<span class="badge {status}">{status}</span>"#)
}

/// A role badge.
pub(crate) fn role_badge(role: Role) -> String {
    format!(r#"<span class="badge {role}">{role}</span>"#)
}

/// `<option>`s of the role dropdown.
pub(crate) fn role_options(selected: Role) -> String {
    [(Role::User, "User"), (Role::Admin, "Admin")].iter().fold(
        String::new(),
        |mut out, (role, label)| {
            let sel = if *role == selected { " selected" } else { "" };
            let _ = write!(out, r#"<option value="{role}"{sel}>{label}</option>"#);
            out
        },
    )
}

/// `<option>`s of a role template dropdown, starting with "none".
pub(crate) fn template_options(
    templates: &[RoleTemplate],
    selected: Option<tenantry::TemplateId>,
    none_label: &str,
) -> String {
    let mut out = format!(
        r#"<option value=""{}>{}</option>"#,
        if selected.is_none() { " selected" } else { "" },
        esc(none_label)
    );
    for t in templates {
        let sel = if Some(t.id) == selected {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<option value="{}"{sel}>{}</option>"#,
            t.id,
            esc(t.name.as_str())
        );
    }
    out
}

/// The 6×5 permission checkboxes (`name="perm"`, value `category:action`).
///
/// With `templates` and a form id, each cell also carries a "template" mark per template
/// that grants the permission; a generated style rule shows the marks of the template
/// selected in the form's `template` dropdown (CSS `:has`, no script).
pub(crate) fn permission_grid(
    checked: Permissions,
    templates: &[RoleTemplate],
    form_id: &str,
) -> String {
    let mut out = String::new();
    if !templates.is_empty() {
        out.push_str("<style>");
        for t in templates {
            let _ = write!(
                out,
                r#"#{form_id}:has(select[name=template] option[value="{id}"]:checked) .via-{id}{{display:inline-block}}"#,
                id = t.id
            );
        }
        out.push_str("</style>");
    }
    out.push_str(r#"<table class="grid" id="permissions"><tr><th>Category</th>"#);
    for a in Action::ALL {
        let _ = write!(out, "<th>{}</th>", a.label());
    }
    out.push_str("</tr>");
    for c in Category::ALL {
        let _ = write!(out, "<tr><td>{}</td>", c.label());
        for a in Action::ALL {
            let p = Permission::new(c, a);
            let on = if checked.has(p) { " checked" } else { "" };
            let marks: String = templates
                .iter()
                .filter(|t| t.permissions.has(p))
                .map(|t| {
                    format!(
                        r#"<span class="via via-{}" title="granted by the role template {}">template</span>"#,
                        t.id,
                        esc(t.name.as_str())
                    )
                })
                .collect();
            let _ = write!(
                out,
                r#"<td><input type="checkbox" name="perm" value="{p}" id="perm-{c}-{a}" aria-label="{} {}"{on}>{marks}</td>"#,
                c.label(),
                a.as_str()
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// A comma-separated list of permissions, or "none".
pub(crate) fn permission_list(p: Permissions) -> String {
    if p.is_empty() {
        "none".to_owned()
    } else {
        esc(&p.to_strings().join(", "))
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
