//! Role templates: the list, create, edit, and delete with the users that reference the
//! template listed first and the refuse / detach / reassign choice.

use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use tenantry_service::{
    Action, Permissions, RoleTemplate, TemplateDeletion, TemplateEdit, TemplateId, TemplateName,
    UserQuery,
};

use super::super::ctx::{Ctx, Viewer, sentence};
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::users::{form_error, ok_or_page, viewer};
use super::{Done, notice};

/// How many users reference each template (`None` where the count could not be read).
pub(super) async fn user_counts(
    ctx: &Ctx,
    v: &Viewer,
    templates: &[RoleTemplate],
) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(templates.len());
    for t in templates {
        out.push(
            ctx.app()
                .store()
                .count_template_users(v.tenant, t.id)
                .await
                .ok(),
        );
    }
    out
}

/// The table of templates, with their actions for a viewer holding `users:manage`.
pub(super) fn table(
    ctx: &Ctx,
    v: &Viewer,
    templates: &[RoleTemplate],
    counts: &[Option<u64>],
) -> Markup {
    html! {
        table #template-list {
            caption { "Role templates" }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Permissions" }
                    th scope="col" { "Users" }
                    th scope="col" { "Actions" }
                }
            }
            tbody {
                @if templates.is_empty() {
                    tr { td.muted colspan="4" { "No role templates yet." } }
                }
                @for (i, t) in templates.iter().enumerate() {
                    tr data-template=(t.name) {
                        td.name { (t.name) }
                        td.small { (html::permission_list(t.permissions)) }
                        td.users {
                            @match counts.get(i).copied().flatten() {
                                Some(n) => (n),
                                None => "unknown",
                            }
                        }
                        td.actions {
                            @if v.may(Action::Manage) {
                                a.edit href=(ctx.url(&format!("/templates/{}/edit", t.id))) { "Edit" }
                                a.delete href=(ctx.url(&format!("/templates/{}/delete", t.id))) { "Delete" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /templates`: the role templates.
pub(crate) async fn list(ctx: Ctx, uri: Uri) -> Response {
    let v = viewer!(ctx, Action::View);
    let q = Fields::query(&uri);
    let templates = ok_or_page!(ctx, v, ctx.app().templates(v.tenant, v.actor()).await);
    let counts = user_counts(&ctx, &v, &templates).await;
    let done = notice(&ctx, &v, &q).await;
    let body = html! {
        h1 { "Role templates" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Role templates" }
        @if let Some(d) = &done { (d) }
        div.toolbar {
            p.muted.small {
                "Reusable permission sets. A user's template applies in addition to their direct \
                 permissions; editing a template reaches every user of it at their next action."
            }
            span.spacer {}
            @if v.may(Action::Manage) {
                a #new-template.button href=(ctx.url("/templates/new")) { "New template" }
            }
        }
        (table(&ctx, &v, &templates, &counts))
    };
    ctx.page(Some(&v), StatusCode::OK, "Role templates", "", body)
}

struct TemplateForm<'a> {
    action: String,
    title: String,
    name: &'a str,
    permissions: Permissions,
    note: String,
}

fn form_page(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    form: &TemplateForm<'_>,
    error: Option<&str>,
) -> Response {
    let body = html! {
        h1 { (form.title) }
        div.crumb { a href=(ctx.url("/templates")) { "Settings → Role templates" } }
        div.card {
            @if let Some(e) = error { (html::message(Tone::Error, e)) }
            form #template-form.stack method="post" action=(form.action) {
                (html::csrf_field(&ctx.csrf()))
                label.field for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) autocomplete="off"
                    aria-describedby="name-hint";
                p.hint #name-hint { "Shown in the Role template dropdown, e.g. Support agent or Sales manager." }
                (html::permission_grid(form.permissions, &[], "Permissions of the template"))
                p.hint { (form.note) "Follow least privilege: enable only what this group needs." }
                div.actions-row {
                    button #save-template.primary type="submit" { "Save template" }
                    a.button href=(ctx.url("/templates")) { "Cancel" }
                }
            }
        }
    };
    ctx.page(Some(v), status, &form.title, "", body)
}

/// `GET /templates/new`.
pub(crate) async fn new_page(ctx: Ctx) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let form = TemplateForm {
        action: ctx.url("/templates/new"),
        title: "New role template".to_owned(),
        name: "",
        permissions: Permissions::empty(),
        note: String::new(),
    };
    form_page(&ctx, &v, StatusCode::OK, &form, None)
}

/// `POST /templates/new`.
pub(crate) async fn create(ctx: Ctx, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let name = fields.get("name");
    let permissions = fields.permissions();
    let mut form = TemplateForm {
        action: ctx.url("/templates/new"),
        title: "New role template".to_owned(),
        name: name.unwrap_or(""),
        permissions: permissions.clone().unwrap_or_default(),
        note: String::new(),
    };
    // Checked here too, so a bad form is a 422 that changes (and records) nothing.
    let parsed = match (name.map(TemplateName::parse), permissions) {
        (None, _) => Err("The name field is missing.".to_owned()),
        (Some(Err(e)), _) => Err(sentence(&e.to_string())),
        (_, Err(e)) => Err(e),
        (Some(Ok(n)), Ok(p)) => Ok((n, p)),
    };
    let (name, permissions) = match parsed {
        Ok(ok) => ok,
        Err(e) => return form_page(&ctx, &v, StatusCode::UNPROCESSABLE_ENTITY, &form, Some(&e)),
    };
    match ctx
        .app()
        .create_template(v.tenant, v.user, name.as_str(), permissions)
        .await
    {
        Ok(t) => ctx.see_other(&format!(
            "/templates?done={}&template={}",
            Done::TemplateCreated.code(),
            t.id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => {
                form.note = String::new();
                form_page(&ctx, &v, status, &form, Some(&text))
            }
            None => ctx.failure(Some(&v), &e),
        },
    }
}

/// The template of a page, or the page to answer with.
async fn load(ctx: &Ctx, v: &Viewer, id: &str) -> Result<RoleTemplate, Response> {
    let Ok(id) = id.parse::<TemplateId>() else {
        return Err(ctx.error_page(
            Some(v),
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such role template in this tenant.",
        ));
    };
    ctx.app()
        .template(v.tenant, v.actor(), id)
        .await
        .map_err(|e| ctx.failure(Some(v), &e))
}

async fn users_note(ctx: &Ctx, v: &Viewer, id: TemplateId) -> String {
    match ctx.app().store().count_template_users(v.tenant, id).await {
        Ok(0) | Err(_) => String::new(),
        Ok(n) => {
            format!(
                "{n} user(s) use this template and get the new permissions at their next action. "
            )
        }
    }
}

/// `GET /templates/{id}/edit`.
pub(crate) async fn edit_page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let t = match load(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let form = TemplateForm {
        action: ctx.url(&format!("/templates/{}/edit", t.id)),
        title: format!("Edit role template {}", t.name),
        name: t.name.as_str(),
        permissions: t.permissions,
        note: users_note(&ctx, &v, t.id).await,
    };
    form_page(&ctx, &v, StatusCode::OK, &form, None)
}

/// `POST /templates/{id}/edit`: every user of the template holds the new permissions at its
/// next check ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
pub(crate) async fn edit(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let t = match load(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let name = fields.get("name");
    let permissions = fields.permissions();
    let form = TemplateForm {
        action: ctx.url(&format!("/templates/{}/edit", t.id)),
        title: format!("Edit role template {}", t.name),
        name: name.unwrap_or(""),
        permissions: permissions.clone().unwrap_or(t.permissions),
        note: users_note(&ctx, &v, t.id).await,
    };
    let parsed = match (name.map(TemplateName::parse), permissions) {
        (None, _) => Err("The name field is missing.".to_owned()),
        (Some(Err(e)), _) => Err(sentence(&e.to_string())),
        (_, Err(e)) => Err(e),
        (Some(Ok(n)), Ok(p)) => Ok((n, p)),
    };
    let (new_name, perms) = match parsed {
        Ok(ok) => ok,
        Err(e) => return form_page(&ctx, &v, StatusCode::UNPROCESSABLE_ENTITY, &form, Some(&e)),
    };
    let edit = TemplateEdit {
        name: (new_name.as_str() != t.name.as_str()).then_some(new_name),
        permissions: (perms != t.permissions).then_some(perms),
    };
    match ctx.app().edit_template(v.tenant, v.user, t.id, &edit).await {
        Ok(saved) => ctx.see_other(&format!(
            "/templates?done={}&template={}",
            Done::TemplateSaved.code(),
            saved.id
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => form_page(&ctx, &v, status, &form, Some(&text)),
            None => ctx.failure(Some(&v), &e),
        },
    }
}

async fn delete_form_page(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    t: &RoleTemplate,
    error: Option<&str>,
) -> Response {
    let app = ctx.app();
    let count = ok_or_page!(
        ctx,
        v,
        app.store()
            .count_template_users(v.tenant, t.id)
            .await
            .map_err(tenantry_service::Error::from)
    );
    let users = ok_or_page!(
        ctx,
        v,
        app.template_users(v.tenant, v.actor(), t.id, &UserQuery::default())
            .await
    )
    .items;
    let others: Vec<RoleTemplate> = ok_or_page!(ctx, v, app.templates(v.tenant, v.actor()).await)
        .into_iter()
        .filter(|o| o.id != t.id)
        .collect();
    let more = count.saturating_sub(users.len() as u64);
    let action = ctx.url(&format!("/templates/{}/delete", t.id));
    let body = html! {
        h1 { "Delete role template " (t.name) }
        div.crumb { a href=(ctx.url("/templates")) { "Settings → Role templates" } " → Delete" }
        div.card {
            @if let Some(e) = error { (html::message(Tone::Error, e)) }
            @if count == 0 {
                p #template-users { "No user references this template. After deletion it disappears from the Role template dropdown." }
            } @else {
                p #template-users { (count) " user(s) reference this template. Review them before deleting, and choose what happens to them:" }
                ul.plain {
                    @for u in &users {
                        li { (u.email) " " span.muted.small { "(" (u.role) ", " (u.status) ")" } }
                    }
                    @if more > 0 { li.muted { "… and " (more) " more" } }
                }
            }
            form #template-delete-form.stack method="post" action=(action) {
                (html::csrf_field(&ctx.csrf()))
                fieldset {
                    legend { "What happens to its users" }
                    p {
                        input #mode-refuse type="radio" name="mode" value="refuse" checked;
                        " " label for="mode-refuse" { "Delete only if no user references it" }
                    }
                    p {
                        input #mode-detach type="radio" name="mode" value="detach";
                        " " label for="mode-detach" { "Remove the template from these users (they keep only their direct permissions)" }
                    }
                    p {
                        @if others.is_empty() {
                            input #mode-reassign type="radio" name="mode" value="reassign" disabled;
                            " " label.muted for="mode-reassign" { "Reassign them to another template (there is no other template)" }
                        } @else {
                            input #mode-reassign type="radio" name="mode" value="reassign";
                            " " label for="mode-reassign" { "Reassign them to the template" } " "
                            select #reassign-to name="to" aria-label="Template to reassign them to" {
                                @for o in &others { option value=(o.id) { (o.name) } }
                            }
                        }
                    }
                }
                div.actions-row {
                    button #confirm-delete-template.danger type="submit" { "Delete template" }
                    a.button href=(ctx.url("/templates")) { "Cancel" }
                }
            }
        }
    };
    ctx.page(Some(v), status, "Delete role template", "", body)
}

/// `GET /templates/{id}/delete`: who references it, and the choice.
pub(crate) async fn delete_page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let t = match load(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    delete_form_page(&ctx, &v, StatusCode::OK, &t, None).await
}

/// `POST /templates/{id}/delete`.
pub(crate) async fn delete(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::Manage);
    let t = match load(&ctx, &v, &id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let mode = match fields.get("mode") {
        Some("refuse") => Ok(TemplateDeletion::Refuse),
        Some("detach") => Ok(TemplateDeletion::Detach),
        Some("reassign") => fields
            .non_empty("to")
            .and_then(|to| to.parse().ok())
            .map(TemplateDeletion::Reassign)
            .ok_or_else(|| "Choose the template to reassign the users to.".to_owned()),
        Some(_) => Err("Choose what happens to the template's users.".to_owned()),
        None => Err("The choice of what happens to the users is missing.".to_owned()),
    };
    let mode = match mode {
        Ok(m) => m,
        Err(e) => {
            return delete_form_page(&ctx, &v, StatusCode::UNPROCESSABLE_ENTITY, &t, Some(&e))
                .await;
        }
    };
    match ctx
        .app()
        .delete_template(v.tenant, v.user, t.id, mode)
        .await
    {
        Ok(moved) => ctx.see_other(&format!(
            "/templates?done={}&moved={moved}",
            Done::TemplateDeleted.code()
        )),
        Err(e) => match form_error(&e) {
            Some((status, text)) => delete_form_page(&ctx, &v, status, &t, Some(&text)).await,
            None => ctx.failure(Some(&v), &e),
        },
    }
}
