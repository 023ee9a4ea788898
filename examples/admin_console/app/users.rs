//! The user table, the invite dialog, the edit dialog, resend and delete.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use tenantry::prelude::*;
use tenantry::{Cursor, RoleTemplate, SeatUsage, TemplateId, User, UserId};
use tenantry_axum::{GuardRejection, Require, perm};

use super::html::{self, esc};
use super::{Ctx, Fields, error_text, query_pairs, sentence};

type ViewAuth = Result<Require<perm::UsersView>, GuardRejection>;

const PAGE_SIZES: [u32; 4] = [5, 10, 20, 50];

fn template_name(templates: &[RoleTemplate], id: Option<TemplateId>) -> String {
    match id {
        None => r#"<span class="muted">—</span>"#.to_owned(),
        Some(id) => templates
            .iter()
            .find(|t| t.id == id)
            .map_or_else(|| "(deleted)".to_owned(), |t| esc(t.name.as_str())),
    }
}

// ------------------------------------------------------------------- the Users page

/// `GET /users`: seat indicator, invite action, filter, the user table with paging, and
/// the Role templates section.
pub(crate) async fn list(ctx: Ctx, auth: ViewAuth, RawQuery(raw): RawQuery) -> Response {
    let auth = guarded!(ctx, auth);
    let params = query_pairs(raw.as_deref());
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut problems = Vec::new();
    let status = match param("status").map(str::parse::<Status>) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            problems.push(format!("Filter ignored: {}", sentence(&e.to_string())));
            None
        }
        None => None,
    };
    let limit = match param("limit").map(str::parse::<u32>) {
        Some(Ok(l)) if (1..=500).contains(&l) => l,
        Some(_) => {
            problems.push("The page size must be a number from 1 to 500; showing 20.".to_owned());
            20
        }
        None => 20,
    };
    let after = match param("after").map(str::parse::<Cursor>) {
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            problems.push("The page link is invalid; showing the first page.".to_owned());
            None
        }
        None => None,
    };
    let contains = param("q").map(str::to_owned);
    let query = UserQuery {
        status,
        email_contains: contains.clone(),
        after: after.clone(),
        limit,
        ..UserQuery::default()
    };
    let viewer = ActorRef::User(auth.user);
    let page = or_error_page!(
        ctx,
        ctx.app().list_users(ctx.tenant(), viewer, &query).await
    );
    let templates = or_error_page!(ctx, ctx.app().templates(ctx.tenant(), viewer).await);
    let seats = or_error_page!(ctx, ctx.app().seat_usage(ctx.tenant()).await);

    let mut body = String::new();
    body.push_str(r#"<h1>Users</h1><div class="crumb">Settings → Users</div>"#);
    body.push_str(&ctx.flash_html());
    for p in &problems {
        body.push_str(&html::message("warn", p));
    }
    body.push_str(&html::seat_warning(&seats));

    // Toolbar: seats, invite, filter.
    body.push_str(r#"<div class="toolbar">"#);
    body.push_str(&html::seats(&seats));
    if ctx.may(Action::Create) {
        if seats.at_limit {
            body.push_str(r#"<button id="invite-user" class="primary" disabled title="The user limit is reached">Invite user</button>"#);
        } else {
            body.push_str(
                r#"<a id="invite-user" class="button primary" href="/users/invite">Invite user</a>"#,
            );
        }
    }
    body.push_str(r#"<span class="spacer"></span><form method="get" action="/users" id="filter"><label class="small" for="status">Status</label><select name="status" id="status">"#);
    let _ = write!(
        body,
        r#"<option value=""{}>All</option>"#,
        if status.is_none() { " selected" } else { "" }
    );
    for s in [Status::Invited, Status::Active, Status::Suspended] {
        let sel = if status == Some(s) { " selected" } else { "" };
        let _ = write!(body, r#"<option value="{s}"{sel}>{s}</option>"#);
    }
    let _ = write!(
        body,
        r#"</select><input type="text" name="q" placeholder="Email contains" value="{}" size="16"><select name="limit" aria-label="Rows per page">"#,
        esc(contains.as_deref().unwrap_or(""))
    );
    let mut sizes = PAGE_SIZES.to_vec();
    if !sizes.contains(&limit) {
        sizes.push(limit);
        sizes.sort_unstable();
    }
    for n in sizes {
        let sel = if n == limit { " selected" } else { "" };
        let _ = write!(body, r#"<option value="{n}"{sel}>{n} per page</option>"#);
    }
    body.push_str(
        r#"</select><button type="submit" id="apply-filter">Filter</button></form></div>"#,
    );

    // The table.
    body.push_str(r#"<table id="users"><thead><tr><th>Email</th><th>Role</th><th>Role template</th><th>Status</th><th>CRM access</th><th>Last login</th><th>Actions</th></tr></thead><tbody>"#);
    if page.items.is_empty() {
        body.push_str(r#"<tr><td colspan="7" class="muted">No users match.</td></tr>"#);
    }
    for u in &page.items {
        let crm = if u.role == Role::Admin {
            "Yes (admin)"
        } else if u.crm_access {
            "Yes"
        } else {
            "No"
        };
        let mut actions = String::new();
        if ctx.may(Action::Edit) {
            let _ = write!(
                actions,
                r#"<a class="edit" href="/users/{}/edit">Edit</a>"#,
                u.id
            );
        }
        if u.status == Status::Invited && ctx.may(Action::Create) {
            let _ = write!(
                actions,
                r#"<form method="post" action="/users/{}/resend">{}<button type="submit" class="link resend">Resend invite</button></form>"#,
                u.id,
                html::csrf_field(&ctx.csrf)
            );
        }
        if ctx.may(Action::Delete) {
            let _ = write!(
                actions,
                r#"<a class="delete" href="/users/{}/delete">Delete</a>"#,
                u.id
            );
        }
        let _ = write!(
            body,
            r#"<tr data-email="{email}" id="user-{id}"><td class="email">{email}</td><td class="role">{role}</td><td class="template">{template}</td><td class="status">{status}</td><td class="crm">{crm}</td><td class="last-login">{login}</td><td class="actions">{actions}</td></tr>"#,
            email = esc(u.email.as_str()),
            id = u.id,
            role = html::role_badge(u.role),
            template = template_name(&templates, u.template_id),
            status = html::status_badge(u.status),
            login = html::when(u.last_login),
        );
    }
    body.push_str("</tbody></table>");

    // Paging by cursor (D18).
    let keep = |after: Option<&Cursor>| {
        let mut q = format!("limit={limit}");
        if let Some(s) = status {
            let _ = write!(q, "&status={s}");
        }
        if let Some(c) = &contains {
            let _ = write!(q, "&q={}", html::url_encode(c));
        }
        if let Some(a) = after {
            let _ = write!(q, "&after={}", html::url_encode(&a.to_string()));
        }
        q
    };
    body.push_str(r#"<div class="toolbar">"#);
    if after.is_some() {
        let _ = write!(
            body,
            r#"<a class="button" id="first-page" href="/users?{}">First page</a>"#,
            esc(&keep(None))
        );
    }
    if let Some(next) = &page.next {
        let _ = write!(
            body,
            r#"<a class="button" id="next-page" href="/users?{}">Next page →</a>"#,
            esc(&keep(Some(next)))
        );
    }
    body.push_str("</div>");

    // Role templates.
    body.push_str(r#"<section id="templates"><div class="toolbar"><h2 style="margin:0">Role templates</h2><span class="spacer"></span>"#);
    if ctx.may(Action::Manage) {
        body.push_str(
            r#"<a class="button" id="new-template" href="/templates/new">New template</a>"#,
        );
    }
    body.push_str(r#"</div><p class="muted small">Reusable permission sets. A user's template applies in addition to their direct permissions; editing a template reaches every user of it at their next action.</p>"#);
    body.push_str(r#"<table id="template-list"><thead><tr><th>Name</th><th>Permissions</th><th>Users</th><th>Actions</th></tr></thead><tbody>"#);
    if templates.is_empty() {
        body.push_str(r#"<tr><td colspan="4" class="muted">No role templates yet.</td></tr>"#);
    }
    for t in &templates {
        let users = ctx
            .app()
            .store()
            .count_template_users(ctx.tenant(), t.id)
            .await
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let actions = if ctx.may(Action::Manage) {
            format!(
                r#"<a class="edit" href="/templates/{id}/edit">Edit</a><a class="delete" href="/templates/{id}/delete">Delete</a>"#,
                id = t.id
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr data-template="{name}"><td class="name">{name}</td><td class="small">{perms}</td><td>{users}</td><td class="actions">{actions}</td></tr>"#,
            name = esc(t.name.as_str()),
            perms = html::permission_list(t.permissions),
        );
    }
    body.push_str("</tbody></table></section>");
    ctx.page(StatusCode::OK, "Users", &body)
}

// ------------------------------------------------------------------- invite

struct InviteForm {
    email: String,
    role: Role,
    template: Option<TemplateId>,
    crm: bool,
}

fn invite_html(
    ctx: &Ctx,
    templates: &[RoleTemplate],
    seats: &SeatUsage,
    form: &InviteForm,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    body.push_str(r#"<h1>Invite user</h1><div class="crumb"><a href="/users">Settings → Users</a> → Invite user</div><div class="card">"#);
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    body.push_str(&html::seat_warning(seats));
    let _ = write!(
        body,
        r#"<p>{} · each invitation takes one seat as soon as it is sent.</p>
<form method="post" action="/users/invite" id="invite-form" class="stack role-aware">{}
<label class="field" for="email">Email</label>
<input type="text" id="email" name="email" value="{}" autocomplete="off" inputmode="email" placeholder="name@company.com">
<p class="hint">The user's work address; unique in this tenant.</p>
<label class="field" for="role">Role</label>
<select id="role" name="role">{}</select>
<label class="field" for="template">Role template</label>
<select id="template" name="template">{}</select>
<p class="hint">Optional: a predefined permission set.</p>
<div class="crm-field"><label class="field"><input type="checkbox" id="crm" name="crm" value="on"{}> CRM access</label><p class="hint">Lets the user view and update CRM records.</p></div>
<p class="admin-note hint">Admins always have CRM access.</p>
<div class="actions-row"><button type="submit" class="primary" id="send-invite"{}>Send invite</button><a class="button" href="/users">Cancel</a></div>
</form></div>"#,
        html::seats(seats),
        html::csrf_field(&ctx.csrf),
        esc(&form.email),
        html::role_options(form.role),
        html::template_options(templates, form.template, "(none)"),
        if form.crm { " checked" } else { "" },
        if seats.at_limit { " disabled" } else { "" },
    );
    body
}

/// `GET /users/invite`: the invite dialog.
pub(crate) async fn invite_page(ctx: Ctx, auth: ViewAuth) -> Response {
    let auth = guarded!(ctx, auth);
    let templates = or_error_page!(
        ctx,
        ctx.app()
            .templates(ctx.tenant(), ActorRef::User(auth.user))
            .await
    );
    let seats = or_error_page!(ctx, ctx.app().seat_usage(ctx.tenant()).await);
    let form = InviteForm {
        email: String::new(),
        role: Role::User,
        template: None,
        crm: false,
    };
    let body = invite_html(&ctx, &templates, &seats, &form, None);
    ctx.page(StatusCode::OK, "Invite user", &body)
}

/// Reads an optional template id from a form field.
fn template_field(text: &str) -> Result<Option<TemplateId>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| "That role template does not exist.".to_owned())
}

/// `POST /users/invite`: sends the invitation (D3, D5, D7, D9, D10).
pub(crate) async fn invite(ctx: Ctx, auth: ViewAuth, fields: Fields) -> Response {
    let auth = guarded!(ctx, auth);
    let role = fields.text("role").parse::<Role>();
    let template = template_field(fields.text("template"));
    let form = InviteForm {
        email: fields.text("email").to_owned(),
        role: *role.as_ref().unwrap_or(&Role::User),
        template: template.clone().unwrap_or(None),
        crm: fields.checked("crm"),
    };
    let outcome = match (role, template) {
        (Err(e), _) => Err(sentence(&e.to_string())),
        (_, Err(e)) => Err(e),
        (Ok(role), Ok(template_id)) => match Email::parse(&form.email) {
            Err(e) => Err(error_text(&e.into())),
            Ok(email) => {
                let request = InviteRequest {
                    email,
                    role,
                    template_id,
                    // D5: admins always have CRM access; the box is hidden for them.
                    crm_access: role == Role::Admin || form.crm,
                    grants: Permissions::empty(),
                };
                ctx.app()
                    .invite(ctx.tenant(), auth.user, &request)
                    .await
                    .map_err(|e| error_text(&e))
            }
        },
    };
    match outcome {
        Ok(invited) => {
            ctx.flash(
                "ok",
                format!(
                    "Invitation sent to {}. They appear as invited until they accept; the message is in the outbox. Invite link (shown this once): {}",
                    invited.user.email,
                    invited.accept_link.expose()
                ),
            );
            ctx.back_to_users()
        }
        Err(error) => {
            let viewer = ActorRef::User(auth.user);
            let templates = ctx
                .app()
                .templates(ctx.tenant(), viewer)
                .await
                .unwrap_or_default();
            let seats = or_error_page!(ctx, ctx.app().seat_usage(ctx.tenant()).await);
            let body = invite_html(&ctx, &templates, &seats, &form, Some(&error));
            ctx.page(StatusCode::UNPROCESSABLE_ENTITY, "Invite user", &body)
        }
    }
}

// ------------------------------------------------------------------- edit

struct UserForm {
    email: String,
    role: Role,
    status: Status,
    template: Option<TemplateId>,
    crm: bool,
    grants: Permissions,
}

impl UserForm {
    fn of(u: &User) -> Self {
        Self {
            email: u.email.as_str().to_owned(),
            role: u.role,
            status: u.status,
            template: u.template_id,
            crm: u.crm_access || u.role == Role::Admin,
            grants: u.grants,
        }
    }
}

async fn edit_html(ctx: &Ctx, target: &User, form: &UserForm, error: Option<&str>) -> String {
    let templates = ctx
        .app()
        .templates(ctx.tenant(), tenantry::ActorRef::System)
        .await
        .unwrap_or_default();
    let holds = ctx
        .app()
        .effective_permissions(ctx.tenant(), target.id)
        .await
        .ok();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>Edit user</h1><div class="crumb"><a href="/users">Settings → Users</a> → {}</div><div class="card">"#,
        esc(target.email.as_str())
    );
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    let status_field = if target.status == Status::Invited {
        r#"<p id="status-invited"><span class="badge invited">invited</span> <span class="hint">The user becomes active by accepting the invitation. To revoke it, delete the user.</span></p>"#.to_owned()
    } else {
        let mut s = r#"<select id="status" name="status">"#.to_owned();
        for st in [Status::Active, Status::Suspended] {
            let sel = if st == form.status { " selected" } else { "" };
            let _ = write!(s, r#"<option value="{st}"{sel}>{st}</option>"#);
        }
        s.push_str(r#"</select><p class="hint">Suspended users cannot sign in or act, but stay in your records.</p>"#);
        s
    };
    let now = match holds {
        Some((p, crm)) => format!(
            "Holds now: {}{}.",
            html::permission_list(p),
            if crm { "; CRM access" } else { "" }
        ),
        None => String::new(),
    };
    let _ = write!(
        body,
        r#"<form method="post" action="/users/{id}/edit" id="edit-form" class="stack role-aware">{csrf}
<label class="field" for="email">Email</label>
<input type="text" id="email" name="email" value="{email}" autocomplete="off">
<label class="field" for="role">Role</label>
<select id="role" name="role">{roles}</select>
<label class="field" for="status">Status</label>
{status_field}
<label class="field" for="template">Role template</label>
<select id="template" name="template">{templates}</select>
<p class="hint">The template's permissions apply in addition to the checked boxes; they are marked <span class="via" style="display:inline-block">template</span> below.</p>
<div class="crm-field"><label class="field"><input type="checkbox" id="crm" name="crm" value="on"{crm}> CRM access</label><p class="hint">Turning it off removes access to CRM records only; other permissions stay.</p></div>
<p class="admin-note hint">Admins always have CRM access and hold every permission.</p>
<label class="field">Permissions</label>
{grid}
<p class="hint">{now}</p>
<div class="actions-row"><button type="submit" class="primary" id="save-user">Save</button><a class="button" href="/users">Cancel</a></div>
</form></div>"#,
        id = target.id,
        csrf = html::csrf_field(&ctx.csrf),
        email = esc(&form.email),
        roles = html::role_options(form.role),
        templates = html::template_options(
            &templates,
            form.template,
            "(none: manage permissions manually)"
        ),
        crm = if form.crm { " checked" } else { "" },
        grid = html::permission_grid(form.grants, &templates, "edit-form"),
    );
    body
}

async fn load_target(ctx: &Ctx, viewer: UserId, id: UserId) -> Result<User, tenantry::Error> {
    ctx.app()
        .user(ctx.tenant(), ActorRef::User(viewer), id)
        .await
}

/// `GET /users/{id}/edit`: the edit dialog.
pub(crate) async fn edit_page(ctx: Ctx, auth: ViewAuth, Path(id): Path<String>) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<UserId>() else {
        return ctx.no_such("user");
    };
    let target = or_error_page!(ctx, load_target(&ctx, auth.user, id).await);
    let body = edit_html(&ctx, &target, &UserForm::of(&target), None).await;
    ctx.page(StatusCode::OK, "Edit user", &body)
}

/// The edit as the form asks for it: only the fields that differ from the saved row.
fn user_edit(target: &User, fields: &Fields) -> Result<(UserEdit, UserForm), (String, UserForm)> {
    let mut form = UserForm::of(target);
    form.email = fields.text("email").to_owned();
    form.crm = fields.checked("crm");
    let mut problems = Vec::new();
    match fields.text("role").parse::<Role>() {
        Ok(r) => form.role = r,
        Err(e) => problems.push(sentence(&e.to_string())),
    }
    if target.status != Status::Invited {
        match fields.text("status").parse::<Status>() {
            Ok(s) => form.status = s,
            Err(e) => problems.push(sentence(&e.to_string())),
        }
    }
    match template_field(fields.text("template")) {
        Ok(t) => form.template = t,
        Err(e) => problems.push(e),
    }
    match fields.permissions() {
        Ok(p) => form.grants = p,
        Err(e) => problems.push(e),
    }
    let mut edit = UserEdit::default();
    if form.email.trim() != target.email.as_str() {
        match Email::parse(&form.email) {
            Ok(e) => edit.email = Some(e),
            Err(e) => problems.push(error_text(&e.into())),
        }
    }
    if !problems.is_empty() {
        return Err((problems.join(" "), form));
    }
    if form.role != target.role {
        edit.role = Some(form.role);
    }
    if form.status != target.status {
        edit.status = Some(form.status);
    }
    if form.template != target.template_id {
        edit.template_id = Some(form.template);
    }
    // D5: admins always have CRM access; the box only counts for users.
    if form.role == Role::User && form.crm != target.crm_access {
        edit.crm_access = Some(form.crm);
    }
    if form.grants != target.grants {
        edit.grants = Some(form.grants);
    }
    Ok((edit, form))
}

/// `POST /users/{id}/edit`: saves the edit (D2, D3, D5, D7, D8); rule errors are shown in
/// the form with what was entered.
pub(crate) async fn edit(
    ctx: Ctx,
    auth: ViewAuth,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<UserId>() else {
        return ctx.no_such("user");
    };
    let target = or_error_page!(ctx, load_target(&ctx, auth.user, id).await);
    let (edit, form) = match user_edit(&target, &fields) {
        Ok(v) => v,
        Err((error, form)) => {
            let body = edit_html(&ctx, &target, &form, Some(&error)).await;
            return ctx.page(StatusCode::UNPROCESSABLE_ENTITY, "Edit user", &body);
        }
    };
    if edit == UserEdit::default() {
        ctx.flash("ok", format!("No changes to {}.", target.email));
        return ctx.back_to_users();
    }
    match ctx
        .app()
        .edit_user(ctx.tenant(), auth.user, id, &edit)
        .await
    {
        Ok(saved) => {
            ctx.flash(
                "ok",
                format!(
                    "Saved {}: {} · {}. Permission changes apply at their next action.",
                    saved.email, saved.role, saved.status
                ),
            );
            ctx.back_to_users()
        }
        Err(e) => {
            let body = edit_html(&ctx, &target, &form, Some(&error_text(&e))).await;
            ctx.page(StatusCode::UNPROCESSABLE_ENTITY, "Edit user", &body)
        }
    }
}

// ------------------------------------------------------------------- resend and delete

/// `POST /users/{id}/resend`: a fresh invitation to the same address (D10).
pub(crate) async fn resend(
    ctx: Ctx,
    auth: ViewAuth,
    Path(id): Path<String>,
    _fields: Fields,
) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<UserId>() else {
        return ctx.no_such("user");
    };
    let target = or_error_page!(ctx, load_target(&ctx, auth.user, id).await);
    match ctx
        .app()
        .resend_invitation(ctx.tenant(), auth.user, id)
        .await
    {
        Ok(resent) => ctx.flash(
            "ok",
            format!(
                "A fresh invitation was sent to {}; earlier links no longer work. New invite link (shown this once): {}",
                target.email,
                resent.accept_link.expose()
            ),
        ),
        Err(e) => ctx.flash("error", error_text(&e)),
    }
    ctx.back_to_users()
}

async fn delete_html(ctx: &Ctx, target: &User, error: Option<&str>) -> String {
    let seats = ctx.app().seat_usage(ctx.tenant()).await.ok();
    let after = seats.map(|s| {
        let used = s.used.saturating_sub(1);
        match s.limit {
            Some(l) => format!("{used} of {l} seats"),
            None => format!("{used} seats"),
        }
    });
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>Delete user</h1><div class="crumb"><a href="/users">Settings → Users</a> → Delete</div><div class="card">"#
    );
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    let _ = write!(
        body,
        r#"<p id="delete-impact">Delete <strong>{email}</strong> ({status})? Deleting a user is permanent:</p>
<ul class="plain"><li>{email} loses access immediately and <strong>cannot sign back in</strong>; the account cannot be restored.</li>
<li>Conversation and CRM records they created <strong>remain</strong> for audit and reporting.</li>
<li>Their seat is freed{after}.</li></ul>
<form method="post" action="/users/{id}/delete">{csrf}<div class="actions-row"><button type="submit" class="danger" id="confirm-delete">Delete user</button><a class="button" href="/users">Cancel</a></div></form></div>"#,
        email = esc(target.email.as_str()),
        status = target.status,
        after = after
            .map(|a| format!(": {a} used afterwards"))
            .unwrap_or_default(),
        id = target.id,
        csrf = html::csrf_field(&ctx.csrf),
    );
    body
}

/// `GET /users/{id}/delete`: the confirmation that explains the impact.
pub(crate) async fn delete_page(ctx: Ctx, auth: ViewAuth, Path(id): Path<String>) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<UserId>() else {
        return ctx.no_such("user");
    };
    let target = or_error_page!(ctx, load_target(&ctx, auth.user, id).await);
    let body = delete_html(&ctx, &target, None).await;
    ctx.page(StatusCode::OK, "Delete user", &body)
}

/// `POST /users/{id}/delete`: deletes for good (D7, D8, D11); the seat is freed (D9).
pub(crate) async fn delete(
    ctx: Ctx,
    auth: ViewAuth,
    Path(id): Path<String>,
    _fields: Fields,
) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<UserId>() else {
        return ctx.no_such("user");
    };
    let target = or_error_page!(ctx, load_target(&ctx, auth.user, id).await);
    match ctx.app().delete_user(ctx.tenant(), auth.user, id).await {
        Ok(tomb) => {
            let seats = ctx
                .app()
                .seat_usage(ctx.tenant())
                .await
                .map(|s| match s.limit {
                    Some(l) => format!(" {} of {l} seats are used now.", s.used),
                    None => format!(" {} seats are used now.", s.used),
                })
                .unwrap_or_default();
            ctx.flash(
                "ok",
                format!("Deleted {}. A seat was freed.{seats}", tomb.email),
            );
            ctx.back_to_users()
        }
        Err(e) => {
            let body = delete_html(&ctx, &target, Some(&error_text(&e))).await;
            ctx.page(StatusCode::UNPROCESSABLE_ENTITY, "Delete user", &body)
        }
    }
}
