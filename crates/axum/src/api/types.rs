//! The JSON shapes shared by several areas: users, permissions, pages, roles and statuses.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use tenantry_service::{
    ActorRef, Cursor, Permission, Permissions, Role, RoleTemplate, SortBy, Status, Tombstone, User,
    UserQuery,
};
use time::OffsetDateTime;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use crate::problem::Problem;

/// A permission written `"category:action"` (one of the 30 of D4).
///
/// Only its schema is used: on the wire it is a plain string.
#[derive(Debug, Clone, Copy)]
pub struct PermissionName;

impl utoipa::PartialSchema for PermissionName {
    fn schema() -> RefOr<Schema> {
        let names: Vec<String> = Permission::all().map(|p| p.to_string()).collect();
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(names))
            .description(Some(
                "A permission, written `category:action` (6 categories × 5 actions).",
            ))
            .into()
    }
}

impl ToSchema for PermissionName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PermissionName")
    }
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Holds everything.
    Admin,
    /// Holds its grants and its template.
    User,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::User => Role::User,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleName::Admin,
            Role::User => RoleName::User,
        }
    }
}

/// Where a user is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    /// Invited, not accepted yet.
    Invited,
    /// Active.
    Active,
    /// Suspended.
    Suspended,
}

impl From<StatusName> for Status {
    fn from(s: StatusName) -> Self {
        match s {
            StatusName::Invited => Status::Invited,
            StatusName::Active => Status::Active,
            StatusName::Suspended => Status::Suspended,
        }
    }
}

impl From<Status> for StatusName {
    fn from(s: Status) -> Self {
        match s {
            Status::Invited => StatusName::Invited,
            Status::Active => StatusName::Active,
            Status::Suspended => StatusName::Suspended,
        }
    }
}

/// The order of a user page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortName {
    /// By address (the default).
    #[default]
    Email,
    /// By creation time.
    CreatedAt,
    /// By last login; never signed in comes first in ascending order.
    LastLogin,
}

impl From<SortName> for SortBy {
    fn from(s: SortName) -> Self {
        match s {
            SortName::Email => SortBy::Email,
            SortName::CreatedAt => SortBy::CreatedAt,
            SortName::LastLogin => SortBy::LastLogin,
        }
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderName {
    /// Ascending (the default).
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// A user row as the API shows it. It never carries an invitation token or link (D26).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserOut {
    /// The user's id.
    pub id: Uuid,
    /// The address, as typed (trimmed).
    pub email: String,
    /// The role.
    pub role: RoleName,
    /// The status.
    pub status: StatusName,
    /// The role template, if any.
    pub template_id: Option<Uuid>,
    /// CRM access (D5).
    pub crm_access: bool,
    /// The direct grants.
    #[schema(value_type = Vec<PermissionName>)]
    pub grants: Vec<String>,
    /// When the row was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The last sign-in, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login: Option<OffsetDateTime>,
    /// When the pending invitation expires (invited users only).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub invite_expires_at: Option<OffsetDateTime>,
    /// The host's identity id attached to the user, if any (D28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.as_uuid(),
            email: u.email.to_string(),
            role: u.role.into(),
            status: u.status.into(),
            template_id: u.template_id.map(|t| t.as_uuid()),
            crm_access: u.crm_access,
            grants: u.grants.to_strings(),
            created_at: u.created_at,
            last_login: u.last_login,
            invite_expires_at: u.invite_expires_at,
            identity: u.identity.as_ref().map(|i| i.as_str().to_owned()),
        }
    }
}

/// A role template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateOut {
    /// The template's id.
    pub id: Uuid,
    /// Its name (unique in the tenant, case-insensitively).
    pub name: String,
    /// What it grants.
    #[schema(value_type = Vec<PermissionName>)]
    pub permissions: Vec<String>,
    /// Created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Last changed (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<&RoleTemplate> for TemplateOut {
    fn from(t: &RoleTemplate) -> Self {
        Self {
            id: t.id.as_uuid(),
            name: t.name.to_string(),
            permissions: t.permissions.to_strings(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Who acted: a user of the tenant, or the host itself (`system`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorOut {
    /// `user` or `system`.
    pub kind: ActorKind,
    /// The user's id, for `user`.
    pub id: Option<Uuid>,
}

/// The kind of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A user of the tenant.
    User,
    /// The host itself.
    System,
}

impl From<ActorRef> for ActorOut {
    fn from(a: ActorRef) -> Self {
        match a {
            ActorRef::User(id) => Self {
                kind: ActorKind::User,
                id: Some(id.as_uuid()),
            },
            ActorRef::System => Self {
                kind: ActorKind::System,
                id: None,
            },
        }
    }
}

/// What remains of a deleted user (D11).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeletedOut {
    /// The deleted user's id.
    pub user_id: Uuid,
    /// Its address.
    pub email: String,
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub deleted_at: OffsetDateTime,
    /// Who deleted it.
    pub deleted_by: ActorOut,
}

impl From<&Tombstone> for DeletedOut {
    fn from(t: &Tombstone) -> Self {
        Self {
            user_id: t.user_id.as_uuid(),
            email: t.email.to_string(),
            deleted_at: t.deleted_at,
            deleted_by: t.deleted_by.into(),
        }
    }
}

/// One page of users (D18): pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// The rows.
    pub items: Vec<UserOut>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl UserPage {
    pub(crate) fn of(page: &tenantry_service::Page<User>) -> Self {
        Self {
            items: page.items.iter().map(UserOut::from).collect(),
            next_cursor: page.next.as_ref().map(ToString::to_string),
        }
    }
}

/// Paging of a user list: sort, order, cursor and page size.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
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

impl PageParams {
    /// The query this paging asks for (no filters yet).
    pub(crate) fn query(&self) -> Result<UserQuery, Refusal> {
        let after = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(text) => Some(text.parse::<Cursor>().map_err(|_| {
                Problem::for_status(
                    axum::http::StatusCode::BAD_REQUEST,
                    "the page cursor is not one this API handed out",
                )
            })?),
            None => None,
        };
        Ok(UserQuery {
            sort: self.sort.unwrap_or_default().into(),
            descending: self.order.unwrap_or_default() == OrderName::Desc,
            after,
            limit: self
                .limit
                .unwrap_or(tenantry_service::UserQuery::default().limit),
            ..UserQuery::default()
        })
    }
}

/// A field of a partial update: left out (unchanged), `null` (cleared) or a value (set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Left out: unchanged.
    #[default]
    Absent,
    /// `null`: cleared.
    Null,
    /// A value: set.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(v) => Patch::Set(v),
            None => Patch::Null,
        })
    }
}

impl<T> Patch<T> {
    /// The value of a field that may be left out but not cleared.
    pub(crate) fn not_null(self, field: &str) -> Result<Option<T>, Refusal> {
        match self {
            Patch::Absent => Ok(None),
            Patch::Set(v) => Ok(Some(v)),
            Patch::Null => Err(Refusal::from(Problem::for_status(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field} may be left out but not set to null"),
            ))),
        }
    }
}

/// Parses a list of `category:action` strings (D4); an unknown one is a 422.
pub(crate) fn permissions(list: &[String]) -> Result<Permissions, Refusal> {
    Permissions::parse_list(list)
        .map_err(|e| Refusal::from(Problem::from_error(&tenantry_service::Error::from(e))))
}
