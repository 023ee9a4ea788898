//! The Role templates section: create, edit, delete (with the users that reference the
//! template listed first, and the refuse/detach/reassign choice).

use std::fmt::Write as _;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use tenantry::prelude::*;
use tenantry::{RoleTemplate, TemplateId, TemplateName};
use tenantry_axum::{GuardRejection, Require, perm};

use super::html::{self, esc};
use super::{Ctx, Fields, error_text};

type ViewAuth = Result<Require<perm::UsersView>, GuardRejection>;

fn form_html(
    ctx: &Ctx,
    action: &str,
    title: &str,
    name: &str,
    permissions: Permissions,
    note: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>{title}</h1><div class="crumb"><a href="/users">Settings → Users</a> → Role templates</div><div class="card">"#,
        title = esc(title)
    );
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    let _ = write!(
        body,
        r#"<form method="post" action="{action}" id="template-form" class="stack">{csrf}
<label class="field" for="name">Name</label>
<input type="text" id="name" name="name" value="{name}" placeholder="Support agent" autocomplete="off">
<p class="hint">Shown in the Role template dropdown, e.g. Support agent or Sales manager.</p>
<label class="field">Permissions</label>
{grid}
<p class="hint">{note}Follow least privilege: enable only what this group needs.</p>
<div class="actions-row"><button type="submit" class="primary" id="save-template">Save template</button><a class="button" href="/users">Cancel</a></div>
</form></div>"#,
        action = esc(action),
        csrf = html::csrf_field(&ctx.csrf),
        name = esc(name),
        grid = html::permission_grid(permissions, &[], "template-form"),
        note = esc(note),
    );
    body
}

/// `GET /templates/new`.
pub(crate) async fn new_page(ctx: Ctx, auth: ViewAuth) -> Response {
    let _auth = guarded!(ctx, auth);
    let body = form_html(
        &ctx,
        "/templates/new",
        "New role template",
        "",
        Permissions::empty(),
        "",
        None,
    );
    ctx.page(StatusCode::OK, "New role template", &body)
}

/// `POST /templates/new` (D7: `users:manage`, no escalation; D12: unique name).
pub(crate) async fn create(ctx: Ctx, auth: ViewAuth, fields: Fields) -> Response {
    let auth = guarded!(ctx, auth);
    let name = fields.text("name");
    let result = match fields.permissions() {
        Ok(p) => ctx
            .app()
            .create_template(ctx.tenant(), auth.user, name, p)
            .await
            .map_err(|e| error_text(&e)),
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => {
            ctx.flash(
                "ok",
                format!(
                    "Created the role template {}. It is now in the Role template dropdown.",
                    t.name
                ),
            );
            ctx.back_to_users()
        }
        Err(error) => {
            let perms = fields.permissions().unwrap_or_default();
            let body = form_html(
                &ctx,
                "/templates/new",
                "New role template",
                name,
                perms,
                "",
                Some(&error),
            );
            ctx.page(StatusCode::UNPROCESSABLE_ENTITY, "New role template", &body)
        }
    }
}

async fn load(
    ctx: &Ctx,
    viewer: tenantry::UserId,
    id: TemplateId,
) -> Result<RoleTemplate, tenantry::Error> {
    ctx.app()
        .template(ctx.tenant(), ActorRef::User(viewer), id)
        .await
}

async fn users_note(ctx: &Ctx, id: TemplateId) -> String {
    match ctx
        .app()
        .store()
        .count_template_users(ctx.tenant(), id)
        .await
    {
        Ok(0) | Err(_) => String::new(),
        Ok(n) => format!(
            "{n} user(s) use this template and get the new permissions at their next action. "
        ),
    }
}

/// `GET /templates/{id}/edit`.
pub(crate) async fn edit_page(ctx: Ctx, auth: ViewAuth, Path(id): Path<String>) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<TemplateId>() else {
        return ctx.no_such("role template");
    };
    let t = or_error_page!(ctx, load(&ctx, auth.user, id).await);
    let note = users_note(&ctx, id).await;
    let body = form_html(
        &ctx,
        &format!("/templates/{id}/edit"),
        &format!("Edit role template {}", t.name),
        t.name.as_str(),
        t.permissions,
        &note,
        None,
    );
    ctx.page(StatusCode::OK, "Edit role template", &body)
}

/// `POST /templates/{id}/edit`: every user of the template holds the new permissions at
/// its next check (D6, D12).
pub(crate) async fn edit(
    ctx: Ctx,
    auth: ViewAuth,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<TemplateId>() else {
        return ctx.no_such("role template");
    };
    let t = or_error_page!(ctx, load(&ctx, auth.user, id).await);
    let name = fields.text("name");
    let result = match (TemplateName::parse(name), fields.permissions()) {
        (Err(e), _) => Err(error_text(&e.into())),
        (_, Err(e)) => Err(e),
        (Ok(new_name), Ok(perms)) => {
            let edit = TemplateEdit {
                name: (new_name.as_str() != t.name.as_str()).then_some(new_name),
                permissions: (perms != t.permissions).then_some(perms),
            };
            ctx.app()
                .edit_template(ctx.tenant(), auth.user, id, &edit)
                .await
                .map_err(|e| error_text(&e))
        }
    };
    match result {
        Ok(saved) => {
            ctx.flash("ok", format!("Saved the role template {}.", saved.name));
            ctx.back_to_users()
        }
        Err(error) => {
            let note = users_note(&ctx, id).await;
            let perms = fields.permissions().unwrap_or(t.permissions);
            let body = form_html(
                &ctx,
                &format!("/templates/{id}/edit"),
                &format!("Edit role template {}", t.name),
                name,
                perms,
                &note,
                Some(&error),
            );
            ctx.page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Edit role template",
                &body,
            )
        }
    }
}

