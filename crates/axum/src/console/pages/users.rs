//! The user table, the invite form, the edit form (with the host's identity id, D28),
//! resend and delete.

use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use tenantry_service::{
    Action, Cursor, Email, Error, ErrorKind, IdentityId, InviteRequest, Permissions, Role,
    RoleTemplate, SeatUsage, SortBy, Status, TemplateId, User, UserEdit, UserId, UserQuery,
};

use crate::problem::Problem;

use super::super::ctx::{Ctx, Viewer, sentence};
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::{Done, notice, templates};

/// Rows per page offered.
const PAGE_SIZES: [u32; 4] = [10, 20, 50, 100];
/// The default rows per page.
const DEFAULT_ROWS: u32 = 20;
/// The largest page the store serves (listing, D18).
const MAX_ROWS: u32 = 500;

macro_rules! viewer {
    ($ctx:expr, $action:expr) => {
        match $ctx.viewer($action).await {
            Ok(v) => v,
            Err(page) => return page,
        }
    };
}

macro_rules! ok_or_page {
    ($ctx:expr, $viewer:expr, $result:expr) => {
        match $result {
            Ok(v) => v,
            Err(e) => return $ctx.failure(Some(&$viewer), &e),
        }
    };
}

pub(super) use {ok_or_page, viewer};

/// A service error shown inside the form that caused it (`None`: a failure page instead,
/// for an unavailable store or an internal error).
pub(super) fn form_error(error: &Error) -> Option<(StatusCode, String)> {
    if matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::Internal) {
        return None;
    }
    let problem = Problem::from_error(error);
    Some((problem.status_code(), sentence(&problem.detail)))
}

fn sort_code(sort: SortBy) -> &'static str {
    match sort {
        SortBy::Email => "email",
        SortBy::CreatedAt => "created",
        SortBy::LastLogin => "last_login",
    }
}

fn template_name(templates: &[RoleTemplate], id: Option<TemplateId>) -> Markup {
    match id {
        None => html! { span.muted { "—" } },
        Some(id) => match templates.iter().find(|t| t.id == id) {
            Some(t) => html! { (t.name) },
            None => html! { "(deleted)" },
        },
    }
}

/// The list's query, read from the URL; what cannot be used is ignored with a note.
struct ListQuery {
    query: UserQuery,
    notes: Vec<&'static str>,
}

fn list_query(q: &Fields) -> ListQuery {
    let mut notes = Vec::new();
    let status = match q.non_empty("status").map(str::parse::<Status>) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            notes.push("The status filter was not understood; showing every status.");
            None
        }
        None => None,
    };
    let sort = match q.non_empty("sort") {
        None | Some("email") => SortBy::Email,
        Some("created") => SortBy::CreatedAt,
        Some("last_login") => SortBy::LastLogin,
        Some(_) => {
            notes.push("The sort order was not understood; sorting by email.");
            SortBy::Email
        }
    };
    let descending = q.get("order") == Some("desc");
    let limit = match q.non_empty("limit").map(str::parse::<u32>) {
        None => DEFAULT_ROWS,
        Some(Ok(n)) if (1..=MAX_ROWS).contains(&n) => n,
        Some(_) => {
            notes.push("The page size must be a number from 1 to 500; showing 20 rows.");
            DEFAULT_ROWS
        }
    };
    let after = match q.non_empty("after").map(str::parse::<Cursor>) {
        None => None,
        Some(Ok(c)) if c.sort() == sort => Some(c),
        Some(Ok(_)) => {
            notes.push("The page link belongs to another sort order; showing the first page.");
            None
        }
        Some(Err(_)) => {
            notes.push("The page link is not valid; showing the first page.");
            None
        }
    };
    let email_contains = q
        .non_empty("q")
        .map(|s| s.chars().take(254).collect::<String>());
    ListQuery {
        query: UserQuery {
            status,
            email_contains,
            sort,
            descending,
            after,
            limit,
            ..UserQuery::default()
        },
        notes,
    }
}

/// The query string of a list page, keeping the filters (`after`: the page to show).
fn list_href(ctx: &Ctx, query: &UserQuery, after: Option<&Cursor>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = query.status {
        out.append_pair("status", s.as_str());
    }
    if let Some(c) = &query.email_contains {
        out.append_pair("q", c);
    }
    out.append_pair("sort", sort_code(query.sort));
    if query.descending {
        out.append_pair("order", "desc");
    }
    out.append_pair("limit", &query.limit.to_string());
    if let Some(a) = after {
        out.append_pair("after", &a.to_string());
    }
    format!("{}?{}", ctx.url("/users"), out.finish())
}

