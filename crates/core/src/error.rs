//! The typed refusals of the decide functions. Every variant names its rule.

use time::OffsetDateTime;

use crate::{EmailError, IdentityError, NameError, Permission, Permissions, Rule, Status};

/// Why a use case was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [unique email (D3)](crate::Rule::UniqueEmail): the address is not acceptable.
    #[error("invalid email address: {0}")]
    InvalidEmail(#[from] EmailError),
    /// [unique email (D3)](crate::Rule::UniqueEmail): another user of the tenant has this address.
    #[error("a user with the email address {email} already exists in this tenant")]
    EmailTaken {
        /// The address as given.
        email: String,
    },
    /// [role templates (D12)](crate::Rule::RoleTemplates), [names (D22)](crate::Rule::Names): the template name is not acceptable.
    #[error("invalid template name: {0}")]
    InvalidTemplateName(#[from] NameError),
    /// [names (D22)](crate::Rule::Names): the tenant name is not acceptable.
    #[error("invalid tenant name: {0}")]
    InvalidTenantName(NameError),
    /// [first seat (D23)](crate::Rule::FirstSeat): a tenant is created with a seat limit of at least 1 (its first admin takes a
    /// seat).
    #[error("a new tenant needs a seat limit of at least 1: its first admin takes a seat")]
    FirstSeatRequired,
    /// [one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants): the identity id is not valid.
    #[error("invalid identity id: {0}")]
    InvalidIdentity(#[from] IdentityError),
    /// [one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants): another user of the tenant holds this identity id.
    #[error("another user of this tenant already has this identity id")]
    IdentityTaken,
    /// [role templates (D12)](crate::Rule::RoleTemplates): another template of the tenant has this name (ignoring case).
    #[error("a role template named {name:?} already exists in this tenant")]
    TemplateNameTaken {
        /// The name as given.
        name: String,
    },
    /// [role templates (D12)](crate::Rule::RoleTemplates): the template is referenced by users and the caller chose to refuse.
    #[error(
        "the role template is assigned to {users} user(s); detach or reassign them to delete it"
    )]
    TemplateInUse {
        /// How many users reference it.
        users: u64,
    },
    /// [status transitions (D2)](crate::Rule::StatusTransitions): a status change that an edit may not make.
    #[error("a user cannot be moved from {from} to {to} by an edit")]
    InvalidTransition {
        /// The current status.
        from: Status,
        /// The requested status.
        to: Status,
    },
    /// [CRM access (D5)](crate::Rule::CrmAccess): admins always have CRM access.
    #[error("admins always have CRM access; it cannot be turned off")]
    AdminCrmRequired,
    /// [management authority (D7)](crate::Rule::ManagementAuthority): the actor lacks the permission the operation needs (or is not active).
    #[error("not allowed: this needs the {needed} permission")]
    NotAllowed {
        /// The permission that was needed.
        needed: Permission,
    },
    /// [management authority (D7)](crate::Rule::ManagementAuthority): a non-admin may not invite, create, edit or delete an admin.
    #[error("only an admin can invite, edit or delete an admin")]
    AdminOnly,
    /// [management authority (D7)](crate::Rule::ManagementAuthority): a non-admin may not grant what it does not hold itself.
    #[error("cannot grant what you do not hold yourself: {}", escalation_text(*missing, *crm))]
    Escalation {
        /// The permissions the actor lacks but tried to grant.
        missing: Permissions,
        /// Whether CRM access was among them.
        crm: bool,
    },
    /// [within own access (D21)](crate::Rule::WithinOwnAccess): a non-admin may manage (edit, resend to, delete) only a user whose access, now
    /// or once active, is within its own.
    #[error("cannot manage a user who holds more than you: {}", escalation_text(*missing, *crm))]
    BeyondOwnAccess {
        /// The permissions the target holds (or would hold once active) that the actor lacks.
        missing: Permissions,
        /// Whether the target has CRM access that the actor lacks.
        crm: bool,
    },
    /// [management authority (D7)](crate::Rule::ManagementAuthority): a non-admin may not change its own role, permissions, template or status.
    #[error("you cannot change your own role, permissions, template, CRM access or status")]
    SelfChange,
    /// [last admin (D8)](crate::Rule::LastAdmin): the tenant must keep at least one active admin.
    #[error("the tenant must keep at least one active admin")]
    LastAdmin,
    /// [seat limit (D9)](crate::Rule::SeatLimit): no seat is free.
    #[error("the user limit is reached: {used} of {limit} seats are used")]
    SeatLimitReached {
        /// Seats in use.
        used: u32,
        /// The limit.
        limit: u32,
    },
    /// [invitations (D10)](crate::Rule::Invitations): the token is expired, used, superseded or unknown (deliberately not saying which).
    #[error("this invitation link is invalid or has expired")]
    InvalidInvitation,
    /// [invitations (D10)](crate::Rule::Invitations): the address the person signed up with is not the invited one. [accept attempts (D24)](crate::Rule::AcceptAttempts): the attempt
    /// was counted; when none are left the token is dead.
    #[error(
        "the sign-up email address does not match the invitation ({attempts_left} attempt(s) left)"
    )]
    InvitationEmailMismatch {
        /// Further wrong addresses accepted before the token dies ([accept attempts (D24)](crate::Rule::AcceptAttempts)).
        attempts_left: u32,
    },
    /// [invitations (D10)](crate::Rule::Invitations): only invited users can be sent an invitation again.
    #[error("only invited users can be sent an invitation again; this user is {status}")]
    NotInvited {
        /// The user's status.
        status: Status,
    },
    /// [invitations (D10)](crate::Rule::Invitations): too many resends in the window.
    #[error("too many invitations sent to this user; the next one is allowed at {retry_at}")]
    ResendRateLimited {
        /// When the next resend is allowed.
        retry_at: OffsetDateTime,
    },
    /// [sign-in (D14)](crate::Rule::SignIn): only active users can sign in.
    #[error("sign-in refused: the user is {status}")]
    SignInRefused {
        /// The user's status.
        status: Status,
    },
    /// [tenant isolation (D15)](crate::Rule::TenantIsolation): no such user in this tenant.
    #[error("no such user in this tenant")]
    UserNotFound,
    /// [tenant isolation (D15)](crate::Rule::TenantIsolation): no such role template in this tenant.
    #[error("no such role template in this tenant")]
    TemplateNotFound,
    /// [tenant isolation (D15)](crate::Rule::TenantIsolation): no such tenant.
    #[error("no such tenant")]
    TenantNotFound,
    /// [tenant isolation (D15)](crate::Rule::TenantIsolation): a tenant with this id exists already.
    #[error("a tenant with this id already exists")]
    TenantExists,
}

