//! Invitations: invite, bulk invite, resend, expired invitations and their purge, and the
//! public accept endpoint. No response carries an accept link or a token (D26).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_service::{
    ActorRef, BulkInvite, BulkOutcome, Email, InviteRequest, TemplateId, UserId,
};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiJson, ApiPath, ApiQuery, Caller, NoInput};
use super::types::{PageParams, PermissionName, RoleName, UserOut, UserPage, permissions};
use crate::Guard;
use crate::problem::Problem;

/// Whom to invite, and with what access.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// The invitee's address (D3).
    #[schema(min_length = 1, max_length = 254)]
    pub email: String,
    /// The role (default `user`; only an admin may invite an admin).
    #[serde(default)]
    pub role: Option<RoleName>,
    /// A role template to put the user on.
    #[serde(default)]
    pub template_id: Option<Uuid>,
    /// CRM access (default false).
    #[serde(default)]
    pub crm_access: Option<bool>,
    /// Direct grants (default none).
    #[serde(default)]
    #[schema(value_type = Option<Vec<PermissionName>>)]
    pub grants: Option<Vec<String>>,
}

/// An invitation that was made. The accept link went to the invitee by mail; it is not in
/// this response (D26).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitedOut {
    /// The new user (status `invited`).
    pub user: UserOut,
    /// The outbox message carrying the invitation.
    pub message_id: Uuid,
}

/// Invites one user (D9, D10, D17).
#[utoipa::path(
    post, path = "/invitations", tag = "invitations", operation_id = "invite",
    request_body = InviteBody,
    responses((status = 201, description = "Invited; the mail is on its way", body = InvitedOut)),
)]
pub(crate) async fn invite(
    State(guard): State<Guard>,
    caller: Caller,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<(StatusCode, Json<InvitedOut>), Refusal> {
    let email = Email::parse(&body.email)
        .map_err(|e| Problem::from_error(&tenantry_service::Error::from(e)))?;
    let request = InviteRequest {
        email,
        role: body.role.unwrap_or(RoleName::User).into(),
        template_id: body.template_id.map(TemplateId::from_uuid),
        crm_access: body.crm_access.unwrap_or(false),
        grants: permissions(body.grants.as_deref().unwrap_or_default())?,
    };
    let invited = guard
        .tenantry()
        .invite(caller.tenant, caller.user, &request)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitedOut {
            user: UserOut::from(&invited.user),
            message_id: invited.message_id.as_uuid(),
        }),
    ))
}

/// Many addresses at once, with the same access (D19).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The addresses, as typed; each gets its own outcome.
    #[schema(max_items = 500)]
    pub emails: Vec<String>,
    /// The role (default `user`).
    #[serde(default)]
    pub role: Option<RoleName>,
    /// A role template for every invitee.
    #[serde(default)]
    pub template_id: Option<Uuid>,
    /// CRM access (default false).
    #[serde(default)]
    pub crm_access: Option<bool>,
    /// Direct grants (default none).
    #[serde(default)]
    #[schema(value_type = Option<Vec<PermissionName>>)]
    pub grants: Option<Vec<String>>,
}

/// What became of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkOutcomeName {
    /// Invited: `user_id` names the new user.
    Invited,
    /// Already a user of the tenant, or repeated in the list.
    Duplicate,
    /// Not a valid address: `reason` says why.
    Invalid,
    /// No seat was left: `seats_used` and `seat_limit` say so.
    LimitReached,
    /// An outcome this version of the API does not know.
    Other,
}

/// One address of a bulk invite and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkItemOut {
    /// The address as typed.
    pub input: String,
    /// Its outcome.
    pub outcome: BulkOutcomeName,
    /// The new user, when invited.
    pub user_id: Option<Uuid>,
    /// Why the address is invalid.
    pub reason: Option<String>,
    /// Seats in use, when the limit was reached.
    pub seats_used: Option<u32>,
    /// The seat limit, when it was reached.
    pub seat_limit: Option<u32>,
}

/// The outcomes of a bulk invite, in input order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkOut {
    /// One per address.
    pub results: Vec<BulkItemOut>,
}

/// Invites many addresses in one call; each address gets its own outcome (D19).
#[utoipa::path(
    post, path = "/invitations/bulk", tag = "invitations", operation_id = "invite_many",
    request_body = BulkBody,
    responses((status = 200, description = "The outcome of every address", body = BulkOut)),
)]
pub(crate) async fn invite_many(
    State(guard): State<Guard>,
    caller: Caller,
    ApiJson(body): ApiJson<BulkBody>,
) -> Result<Json<BulkOut>, Refusal> {
    if body.emails.len() > 500 {
        return Err(Refusal::from(Problem::for_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a bulk invite takes at most 500 addresses",
        )));
    }
    let request = BulkInvite {
        emails: body.emails,
        role: body.role.map(Into::into),
        template_id: body.template_id.map(TemplateId::from_uuid),
        crm_access: body.crm_access.unwrap_or(false),
        grants: permissions(body.grants.as_deref().unwrap_or_default())?,
    };
    let results = guard
        .tenantry()
        .invite_many(caller.tenant, caller.user, &request)
        .await?;
    let results = results
        .into_iter()
        .map(|r| {
            let mut item = BulkItemOut {
                input: r.input,
                outcome: BulkOutcomeName::Other,
                user_id: None,
                reason: None,
                seats_used: None,
                seat_limit: None,
            };
            match r.outcome {
                BulkOutcome::Invited { user_id } => {
                    item.outcome = BulkOutcomeName::Invited;
                    item.user_id = Some(user_id.as_uuid());
                }
                BulkOutcome::Duplicate => item.outcome = BulkOutcomeName::Duplicate,
                BulkOutcome::Invalid { reason } => {
                    item.outcome = BulkOutcomeName::Invalid;
                    item.reason = Some(reason.to_string());
                }
                BulkOutcome::LimitReached { used, limit } => {
                    item.outcome = BulkOutcomeName::LimitReached;
                    item.seats_used = Some(used);
                    item.seat_limit = Some(limit);
                }
                _ => {}
            }
            item
        })
        .collect();
    Ok(Json(BulkOut { results }))
}

