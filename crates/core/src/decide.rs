//! The pure decide functions: one per use case.
//!
//! Each takes a snapshot (the tenant with its counters and version, the acting user, the
//! target, the templates involved and what the store answered to the uniqueness questions)
//! and returns either a [`Change`] (the writes, the new counters and the audit events, to be
//! committed atomically only if the tenant's version is unchanged, D16) or an [`Error`]
//! naming the rule that refused.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditEvent, AuditTarget, Field, FieldChange, Outcome, Value};
use crate::policy::{effective_crm, effective_permissions, potential_permissions};
use crate::{
    Action, ActorRef, Category, Counters, Email, EmailError, Error, Invitation, InvitationKind,
    InvitationState, MAX_ACCEPT_ATTEMPTS, Permission, Permissions, Policy, Role, RoleTemplate,
    Status, TemplateId, TemplateName, Tenant, TenantId, TenantName, TenantState, TokenHash,
    Tombstone, User, UserId,
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
    /// Remove a user row, keeping this tombstone (D11).
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
    /// Record a failed accept attempt on a pending invitation (D24): set its count of
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
/// still `expected_version` (D16).
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
    /// The audit events, appended in the same step (D13).
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
    /// What the actor holds now (D6).
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

    /// D7: whether the actor, in `tenant`, holds `users:<action>`.
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

    /// D21: a non-admin manages only users whose access, now and once active (CRM
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

    /// D7: the gain in permissions or CRM access must be held by the actor itself.
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

/// Builds the audit event of a refused management attempt (D13).
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

/// Creates a tenant with its first admin, active from the start. The name is checked and
/// trimmed (D22); a limit, if given, must leave the first admin its seat (D23).
///
/// # Errors
/// [`Error::InvalidTenantName`] (D22), [`Error::FirstSeatRequired`] (D23).
pub fn create_tenant(
    mut tenant: Tenant,
    admin_id: UserId,
    admin_email: Email,
) -> Result<Change, Error> {
    tenant.name = TenantName::parse(&tenant.name)
        .map_err(Error::InvalidTenantName)?
        .into_string();
    if tenant.user_limit == Some(0) {
        return Err(Error::FirstSeatRequired);
    }
    let now = tenant.created_at;
    let admin = User {
        id: admin_id,
        tenant_id: tenant.id,
        email: admin_email,
        role: Role::Admin,
        status: Status::Active,
        template_id: None,
        crm_access: true,
        grants: Permissions::empty(),
        created_at: now,
        last_login: None,
        invite_expires_at: None,
    };
    let event = |action, target| AuditEvent {
        tenant_id: tenant.id,
        actor: ActorRef::System,
        action,
        target,
        at: now,
        outcome: Outcome::Success,
        changes: Vec::new(),
    };
    Ok(Change {
        tenant_id: tenant.id,
        expected_version: 0,
        counters: Counters {
            version: 1,
            seats_used: 1,
            active_admins: 1,
        },
        events: vec![
            event(AuditAction::TenantCreated, AuditTarget::Tenant),
            AuditEvent {
                changes: vec![
                    change(
                        Field::Email,
                        Value::None,
                        Value::Text(admin.email.to_string()),
                    ),
                    change(Field::Role, Value::None, Value::Role(Role::Admin)),
                    change(Field::Status, Value::None, Value::Status(Status::Active)),
                ],
                ..event(AuditAction::UserInvited, AuditTarget::User(admin_id))
            },
        ],
        writes: vec![Write::InsertTenant(tenant), Write::InsertUser(admin)],
    })
}

/// Changes the seat limit (D9). It may be set below current usage; `None` is unlimited.
#[must_use]
pub fn set_user_limit(ctx: Ctx<'_>, actor: ActorRef, limit: Option<u32>) -> Change {
    let mut out = Change::on(ctx.state);
    let before = ctx.state.tenant.user_limit;
    if before == limit {
        return Change {
            writes: Vec::new(),
            events: Vec::new(),
            ..out
        };
    }
    let tenant = Tenant {
        user_limit: limit,
        ..ctx.state.tenant.clone()
    };
    out.writes.push(Write::UpdateTenant(tenant));
    let num = |l: Option<u32>| l.map_or(Value::None, |v| Value::Number(u64::from(v)));
    out.events.push(ctx.event(
        actor,
        AuditAction::UserLimitChanged,
        AuditTarget::Tenant,
        vec![change(Field::UserLimit, num(before), num(limit))],
    ));
    out
}

/// What to invite (D10, D19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The address.
    pub email: Email,
    /// The role.
    pub role: Role,
    /// The template to assign, if any.
    pub template_id: Option<TemplateId>,
    /// CRM access (forced on for admins, D5).
    pub crm_access: bool,
    /// Direct grants.
    pub grants: Permissions,
}

