//! The tenant's own settings: its name (D22), renamed by an active admin only (D7), and its
//! seats (D9).

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tenantry_service::{Action, Role, TenantName};

use super::super::ctx::{Ctx, Viewer, sentence};
use super::super::form::Fields;
use super::super::html::{self, Tone};
use super::users::{form_error, ok_or_page, viewer};
use super::{Done, notice};

/// `GET /tenant`: the tenant's name and seats; the rename form for an admin.
pub(crate) async fn page(ctx: Ctx, uri: Uri) -> Response {
    let v = viewer!(ctx, Action::View);
    let q = Fields::query(&uri);
    let done = notice(&ctx, &v, &q).await;
    let state = ok_or_page!(ctx, v, ctx.app().tenant(v.tenant).await);
    render(
        &ctx,
        &v,
        StatusCode::OK,
        &state.tenant.name,
        done,
        None,
        &state,
    )
}

/// `POST /tenant`: renames the tenant.
pub(crate) async fn rename(ctx: Ctx, fields: Fields) -> Response {
    let v = viewer!(ctx, Action::View);
    let state = ok_or_page!(ctx, v, ctx.app().tenant(v.tenant).await);
    let name = fields.get("name").unwrap_or("");
    // Checked here too, so a bad name is a 422 that changes nothing (the service records
    // the refusal when it is asked).
    if let Err(e) = TenantName::parse(name) {
        let text = sentence(&e.to_string());
        return render(
            &ctx,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            name,
            None,
            Some(&text),
            &state,
        );
    }
    match ctx.app().rename_tenant(v.tenant, v.user, name).await {
        Ok(_) => ctx.see_other(&format!("/tenant?done={}", Done::TenantRenamed.code())),
        Err(e) => match form_error(&e) {
            Some((status, text)) => render(&ctx, &v, status, name, None, Some(&text), &state),
            None => ctx.failure(Some(&v), &e),
        },
    }
}

fn render(
    ctx: &Ctx,
    v: &Viewer,
    status: StatusCode,
    name: &str,
    done: Option<maud::Markup>,
    error: Option<&str>,
    state: &tenantry_service::TenantState,
) -> Response {
    let seats = state.seat_usage();
    let admin = v.role == Role::Admin;
    let body = html! {
        h1 { "Tenant" }
        div.crumb { a href=(ctx.url("/users")) { "Settings → Users" } " → Tenant" }
        @if let Some(d) = &done { (d) }
        @if let Some(e) = error { (html::message(Tone::Error, e)) }
        div.card {
            dl #tenant-facts {
                dt { "Name" } dd #tenant-name { (state.tenant.name) }
                dt { "Seats" } dd #tenant-seats {
                    (seats.used) " used"
                    @match seats.limit {
                        Some(limit) => { " of " (limit) }
                        None => { ", no limit" }
                    }
                }
            }
        }
        @if admin {
            div.card {
                form #rename-form.stack method="post" action=(ctx.url("/tenant")) {
                    (html::csrf_field(&ctx.csrf()))
                    label.field for="name" { "Tenant name" }
                    input #name type="text" name="name" value=(name) autocomplete="off"
                        maxlength="100" aria-describedby="name-hint";
                    p.hint #name-hint { "Up to 100 characters; shown to every user of the tenant and in its mail." }
                    div.actions-row {
                        button #rename.primary type="submit" { "Rename" }
                    }
                }
            }
        } @else {
            p.muted.small { "Only an admin can rename the tenant." }
        }
    };
    ctx.page(Some(v), status, "Tenant", "", body)
}