/// A resent invitation. The new link went by mail; it is not in this response (D26).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResentOut {
    /// The outbox message carrying the new invitation.
    pub message_id: Uuid,
    /// When the new link expires; every older link is dead.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// Sends an invited user a new invitation (D10: rate limited; `429` with `Retry-After`).
#[utoipa::path(
    post, path = "/users/{id}/resend", tag = "invitations", operation_id = "resend_invitation",
    params(("id" = Uuid, Path, description = "The invited user's id")),
    request_body(content = super::NoInputBody, content_type = "application/json",
        description = "`{}` (an empty body is read the same); the JSON content type is required all the same (CSRF rule)"),
    responses((status = 200, description = "Sent again", body = ResentOut)),
)]
pub(crate) async fn resend(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    _body: NoInput,
) -> Result<Json<ResentOut>, Refusal> {
    let resent = guard
        .tenantry()
        .resend_invitation(caller.tenant, caller.user, UserId::from_uuid(id))
        .await?;
    Ok(Json(ResentOut {
        message_id: resent.message_id.as_uuid(),
        expires_at: resent.expires_at,
    }))
}

/// Invited users whose invitation has expired; they keep their seat until purged (D20).
#[utoipa::path(
    get, path = "/invitations/expired", tag = "invitations", operation_id = "expired_invitations",
    params(PageParams),
    responses((status = 200, description = "One page of expired invitations", body = UserPage)),
)]
pub(crate) async fn expired(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<UserPage>, Refusal> {
    let query = params.query()?;
    let page = guard
        .tenantry()
        .expired_invitations(caller.tenant, ActorRef::User(caller.user), &query)
        .await?;
    Ok(Json(UserPage::of(&page)))
}

/// The users a purge deleted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurgedOut {
    /// Their ids.
    pub deleted: Vec<Uuid>,
}

/// Deletes every expired invitation the caller may delete, freeing their seats (D20).
#[utoipa::path(
    post, path = "/invitations/expired/purge", tag = "invitations", operation_id = "purge_expired_invitations",
    request_body(content = super::NoInputBody, content_type = "application/json",
        description = "`{}` (an empty body is read the same); the JSON content type is required all the same (CSRF rule)"),
    responses((status = 200, description = "The deleted users", body = PurgedOut)),
)]
pub(crate) async fn purge(
    State(guard): State<Guard>,
    caller: Caller,
    _body: NoInput,
) -> Result<Json<PurgedOut>, Refusal> {
    let deleted = guard
        .tenantry()
        .purge_expired_invitations(caller.tenant, caller.user)
        .await?;
    Ok(Json(PurgedOut {
        deleted: deleted.iter().map(UserId::as_uuid).collect(),
    }))
}

/// An accept: the token from the invitation link and the address the person signed up
/// with.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// The `token` of the accept link.
    #[schema(min_length = 1)]
    pub token: String,
    /// The address the person signed up with; it must be the invited one (D24).
    #[schema(min_length = 1, max_length = 254)]
    pub email: String,
    /// The host's identity id for this person (for example the OpenID Connect subject),
    /// attached to the user as it becomes active (D28): 1-255 bytes, unique in the tenant
    /// (`409` when another user holds it). Left out or `null`: none.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub identity: Option<String>,
}

/// Accepts an invitation (public: no identity needed). The user becomes active (D10, D24),
/// with the host's identity id when `identity` is given (D28).
#[utoipa::path(
    post, path = "/invitations/accept", tag = "invitations", operation_id = "accept_invitation",
    request_body = AcceptBody,
    responses((status = 200, description = "The user, now active", body = UserOut)),
)]
pub(crate) async fn accept(
    State(guard): State<Guard>,
    ApiJson(body): ApiJson<AcceptBody>,
) -> Result<Json<UserOut>, Refusal> {
    let app = guard.tenantry();
    let user = match body.identity.as_deref() {
        Some(text) => {
            let identity = super::users::parse_identity(text)?;
            app.accept_invitation_as(&body.token, &body.email, identity)
                .await?
        }
        None => app.accept_invitation(&body.token, &body.email).await?,
    };
    Ok(Json(UserOut::from(&user)))
}