/// Fresh identifiers for one invitation, drawn by the service from its randomness source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewInvite {
    /// The new user's id.
    pub user_id: UserId,
    /// The hash of the new token.
    pub token_hash: TokenHash,
}

fn seat_check(counters: &Counters, limit: Option<u32>) -> Result<(), Error> {
    match limit {
        Some(limit) if counters.seats_used >= limit => Err(Error::SeatLimitReached {
            used: counters.seats_used,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The checks of an invite that do not depend on the address: D7 and the template.
fn invite_authority(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    role: Role,
    template_id: Option<TemplateId>,
    template: Option<&RoleTemplate>,
    crm_access: bool,
    grants: Permissions,
) -> Result<(), Error> {
    actor.require(ctx.state.tenant.id, Action::Create)?;
    if role == Role::Admin && !actor.is_admin() {
        return Err(Error::AdminOnly);
    }
    let template_perms = match (template_id, template) {
        (None, _) => Permissions::empty(),
        (Some(id), Some(t)) if t.id == id && t.tenant_id == ctx.state.tenant.id => t.permissions,
        (Some(_), _) => return Err(Error::TemplateNotFound),
    };
    let potential = match role {
        Role::Admin => Permissions::all(),
        Role::User => grants | template_perms,
    };
    actor.check_gain(potential, crm_access || role == Role::Admin)
}

#[allow(clippy::too_many_arguments)]
fn push_invite(
    ctx: Ctx<'_>,
    out: &mut Change,
    actor: &Acting<'_>,
    email: Email,
    role: Role,
    template_id: Option<TemplateId>,
    crm_access: bool,
    grants: Permissions,
    new: NewInvite,
) -> Result<UserId, Error> {
    seat_check(&out.counters, ctx.state.tenant.user_limit)?;
    let expires_at = ctx.now.saturating_add(ctx.policy.invite_ttl);
    let user = User {
        id: new.user_id,
        tenant_id: ctx.state.tenant.id,
        email,
        role,
        status: Status::Invited,
        template_id,
        crm_access: crm_access || role == Role::Admin,
        grants: if role == Role::Admin {
            Permissions::empty()
        } else {
            grants
        },
        created_at: ctx.now,
        last_login: None,
        invite_expires_at: Some(expires_at),
    };
    let mut changes = vec![
        change(
            Field::Email,
            Value::None,
            Value::Text(user.email.to_string()),
        ),
        change(Field::Role, Value::None, Value::Role(role)),
        change(Field::Status, Value::None, Value::Status(Status::Invited)),
        change(Field::CrmAccess, Value::None, Value::Bool(user.crm_access)),
        change(Field::Grants, Value::None, Value::Permissions(user.grants)),
    ];
    if let Some(t) = template_id {
        changes.push(change(Field::Template, Value::None, Value::Template(t)));
    }
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::UserInvited,
        AuditTarget::User(user.id),
        changes,
    ));
    out.writes.push(Write::InsertInvitation(Invitation {
        token_hash: new.token_hash,
        tenant_id: ctx.state.tenant.id,
        user_id: user.id,
        kind: InvitationKind::Initial,
        state: InvitationState::Pending,
        created_at: ctx.now,
        expires_at,
        failed_attempts: 0,
    }));
    out.writes
        .insert(out.writes.len().saturating_sub(1), Write::InsertUser(user));
    out.counters.seats_used = out.counters.seats_used.saturating_add(1);
    Ok(new.user_id)
}

/// Invites one user (D3, D5, D7, D9, D10).
///
/// `template` is the template named by `request.template_id` as the store returned it;
/// `email_taken` is whether a user of the tenant already has the address's key.
///
/// # Errors
/// D7 when the actor may not invite this, D3 when the address is taken, D9 at the limit,
/// D15 when the template is not the tenant's.
pub fn invite(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    request: &InviteRequest,
    template: Option<&RoleTemplate>,
    email_taken: bool,
    new: NewInvite,
) -> Result<Change, Error> {
    invite_authority(
        ctx,
        actor,
        request.role,
        request.template_id,
        template,
        request.crm_access,
        request.grants,
    )?;
    if email_taken {
        return Err(Error::EmailTaken {
            email: request.email.to_string(),
        });
    }
    let mut out = Change::on(ctx.state);
    push_invite(
        ctx,
        &mut out,
        actor,
        request.email.clone(),
        request.role,
        request.template_id,
        request.crm_access,
        request.grants,
        new,
    )?;
    Ok(out)
}

/// Many addresses invited with the same role, template, CRM access and grants (D19).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BulkInvite {
    /// The addresses as typed.
    pub emails: Vec<String>,
    /// The role for all.
    pub role: Option<Role>,
    /// The template for all.
    pub template_id: Option<TemplateId>,
    /// CRM access for all.
    pub crm_access: bool,
    /// Direct grants for all.
    pub grants: Permissions,
}

/// The outcome for one address of a bulk invite (D19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum BulkOutcome {
    /// Invited as this user.
    Invited {
        /// The new user's id.
        user_id: UserId,
    },
    /// The address is already a user of the tenant, or appeared earlier in the same call.
    Duplicate,
    /// The address is not acceptable (D3).
    Invalid {
        /// Why.
        reason: EmailError,
    },
    /// No seat was left for it (D9).
    LimitReached {
        /// Seats used.
        used: u32,
        /// The limit.
        limit: u32,
    },
}