/// `GET /users`: seat indicator, invite action, filters, the user table with paging, and
/// the role templates.
pub(crate) async fn list(ctx: Ctx, uri: Uri) -> Response {
    let v = viewer!(ctx, Action::View);
    let q = Fields::query(&uri);
    let ListQuery { query, notes } = list_query(&q);
    let app = ctx.app();
    let page = ok_or_page!(ctx, v, app.list_users(v.tenant, v.actor(), &query).await);
    let templates = ok_or_page!(ctx, v, app.templates(v.tenant, v.actor()).await);
    let seats = ok_or_page!(ctx, v, app.seat_usage(v.tenant).await);
    let counts = templates::user_counts(&ctx, &v, &templates).await;
    let done = notice(&ctx, &v, &q).await;
    let csrf = ctx.csrf();
    let statuses = [Status::Invited, Status::Active, Status::Suspended];
    let sorts = [
        (SortBy::Email, "Email"),
        (SortBy::CreatedAt, "Date added"),
        (SortBy::LastLogin, "Last login"),
    ];
    let mut sizes = PAGE_SIZES.to_vec();
    if !sizes.contains(&query.limit) {
        sizes.push(query.limit);
        sizes.sort_unstable();
    }
    let body = html! {
        h1 { "Users" }
        div.crumb { "Settings → Users" }
        @if let Some(d) = &done { (d) }
        @for n in &notes { (html::message(Tone::Warn, n)) }
        (html::seat_warning(&seats))
        div.toolbar {
            (html::seats(&seats))
            @if v.may(Action::Create) {
                @if seats.at_limit {
                    button #invite-user.primary type="button" disabled
                        title="The user limit is reached" { "Invite user" }
                } @else {
                    a #invite-user.button.primary href=(ctx.url("/users/invite")) { "Invite user" }
                }
            }
            span.spacer {}
            form #filter method="get" action=(ctx.url("/users")) {
                label.small for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[query.status.is_none()] { "All" }
                    @for s in statuses {
                        option value=(s) selected[query.status == Some(s)] { (s) }
                    }
                }
                label.small for="q" { "Email contains" }
                input #q type="text" name="q" size="16"
                    value=(query.email_contains.as_deref().unwrap_or(""));
                label.small for="sort" { "Sort by" }
                select #sort name="sort" {
                    @for (s, label) in sorts {
                        option value=(sort_code(s)) selected[query.sort == s] { (label) }
                    }
                }
                label.small for="order" { "Order" }
                select #order name="order" {
                    option value="asc" selected[!query.descending] { "Ascending" }
                    option value="desc" selected[query.descending] { "Descending" }
                }
                label.small for="limit" { "Rows" }
                select #limit name="limit" {
                    @for n in &sizes {
                        option value=(n) selected[*n == query.limit] { (n) " per page" }
                    }
                }
                button #apply-filter type="submit" { "Filter" }
            }
        }
        table #users {
            caption { "Users of " (v.tenant_name) }
            thead {
                tr {
                    th scope="col" { "Email" }
                    th scope="col" { "Role" }
                    th scope="col" { "Role template" }
                    th scope="col" { "Status" }
                    th scope="col" { "CRM access" }
                    th scope="col" { "Last login" }
                    th scope="col" { "Actions" }
                }
            }
            tbody {
                @if page.items.is_empty() {
                    tr { td.muted colspan="7" { "No users match." } }
                }
                @for u in &page.items {
                    tr id={"user-" (u.id)} data-email=(u.email) {
                        td.email { (u.email) }
                        td.role { (html::role_badge(u.role)) }
                        td.template { (template_name(&templates, u.template_id)) }
                        td.status { (html::status_badge(u.status)) }
                        td.crm {
                            @if u.role == Role::Admin { "Yes (admin)" }
                            @else if u.crm_access { "Yes" }
                            @else { "No" }
                        }
                        td.last-login { (html::when(u.last_login)) }
                        td.actions {
                            @if v.may(Action::Edit) {
                                a.edit href=(ctx.url(&format!("/users/{}/edit", u.id))) { "Edit" }
                            }
                            @if u.status == Status::Invited && v.may(Action::Create) {
                                form method="post" action=(ctx.url(&format!("/users/{}/resend", u.id))) {
                                    (html::csrf_field(&csrf))
                                    button.link.resend type="submit" { "Resend invite" }
                                }
                            }
                            @if v.may(Action::Delete) {
                                a.delete href=(ctx.url(&format!("/users/{}/delete", u.id))) { "Delete" }
                            }
                        }
                    }
                }
            }
        }
        nav.toolbar aria-label="Pages" {
            @if query.after.is_some() {
                a #first-page.button href=(list_href(&ctx, &query, None)) { "First page" }
            }
            @if let Some(next) = &page.next {
                a #next-page.button href=(list_href(&ctx, &query, Some(next))) { "Next page →" }
            }
        }
        section #templates aria-labelledby="templates-heading" {
            div.toolbar {
                h2 #templates-heading { "Role templates" }
                span.spacer {}
                @if v.may(Action::Manage) {
                    a #new-template.button href=(ctx.url("/templates/new")) { "New template" }
                }
            }
            p.muted.small {
                "Reusable permission sets. A user's template applies in addition to their \
                 direct permissions; editing a template reaches every user of it at their next action."
            }
            (templates::table(&ctx, &v, &templates, &counts))
        }
    };
    ctx.page(Some(&v), StatusCode::OK, "Users", "", body)
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
) -> Markup {
    html! {
        h1 { "Invite user" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Invite user" }
        div.card {
            @if let Some(e) = error { (html::message(Tone::Error, e)) }
            (html::seat_warning(seats))
            p { (html::seats(seats)) " Each invitation takes one seat as soon as it is sent." }
            form #invite-form.stack.role-aware method="post" action=(ctx.url("/users/invite")) {
                (html::csrf_field(&ctx.csrf()))
                label.field for="email" { "Email" }
                input #email type="text" name="email" value=(form.email) autocomplete="off"
                    inputmode="email" aria-describedby="email-hint";
                p.hint #email-hint { "The user's work address; unique in this tenant." }
                label.field for="role" { "Role" }
                select #role name="role" { (html::role_options(form.role)) }
                label.field for="template" { "Role template" }
                select #template name="template" aria-describedby="template-hint" {
                    (html::template_options(templates, form.template, "(none)"))
                }
                p.hint #template-hint { "Optional: a predefined permission set." }
                div.crm-field {
                    input #crm type="checkbox" name="crm" value="on" checked[form.crm];
                    " "
                    label for="crm" { "CRM access" }
                    p.hint { "Lets the user view and update CRM records." }
                }
                p.admin-note.hint { "Admins always have CRM access." }
                div.actions-row {
                    button #send-invite.primary type="submit" disabled[seats.at_limit] { "Send invite" }
                    a.button href=(ctx.url("/users")) { "Cancel" }
                }
            }
        }
    }
}

