//! The tenant: its name (D22), seats and their limit (D9), the caller's own effective
//! permissions, and the caller's memberships in other tenants (D28).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tenantry_service::{ActorRef, Membership, SeatUsage, TenantCursor, UserId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiJson, ApiQuery, Caller};
use super::types::{Patch, PermissionName, RoleName, StatusName};
use crate::Guard;
use crate::problem::Problem;

/// Seat usage: every user row takes a seat, invited ones too (D9).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SeatsOut {
    /// Seats in use.
    pub used: u32,
    /// The limit; `null` is unlimited.
    pub limit: Option<u32>,
    /// Seats left; `null` when unlimited.
    pub remaining: Option<u32>,
    /// Whether an invite would be refused now.
    pub at_limit: bool,
}

impl From<SeatUsage> for SeatsOut {
    fn from(s: SeatUsage) -> Self {
        Self {
            used: s.used,
            limit: s.limit,
            remaining: s.remaining,
            at_limit: s.at_limit,
        }
    }
}

/// The caller's tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantOut {
    /// Its id.
    pub id: Uuid,
    /// Its name (D22).
    pub name: String,
    /// The seat limit; `null` is unlimited.
    pub limit: Option<u32>,
    /// Seats in use.
    pub seats_used: u32,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

impl From<tenantry_service::TenantState> for TenantOut {
    fn from(s: tenantry_service::TenantState) -> Self {
        Self {
            id: s.tenant.id.as_uuid(),
            name: s.tenant.name,
            limit: s.tenant.user_limit,
            seats_used: s.counters.seats_used,
            created_at: s.tenant.created_at,
        }
    }
}

/// The caller's tenant (needs `users:view`).
#[utoipa::path(
    get, path = "/tenant", tag = "tenant", operation_id = "get_tenant",
    responses((status = 200, description = "The tenant", body = TenantOut)),
)]
pub(crate) async fn tenant(
    State(guard): State<Guard>,
    caller: Caller,
) -> Result<Json<TenantOut>, Refusal> {
    caller.require_view()?;
    Ok(Json(guard.tenantry().tenant(caller.tenant).await?.into()))
}

/// A new tenant name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// The name: trimmed, 1-100 characters, no control or invisible format character (D22).
    #[schema(min_length = 1, max_length = 300)]
    pub name: String,
}

/// Renames the tenant: only an active admin may (D7); the rename is audited.
#[utoipa::path(
    put, path = "/tenant/name", tag = "tenant", operation_id = "rename_tenant",
    request_body = NameBody,
    responses((status = 200, description = "The renamed tenant", body = TenantOut)),
)]
pub(crate) async fn rename(
    State(guard): State<Guard>,
    caller: Caller,
    ApiJson(body): ApiJson<NameBody>,
) -> Result<Json<TenantOut>, Refusal> {
    let app = guard.tenantry();
    app.rename_tenant(caller.tenant, caller.user, &body.name)
        .await?;
    Ok(Json(app.tenant(caller.tenant).await?.into()))
}

/// Seat usage and limit (needs `users:view`).
#[utoipa::path(
    get, path = "/seats", tag = "tenant", operation_id = "seats",
    responses((status = 200, description = "Seat usage", body = SeatsOut)),
)]
pub(crate) async fn seats(
    State(guard): State<Guard>,
    caller: Caller,
) -> Result<Json<SeatsOut>, Refusal> {
    caller.require_view()?;
    Ok(Json(
        guard.tenantry().seat_usage(caller.tenant).await?.into(),
    ))
}

/// A new seat limit.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    /// The limit, or `null` for unlimited. It may be set below current usage (then no
    /// invite passes until seats are freed). Required.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 2_147_483_647, required = true)]
    pub limit: Patch<u32>,
}

/// Sets the seat limit. The service leaves this to the host's billing; through the API
/// only an active admin may set it.
#[utoipa::path(
    put, path = "/seats/limit", tag = "tenant", operation_id = "set_seat_limit",
    request_body = LimitBody,
    responses((status = 200, description = "Seat usage under the new limit", body = SeatsOut)),
)]
pub(crate) async fn set_limit(
    State(guard): State<Guard>,
    caller: Caller,
    ApiJson(body): ApiJson<LimitBody>,
) -> Result<Json<SeatsOut>, Refusal> {
    if !caller.admin {
        return Err(Refusal::from(Problem::for_status(
            axum::http::StatusCode::FORBIDDEN,
            "only an active admin may set the seat limit",
        )));
    }
    let limit = match body.limit {
        Patch::Absent => {
            return Err(Refusal::from(Problem::for_status(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "limit is required (null for unlimited)",
            )));
        }
        Patch::Null => None,
        Patch::Set(n) if i32::try_from(n).is_ok() => Some(n),
        Patch::Set(_) => {
            return Err(Refusal::from(Problem::for_status(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "limit is at most 2147483647",
            )));
        }
    };
    Ok(Json(
        guard
            .tenantry()
            .set_user_limit(caller.tenant, limit)
            .await?
            .into(),
    ))
}