/// One address and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkItem {
    /// The address as typed.
    pub input: String,
    /// Its outcome.
    pub outcome: BulkOutcome,
}

/// Invites many addresses in one change (D19). Authority (D7) is checked once for the whole
/// call; each address then gets its own outcome and the seat limit holds exactly.
///
/// `taken(key)` says whether the tenant has a user with that email key; `fresh()` draws new
/// ids for each invited address.
///
/// # Errors
/// D7 or D15 for the call as a whole; per-address problems are outcomes, not errors.
pub fn invite_many(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    request: &BulkInvite,
    template: Option<&RoleTemplate>,
    taken: &dyn Fn(&str) -> bool,
    fresh: &mut dyn FnMut() -> NewInvite,
) -> Result<(Change, Vec<BulkItem>), Error> {
    let role = request.role.unwrap_or(Role::User);
    invite_authority(
        ctx,
        actor,
        role,
        request.template_id,
        template,
        request.crm_access,
        request.grants,
    )?;
    let mut out = Change::on(ctx.state);
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(request.emails.len());
    for input in &request.emails {
        let outcome = match Email::parse(input) {
            Err(reason) => BulkOutcome::Invalid { reason },
            Ok(email) if taken(email.key()) || !seen.insert(email.key().to_owned()) => {
                BulkOutcome::Duplicate
            }
            Ok(email) => match push_invite(
                ctx,
                &mut out,
                actor,
                email,
                role,
                request.template_id,
                request.crm_access,
                request.grants,
                fresh(),
            ) {
                Ok(user_id) => BulkOutcome::Invited { user_id },
                Err(Error::SeatLimitReached { used, limit }) => {
                    BulkOutcome::LimitReached { used, limit }
                }
                Err(other) => return Err(other),
            },
        };
        items.push(BulkItem {
            input: input.clone(),
            outcome,
        });
    }
    Ok((out, items))
}