async fn delete_html(
    ctx: &Ctx,
    viewer: tenantry::UserId,
    t: &RoleTemplate,
    error: Option<&str>,
) -> String {
    let actor = ActorRef::User(viewer);
    let count = ctx
        .app()
        .store()
        .count_template_users(ctx.tenant(), t.id)
        .await
        .unwrap_or(0);
    let users = ctx
        .app()
        .template_users(ctx.tenant(), actor, t.id, &UserQuery::default())
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let others: Vec<RoleTemplate> = ctx
        .app()
        .templates(ctx.tenant(), actor)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.id != t.id)
        .collect();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>Delete role template {}</h1><div class="crumb"><a href="/users">Settings → Users</a> → Role templates</div><div class="card">"#,
        esc(t.name.as_str())
    );
    if let Some(e) = error {
        body.push_str(&html::message("error", e));
    }
    if count == 0 {
        body.push_str(r#"<p id="template-users">No user references this template. After deletion it disappears from the Role template dropdown.</p>"#);
    } else {
        let _ = write!(
            body,
            r#"<p id="template-users">{count} user(s) reference this template. Review them before deleting; choose what happens to them:</p><ul class="plain">"#
        );
        for u in &users {
            let _ = write!(
                body,
                "<li>{} <span class=\"muted small\">({}, {})</span></li>",
                esc(u.email.as_str()),
                u.role,
                u.status
            );
        }
        if count > users.len() as u64 {
            let _ = write!(
                body,
                "<li class=\"muted\">… and {} more</li>",
                count - users.len() as u64
            );
        }
        body.push_str("</ul>");
    }
    let reassign = if others.is_empty() {
        r#"<label class="muted"><input type="radio" name="mode" value="reassign" disabled> Reassign them to another template (there is no other template)</label>"#.to_owned()
    } else {
        format!(
            r#"<label><input type="radio" name="mode" value="reassign"> Reassign them to </label><select name="to" aria-label="Template to reassign to">{}</select>"#,
            others.iter().fold(String::new(), |mut s, o| {
                let _ = write!(
                    s,
                    r#"<option value="{}">{}</option>"#,
                    o.id,
                    esc(o.name.as_str())
                );
                s
            })
        )
    };
    let _ = write!(
        body,
        r#"<form method="post" action="/templates/{id}/delete" class="stack">{csrf}
<p><label><input type="radio" name="mode" value="refuse" checked> Delete only if no user references it</label></p>
<p><label><input type="radio" name="mode" value="detach"> Remove the template from these users (they keep only their direct permissions; adjust them afterwards)</label></p>
<p>{reassign}</p>
<div class="actions-row"><button type="submit" class="danger" id="confirm-delete-template">Delete template</button><a class="button" href="/users">Cancel</a></div></form></div>"#,
        id = t.id,
        csrf = html::csrf_field(&ctx.csrf),
    );
    body
}

/// `GET /templates/{id}/delete`: who references it, and the choice.
pub(crate) async fn delete_page(ctx: Ctx, auth: ViewAuth, Path(id): Path<String>) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<TemplateId>() else {
        return ctx.no_such("role template");
    };
    let t = or_error_page!(ctx, load(&ctx, auth.user, id).await);
    let body = delete_html(&ctx, auth.user, &t, None).await;
    ctx.page(StatusCode::OK, "Delete role template", &body)
}

/// `POST /templates/{id}/delete` (D12).
pub(crate) async fn delete(
    ctx: Ctx,
    auth: ViewAuth,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let auth = guarded!(ctx, auth);
    let Ok(id) = id.parse::<TemplateId>() else {
        return ctx.no_such("role template");
    };
    let t = or_error_page!(ctx, load(&ctx, auth.user, id).await);
    let mode = match fields.text("mode") {
        "refuse" | "" => Ok(TemplateDeletion::Refuse),
        "detach" => Ok(TemplateDeletion::Detach),
        "reassign" => fields
            .text("to")
            .parse()
            .map(TemplateDeletion::Reassign)
            .map_err(|_| "Choose the template to reassign the users to.".to_owned()),
        other => Err(format!("Unknown choice {other:?}.")),
    };
    let result = match mode {
        Ok(mode) => ctx
            .app()
            .delete_template(ctx.tenant(), auth.user, id, mode)
            .await
            .map_err(|e| error_text(&e)),
        Err(e) => Err(e),
    };
    match result {
        Ok(moved) => {
            let what = if moved == 0 {
                String::new()
            } else {
                format!(" {moved} user(s) were updated.")
            };
            ctx.flash("ok", format!("Deleted the role template {}.{what}", t.name));
            ctx.back_to_users()
        }
        Err(error) => {
            let body = delete_html(&ctx, auth.user, &t, Some(&error)).await;
            ctx.page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Delete role template",
                &body,
            )
        }
    }
}
