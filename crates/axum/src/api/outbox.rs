//! The outbox: the delivery state of invitation mail (D17), never its bodies (D26).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_service::{DeliveryState, MessageId, OutboxRecord};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiPath, ApiQuery, Caller};
use crate::Guard;
use crate::problem::Problem;

/// Where a message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryName {
    /// Waiting to be delivered (first try or retry).
    Pending,
    /// Delivered.
    Sent,
    /// Given up on: `reason` says why.
    Failed,
}

/// An invitation message's delivery state. It never carries the message's bodies: they
/// hold the live accept link (D26).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageOut {
    /// The message id (as in an invite's `message_id`).
    pub id: Uuid,
    /// The invited user.
    pub user_id: Uuid,
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The delivery state.
    pub state: DeliveryName,
    /// When it was sent or given up on.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub state_at: Option<OffsetDateTime>,
    /// Why it was given up on.
    pub reason: Option<String>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The reason of the last failed attempt.
    pub last_error: Option<String>,
    /// When it may be tried (again).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: OffsetDateTime,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<&OutboxRecord> for MessageOut {
    fn from(r: &OutboxRecord) -> Self {
        let (state, state_at, reason) = match &r.state {
            DeliveryState::Pending => (DeliveryName::Pending, None, None),
            DeliveryState::Sent { at } => (DeliveryName::Sent, Some(*at), None),
            DeliveryState::Failed { reason, at } => {
                (DeliveryName::Failed, Some(*at), Some(reason.clone()))
            }
        };
        Self {
            id: r.message.id.as_uuid(),
            user_id: r.message.user_id.as_uuid(),
            to: r.message.to.clone(),
            subject: r.message.subject.clone(),
            state,
            state_at,
            reason,
            attempts: r.attempts,
            last_error: r.last_error.clone(),
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
        }
    }
}

/// Which messages to list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    /// Only messages still waiting to be delivered.
    pub pending: Option<bool>,
    /// At most this many, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The newest messages of the outbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxList {
    /// Newest first.
    pub items: Vec<MessageOut>,
}

/// The outbox, newest first: delivery state only (needs `users:view`).
#[utoipa::path(
    get, path = "/outbox", tag = "invitations", operation_id = "outbox",
    params(OutboxParams),
    responses((status = 200, description = "The newest messages", body = OutboxList)),
)]
pub(crate) async fn outbox(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<OutboxParams>,
) -> Result<Json<OutboxList>, Refusal> {
    caller.require_view()?;
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(
            tenantry_service::Error::from(tenantry_service::QueryError::LimitOutOfRange { limit })
                .into(),
        );
    }
    let records = guard
        .tenantry()
        .outbox(caller.tenant, params.pending.unwrap_or(false), limit)
        .await?;
    Ok(Json(OutboxList {
        items: records.iter().map(MessageOut::from).collect(),
    }))
}

/// One message's delivery state, e.g. why an invitation did not arrive (needs
/// `users:view`).
#[utoipa::path(
    get, path = "/outbox/{id}", tag = "invitations", operation_id = "outbox_message",
    params(("id" = Uuid, Path, description = "The message id")),
    responses((status = 200, description = "The message's delivery state", body = MessageOut)),
)]
pub(crate) async fn outbox_message(
    State(guard): State<Guard>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<MessageOut>, Refusal> {
    caller.require_view()?;
    let record = guard
        .tenantry()
        .outbox_message(caller.tenant, MessageId::from_uuid(id))
        .await?;
    match record {
        Some(r) => Ok(Json(MessageOut::from(&r))),
        None => {
            Err(Problem::for_status(StatusCode::NOT_FOUND, "no such message in this tenant").into())
        }
    }
}
