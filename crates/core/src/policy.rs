//! The policy evaluator ([roles (D1)](crate::Rule::Roles), [CRM access (D5)](crate::Rule::CrmAccess), [current access (D6)](crate::Rule::CurrentAccess)): what a user holds, and why a check was decided.
//!
//! It never fails open: a template that does not match the user's reference, a user that is
//! not active, or anything in doubt is a deny with a reason.

use serde::{Deserialize, Serialize};

use crate::{
    Permission, Permissions, Role, RoleTemplate, Status, TemplateId, TenantId, User, UserId,
};

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "permission")]
pub enum Request {
    /// One fine-grained permission.
    Permission(Permission),
    /// Access to CRM records ([CRM access (D5)](crate::Rule::CrmAccess)).
    Crm,
}

impl From<Permission> for Request {
    fn from(p: Permission) -> Self {
        Request::Permission(p)
    }
}

/// What decided a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    /// Allowed: the user is an active admin ([roles (D1)](crate::Rule::Roles)).
    Admin,
    /// Allowed: the permission is one of the user's direct grants.
    DirectGrant,
    /// Allowed: the user's role template grants it (read now, [current access (D6)](crate::Rule::CurrentAccess)).
    Template {
        /// The template that granted it.
        template_id: TemplateId,
    },
    /// Allowed: the user has CRM access ([CRM access (D5)](crate::Rule::CrmAccess)).
    CrmAccess,
    /// Denied: the user has not accepted its invitation ([current access (D6)](crate::Rule::CurrentAccess)).
    Invited,
    /// Denied: the user is suspended ([current access (D6)](crate::Rule::CurrentAccess)).
    Suspended,
    /// Denied: the user does not exist or was deleted ([current access (D6)](crate::Rule::CurrentAccess), [tenant isolation (D15)](crate::Rule::TenantIsolation)).
    UnknownUser,
    /// Denied: neither grants nor template hold the permission.
    MissingPermission {
        /// What was missing.
        permission: Permission,
    },
    /// Denied: the user has no CRM access ([CRM access (D5)](crate::Rule::CrmAccess)).
    NoCrmAccess,
}

/// The answer to a check: a value, not an error, with the reason that decided it.
///
/// A decision is its reason: whether it allows follows from the reason
/// ([`Reason::is_grant`]), so a decision can never say "allowed, because suspended". On the
/// wire it is `{"allowed": bool, "reason": {...}}`; reading one whose two fields disagree is
/// an error.
///
/// ```
/// use tenantry_core::{Decision, Reason};
/// let d = Decision::new(Reason::Suspended);
/// assert!(!d.is_allowed());
/// assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"allowed":false,"reason":{"reason":"suspended"}}"#);
/// assert!(serde_json::from_str::<Decision>(r#"{"allowed":true,"reason":{"reason":"suspended"}}"#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision(Reason);

impl Decision {
    /// The decision a reason makes: an allow for a grant, a deny for a denial.
    #[must_use]
    pub const fn new(reason: Reason) -> Self {
        Self(reason)
    }

    const fn allow(reason: Reason) -> Self {
        Self(reason)
    }

    const fn deny(reason: Reason) -> Self {
        Self(reason)
    }

    /// Whether the request is allowed.
    #[inline]
    #[must_use]
    pub const fn is_allowed(&self) -> bool {
        self.0.is_grant()
    }

    /// What decided.
    #[inline]
    #[must_use]
    pub const fn reason(&self) -> Reason {
        self.0
    }

    /// A deny for a user that does not exist (or belongs to another tenant).
    #[must_use]
    pub const fn unknown_user() -> Self {
        Self::deny(Reason::UnknownUser)
    }
}

impl From<Reason> for Decision {
    fn from(reason: Reason) -> Self {
        Self(reason)
    }
}

impl Reason {
    /// Whether this reason allows (a grant) rather than denies.
    #[must_use]
    pub const fn is_grant(&self) -> bool {
        matches!(
            self,
            Reason::Admin | Reason::DirectGrant | Reason::Template { .. } | Reason::CrmAccess
        )
    }
}

#[derive(Serialize, Deserialize)]
struct DecisionWire {
    allowed: bool,
    reason: Reason,
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DecisionWire {
            allowed: self.is_allowed(),
            reason: self.0,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = DecisionWire::deserialize(deserializer)?;
        if wire.allowed == wire.reason.is_grant() {
            Ok(Self(wire.reason))
        } else {
            Err(serde::de::Error::custom(
                "a decision's `allowed` contradicts its reason",
            ))
        }
    }
}

/// The few facts a check needs about a user, as one small `Copy` value: what stores return
/// for an authorization (one read, no allocation) and what [`authorize_subject`] decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// The user's tenant.
    pub tenant_id: TenantId,
    /// The user.
    pub user_id: UserId,
    /// Its role.
    pub role: Role,
    /// Its status.
    pub status: Status,
    /// Its CRM flag.
    pub crm_access: bool,
    /// Its direct grants.
    pub grants: Permissions,
    /// The template it references and that template's current permissions, if the template
    /// exists in the same tenant.
    pub template: Option<(TemplateId, Permissions)>,
}