/// Sends an invitation again (D10): a new token, every older one revoked, never a second
/// user. `template` is the one the target references; `recent_resends` are the times of
/// this user's earlier resends (any age).
///
/// # Errors
/// D7 when the actor may not, D21 when the target holds more than a non-admin actor, D10
/// when the user is not invited or the rate limit is hit.
pub fn resend(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    target: &User,
    template: Option<&RoleTemplate>,
    recent_resends: &[OffsetDateTime],
    token_hash: TokenHash,
) -> Result<Change, Error> {
    actor.require(ctx.state.tenant.id, Action::Create)?;
    if target.tenant_id != ctx.state.tenant.id {
        return Err(Error::UserNotFound);
    }
    if target.role == Role::Admin && !actor.is_admin() {
        return Err(Error::AdminOnly);
    }
    actor.check_within(target, template)?;
    if target.status != Status::Invited {
        return Err(Error::NotInvited {
            status: target.status,
        });
    }
    let window_start = ctx.now.saturating_sub(ctx.policy.resend_window);
    let mut in_window: Vec<OffsetDateTime> = recent_resends
        .iter()
        .copied()
        .filter(|t| *t > window_start)
        .collect();
    if in_window.len() >= usize::try_from(ctx.policy.resend_limit).unwrap_or(usize::MAX) {
        in_window.sort_unstable();
        let excess = in_window
            .len()
            .saturating_sub(usize::try_from(ctx.policy.resend_limit).unwrap_or(usize::MAX));
        let oldest = in_window.get(excess).copied().unwrap_or(ctx.now);
        return Err(Error::ResendRateLimited {
            retry_at: oldest.saturating_add(ctx.policy.resend_window),
        });
    }
    let expires_at = ctx.now.saturating_add(ctx.policy.invite_ttl);
    let mut out = Change::on(ctx.state);
    out.writes.push(Write::RevokeInvitations(target.id));
    out.writes.push(Write::InsertInvitation(Invitation {
        token_hash,
        tenant_id: ctx.state.tenant.id,
        user_id: target.id,
        kind: InvitationKind::Resend,
        state: InvitationState::Pending,
        created_at: ctx.now,
        expires_at,
        failed_attempts: 0,
    }));
    out.writes.push(Write::UpdateUser(User {
        invite_expires_at: Some(expires_at),
        ..target.clone()
    }));
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::InvitationResent,
        AuditTarget::User(target.id),
        Vec::new(),
    ));
    Ok(out)
}

/// Accepts an invitation (D10): the invited user becomes active and its last login is now.
///
/// Pass the invitation found by the token's hash and its user; a missing one is
/// [`Error::InvalidInvitation`] at the caller.
///
/// # Errors
/// D10: [`Error::InvalidInvitation`] for an expired, used, revoked or foreign token (one kind,
/// revealing nothing), [`Error::InvitationEmailMismatch`] when the addresses differ.
pub fn accept(
    ctx: Ctx<'_>,
    invitation: &Invitation,
    user: &User,
    signup_email: &Email,
) -> Result<Change, Error> {
    let valid = invitation.tenant_id == ctx.state.tenant.id
        && user.tenant_id == ctx.state.tenant.id
        && invitation.user_id == user.id
        && invitation.state == InvitationState::Pending
        && ctx.now < invitation.expires_at
        && invitation.failed_attempts < MAX_ACCEPT_ATTEMPTS
        && user.status == Status::Invited;
    if !valid {
        return Err(Error::InvalidInvitation);
    }
    if !user.email.same_as(signup_email) {
        return Err(Error::InvitationEmailMismatch {
            attempts_left: MAX_ACCEPT_ATTEMPTS
                .saturating_sub(invitation.failed_attempts)
                .saturating_sub(1),
        });
    }
    let mut out = Change::on(ctx.state);
    out.writes.push(Write::RevokeInvitations(user.id));
    out.writes.push(Write::UseInvitation(invitation.token_hash));
    let accepted = User {
        status: Status::Active,
        last_login: Some(ctx.now),
        invite_expires_at: None,
        ..user.clone()
    };
    if accepted.is_active_admin() {
        out.counters.active_admins = out.counters.active_admins.saturating_add(1);
    }
    out.writes.push(Write::UpdateUser(accepted));
    out.events.push(ctx.event(
        ActorRef::User(user.id),
        AuditAction::InvitationAccepted,
        AuditTarget::User(user.id),
        vec![
            change(
                Field::Status,
                Value::Status(Status::Invited),
                Value::Status(Status::Active),
            ),
            change(Field::LastLogin, Value::None, Value::Time(ctx.now)),
        ],
    ));
    Ok(out)
}