/// The caller, and what it holds now (D6: computed at this request, never cached).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeOut {
    /// The caller's tenant.
    pub tenant_id: Uuid,
    /// The caller.
    pub user_id: Uuid,
    /// Its address.
    pub email: String,
    /// Its role.
    pub role: RoleName,
    /// Its status.
    pub status: StatusName,
    /// Every permission it holds now (grants and template; all 30 for an active admin).
    #[schema(value_type = Vec<PermissionName>)]
    pub permissions: Vec<String>,
    /// Whether it has CRM access now.
    pub crm_access: bool,
}

/// The caller's effective permissions.
#[utoipa::path(
    get, path = "/me", tag = "tenant", operation_id = "me",
    responses((status = 200, description = "The caller and what it holds", body = MeOut)),
)]
pub(crate) async fn me(State(guard): State<Guard>, caller: Caller) -> Result<Json<MeOut>, Refusal> {
    let app = guard.tenantry();
    let user = app
        .user(caller.tenant, ActorRef::System, caller.user)
        .await?;
    let (held, crm) = app
        .effective_permissions(caller.tenant, caller.user)
        .await?;
    Ok(Json(MeOut {
        tenant_id: caller.tenant.as_uuid(),
        user_id: UserId::as_uuid(&caller.user),
        email: user.email.to_string(),
        role: user.role.into(),
        status: user.status.into(),
        permissions: held.to_strings(),
        crm_access: crm,
    }))
}

/// One tenant where the caller's address is a user (D28).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembershipOut {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The tenant's name.
    pub tenant_name: String,
    /// The caller's user in that tenant.
    pub user_id: Uuid,
    /// Its role there.
    pub role: RoleName,
    /// Its status there.
    pub status: StatusName,
    /// Its last sign-in there, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login: Option<time::OffsetDateTime>,
}

impl From<&Membership> for MembershipOut {
    fn from(m: &Membership) -> Self {
        Self {
            tenant_id: m.tenant_id.as_uuid(),
            tenant_name: m.tenant_name.clone(),
            user_id: m.user_id.as_uuid(),
            role: m.role.into(),
            status: m.status.into(),
            last_login: m.last_login,
        }
    }
}

/// One page of the caller's memberships: pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembershipPage {
    /// The memberships, by tenant name (byte order), then tenant id.
    pub items: Vec<MembershipOut>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Paging of the caller's memberships. It takes no address or identity id: any other
/// query parameter is refused (`400`).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembershipParams {
    /// The `next_cursor` of the previous page (empty: the first page).
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Every tenant where the caller's own address is a user (D28): tenant id and name, user
/// id, role, status and last sign-in there, by tenant name (byte order), then tenant id.
/// Deleted users never appear. It lists the caller's own address only and takes no
/// address or identity id as input, so nobody can enumerate another person's tenants
/// through it.
#[utoipa::path(
    get, path = "/me/memberships", tag = "tenant", operation_id = "my_memberships",
    params(MembershipParams),
    responses((status = 200, description = "One page of the caller's memberships", body = MembershipPage)),
)]
pub(crate) async fn memberships(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<MembershipParams>,
) -> Result<Json<MembershipPage>, Refusal> {
    let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(text.parse::<TenantCursor>().map_err(|_| {
            Problem::for_status(
                axum::http::StatusCode::BAD_REQUEST,
                "the page cursor is not one this API handed out",
            )
        })?),
        None => None,
    };
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Refusal::from(Problem::for_status(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "limit must be between 1 and 500",
        )));
    }
    let app = guard.tenantry();
    let user = app
        .user(caller.tenant, ActorRef::System, caller.user)
        .await?;
    let page = app
        .memberships_by_email(&user.email, after.as_ref(), limit)
        .await?;
    Ok(Json(MembershipPage {
        items: page.items.iter().map(MembershipOut::from).collect(),
        next_cursor: page.next.as_ref().map(ToString::to_string),
    }))
}
