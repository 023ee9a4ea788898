//! The pure decide functions: one per use case.
//!
//! Each takes a snapshot (the tenant with its counters and version, the acting user, the
//! target, the templates involved and what the store answered to the uniqueness questions)
//! and returns either a [`Change`] (the writes, the new counters and the audit events, to be
//! committed atomically only if the tenant's version is unchanged, [concurrency (D16)](crate::Rule::Concurrency)) or an [`Error`]
//! naming the rule that refused.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditEvent, AuditTarget, Field, FieldChange, Outcome, Value};
use crate::policy::{effective_crm, effective_permissions, potential_permissions};
use crate::{
    Action, ActorRef, Category, Counters, Email, EmailError, Error, IdentityId, Invitation,
    InvitationKind, InvitationState, MAX_ACCEPT_ATTEMPTS, Permission, Permissions, Policy, Role,
    RoleTemplate, Status, TemplateId, TemplateName, Tenant, TenantId, TenantName, TenantState,
    TokenHash, Tombstone, User, UserId,
};

/// One write of a change set. Stores apply the writes of a [`Change`] in order, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Write {
    /// Create the tenant (only in the change that creates it).
    InsertTenant(Tenant),
    /// Replace the tenant's row (name, limit).
    UpdateTenant(Tenant),
    /// Add a user row (takes a seat).
    InsertUser(User),
    /// Replace a user row.
    UpdateUser(User),
    /// Remove a user row, keeping this tombstone ([permanent delete (D11)](crate::Rule::PermanentDelete)).
    DeleteUser(Tombstone),
    /// Add a template.
    InsertTemplate(RoleTemplate),
    /// Replace a template.
    UpdateTemplate(RoleTemplate),
    /// Remove a template (after its users were moved off it).
    DeleteTemplate(TemplateId),
    /// Point every user that references `from` at `to` (detach when `None`).
    MoveTemplateUsers {
        /// The template being left.
        from: TemplateId,
        /// The new template, or none.
        to: Option<TemplateId>,
    },
    /// Record a new invitation token hash.
    InsertInvitation(Invitation),
    /// Mark every pending invitation of the user revoked.
    RevokeInvitations(UserId),
    /// Mark one invitation used.
    UseInvitation(TokenHash),
    /// Record a failed accept attempt on a pending invitation ([accept attempts (D24)](crate::Rule::AcceptAttempts)): set its count of
    /// failed attempts, and revoke it when `revoke` is set.
    FailAcceptAttempt {
        /// The invitation.
        token_hash: TokenHash,
        /// Its failed attempts after this one.
        failed_attempts: u32,
        /// Whether this attempt kills the token.
        revoke: bool,
    },
}

/// Everything one use case changes, committed atomically and only if the tenant's version is
/// still `expected_version` ([concurrency (D16)](crate::Rule::Concurrency)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The version the decision was taken on.
    pub expected_version: u64,
    /// The counters after the change (their version is `expected_version + 1`).
    pub counters: Counters,
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// The audit events, appended in the same step ([audit log (D13)](crate::Rule::AuditLog)).
    pub events: Vec<AuditEvent>,
}

impl Change {
    fn on(state: &TenantState) -> Self {
        Self {
            tenant_id: state.tenant.id,
            expected_version: state.counters.version,
            counters: Counters {
                version: state.counters.version.saturating_add(1),
                ..state.counters
            },
            writes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Whether nothing is to be written (a no-op edit).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty()
    }
}

/// The snapshot a decision is taken on.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The tenant, its counters and version.
    pub state: &'a TenantState,
    /// The current time from the injected clock.
    pub now: OffsetDateTime,
    /// The configurable rules.
    pub policy: &'a Policy,
}

impl Ctx<'_> {
    fn event(
        &self,
        actor: ActorRef,
        action: AuditAction,
        target: AuditTarget,
        changes: Vec<FieldChange>,
    ) -> AuditEvent {
        AuditEvent {
            tenant_id: self.state.tenant.id,
            actor,
            action,
            target,
            at: self.now,
            outcome: Outcome::Success,
            changes,
        }
    }
}

/// The acting user as currently stored, with the template it references.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    /// The actor's row.
    pub user: &'a User,
    /// The template the actor references, if any.
    pub template: Option<&'a RoleTemplate>,
}

