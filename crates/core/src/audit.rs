//! Audit events ([audit log (D13)](crate::Rule::AuditLog)): who did what to whom, when, and what changed.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{ActorRef, Permissions, Role, Status, TemplateId, TenantId, UserId};

/// The product rules, by name, so that every refusal names the rule that refused. Each is
/// described in `docs/rules.md` of the repository; [`Rule::id`] gives its short id ([roles (D1)](crate::Rule::Roles)–[one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants))
/// as tests and comments cite it.
///
/// On the wire (serde, audit records) a rule is its snake_case name; the old D-id form is
/// still read, so audit records written before the rules had names stay readable.
///
/// ```
/// use tenantry_core::Rule;
/// assert_eq!(Rule::SeatLimit.id(), "D9");
/// assert_eq!(Rule::SeatLimit.to_string(), "seat_limit");
/// assert_eq!(serde_json::from_str::<Rule>("\"D9\"").unwrap(), Rule::SeatLimit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rule {
    /// [roles (D1)](crate::Rule::Roles): the admin and user roles.
    #[serde(rename = "roles", alias = "D1")]
    Roles,
    /// [status transitions (D2)](crate::Rule::StatusTransitions): which status changes an edit may make.
    #[serde(rename = "status_transitions", alias = "D2")]
    StatusTransitions,
    /// [unique email (D3)](crate::Rule::UniqueEmail): one address per tenant, with strict syntax.
    #[serde(rename = "unique_email", alias = "D3")]
    UniqueEmail,
    /// [permission set (D4)](crate::Rule::PermissionSet): the 6 × 5 permission flags and their wire form.
    #[serde(rename = "permission_set", alias = "D4")]
    PermissionSet,
    /// [CRM access (D5)](crate::Rule::CrmAccess): the CRM flag; admins always have it.
    #[serde(rename = "crm_access", alias = "D5")]
    CrmAccess,
    /// [current access (D6)](crate::Rule::CurrentAccess): access is read from current rows at every check.
    #[serde(rename = "current_access", alias = "D6")]
    CurrentAccess,
    /// [management authority (D7)](crate::Rule::ManagementAuthority): who may manage users and templates; no escalation, no self-change.
    #[serde(rename = "management_authority", alias = "D7")]
    ManagementAuthority,
    /// [last admin (D8)](crate::Rule::LastAdmin): a tenant keeps at least one active admin.
    #[serde(rename = "last_admin", alias = "D8")]
    LastAdmin,
    /// [seat limit (D9)](crate::Rule::SeatLimit): every user row takes a seat; invites stop at the limit.
    #[serde(rename = "seat_limit", alias = "D9")]
    SeatLimit,
    /// [invitations (D10)](crate::Rule::Invitations): secret, expiring, single-use invitation links; rate-limited resends.
    #[serde(rename = "invitations", alias = "D10")]
    Invitations,
    /// [permanent delete (D11)](crate::Rule::PermanentDelete): deletes are final and leave a tombstone.
    #[serde(rename = "permanent_delete", alias = "D11")]
    PermanentDelete,
    /// [role templates (D12)](crate::Rule::RoleTemplates): named permission sets referenced live; guarded deletion.
    #[serde(rename = "role_templates", alias = "D12")]
    RoleTemplates,
    /// [audit log (D13)](crate::Rule::AuditLog): every change and refused attempt is recorded.
    #[serde(rename = "audit_log", alias = "D13")]
    AuditLog,
    /// [sign-in (D14)](crate::Rule::SignIn): only active users sign in; last login is recorded.
    #[serde(rename = "sign_in", alias = "D14")]
    SignIn,
    /// [tenant isolation (D15)](crate::Rule::TenantIsolation): another tenant's ids behave as unknown.
    #[serde(rename = "tenant_isolation", alias = "D15")]
    TenantIsolation,
    /// [concurrency (D16)](crate::Rule::Concurrency): decisions commit only on an unchanged snapshot.
    #[serde(rename = "concurrency", alias = "D16")]
    Concurrency,
    /// [mail delivery (D17)](crate::Rule::MailDelivery): mail through a durable outbox, after commit, with retries.
    #[serde(rename = "mail_delivery", alias = "D17")]
    MailDelivery,
    /// [listing (D18)](crate::Rule::Listing): keyset pages with filters and sorts.
    #[serde(rename = "listing", alias = "D18")]
    Listing,
    /// [bulk invite (D19)](crate::Rule::BulkInvite): one outcome per address of a bulk invite.
    #[serde(rename = "bulk_invite", alias = "D19")]
    BulkInvite,
    /// [expired invitations (D20)](crate::Rule::ExpiredInvitations): expired invitations keep their seat until purged.
    #[serde(rename = "expired_invitations", alias = "D20")]
    ExpiredInvitations,
    /// [within own access (D21)](crate::Rule::WithinOwnAccess): a non-admin manages only users within its own access.
    #[serde(rename = "within_own_access", alias = "D21")]
    WithinOwnAccess,
    /// [names (D22)](crate::Rule::Names): tenant and template names without control or format characters.
    #[serde(rename = "names", alias = "D22")]
    Names,
    /// [first seat (D23)](crate::Rule::FirstSeat): a new tenant's limit leaves its first admin a seat.
    #[serde(rename = "first_seat", alias = "D23")]
    FirstSeat,
    /// [accept attempts (D24)](crate::Rule::AcceptAttempts): five wrong sign-up addresses kill a link.
    #[serde(rename = "accept_attempts", alias = "D24")]
    AcceptAttempts,
    /// [mail never holds a request (D25)](crate::Rule::MailNeverHoldsARequest): inline mail is bounded by a deadline.
    #[serde(rename = "mail_never_holds_a_request", alias = "D25")]
    MailNeverHoldsARequest,
    /// [live links are secrets (D26)](crate::Rule::LiveLinksAreSecrets): accept links are returned once, never readable again.
    #[serde(rename = "live_links_are_secrets", alias = "D26")]
    LiveLinksAreSecrets,
    /// [sign-in is not a change (D27)](crate::Rule::SignInIsNotAChange): sign-ins do not take part in the tenant version.
    #[serde(rename = "sign_in_is_not_a_change", alias = "D27")]
    SignInIsNotAChange,
    /// [one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants): a person can be a user of several tenants.
    #[serde(rename = "one_person_several_tenants", alias = "D28")]
    OnePersonSeveralTenants,
}