async fn invite_form_page(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    form: &InviteForm,
    error: Option<&str>,
) -> Response {
    let app = ctx.app();
    let templates = ok_or_page!(ctx, v, app.templates(v.tenant, v.actor()).await);
    let seats = ok_or_page!(ctx, v, app.seat_usage(v.tenant).await);
    let body = invite_html(ctx, &templates, &seats, form, error);
    ctx.page(Some(v), status, "Invite user", "", body)
}

/// `GET /users/invite`: the invite form.
pub(crate) async fn invite_page(ctx: Ctx) -> Response {
    let v = viewer!(ctx, Action::Create);
    let form = InviteForm {
        email: String::new(),
        role: Role::User,
        template: None,
        crm: false,
    };
    invite_form_page(&ctx, &v, StatusCode::OK, &form, None).await
}

/// `POST /users/invite`: sends the invitation. The accept link goes by mail only
/// ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
pub(crate) async fn invite(ctx: Ctx, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Create);
    let mut problems = Vec::new();
    let role = match fields.get("role").map(str::parse::<Role>) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            problems.push(sentence(&e.to_string()));
            Role::User
        }
        None => {
            problems.push("The role field is missing.".to_owned());
            Role::User
        }
    };
    let template = fields.template("template").unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let form = InviteForm {
        email: fields.get("email").unwrap_or("").to_owned(),
        role,
        template,
        crm: fields.checked("crm"),
    };
    let email = match fields.get("email").map(Email::parse) {
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            problems.push(sentence(&e.to_string()));
            None
        }
        None => {
            problems.push("The email field is missing.".to_owned());
            None
        }
    };
    let Some(email) = email.filter(|_| problems.is_empty()) else {
        let text = problems.join(" ");
        return invite_form_page(
            &ctx,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            &form,
            Some(&text),
        )
        .await;
    };
    let request = InviteRequest {
        email,
        role,
        template_id: template,
        // CRM access (D5): admins always have it; the box only counts for users.
        crm_access: role == Role::Admin || form.crm,
        grants: Permissions::empty(),
    };
    match ctx.app().invite(v.tenant, v.user, &request).await {
        Ok(invited) => ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Invited.code(),
            invited.user.id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => invite_form_page(&ctx, &v, status, &form, Some(&text)).await,
            None => ctx.failure(Some(&v), &e),
        },
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