/// Records a failed accept attempt (D24): a sign-up on a live token with a wrong address.
/// The invitation's count goes up; the [`MAX_ACCEPT_ATTEMPTS`]th attempt revokes the token
/// (a resend issues a new one; the user stays invited). The audit event is a refusal by the
/// host ([`ActorRef::System`]: no user of the tenant acted) on the invited user.
///
/// Call it only after [`accept`] answered [`Error::InvitationEmailMismatch`] for the same
/// snapshot; `error` is that answer, recorded in the event.
#[must_use]
pub fn failed_accept(ctx: Ctx<'_>, invitation: &Invitation, error: &Error) -> Change {
    let mut out = Change::on(ctx.state);
    let failed_attempts = invitation.failed_attempts.saturating_add(1);
    let revoke = failed_attempts >= MAX_ACCEPT_ATTEMPTS;
    out.writes.push(Write::FailAcceptAttempt {
        token_hash: invitation.token_hash,
        failed_attempts,
        revoke,
    });
    let mut changes = vec![change(
        Field::FailedAttempts,
        Value::Number(u64::from(invitation.failed_attempts)),
        Value::Number(u64::from(failed_attempts)),
    )];
    if revoke {
        changes.push(change(
            Field::InvitationState,
            Value::Text("pending".to_owned()),
            Value::Text("revoked".to_owned()),
        ));
    }
    out.events.push(AuditEvent {
        outcome: Outcome::Refused {
            rule: crate::Rule::D24,
            message: error.to_string(),
        },
        changes,
        ..ctx.event(
            ActorRef::System,
            AuditAction::AcceptAttemptFailed,
            AuditTarget::User(invitation.user_id),
            Vec::new(),
        )
    });
    out
}

/// Records a successful sign-in reported by the host (D14).
///
/// # Errors
/// D14: invited and suspended users are refused.
pub fn sign_in(ctx: Ctx<'_>, user: &User) -> Result<Change, Error> {
    if user.tenant_id != ctx.state.tenant.id {
        return Err(Error::UserNotFound);
    }
    if user.status != Status::Active {
        return Err(Error::SignInRefused {
            status: user.status,
        });
    }
    let mut out = Change::on(ctx.state);
    out.writes.push(Write::UpdateUser(User {
        last_login: Some(ctx.now),
        ..user.clone()
    }));
    out.events.push(ctx.event(
        ActorRef::User(user.id),
        AuditAction::SignedIn,
        AuditTarget::User(user.id),
        vec![change(
            Field::LastLogin,
            user.last_login.map_or(Value::None, Value::Time),
            Value::Time(ctx.now),
        )],
    ));
    Ok(out)
}

/// The fields an edit may change; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserEdit {
    /// A new address.
    pub email: Option<Email>,
    /// A new role.
    pub role: Option<Role>,
    /// A new status (only active ↔ suspended, D2).
    pub status: Option<Status>,
    /// A new template: `Some(None)` clears it. On the wire an absent field leaves the
    /// template alone, `null` clears it and an id sets it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "clearable")]
    pub template_id: Option<Option<TemplateId>>,
    /// New CRM access.
    pub crm_access: Option<bool>,
    /// New direct grants (the whole set).
    pub grants: Option<Permissions>,
}