impl Rule {
    /// Every rule, in the order of its id ([roles (D1)](crate::Rule::Roles) first).
    pub const ALL: [Rule; 28] = [
        Rule::Roles,
        Rule::StatusTransitions,
        Rule::UniqueEmail,
        Rule::PermissionSet,
        Rule::CrmAccess,
        Rule::CurrentAccess,
        Rule::ManagementAuthority,
        Rule::LastAdmin,
        Rule::SeatLimit,
        Rule::Invitations,
        Rule::PermanentDelete,
        Rule::RoleTemplates,
        Rule::AuditLog,
        Rule::SignIn,
        Rule::TenantIsolation,
        Rule::Concurrency,
        Rule::MailDelivery,
        Rule::Listing,
        Rule::BulkInvite,
        Rule::ExpiredInvitations,
        Rule::WithinOwnAccess,
        Rule::Names,
        Rule::FirstSeat,
        Rule::AcceptAttempts,
        Rule::MailNeverHoldsARequest,
        Rule::LiveLinksAreSecrets,
        Rule::SignInIsNotAChange,
        Rule::OnePersonSeveralTenants,
    ];

    /// The short id (`"D9"`) that tests and comments cite.
    #[must_use]
    pub const fn id(self) -> &'static str {
        match self {
            Rule::Roles => "D1",
            Rule::StatusTransitions => "D2",
            Rule::UniqueEmail => "D3",
            Rule::PermissionSet => "D4",
            Rule::CrmAccess => "D5",
            Rule::CurrentAccess => "D6",
            Rule::ManagementAuthority => "D7",
            Rule::LastAdmin => "D8",
            Rule::SeatLimit => "D9",
            Rule::Invitations => "D10",
            Rule::PermanentDelete => "D11",
            Rule::RoleTemplates => "D12",
            Rule::AuditLog => "D13",
            Rule::SignIn => "D14",
            Rule::TenantIsolation => "D15",
            Rule::Concurrency => "D16",
            Rule::MailDelivery => "D17",
            Rule::Listing => "D18",
            Rule::BulkInvite => "D19",
            Rule::ExpiredInvitations => "D20",
            Rule::WithinOwnAccess => "D21",
            Rule::Names => "D22",
            Rule::FirstSeat => "D23",
            Rule::AcceptAttempts => "D24",
            Rule::MailNeverHoldsARequest => "D25",
            Rule::LiveLinksAreSecrets => "D26",
            Rule::SignInIsNotAChange => "D27",
            Rule::OnePersonSeveralTenants => "D28",
        }
    }

    /// The snake_case name (`"seat_limit"`), as serialized.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Roles => "roles",
            Rule::StatusTransitions => "status_transitions",
            Rule::UniqueEmail => "unique_email",
            Rule::PermissionSet => "permission_set",
            Rule::CrmAccess => "crm_access",
            Rule::CurrentAccess => "current_access",
            Rule::ManagementAuthority => "management_authority",
            Rule::LastAdmin => "last_admin",
            Rule::SeatLimit => "seat_limit",
            Rule::Invitations => "invitations",
            Rule::PermanentDelete => "permanent_delete",
            Rule::RoleTemplates => "role_templates",
            Rule::AuditLog => "audit_log",
            Rule::SignIn => "sign_in",
            Rule::TenantIsolation => "tenant_isolation",
            Rule::Concurrency => "concurrency",
            Rule::MailDelivery => "mail_delivery",
            Rule::Listing => "listing",
            Rule::BulkInvite => "bulk_invite",
            Rule::ExpiredInvitations => "expired_invitations",
            Rule::WithinOwnAccess => "within_own_access",
            Rule::Names => "names",
            Rule::FirstSeat => "first_seat",
            Rule::AcceptAttempts => "accept_attempts",
            Rule::MailNeverHoldsARequest => "mail_never_holds_a_request",
            Rule::LiveLinksAreSecrets => "live_links_are_secrets",
            Rule::SignInIsNotAChange => "sign_in_is_not_a_change",
            Rule::OnePersonSeveralTenants => "one_person_several_tenants",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A tenant was created with its first admin.
    TenantCreated,
    /// The seat limit changed ([seat limit (D9)](crate::Rule::SeatLimit)).
    UserLimitChanged,
    /// The tenant was renamed by an admin ([names (D22)](crate::Rule::Names); the old and
    /// new name as `Field::Name`).
    TenantRenamed,
    /// A user was invited ([invitations (D10)](crate::Rule::Invitations)).
    UserInvited,
    /// An invitation was sent again ([invitations (D10)](crate::Rule::Invitations)).
    InvitationResent,
    /// An invitation was accepted; the user became active ([invitations (D10)](crate::Rule::Invitations)).
    InvitationAccepted,
    /// Someone tried to accept an invitation with a wrong address ([accept attempts (D24)](crate::Rule::AcceptAttempts)). The event's
    /// outcome is a refusal; its changes show the failed-attempt count and, on the last
    /// allowed attempt, that the token was revoked.
    AcceptAttemptFailed,
    /// The host reported a sign-in ([sign-in (D14)](crate::Rule::SignIn)).
    SignedIn,
    /// A user's email, role, status, template, CRM access or grants changed.
    UserEdited,
    /// A user was deleted ([permanent delete (D11)](crate::Rule::PermanentDelete)).
    UserDeleted,
    /// A role template was created ([role templates (D12)](crate::Rule::RoleTemplates)).
    TemplateCreated,
    /// A role template was renamed or its permissions changed ([role templates (D12)](crate::Rule::RoleTemplates)).
    TemplateEdited,
    /// A role template was deleted ([role templates (D12)](crate::Rule::RoleTemplates)).
    TemplateDeleted,
    /// A webhook endpoint was registered for the tenant (its id, URL and event kinds in the
    /// changes; never its secret).
    WebhookEndpointAdded,
    /// A webhook endpoint's URL, event kinds or enabled flag changed, or its secret was
    /// rotated (recorded as `Field::WebhookSecret` with no values: the secret never enters
    /// the log).
    WebhookEndpointChanged,
    /// A webhook endpoint was removed.
    WebhookEndpointRemoved,
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
    /// The host's identity id attached to the user ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants); `Text` or `None`).
    Identity,
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
    /// Failed accept attempts of an invitation ([accept attempts (D24)](crate::Rule::AcceptAttempts)).
    FailedAttempts,
    /// An invitation's state ([accept attempts (D24)](crate::Rule::AcceptAttempts): revoked after too many failed attempts).
    InvitationState,
    /// On a refusal of an actor that is not a user of the tenant ([audit log (D13)](crate::Rule::AuditLog)):
    /// how many such refusals in this tenant were counted but not recorded one by one since
    /// the previous one recorded (the after value; `Number`).
    UnrecordedRefusals,
    /// A webhook endpoint's id (`Text`).
    WebhookEndpoint,
    /// A webhook endpoint's URL (`Text`).
    WebhookUrl,
    /// The event kinds a webhook endpoint receives (`Text`, comma-separated; empty: all).
    WebhookEvents,
    /// A webhook endpoint's secret was rotated: both values are `None`, the secret is never
    /// recorded.
    WebhookSecret,
    /// Whether a webhook endpoint is enabled (`Bool`); the dispatcher disables an endpoint
    /// that kept failing, as the system actor.
    WebhookEnabled,
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
    /// A permission set ([audit log (D13)](crate::Rule::AuditLog): before/after sets).
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
    /// The attempt was refused ([audit log (D13)](crate::Rule::AuditLog) records refused management attempts too).
    Refused {
        /// The rule that refused.
        rule: Rule,
        /// The refusal, as its error message says it.
        message: String,
    },
}

/// One audit event ([audit log (D13)](crate::Rule::AuditLog)). Stores give it a sequence number when they append it.
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