async fn edit_form_page(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    target: &User,
    form: &UserForm,
    error: Option<&str>,
) -> Response {
    let identity = IdentityForm::of(target);
    edit_page_with(ctx, v, status, target, form, error, &identity).await
}

/// The identity id field of the edit page (D28): what it shows, and the refusal of the
/// last attempt to set it.
struct IdentityForm<'a> {
    value: &'a str,
    error: Option<&'a str>,
}

impl<'a> IdentityForm<'a> {
    fn of(u: &'a User) -> Self {
        Self {
            value: u.identity.as_ref().map_or("", IdentityId::as_str),
            error: None,
        }
    }
}

/// The card with the user's identity id (D28): a form for an admin (only an active admin
/// may set it), the value read-only for everyone else.
fn identity_card(ctx: &Ctx, v: &Viewer, target: &User, identity: &IdentityForm<'_>) -> Markup {
    let action = ctx.url(&format!("/users/{}/identity", target.id));
    html! {
        section.card #identity-card aria-labelledby="identity-heading" {
            h2 #identity-heading { "Sign-in identity" }
            @if v.role == Role::Admin {
                @if let Some(e) = identity.error { (html::message(Tone::Error, e)) }
                form #identity-form.stack method="post" action=(action) {
                    (html::csrf_field(&ctx.csrf()))
                    label.field for="identity" { "Identity id" }
                    input #identity type="text" name="identity" value=(identity.value)
                        autocomplete="off" spellcheck="false" aria-describedby="identity-hint";
                    p.hint #identity-hint {
                        "The id your sign-in provider gives this person (for example the OpenID                          Connect subject), up to 255 bytes, unique in this tenant. Leave it empty                          to clear it."
                    }
                    div.actions-row {
                        button #save-identity type="submit" { "Save identity id" }
                        @if target.identity.is_some() {
                            button #clear-identity type="submit" name="clear" value="on" { "Clear" }
                        }
                    }
                }
            } @else {
                p #identity-value {
                    "Identity id: "
                    @match &target.identity {
                        Some(id) => { code { (id.as_str()) } }
                        None => { span.muted { "none" } }
                    }
                }
                p.hint { "Only an admin can set or clear it." }
            }
        }
    }
}

async fn edit_page_with(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    target: &User,
    form: &UserForm,
    error: Option<&str>,
    identity: &IdentityForm<'_>,
) -> Response {
    let app = ctx.app();
    let templates = ok_or_page!(ctx, v, app.templates(v.tenant, v.actor()).await);
    let holds = app.effective_permissions(v.tenant, target.id).await.ok();
    let action = ctx.url(&format!("/users/{}/edit", target.id));
    let body = html! {
        h1 { "Edit user" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → " (target.email) }
        div.card {
            @if let Some(e) = error { (html::message(Tone::Error, e)) }
            form #edit-form.stack.role-aware method="post" action=(action) {
                (html::csrf_field(&ctx.csrf()))
                label.field for="email" { "Email" }
                input #email type="text" name="email" value=(form.email) autocomplete="off";
                label.field for="role" { "Role" }
                select #role name="role" { (html::role_options(form.role)) }
                @if target.status == Status::Invited {
                    p #status-invited {
                        "Status: " (html::status_badge(Status::Invited)) " "
                        span.hint { "The user becomes active by accepting the invitation. To revoke it, delete the user." }
                    }
                } @else {
                    label.field for="status" { "Status" }
                    select #status name="status" aria-describedby="status-hint" {
                        @for st in [Status::Active, Status::Suspended] {
                            option value=(st) selected[st == form.status] { (st) }
                        }
                    }
                    p.hint #status-hint { "Suspended users cannot sign in or act, but stay in your records." }
                }
                label.field for="template" { "Role template" }
                select #template name="template" aria-describedby="template-hint" {
                    (html::template_options(&templates, form.template, "(none: manage permissions manually)"))
                }
                p.hint #template-hint {
                    "The template's permissions apply in addition to the checked boxes; they are marked "
                    span.via.key { "template" } " in the grid."
                }
                div.crm-field {
                    input #crm type="checkbox" name="crm" value="on" checked[form.crm];
                    " "
                    label for="crm" { "CRM access" }
                    p.hint { "Turning it off removes access to CRM records only; other permissions stay." }
                }
                p.admin-note.hint { "Admins always have CRM access and hold every permission." }
                (html::permission_grid(form.grants, &templates, "Direct permissions"))
                @if let Some((p, crm)) = holds {
                    p.hint #holds-now {
                        "Holds now: " (html::permission_list(p)) @if crm { "; CRM access" } "."
                    }
                }
                div.actions-row {
                    button #save-user.primary type="submit" { "Save" }
                    a.button href=(ctx.url("/users")) { "Cancel" }
                }
            }
        }
        (identity_card(ctx, v, target, identity))
    };
    let css = html::template_mark_rules(&templates, "edit-form");
    ctx.page(Some(v), status, "Edit user", &css, body)
}

