//! The audit log (D13): a page of it, and the feed read from a cursor.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tenantry_service::{ActorRef, AuditRecord, AuditTarget, Outcome};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Refusal;
use super::extractors::{ApiQuery, Caller};
use super::types::ActorOut;
use crate::Guard;
use crate::problem::Problem;

/// What an audit event is about.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetOut {
    /// `tenant`, `user` or `template`.
    pub kind: TargetKind,
    /// The user's or template's id.
    pub id: Option<Uuid>,
}

/// The kind of an audit target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The tenant itself.
    Tenant,
    /// A user.
    User,
    /// A role template.
    Template,
}

/// Whether the audited attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeName {
    /// Committed.
    Success,
    /// Refused: `rule` and `message` say why.
    Refused,
}

/// One changed field of an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeOut {
    /// The field (`email`, `role`, `status`, `template`, `grants`, `permissions`, …).
    pub field: String,
    /// Its value before: `{"type": …, "value": …}` (`type` is `none`, `text`, `role`,
    /// `status`, `template`, `bool`, `permissions`, `number`, `time` or `users`).
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    /// Its value after, in the same form.
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordOut {
    /// Its position in the tenant's log, from 1.
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Who acted.
    pub actor: ActorOut,
    /// What was done (`user_invited`, `user_edited`, `template_deleted`, …).
    pub action: String,
    /// To what.
    pub target: TargetOut,
    /// Success or refusal.
    pub outcome: OutcomeName,
    /// The refusing rule's name, for a refusal.
    pub rule: Option<String>,
    /// The refusal's message.
    pub message: Option<String>,
    /// What changed (for a refusal, what was tried).
    pub changes: Vec<ChangeOut>,
}

fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl From<&AuditRecord> for AuditRecordOut {
    fn from(r: &AuditRecord) -> Self {
        let e = &r.event;
        let target = match e.target {
            AuditTarget::Tenant => TargetOut {
                kind: TargetKind::Tenant,
                id: None,
            },
            AuditTarget::User(id) => TargetOut {
                kind: TargetKind::User,
                id: Some(id.as_uuid()),
            },
            AuditTarget::Template(id) => TargetOut {
                kind: TargetKind::Template,
                id: Some(id.as_uuid()),
            },
        };
        let (outcome, rule, message) = match &e.outcome {
            Outcome::Success => (OutcomeName::Success, None, None),
            Outcome::Refused { rule, message } => (
                OutcomeName::Refused,
                Some(rule.name().to_owned()),
                Some(message.clone()),
            ),
        };
        Self {
            seq: r.seq,
            at: e.at,
            actor: ActorOut::from(e.actor),
            action: wire_name(&e.action),
            target,
            outcome,
            rule,
            message,
            changes: e
                .changes
                .iter()
                .map(|c| ChangeOut {
                    field: wire_name(&c.field),
                    before: serde_json::to_value(&c.before).unwrap_or_default(),
                    after: serde_json::to_value(&c.after).unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Where to read the log from.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Read the records after this `seq` (default 0: from the start).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Records per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The records.
    pub items: Vec<AuditRecordOut>,
    /// Pass as `after` for the next page; `null` when this page was the last (not full).
    pub next_after: Option<u64>,
}

async fn read(
    guard: &Guard,
    caller: Caller,
    params: &AuditParams,
) -> Result<(Vec<AuditRecordOut>, u64, u32), Refusal> {
    let after = params.after.unwrap_or(0);
    if i64::try_from(after).is_err() {
        return Err(Refusal::from(Problem::for_status(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "after is beyond any sequence number",
        )));
    }
    let limit = params.limit.unwrap_or(50);
    let records = guard
        .tenantry()
        .audit_log(caller.tenant, ActorRef::User(caller.user), after, limit)
        .await?;
    Ok((
        records.iter().map(AuditRecordOut::from).collect(),
        after,
        limit,
    ))
}

/// A page of the audit log (needs `users:view`).
#[utoipa::path(
    get, path = "/audit", tag = "audit", operation_id = "audit_log",
    params(AuditParams),
    responses((status = 200, description = "A page of the log", body = AuditPage)),
)]
pub(crate) async fn audit_log(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, Refusal> {
    let (items, _, limit) = read(&guard, caller, &params).await?;
    let full = u32::try_from(items.len()).is_ok_and(|n| n >= limit);
    let next_after = if full {
        items.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_after }))
}

/// What the feed has after a cursor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditFeed {
    /// The records after the cursor, oldest first (possibly none).
    pub items: Vec<AuditRecordOut>,
    /// The cursor to poll with next: the last `seq` read, or the `after` given when
    /// nothing new came. A feed read this way misses and repeats nothing.
    pub cursor: u64,
}

/// The audit feed: what happened after an event (needs `users:view`). Poll it with the
/// `cursor` of the last answer.
#[utoipa::path(
    get, path = "/audit/feed", tag = "audit", operation_id = "audit_feed",
    params(AuditParams),
    responses((status = 200, description = "The records after the cursor", body = AuditFeed)),
)]
pub(crate) async fn audit_feed(
    State(guard): State<Guard>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditFeed>, Refusal> {
    let (items, after, _) = read(&guard, caller, &params).await?;
    let cursor = items.last().map_or(after, |r| r.seq);
    Ok(Json(AuditFeed { items, cursor }))
}