/// Serde of a leave/clear/set field: absent is `None` (leave), `null` is `Some(None)`
/// (clear), a value is `Some(Some(_))` (set). Plain serde would read `null` back as `None`.
mod clearable {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
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

/// Edits a user (D2, D3, D5, D7, D8).
///
/// `current_template` is the template the target references now; `new_template` the one it
/// will reference after the edit (the same one when the edit leaves the template alone).
/// `email_taken` is whether another user of the tenant has the new address's key.
///
/// # Errors
/// The refusing rule: D7 (authority, admin targets, escalation, self-change), D21 (a target
/// holding more than a non-admin actor, whatever the edit), D2 (transition), D5 (admin
/// CRM), D8 (last admin), D3 (address taken), D15 (template).
pub fn edit(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    target: &User,
    current_template: Option<&RoleTemplate>,
    new_template: Option<&RoleTemplate>,
    edit: &UserEdit,
    email_taken: bool,
) -> Result<Change, Error> {
    let tenant = ctx.state.tenant.id;
    actor.require(tenant, Action::Edit)?;
    if target.tenant_id != tenant {
        return Err(Error::UserNotFound);
    }
    let mut after = target.clone();
    if let Some(email) = &edit.email {
        after.email = email.clone();
    }
    if let Some(role) = edit.role {
        after.role = role;
    }
    if let Some(status) = edit.status {
        if !target.status.edit_allows(status) {
            return Err(Error::InvalidTransition {
                from: target.status,
                to: status,
            });
        }
        after.status = status;
    }
    if let Some(template_id) = edit.template_id {
        after.template_id = template_id;
    }
    if let Some(t) = after.template_id
        && new_template.is_none_or(|n| n.id != t || n.tenant_id != tenant)
    {
        return Err(Error::TemplateNotFound);
    }
    let new_template = new_template.filter(|n| Some(n.id) == after.template_id);
    if let Some(grants) = edit.grants {
        after.grants = grants;
    }
    if let Some(crm) = edit.crm_access {
        if !crm && after.role == Role::Admin {
            return Err(Error::AdminCrmRequired);
        }
        after.crm_access = crm;
    }
    if after.role == Role::Admin {
        // D5: promoting turns CRM access on; demoting keeps it.
        after.crm_access = true;
    }
    if !actor.is_admin() {
        if target.role == Role::Admin || after.role == Role::Admin {
            return Err(Error::AdminOnly);
        }
        let access_changed = target.role != after.role
            || target.status != after.status
            || target.template_id != after.template_id
            || target.grants != after.grants
            || target.crm_access != after.crm_access;
        if target.id == actor.user.id && access_changed {
            return Err(Error::SelfChange);
        }
        actor.check_within(target, current_template)?;
    }
    let gained = (potential_permissions(&after, new_template)
        - potential_permissions(target, current_template))
        | (effective_permissions(&after, new_template)
            - effective_permissions(target, current_template));
    let crm_gained = (after.crm_access && !target.crm_access)
        || (effective_crm(&after) && !effective_crm(target));
    actor.check_gain(gained, crm_gained)?;
    if target.is_active_admin() && !after.is_active_admin() && ctx.state.counters.active_admins <= 1
    {
        return Err(Error::LastAdmin);
    }
    let email_changed = !target.email.same_as(&after.email);
    if email_changed && email_taken {
        return Err(Error::EmailTaken {
            email: after.email.to_string(),
        });
    }
    let diff = user_diff(target, &after);
    let mut out = Change::on(ctx.state);
    if diff.is_empty() {
        return Ok(Change {
            writes: Vec::new(),
            events: Vec::new(),
            ..out
        });
    }
    if email_changed && target.status == Status::Invited {
        // D10: changing an invited user's address invalidates its tokens. The user stays
        // invited without a usable link (not an expired invitation: D20's purge must not
        // take it for one) until the invitation is resent.
        out.writes.push(Write::RevokeInvitations(target.id));
        after.invite_expires_at = None;
    }
    match (target.is_active_admin(), after.is_active_admin()) {
        (true, false) => out.counters.active_admins = out.counters.active_admins.saturating_sub(1),
        (false, true) => out.counters.active_admins = out.counters.active_admins.saturating_add(1),
        _ => {}
    }
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::UserEdited,
        AuditTarget::User(target.id),
        diff,
    ));
    out.writes.push(Write::UpdateUser(after));
    Ok(out)
}

fn delete_into(
    ctx: Ctx<'_>,
    out: &mut Change,
    actor: &Acting<'_>,
    target: &User,
    template: Option<&RoleTemplate>,
) -> Result<(), Error> {
    if target.tenant_id != ctx.state.tenant.id {
        return Err(Error::UserNotFound);
    }
    if target.role == Role::Admin && !actor.is_admin() {
        return Err(Error::AdminOnly);
    }
    if target.id == actor.user.id && !actor.is_admin() {
        // D7: a non-admin manager may not change its own status; removing itself is the
        // furthest such change.
        return Err(Error::SelfChange);
    }
    actor.check_within(target, template)?;
    if target.is_active_admin() {
        if out.counters.active_admins <= 1 {
            return Err(Error::LastAdmin);
        }
        out.counters.active_admins = out.counters.active_admins.saturating_sub(1);
    }
    out.counters.seats_used = out.counters.seats_used.saturating_sub(1);
    out.writes.push(Write::RevokeInvitations(target.id));
    out.writes.push(Write::DeleteUser(Tombstone {
        user_id: target.id,
        tenant_id: target.tenant_id,
        email: target.email.clone(),
        deleted_at: ctx.now,
        deleted_by: actor.reference(),
    }));
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::UserDeleted,
        AuditTarget::User(target.id),
        vec![change(
            Field::Email,
            Value::Text(target.email.to_string()),
            Value::None,
        )],
    ));
    Ok(())
}