impl Subject {
    /// The facts of `user`, with `template` counted only if it is the one the user
    /// references, in the user's tenant (never fail open).
    #[inline]
    #[must_use]
    pub fn of(user: &User, template: Option<&RoleTemplate>) -> Self {
        let template = match (user.template_id, template) {
            (Some(id), Some(t)) if t.id == id && t.tenant_id == user.tenant_id => {
                Some((id, t.permissions))
            }
            _ => None,
        };
        Self {
            tenant_id: user.tenant_id,
            user_id: user.id,
            role: user.role,
            status: user.status,
            crm_access: user.crm_access,
            grants: user.grants,
            template,
        }
    }
}

/// Decides one request on a [`Subject`]; [`authorize`] is this on `Subject::of(user, template)`.
#[inline]
#[must_use]
pub fn authorize_subject(subject: &Subject, request: Request) -> Decision {
    match subject.status {
        Status::Active => {}
        Status::Invited => return Decision::deny(Reason::Invited),
        Status::Suspended => return Decision::deny(Reason::Suspended),
    }
    if subject.role == Role::Admin {
        return Decision::allow(Reason::Admin);
    }
    match request {
        Request::Crm if subject.crm_access => Decision::allow(Reason::CrmAccess),
        Request::Crm => Decision::deny(Reason::NoCrmAccess),
        Request::Permission(permission) => {
            if subject.grants.has(permission) {
                return Decision::allow(Reason::DirectGrant);
            }
            match subject.template {
                Some((template_id, perms)) if perms.has(permission) => {
                    Decision::allow(Reason::Template { template_id })
                }
                _ => Decision::deny(Reason::MissingPermission { permission }),
            }
        }
    }
}

/// The template's permissions if it is the one `user` references and in its tenant;
/// anything else contributes nothing (never fail open).
#[inline]
fn template_permissions(user: &User, template: Option<&RoleTemplate>) -> Permissions {
    match (user.template_id, template) {
        (Some(id), Some(t)) if t.id == id && t.tenant_id == user.tenant_id => t.permissions,
        _ => Permissions::empty(),
    }
}

/// What the user would hold if it were active: all for an admin, else direct grants ∪ the
/// referenced template's current permissions ([roles (D1)](crate::Rule::Roles), [current access (D6)](crate::Rule::CurrentAccess)).
#[inline]
#[must_use]
pub fn potential_permissions(user: &User, template: Option<&RoleTemplate>) -> Permissions {
    match user.role {
        Role::Admin => Permissions::all(),
        Role::User => user.grants | template_permissions(user, template),
    }
}

/// What the user holds now ([current access (D6)](crate::Rule::CurrentAccess)): nothing unless active; then as [`potential_permissions`].
///
/// ```
/// use tenantry_core::*;
/// # let t = TenantId::from_parts(1, [1; 10]);
/// # let now = time::OffsetDateTime::UNIX_EPOCH;
/// let mut user = User {
///     id: UserId::from_parts(1, [2; 10]), tenant_id: t,
///     email: "a@example.com".parse()?, role: Role::User, status: Status::Active,
///     template_id: None, crm_access: false, grants: Permissions::USERS_VIEW,
///     created_at: now, last_login: None, invite_expires_at: None,
///     identity: None,
/// };
/// assert_eq!(effective_permissions(&user, None), Permissions::USERS_VIEW);
/// user.status = Status::Suspended;
/// assert!(effective_permissions(&user, None).is_empty());
/// # Ok::<(), EmailError>(())
/// ```
#[inline]
#[must_use]
pub fn effective_permissions(user: &User, template: Option<&RoleTemplate>) -> Permissions {
    if user.status == Status::Active {
        potential_permissions(user, template)
    } else {
        Permissions::empty()
    }
}

/// Whether the user has CRM access now ([CRM access (D5)](crate::Rule::CrmAccess), [current access (D6)](crate::Rule::CurrentAccess)): admins always, others by their flag; never
/// while not active.
#[inline]
#[must_use]
pub fn effective_crm(user: &User) -> bool {
    user.status == Status::Active && (user.role == Role::Admin || user.crm_access)
}

/// Decides one request for one user, given the template the user references (if any).
///
/// ```
/// use tenantry_core::*;
/// # let t = TenantId::from_parts(1, [1; 10]);
/// # let now = time::OffsetDateTime::UNIX_EPOCH;
/// let template = RoleTemplate {
///     id: TemplateId::from_parts(1, [3; 10]), tenant_id: t,
///     name: TemplateName::parse("Support agent")?, permissions: Permissions::CONVERSATIONS_VIEW,
///     created_at: now, updated_at: now,
/// };
/// let user = User {
///     id: UserId::from_parts(1, [2; 10]), tenant_id: t,
///     email: "a@example.com".parse().unwrap(), role: Role::User, status: Status::Active,
///     template_id: Some(template.id), crm_access: false, grants: Permissions::empty(),
///     created_at: now, last_login: None, invite_expires_at: None,
///     identity: None,
/// };
/// let d = authorize(&user, Some(&template), Permission::new(Category::Conversations, Action::View).into());
/// assert!(d.is_allowed());
/// assert_eq!(d.reason(), Reason::Template { template_id: template.id });
/// assert_eq!(authorize(&user, Some(&template), Request::Crm).reason(), Reason::NoCrmAccess);
/// # Ok::<(), TemplateNameError>(())
/// ```
#[inline]
#[must_use]
pub fn authorize(user: &User, template: Option<&RoleTemplate>, request: Request) -> Decision {
    authorize_subject(&Subject::of(user, template), request)
}
