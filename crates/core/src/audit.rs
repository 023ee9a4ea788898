//! Audit events (D13): who did what to whom, when, and what changed.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ActorRef, Permissions, Role, Status, TemplateId, TenantId, UserId};

/// The product rules (D1–D28, written out in `docs/rules.md`), so that every refusal names
/// the rule that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Rule {
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    D10,
    D11,
    D12,
    D13,
    D14,
    D15,
    D16,
    D17,
    D18,
    D19,
    D20,
    D21,
    D22,
    D23,
    D24,
    D25,
    D26,
    D27,
    D28,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A tenant was created with its first admin.
    TenantCreated,
    /// The seat limit changed (D9).
    UserLimitChanged,
    /// A user was invited (D10).
    UserInvited,
    /// An invitation was sent again (D10).
    InvitationResent,
    /// An invitation was accepted; the user became active (D10).
    InvitationAccepted,
    /// Someone tried to accept an invitation with a wrong address (D24). The event's
    /// outcome is a refusal; its changes show the failed-attempt count and, on the last
    /// allowed attempt, that the token was revoked.
    AcceptAttemptFailed,
    /// The host reported a sign-in (D14).
    SignedIn,
    /// A user's email, role, status, template, CRM access or grants changed.
    UserEdited,
    /// A user was deleted (D11).
    UserDeleted,
    /// A role template was created (D12).
    TemplateCreated,
    /// A role template was renamed or its permissions changed (D12).
    TemplateEdited,
    /// A role template was deleted (D12).
    TemplateDeleted,
}

/// What the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum AuditTarget {
    /// The tenant itself.
    Tenant,
    /// A user.
    User(UserId),
    /// A role template.
    Template(TemplateId),
}

/// Which field changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Field {
    /// The user's address.
    Email,
    /// The user's role.
    Role,
    /// The user's status.
    Status,
    /// The user's role template.
    Template,
    /// The user's CRM access.
    CrmAccess,
    /// The user's direct grants.
    Grants,
    /// The user's last login.
    LastLogin,
    /// The tenant's seat limit.
    UserLimit,
    /// A template's name.
    Name,
    /// A template's permissions.
    Permissions,
    /// How many users were detached from or reassigned off a deleted template.
    AffectedUsers,
    /// The users whose access changed with a template's edit, detach or reassignment
    /// (their ids, in the after value).
    ChangedUsers,
    /// Failed accept attempts of an invitation (D24).
    FailedAttempts,
    /// An invitation's state (D24: revoked after too many failed attempts).
    InvitationState,
}

/// A value before or after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Value {
    /// No value.
    None,
    /// Text (email, name).
    Text(String),
    /// A role.
    Role(Role),
    /// A status.
    Status(Status),
    /// A template reference.
    Template(TemplateId),
    /// A flag.
    Bool(bool),
    /// A permission set (D13: before/after sets).
    Permissions(Permissions),
    /// A count or limit.
    Number(u64),
    /// A time.
    Time(#[serde(with = "time::serde::rfc3339")] OffsetDateTime),
    /// Users, by id.
    Users(Vec<UserId>),
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field.
    pub field: Field,
    /// Its value before.
    pub before: Value,
    /// Its value after.
    pub after: Value,
}

/// Whether the audited attempt succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The change was committed.
    Success,
    /// The attempt was refused (D13 records refused management attempts too).
    Refused {
        /// The rule that refused.
        rule: Rule,
        /// The refusal, as its error message says it.
        message: String,
    },
}

/// One audit event (D13). Stores give it a sequence number when they append it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Who acted.
    pub actor: ActorRef,
    /// What was done.
    pub action: AuditAction,
    /// To what.
    pub target: AuditTarget,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Success or refusal.
    pub outcome: Outcome,
    /// What changed; for a refusal, what the attempt tried (the address of a refused
    /// invite, the failed-attempt count of a refused accept), often nothing.
    pub changes: Vec<FieldChange>,
}

/// An event as stored: with its position in the tenant's log. Sequence numbers increase
/// strictly within a tenant, so a feed read from a cursor misses and repeats nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the tenant's log, from 1.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}