/// Deletes a user for good (D11): its tokens die, its seat is freed, a tombstone remains.
/// `template` is the one the target references.
///
/// # Errors
/// D7 (authority, admin target), D21 (a target holding more than a non-admin actor), D8
/// (last active admin), D15.
pub fn delete(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    target: &User,
    template: Option<&RoleTemplate>,
) -> Result<Change, Error> {
    actor.require(ctx.state.tenant.id, Action::Delete)?;
    let mut out = Change::on(ctx.state);
    delete_into(ctx, &mut out, actor, target, template)?;
    Ok(out)
}

/// Deletes every expired invitation among `candidates` in one change, freeing their seats
/// (D20). Candidates that are not expired invitations, or that the actor may not delete (an
/// admin's, or one holding more than the actor, for a non-admin actor: D7, D21), are left
/// alone. `templates` are the tenant's templates (those the candidates reference suffice).
/// Returns the ids deleted.
///
/// # Errors
/// D7 when the actor may not delete users.
pub fn purge_expired(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    candidates: &[User],
    templates: &[RoleTemplate],
) -> Result<(Change, Vec<UserId>), Error> {
    actor.require(ctx.state.tenant.id, Action::Delete)?;
    let mut out = Change::on(ctx.state);
    let mut deleted = Vec::new();
    for user in candidates.iter().filter(|u| u.invitation_expired(ctx.now)) {
        let template = user
            .template_id
            .and_then(|id| templates.iter().find(|t| t.id == id));
        if delete_into(ctx, &mut out, actor, user, template).is_ok() {
            deleted.push(user.id);
        }
    }
    Ok((out, deleted))
}

/// Creates a role template (D12). `name_taken` is whether the tenant has a template with the
/// same name key.
///
/// # Errors
/// D7 (needs `users:manage`; a non-admin may not put in it what it does not hold), D12.
pub fn create_template(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    id: TemplateId,
    name: TemplateName,
    permissions: Permissions,
    name_taken: bool,
) -> Result<Change, Error> {
    actor.require(ctx.state.tenant.id, Action::Manage)?;
    actor.check_gain(permissions, false)?;
    if name_taken {
        return Err(Error::TemplateNameTaken {
            name: name.to_string(),
        });
    }
    let mut out = Change::on(ctx.state);
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::TemplateCreated,
        AuditTarget::Template(id),
        vec![
            change(Field::Name, Value::None, Value::Text(name.to_string())),
            change(
                Field::Permissions,
                Value::None,
                Value::Permissions(permissions),
            ),
        ],
    ));
    out.writes.push(Write::InsertTemplate(RoleTemplate {
        id,
        tenant_id: ctx.state.tenant.id,
        name,
        permissions,
        created_at: ctx.now,
        updated_at: ctx.now,
    }));
    Ok(out)
}

/// The fields a template edit may change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateEdit {
    /// A new name.
    pub name: Option<TemplateName>,
    /// New permissions (the whole set).
    pub permissions: Option<Permissions>,
}

