//! Users: list, get, edit, delete, inactive users and the attribution of a deleted user.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tenantry_service::{ActorRef, Attribution, Email, IdentityId, TemplateId, UserEdit, UserId};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiJson, ApiPath, ApiQuery, Caller, NoInput};
use super::types::{
    DeletedOut, OrderName, PageParams, Patch, PermissionName, RoleName, SortName, StatusName,
    UserOut, UserPage, permissions,
};
use crate::Guard;
use crate::problem::Problem;

/// Filters and paging of the user table (D18). Filters combine with AND.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    /// Only users of this status.
    pub status: Option<StatusName>,
    /// Only users of this role.
    pub role: Option<RoleName>,
    /// Only users on this role template.
    pub template_id: Option<Uuid>,
    /// Only users with (or without) CRM access.
    pub crm_access: Option<bool>,
    /// Only addresses containing this text (ASCII case-insensitive).
    pub q: Option<String>,
    /// The order (default `email`).
    pub sort: Option<SortName>,
    /// `asc` (default) or `desc`.
    pub order: Option<OrderName>,
    /// The `next_cursor` of the previous page, for the same `sort` (empty: the first page).
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

impl UserListParams {
    fn query(&self) -> Result<tenantry_service::UserQuery, Refusal> {
        let paging = PageParams {
            sort: self.sort,
            order: self.order,
            cursor: self.cursor.clone(),
            limit: self.limit,
        };
        let mut query = paging.query()?;
        query.status = self.status.map(Into::into);
        query.role = self.role.map(Into::into);
        query.template_id = self.template_id.map(TemplateId::from_uuid);
        query.crm_access = self.crm_access;
        query.email_contains = self.q.clone().filter(|q| !q.is_empty());
        Ok(query)
    }
}

/// Lists the tenant's users, a page at a time.
#[utoipa::path(
    get, path = "/users", tag = "users", operation_id = "list_users",
    params(UserListParams),
    responses((status = 200, description = "One page of users", body = UserPage)),
)]
pub(crate) async fn list_users(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UserListParams>,
) -> Result<Json<UserPage>, Refusal> {
    let query = params.query()?;
    let page = guard
        .tenantry()
        .list_users(caller.tenant, ActorRef::User(caller.user), &query)
        .await?;
    Ok(Json(UserPage::of(&page)))
}

/// The `since` of the inactive-users list, with its paging.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InactiveParams {
    /// Users who have not signed in since this time (RFC 3339), or never.
    #[param(value_type = String, format = DateTime)]
    pub since: String,
    /// The order (default `email`).
    pub sort: Option<SortName>,
    /// `asc` (default) or `desc`.
    pub order: Option<OrderName>,
    /// The `next_cursor` of the previous page, for the same `sort` (empty: the first page).
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Users who have not signed in since a time, or never (D14).
#[utoipa::path(
    get, path = "/users/inactive", tag = "users", operation_id = "inactive_users",
    params(InactiveParams),
    responses((status = 200, description = "One page of inactive users", body = UserPage)),
)]
pub(crate) async fn inactive_users(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<InactiveParams>,
) -> Result<Json<UserPage>, Refusal> {
    let since = OffsetDateTime::parse(
        &params.since,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        Problem::for_status(
            axum::http::StatusCode::BAD_REQUEST,
            "since must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z",
        )
    })?;
    let paging = PageParams {
        sort: params.sort,
        order: params.order,
        cursor: params.cursor,
        limit: params.limit,
    };
    let query = paging.query()?;
    let page = guard
        .tenantry()
        .inactive_users(caller.tenant, ActorRef::User(caller.user), since, &query)
        .await?;
    Ok(Json(UserPage::of(&page)))
}

/// One user.
#[utoipa::path(
    get, path = "/users/{id}", tag = "users", operation_id = "get_user",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = UserOut)),
)]
pub(crate) async fn get_user(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserOut>, Refusal> {
    let user = guard
        .tenantry()
        .user(
            caller.tenant,
            ActorRef::User(caller.user),
            UserId::from_uuid(id),
        )
        .await?;
    Ok(Json(UserOut::from(&user)))
}

/// A partial update of a user: a field left out is unchanged, a value sets it, and `null`
/// clears it where that means something (`template_id`: detach the template). Unknown
/// fields are refused.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new address (D3).
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 254)]
    pub email: Patch<String>,
    /// A new role.
    #[serde(default)]
    #[schema(value_type = RoleName)]
    pub role: Patch<RoleName>,
    /// `active` or `suspended` (D2: an edit moves only between these two).
    #[serde(default)]
    #[schema(value_type = StatusName)]
    pub status: Patch<StatusName>,
    /// A role template to put the user on, or `null` to detach it.
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub template_id: Patch<Uuid>,
    /// CRM access (D5).
    #[serde(default)]
    #[schema(value_type = bool)]
    pub crm_access: Patch<bool>,
    /// The direct grants, replacing the old ones.
    #[serde(default)]
    #[schema(value_type = Vec<PermissionName>)]
    pub grants: Patch<Vec<String>>,
}