/// The target user of a page, or the page to answer with (`404` for an id that is not one).
async fn target(ctx: &Ctx, v: &Viewer, id: &str) -> Result<User, Response> {
    let Ok(id) = id.parse::<UserId>() else {
        return Err(ctx.error_page(
            Some(v),
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such user in this tenant.",
        ));
    };
    ctx.app()
        .user(v.tenant, v.actor(), id)
        .await
        .map_err(|e| ctx.failure(Some(v), &e))
}

/// `GET /users/{id}/edit`: the edit form.
pub(crate) async fn edit_page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Edit);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    edit_form_page(
        &ctx,
        &v,
        StatusCode::OK,
        &target,
        &UserForm::of(&target),
        None,
    )
    .await
}

/// The edit the form asks for: only the fields that differ from the saved row. Every
/// field of the form must be there and valid (else the problems, and nothing changes).
fn user_edit(target: &User, fields: &Fields) -> Result<(UserEdit, UserForm), (String, UserForm)> {
    let mut form = UserForm::of(target);
    let mut problems = Vec::new();
    match fields.get("email") {
        Some(e) => form.email = e.to_owned(),
        None => problems.push("The email field is missing.".to_owned()),
    }
    form.crm = fields.checked("crm");
    match fields.get("role").map(str::parse::<Role>) {
        Some(Ok(r)) => form.role = r,
        Some(Err(e)) => problems.push(sentence(&e.to_string())),
        None => problems.push("The role field is missing.".to_owned()),
    }
    if target.status != Status::Invited {
        match fields.get("status").map(str::parse::<Status>) {
            Some(Ok(s)) => form.status = s,
            Some(Err(e)) => problems.push(sentence(&e.to_string())),
            None => problems.push("The status field is missing.".to_owned()),
        }
    }
    match fields.template("template") {
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
            Err(e) => problems.push(sentence(&e.to_string())),
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
    // CRM access (D5): admins always have it; the box only counts for users.
    if form.role == Role::User && form.crm != target.crm_access {
        edit.crm_access = Some(form.crm);
    }
    if form.grants != target.grants {
        edit.grants = Some(form.grants);
    }
    Ok((edit, form))
}

/// `POST /users/{id}/edit`: saves the edit; refusals are shown in the form with what was
/// entered.
pub(crate) async fn edit(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Edit);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let (edit, form) = match user_edit(&target, &fields) {
        Ok(ok) => ok,
        Err((error, form)) => {
            return edit_form_page(
                &ctx,
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                &target,
                &form,
                Some(&error),
            )
            .await;
        }
    };
    if edit == UserEdit::default() {
        return ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Unchanged.code(),
            target.id
        ));
    }
    match ctx
        .app()
        .edit_user(v.tenant, v.user, target.id, &edit)
        .await
    {
        Ok(saved) => ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Saved.code(),
            saved.id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => {
                edit_form_page(&ctx, &v, status, &target, &form, Some(&text)).await
            }
            None => ctx.failure(Some(&v), &e),
        },
    }
}