/// A small classification of errors that hosts map to HTTP statuses and UI messages.
///
/// ```
/// use tenantry_core::{Error, ErrorKind};
/// assert_eq!(Error::UserNotFound.kind(), ErrorKind::NotFound);
/// assert_eq!(Error::LastAdmin.kind(), ErrorKind::Conflict);
/// assert_eq!(Error::SeatLimitReached { used: 5, limit: 5 }.kind(), ErrorKind::LimitReached);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// What the call names does not exist (in this tenant), or a link is invalid (HTTP 404).
    NotFound,
    /// The actor may not do this (HTTP 403).
    Forbidden,
    /// The request clashes with the current state: a taken name, the last admin, a
    /// referenced template (HTTP 409).
    Conflict,
    /// The input is malformed or not acceptable (HTTP 422).
    InvalidInput,
    /// A seat limit is reached (HTTP 409 or 402, as the host sells seats).
    LimitReached,
    /// Too many attempts; try again later (HTTP 429).
    RateLimited,
    /// The store is busy or failed, or the tenant kept changing; retry later (HTTP 503).
    Unavailable,
    /// A fault of the host's setup or of the machine (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The snake_case name (as serialized).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::LimitReached => "limit_reached",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Error {
    /// How a host should classify this refusal.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidEmail(_)
            | Error::InvalidTemplateName(_)
            | Error::InvalidTenantName(_)
            | Error::FirstSeatRequired
            | Error::InvalidIdentity(_)
            | Error::InvalidTransition { .. }
            | Error::AdminCrmRequired
            | Error::InvitationEmailMismatch { .. } => ErrorKind::InvalidInput,
            Error::EmailTaken { .. }
            | Error::TemplateNameTaken { .. }
            | Error::TemplateInUse { .. }
            | Error::TenantExists
            | Error::IdentityTaken
            | Error::LastAdmin
            | Error::NotInvited { .. } => ErrorKind::Conflict,
            Error::NotAllowed { .. }
            | Error::AdminOnly
            | Error::Escalation { .. }
            | Error::BeyondOwnAccess { .. }
            | Error::SelfChange
            | Error::SignInRefused { .. } => ErrorKind::Forbidden,
            Error::SeatLimitReached { .. } => ErrorKind::LimitReached,
            Error::ResendRateLimited { .. } => ErrorKind::RateLimited,
            Error::InvalidInvitation
            | Error::UserNotFound
            | Error::TemplateNotFound
            | Error::TenantNotFound => ErrorKind::NotFound,
        }
    }

    /// The rule (D-id) that refused.
    #[must_use]
    pub const fn rule(&self) -> Rule {
        match self {
            Error::InvalidEmail(_) | Error::EmailTaken { .. } => Rule::UniqueEmail,
            Error::InvalidTemplateName(NameError::ForbiddenCharacter { .. })
            | Error::InvalidTenantName(_) => Rule::Names,
            Error::FirstSeatRequired => Rule::FirstSeat,
            Error::InvalidIdentity(_) | Error::IdentityTaken => Rule::OnePersonSeveralTenants,
            Error::BeyondOwnAccess { .. } => Rule::WithinOwnAccess,
            Error::InvalidTemplateName(_)
            | Error::TemplateNameTaken { .. }
            | Error::TemplateInUse { .. } => Rule::RoleTemplates,
            Error::InvalidTransition { .. } => Rule::StatusTransitions,
            Error::AdminCrmRequired => Rule::CrmAccess,
            Error::NotAllowed { .. }
            | Error::AdminOnly
            | Error::Escalation { .. }
            | Error::SelfChange => Rule::ManagementAuthority,
            Error::LastAdmin => Rule::LastAdmin,
            Error::SeatLimitReached { .. } => Rule::SeatLimit,
            Error::InvalidInvitation
            | Error::InvitationEmailMismatch { .. }
            | Error::NotInvited { .. }
            | Error::ResendRateLimited { .. } => Rule::Invitations,
            Error::SignInRefused { .. } => Rule::SignIn,
            Error::UserNotFound
            | Error::TemplateNotFound
            | Error::TenantNotFound
            | Error::TenantExists => Rule::TenantIsolation,
        }
    }
}

fn escalation_text(missing: Permissions, crm: bool) -> String {
    match (missing.is_empty(), crm) {
        (true, _) => "CRM access".to_owned(),
        (false, true) => format!("{missing} and CRM access"),
        (false, false) => missing.to_string(),
    }
}