impl Acting<'_> {
    /// What the actor holds now ([current access (D6)](crate::Rule::CurrentAccess)).
    #[must_use]
    pub fn holds(&self) -> Permissions {
        effective_permissions(self.user, self.template)
    }

    /// Whether the actor is an active admin.
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.user.is_active_admin()
    }

    fn reference(&self) -> ActorRef {
        ActorRef::User(self.user.id)
    }

    /// [management authority (D7)](crate::Rule::ManagementAuthority): whether the actor, in `tenant`, holds `users:<action>`.
    ///
    /// # Errors
    /// [`Error::NotAllowed`] naming the permission.
    pub fn require(&self, tenant: TenantId, action: Action) -> Result<(), Error> {
        let needed = Permission::new(Category::Users, action);
        if self.user.tenant_id == tenant && self.holds().has(needed) {
            Ok(())
        } else {
            Err(Error::NotAllowed { needed })
        }
    }

    /// [within own access (D21)](crate::Rule::WithinOwnAccess): a non-admin manages only users whose access, now and once active (CRM
    /// included), is within its own. `template` is the one `target` references.
    ///
    /// # Errors
    /// [`Error::BeyondOwnAccess`] naming what the target holds beyond the actor.
    pub fn check_within(
        &self,
        target: &User,
        template: Option<&RoleTemplate>,
    ) -> Result<(), Error> {
        if self.is_admin() {
            return Ok(());
        }
        let target_holds =
            potential_permissions(target, template) | effective_permissions(target, template);
        let missing = target_holds.difference(self.holds());
        let target_crm = target.crm_access || target.role == Role::Admin;
        let crm = target_crm && !effective_crm(self.user);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(Error::BeyondOwnAccess { missing, crm })
        }
    }

    /// [within own access (D21)](crate::Rule::WithinOwnAccess) for many targets at once (the users of a template being changed, all
    /// referencing `template`): the refusal names everything any of them holds beyond the
    /// actor.
    ///
    /// # Errors
    /// [`Error::BeyondOwnAccess`] with the union of what the targets hold beyond the actor.
    pub fn check_all_within(
        &self,
        targets: &[User],
        template: Option<&RoleTemplate>,
    ) -> Result<(), Error> {
        let mut missing = Permissions::empty();
        let mut crm = false;
        for target in targets {
            if let Err(Error::BeyondOwnAccess { missing: m, crm: c }) =
                self.check_within(target, template)
            {
                missing |= m;
                crm |= c;
            }
        }
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(Error::BeyondOwnAccess { missing, crm })
        }
    }

    /// [management authority (D7)](crate::Rule::ManagementAuthority): the gain in permissions or CRM access must be held by the actor itself.
    fn check_gain(&self, gained: Permissions, crm_gained: bool) -> Result<(), Error> {
        let missing = gained.difference(self.holds());
        let crm = crm_gained && !effective_crm(self.user);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(Error::Escalation { missing, crm })
        }
    }
}

/// Builds the audit event of a refused management attempt ([audit log (D13)](crate::Rule::AuditLog)).
#[must_use]
pub fn refused_event(
    tenant_id: TenantId,
    actor: ActorRef,
    action: AuditAction,
    target: AuditTarget,
    at: OffsetDateTime,
    error: &Error,
) -> AuditEvent {
    AuditEvent {
        tenant_id,
        actor,
        action,
        target,
        at,
        outcome: Outcome::Refused {
            rule: error.rule(),
            message: error.to_string(),
        },
        changes: Vec::new(),
    }
}

mod invitations;
mod templates;
mod tenants;
mod users;

pub use invitations::*;
pub use templates::*;
pub use tenants::*;
pub use users::*;

/// Serde of a leave/clear/set field: absent is `None` (leave), `null` is `Some(None)`
/// (clear), a value is `Some(Some(_))` (set). Plain serde would read `null` back as `None`.
mod clearable {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// Appends [`Field::ChangedUsers`]: the users among `referencing` (those that reference
/// `from`) whose access, now or once active, differs when they hold `to` instead.
fn push_changed_users(
    changes: &mut Vec<FieldChange>,
    from: &RoleTemplate,
    to: Option<&RoleTemplate>,
    referencing: &[User],
) {
    let to_perms = to.map_or(Permissions::empty(), |t| t.permissions);
    let ids: Vec<UserId> = referencing
        .iter()
        .filter(|u| {
            u.template_id == Some(from.id)
                && u.role == Role::User
                && (u.grants | from.permissions) != (u.grants | to_perms)
        })
        .map(|u| u.id)
        .collect();
    if !ids.is_empty() {
        changes.push(change(Field::ChangedUsers, Value::None, Value::Users(ids)));
    }
}

fn change(field: Field, before: Value, after: Value) -> FieldChange {
    FieldChange {
        field,
        before,
        after,
    }
}

fn user_diff(before: &User, after: &User) -> Vec<FieldChange> {
    let mut out = Vec::new();
    if before.email.as_str() != after.email.as_str() {
        out.push(change(
            Field::Email,
            Value::Text(before.email.to_string()),
            Value::Text(after.email.to_string()),
        ));
    }
    if before.role != after.role {
        out.push(change(
            Field::Role,
            Value::Role(before.role),
            Value::Role(after.role),
        ));
    }
    if before.status != after.status {
        out.push(change(
            Field::Status,
            Value::Status(before.status),
            Value::Status(after.status),
        ));
    }
    if before.template_id != after.template_id {
        let v = |t: Option<TemplateId>| t.map_or(Value::None, Value::Template);
        out.push(change(
            Field::Template,
            v(before.template_id),
            v(after.template_id),
        ));
    }
    if before.crm_access != after.crm_access {
        out.push(change(
            Field::CrmAccess,
            Value::Bool(before.crm_access),
            Value::Bool(after.crm_access),
        ));
    }
    if before.grants != after.grants {
        out.push(change(
            Field::Grants,
            Value::Permissions(before.grants),
            Value::Permissions(after.grants),
        ));
    }
    out
}

/// Whether `status` may be given to a user at all by the edit form (for UIs).
#[must_use]
pub fn editable_statuses(from: Status) -> &'static [Status] {
    match from {
        Status::Invited => &[Status::Invited],
        Status::Active | Status::Suspended => &[Status::Active, Status::Suspended],
    }
}