/// Edits a role template (D12): every user that references it holds the new permissions at
/// its next check (D6). `name_taken` is whether *another* template has the new name's key;
/// `referencing` are the users that reference the template, so that the audit event names
/// those whose access changes ([`Field::ChangedUsers`]).
///
/// # Errors
/// D7 (needs `users:manage`; a non-admin may not add what it does not hold, nor change a
/// template it references itself), D12 (name taken), D15.
pub fn edit_template(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    template: &RoleTemplate,
    edit: &TemplateEdit,
    name_taken: bool,
    referencing: &[User],
) -> Result<Change, Error> {
    actor.require(ctx.state.tenant.id, Action::Manage)?;
    if template.tenant_id != ctx.state.tenant.id {
        return Err(Error::TemplateNotFound);
    }
    let mut after = template.clone();
    if let Some(name) = &edit.name {
        if name.key() != template.name.key() && name_taken {
            return Err(Error::TemplateNameTaken {
                name: name.to_string(),
            });
        }
        after.name = name.clone();
    }
    if let Some(p) = edit.permissions {
        after.permissions = p;
    }
    if !actor.is_admin()
        && actor.user.template_id == Some(template.id)
        && after.permissions != template.permissions
    {
        return Err(Error::SelfChange);
    }
    actor.check_gain(after.permissions - template.permissions, false)?;
    let mut changes = Vec::new();
    if after.name.as_str() != template.name.as_str() {
        changes.push(change(
            Field::Name,
            Value::Text(template.name.to_string()),
            Value::Text(after.name.to_string()),
        ));
    }
    if after.permissions != template.permissions {
        changes.push(change(
            Field::Permissions,
            Value::Permissions(template.permissions),
            Value::Permissions(after.permissions),
        ));
        push_changed_users(&mut changes, template, Some(&after), referencing);
    }
    let mut out = Change::on(ctx.state);
    if changes.is_empty() {
        return Ok(Change {
            writes: Vec::new(),
            events: Vec::new(),
            ..out
        });
    }
    after.updated_at = ctx.now;
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::TemplateEdited,
        AuditTarget::Template(template.id),
        changes,
    ));
    out.writes.push(Write::UpdateTemplate(after));
    Ok(out)
}

/// What to do with the users of a template being deleted (D12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "template_id")]
pub enum TemplateDeletion {
    /// Refuse when any user references it (the default).
    #[default]
    Refuse,
    /// Clear the reference; the users keep only their direct grants.
    Detach,
    /// Point the users at another template.
    Reassign(TemplateId),
}

/// Deletes a role template (D12). `referencing` is how many users reference it;
/// `reassign_to` is the template named by [`TemplateDeletion::Reassign`]; `users` are the
/// referencing users (as many as the caller read), so that the audit event names those
/// whose access changes ([`Field::ChangedUsers`]).
///
/// # Errors
/// D12 ([`Error::TemplateInUse`] with the count when refusing), D7, D15.
pub fn delete_template(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    template: &RoleTemplate,
    referencing: u64,
    mode: TemplateDeletion,
    reassign_to: Option<&RoleTemplate>,
    users: &[User],
) -> Result<Change, Error> {
    let tenant = ctx.state.tenant.id;
    actor.require(tenant, Action::Manage)?;
    if template.tenant_id != tenant {
        return Err(Error::TemplateNotFound);
    }
    let to = match mode {
        TemplateDeletion::Refuse if referencing > 0 => {
            return Err(Error::TemplateInUse { users: referencing });
        }
        TemplateDeletion::Refuse | TemplateDeletion::Detach => None,
        TemplateDeletion::Reassign(id) => match reassign_to {
            Some(t) if t.id == id && t.tenant_id == tenant && id != template.id => Some(t),
            _ => return Err(Error::TemplateNotFound),
        },
    };
    if referencing > 0 && !actor.is_admin() {
        if actor.user.template_id == Some(template.id) {
            return Err(Error::SelfChange);
        }
        if let Some(t) = to {
            actor.check_gain(t.permissions - template.permissions, false)?;
        }
    }
    let mut out = Change::on(ctx.state);
    let mut changes = vec![change(
        Field::Name,
        Value::Text(template.name.to_string()),
        Value::None,
    )];
    if referencing > 0 {
        out.writes.push(Write::MoveTemplateUsers {
            from: template.id,
            to: to.map(|t| t.id),
        });
        changes.push(change(
            Field::AffectedUsers,
            Value::Number(referencing),
            Value::Number(0),
        ));
        changes.push(change(
            Field::Template,
            Value::Template(template.id),
            to.map_or(Value::None, |t| Value::Template(t.id)),
        ));
        push_changed_users(&mut changes, template, to, users);
    }
    out.writes.push(Write::DeleteTemplate(template.id));
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::TemplateDeleted,
        AuditTarget::Template(template.id),
        changes,
    ));
    Ok(out)
}

/// Whether `status` may be given to a user at all by the edit form (for UIs).
#[must_use]
pub fn editable_statuses(from: Status) -> &'static [Status] {
    match from {
        Status::Invited => &[Status::Invited],
        Status::Active | Status::Suspended => &[Status::Active, Status::Suspended],
    }
}
