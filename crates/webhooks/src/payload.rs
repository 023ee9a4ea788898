//! What a webhook carries: its stable id and its JSON body.

use serde::Serialize;
use tenantry_core::{
    ActorRef, AuditAction, AuditRecord, AuditTarget, FieldChange, Outcome, TenantId,
};
use time::OffsetDateTime;

/// The `webhook-id` of an audit record: `evt_<tenant uuid, simple>_<seq>`. The same for
/// every attempt of one event, so a receiver deduplicates on it.
///
/// ```
/// use tenantry_core::TenantId;
/// let tenant: TenantId = "0194b2a0-0000-7000-8000-000000000001".parse()?;
/// assert_eq!(tenantry_webhooks::webhook_id(tenant, 7), "evt_0194b2a0000070008000000000000001_7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn webhook_id(tenant: TenantId, seq: u64) -> String {
    format!("evt_{}_{seq}", tenant.as_uuid().simple())
}

/// The serde name of an event kind (`"user_invited"`), as the body's `type` says it.
///
/// ```
/// use tenantry_core::AuditAction;
/// assert_eq!(tenantry_webhooks::event_kind(AuditAction::UserInvited), "user_invited");
/// ```
#[must_use]
pub fn event_kind(action: AuditAction) -> String {
    match serde_json::to_value(action) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{action:?}"),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    tenant_id: TenantId,
    seq: u64,
    actor: &'a ActorRef,
    target: &'a AuditTarget,
    outcome: &'a Outcome,
    changes: &'a [FieldChange],
}

/// The JSON body of an audit record's webhook:
/// `{"type", "id", "timestamp", "data": {"tenant_id", "seq", "actor", "target", "outcome", "changes"}}`,
/// where `timestamp` is the event's time (RFC 3339) and `changes` its before/after values.
///
/// # Errors
/// When serialization fails (it does not for the types involved).
pub fn body(record: &AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    let event = &record.event;
    serde_json::to_vec(&Body {
        kind: event_kind(event.action),
        id: webhook_id(event.tenant_id, record.seq),
        timestamp: event.at,
        data: Data {
            tenant_id: event.tenant_id,
            seq: record.seq,
            actor: &event.actor,
            target: &event.target,
            outcome: &event.outcome,
            changes: &event.changes,
        },
    })
}
