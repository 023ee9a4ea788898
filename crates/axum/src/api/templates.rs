//! Role templates: list, get, create, edit, delete (refuse, detach or reassign) and the
//! users on a template (D12).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_service::{ActorRef, TemplateDeletion, TemplateEdit, TemplateId, TemplateName};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiJson, ApiPath, ApiQuery, Caller, NoInput};
use super::types::{PageParams, Patch, PermissionName, TemplateOut, UserPage, permissions};
use crate::Guard;
use crate::problem::Problem;

/// The tenant's role templates.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    /// Every template.
    pub items: Vec<TemplateOut>,
}

/// Lists the role templates.
#[utoipa::path(
    get, path = "/templates", tag = "templates", operation_id = "list_templates",
    responses((status = 200, description = "Every template", body = TemplateList)),
)]
pub(crate) async fn list_templates(
    State(guard): State<Guard>,
    caller: Caller,
) -> Result<Json<TemplateList>, Refusal> {
    let all = guard
        .tenantry()
        .templates(caller.tenant, ActorRef::User(caller.user))
        .await?;
    Ok(Json(TemplateList {
        items: all.iter().map(TemplateOut::from).collect(),
    }))
}

/// One role template.
#[utoipa::path(
    get, path = "/templates/{id}", tag = "templates", operation_id = "get_template",
    params(("id" = Uuid, Path, description = "The template's id")),
    responses((status = 200, description = "The template", body = TemplateOut)),
)]
pub(crate) async fn get_template(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TemplateOut>, Refusal> {
    let t = guard
        .tenantry()
        .template(
            caller.tenant,
            ActorRef::User(caller.user),
            TemplateId::from_uuid(id),
        )
        .await?;
    Ok(Json(TemplateOut::from(&t)))
}

/// A new role template.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Its name (D12, D22: trimmed, 1 to 64 characters, no control or invisible ones).
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// What it grants.
    #[serde(default)]
    #[schema(value_type = Option<Vec<PermissionName>>)]
    pub permissions: Option<Vec<String>>,
}

fn template_name(text: &str) -> Result<TemplateName, Refusal> {
    TemplateName::parse(text)
        .map_err(|e| Refusal::from(Problem::from_error(&tenantry_service::Error::from(e))))
}

/// Creates a role template (needs `users:manage`).
#[utoipa::path(
    post, path = "/templates", tag = "templates", operation_id = "create_template",
    request_body = TemplateBody,
    responses((status = 201, description = "The new template", body = TemplateOut)),
)]
pub(crate) async fn create_template(
    State(guard): State<Guard>,
    caller: Caller,
    ApiJson(body): ApiJson<TemplateBody>,
) -> Result<(StatusCode, Json<TemplateOut>), Refusal> {
    let grants = permissions(body.permissions.as_deref().unwrap_or_default())?;
    let t = guard
        .tenantry()
        .create_template(caller.tenant, caller.user, &body.name, grants)
        .await?;
    Ok((StatusCode::CREATED, Json(TemplateOut::from(&t))))
}

/// A partial update of a template: a field left out is unchanged. Neither may be `null`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    /// A new name.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub name: Patch<String>,
    /// New permissions, replacing the old ones; they reach every user on the template at
    /// the next check (D6).
    #[serde(default)]
    #[schema(value_type = Vec<PermissionName>)]
    pub permissions: Patch<Vec<String>>,
}

/// Renames a template or changes its permissions (D12, D21).
#[utoipa::path(
    patch, path = "/templates/{id}", tag = "templates", operation_id = "edit_template",
    params(("id" = Uuid, Path, description = "The template's id")),
    request_body = TemplatePatch,
    responses((status = 200, description = "The template as it is now", body = TemplateOut)),
)]
pub(crate) async fn edit_template(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<TemplatePatch>,
) -> Result<Json<TemplateOut>, Refusal> {
    let name = match patch.name.not_null("name")? {
        Some(text) => Some(template_name(&text)?),
        None => None,
    };
    let perms = match patch.permissions.not_null("permissions")? {
        Some(list) => Some(permissions(&list)?),
        None => None,
    };
    let edit = TemplateEdit {
        name,
        permissions: perms,
    };
    let t = guard
        .tenantry()
        .edit_template(caller.tenant, caller.user, TemplateId::from_uuid(id), &edit)
        .await?;
    Ok(Json(TemplateOut::from(&t)))
}

/// What happens to the users of a deleted template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeletionMode {
    /// Refuse while any user is on it (the default; `409` with `users`).
    #[default]
    Refuse,
    /// Take its users off it.
    Detach,
    /// Move its users to the template `target`.
    Reassign,
}

/// How to delete a template.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// `refuse` (default), `detach` or `reassign`.
    pub mode: Option<DeletionMode>,
    /// The template to move the users to, with `mode=reassign` (required then; read with
    /// no other mode).
    pub target: Option<Uuid>,
}

/// The outcome of a template delete.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateDeletedOut {
    /// How many users were detached or reassigned.
    pub affected_users: u64,
}

/// Deletes a template (D12): refused while in use, or detaching or reassigning its users.
#[utoipa::path(
    delete, path = "/templates/{id}", tag = "templates", operation_id = "delete_template",
    params(("id" = Uuid, Path, description = "The template's id"), DeleteParams),
    request_body(content = super::NoInputBody, content_type = "application/json",
        description = "`{}` (an empty body is read the same); the JSON content type is required all the same (CSRF rule)"),
    responses((status = 200, description = "Deleted", body = TemplateDeletedOut)),
)]
pub(crate) async fn delete_template(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<DeleteParams>,
    _body: NoInput,
) -> Result<Json<TemplateDeletedOut>, Refusal> {
    let mode = match (params.mode.unwrap_or_default(), params.target) {
        (DeletionMode::Refuse, _) => TemplateDeletion::Refuse,
        (DeletionMode::Detach, _) => TemplateDeletion::Detach,
        (DeletionMode::Reassign, Some(to)) => TemplateDeletion::Reassign(TemplateId::from_uuid(to)),
        (DeletionMode::Reassign, None) => {
            return Err(Refusal::from(Problem::for_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "mode=reassign needs a target template",
            )));
        }
    };
    let affected = guard
        .tenantry()
        .delete_template(caller.tenant, caller.user, TemplateId::from_uuid(id), mode)
        .await?;
    Ok(Json(TemplateDeletedOut {
        affected_users: affected,
    }))
}

/// The users on a template, a page at a time.
#[utoipa::path(
    get, path = "/templates/{id}/users", tag = "templates", operation_id = "template_users",
    params(("id" = Uuid, Path, description = "The template's id"), PageParams),
    responses((status = 200, description = "One page of the template's users", body = UserPage)),
)]
pub(crate) async fn template_users(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<UserPage>, Refusal> {
    let query = params.query()?;
    let viewer = ActorRef::User(caller.user);
    let id = TemplateId::from_uuid(id);
    // An unknown (or deleted) template is a 404, not an empty page.
    guard.tenantry().template(caller.tenant, viewer, id).await?;
    let page = guard
        .tenantry()
        .template_users(caller.tenant, viewer, id, &query)
        .await?;
    Ok(Json(UserPage::of(&page)))
}