impl UserPatch {
    fn edit(self) -> Result<UserEdit, Refusal> {
        let email = match self.email.not_null("email")? {
            Some(text) => Some(
                Email::parse(&text)
                    .map_err(|e| Problem::from_error(&tenantry_service::Error::from(e)))?,
            ),
            None => None,
        };
        let grants = match self.grants.not_null("grants")? {
            Some(list) => Some(permissions(&list)?),
            None => None,
        };
        Ok(UserEdit {
            email,
            role: self.role.not_null("role")?.map(Into::into),
            status: self.status.not_null("status")?.map(Into::into),
            template_id: match self.template_id {
                Patch::Absent => None,
                Patch::Null => Some(None),
                Patch::Set(id) => Some(Some(TemplateId::from_uuid(id))),
            },
            crm_access: self.crm_access.not_null("crm_access")?,
            grants,
        })
    }
}

/// Edits a user (D2, D3, D5, D7, D8, D21).
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users", operation_id = "edit_user",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UserPatch,
    responses((status = 200, description = "The user as it is now", body = UserOut)),
)]
pub(crate) async fn edit_user(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserOut>, Refusal> {
    let edit = patch.edit()?;
    let user = guard
        .tenantry()
        .edit_user(caller.tenant, caller.user, UserId::from_uuid(id), &edit)
        .await?;
    Ok(Json(UserOut::from(&user)))
}

/// The host's identity id for a user (D28), or `null` to clear it. Required.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityBody {
    /// The identity id (for example the OpenID Connect subject): 1-255 bytes, no white
    /// space at either end, no control or invisible format character; unique in the
    /// tenant. `null` clears it. Required.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, required = true)]
    pub identity: Patch<String>,
}

impl IdentityBody {
    fn identity(self) -> Result<Option<IdentityId>, Refusal> {
        match self.identity {
            Patch::Absent => Err(Refusal::from(Problem::for_status(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "identity is required (null clears it)",
            ))),
            Patch::Null => Ok(None),
            Patch::Set(text) => parse_identity(&text).map(Some),
        }
    }
}

/// Parses an identity id; an invalid one is the rule's `422` (D28).
pub(crate) fn parse_identity(text: &str) -> Result<IdentityId, Refusal> {
    IdentityId::parse(text).map_err(|e| {
        Refusal::from(Problem::from_error(&tenantry_service::Error::Rule(
            tenantry_service::RuleError::InvalidIdentity(e),
        )))
    })
}

/// Attaches the host's identity id to a user, replaces it, or clears it with `null`
/// (D28). Only an active admin may (`403` otherwise); the id is unique in the tenant
/// (`409` when another user holds it). Audited, a refusal too.
#[utoipa::path(
    put, path = "/users/{id}/identity", tag = "users", operation_id = "set_identity",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = IdentityBody,
    responses((status = 200, description = "The user as it is now", body = UserOut)),
)]
pub(crate) async fn set_identity(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<IdentityBody>,
) -> Result<Json<UserOut>, Refusal> {
    let identity = body.identity()?;
    let user = guard
        .tenantry()
        .set_identity(caller.tenant, caller.user, UserId::from_uuid(id), identity)
        .await?;
    Ok(Json(UserOut::from(&user)))
}

/// Deletes a user for good (D11); its seat is freed and a tombstone stays for attribution.
#[utoipa::path(
    delete, path = "/users/{id}", tag = "users", operation_id = "delete_user",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body(content = super::NoInputBody, content_type = "application/json",
        description = "`{}` (an empty body is read the same); the JSON content type is required all the same (CSRF rule)"),
    responses((status = 200, description = "What remains of the user", body = DeletedOut)),
)]
pub(crate) async fn delete_user(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    _body: NoInput,
) -> Result<Json<DeletedOut>, Refusal> {
    let tombstone = guard
        .tenantry()
        .delete_user(caller.tenant, caller.user, UserId::from_uuid(id))
        .await?;
    Ok(Json(DeletedOut::from(&tombstone)))
}

/// Who made a record: a current user or a deleted one's tombstone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttributionOut {
    /// `user` while the user exists, `deleted` once it was deleted.
    pub kind: AttributionKind,
    /// The user, while it exists.
    pub user: Option<UserOut>,
    /// The tombstone, once deleted.
    pub deleted: Option<DeletedOut>,
}

/// Whether an attributed user still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttributionKind {
    /// The user still exists.
    User,
    /// The user was deleted.
    Deleted,
}

/// Who a user id in an audit record is, even after a delete (D11). Needs `users:view`.
#[utoipa::path(
    get, path = "/users/{id}/attribution", tag = "users", operation_id = "attribution",
    params(("id" = Uuid, Path, description = "A user id, current or deleted")),
    responses((status = 200, description = "The user or its tombstone", body = AttributionOut)),
)]
pub(crate) async fn attribution(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AttributionOut>, Refusal> {
    caller.require_view()?;
    let found = guard
        .tenantry()
        .attribution(caller.tenant, UserId::from_uuid(id))
        .await?;
    let out = match found {
        Some(Attribution::User(u)) => AttributionOut {
            kind: AttributionKind::User,
            user: Some(UserOut::from(&u)),
            deleted: None,
        },
        Some(Attribution::Deleted(t)) => AttributionOut {
            kind: AttributionKind::Deleted,
            user: None,
            deleted: Some(DeletedOut::from(&t)),
        },
        None => {
            return Err(Refusal::from(Problem::from_error(
                &tenantry_service::Error::from(tenantry_service::RuleError::UserNotFound),
            )));
        }
    };
    Ok(Json(out))
}