/// The edit page again, its identity card showing what was typed and why it was refused.
async fn identity_refused(
    ctx: &Ctx,
    v: &Viewer,
    target: &User,
    status: StatusCode,
    value: &str,
    text: &str,
) -> Response {
    let identity = IdentityForm {
        value,
        error: Some(text),
    };
    let form = UserForm::of(target);
    edit_page_with(ctx, v, status, target, &form, None, &identity).await
}

/// `POST /users/{id}/identity`: sets, replaces or clears (an empty value, or the Clear
/// button) the host's identity id of a user (D28). Only an active admin may; the service
/// refuses anyone else (a forged POST is `403` and changes nothing) and records the attempt.
pub(crate) async fn set_identity(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Edit);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let typed = fields.get("identity");
    let identity = if fields.checked("clear") {
        None
    } else {
        match typed {
            None => {
                return identity_refused(
                    &ctx,
                    &v,
                    &target,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "",
                    "The identity field is missing.",
                )
                .await;
            }
            Some("") => None,
            // Checked here too, so an invalid id is a 422 that changes nothing.
            Some(text) => match IdentityId::parse(text) {
                Ok(i) => Some(i),
                Err(e) => {
                    let message = sentence(&format!("invalid identity id: {e}"));
                    return identity_refused(
                        &ctx,
                        &v,
                        &target,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        text,
                        &message,
                    )
                    .await;
                }
            },
        }
    };
    if identity == target.identity {
        return ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Unchanged.code(),
            target.id
        ));
    }
    match ctx
        .app()
        .set_identity(v.tenant, v.user, target.id, identity)
        .await
    {
        Ok(saved) => ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::IdentitySaved.code(),
            saved.id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => {
                identity_refused(&ctx, &v, &target, status, typed.unwrap_or(""), &text).await
            }
            None => ctx.failure(Some(&v), &e),
        },
    }
}

// ------------------------------------------------------------------- resend and delete

/// `POST /users/{id}/resend`: a fresh invitation to the same address, by mail only.
pub(crate) async fn resend(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Create);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    match ctx
        .app()
        .resend_invitation(v.tenant, v.user, target.id)
        .await
    {
        Ok(_) => ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Resent.code(),
            target.id
        )),
        Err(e) => ctx.failure(Some(&v), &e),
    }
}

async fn delete_form_page(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    target: &User,
    error: Option<&str>,
) -> Response {
    let seats = ok_or_page!(ctx, v, ctx.app().seat_usage(v.tenant).await);
    let used = seats.used.saturating_sub(1);
    let after = match seats.limit {
        Some(l) => format!("{used} of {l} seats"),
        None => format!("{used} seats"),
    };
    let action = ctx.url(&format!("/users/{}/delete", target.id));
    let body = html! {
        h1 { "Delete user" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Delete" }
        div.card {
            @if let Some(e) = error { (html::message(Tone::Error, e)) }
            p #delete-impact {
                "Delete " strong { (target.email) } " (" (target.status) ")? Deleting a user is permanent:"
            }
            ul.plain {
                li { (target.email) " loses access immediately and " strong { "cannot sign back in" }
                     "; the account cannot be restored." }
                li { "Conversation and CRM records they created " strong { "remain" } " for audit and reporting." }
                li { "Their seat is freed: " (after) " used afterwards." }
            }
            form method="post" action=(action) {
                (html::csrf_field(&ctx.csrf()))
                div.actions-row {
                    button #confirm-delete.danger type="submit" { "Delete user" }
                    a.button href=(ctx.url("/users")) { "Cancel" }
                }
            }
        }
    };
    ctx.page(Some(v), status, "Delete user", "", body)
}

/// `GET /users/{id}/delete`: the confirmation that explains the impact.
pub(crate) async fn delete_page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Delete);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    delete_form_page(&ctx, &v, StatusCode::OK, &target, None).await
}

/// `POST /users/{id}/delete`: deletes for good; the seat is freed.
pub(crate) async fn delete(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Delete);
    let target = match target(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    match ctx.app().delete_user(v.tenant, v.user, target.id).await {
        Ok(tomb) => ctx.see_other(&format!(
            "/users?done={}&user={}",
            Done::Deleted.code(),
            tomb.user_id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => delete_form_page(&ctx, &v, status, &target, Some(&text)).await,
            None => ctx.failure(Some(&v), &e),
        },
    }
}
