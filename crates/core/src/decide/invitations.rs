//! Invite, bulk invite, resend, accept and sign-in ([unique email (D3)](crate::Rule::UniqueEmail), [CRM access (D5)](crate::Rule::CrmAccess), [management authority (D7)](crate::Rule::ManagementAuthority), [seat limit (D9)](crate::Rule::SeatLimit), [invitations (D10)](crate::Rule::Invitations), [sign-in (D14)](crate::Rule::SignIn), [bulk invite (D19)](crate::Rule::BulkInvite), [within own access (D21)](crate::Rule::WithinOwnAccess), [accept attempts (D24)](crate::Rule::AcceptAttempts)).

use super::*;

/// What to invite ([invitations (D10)](crate::Rule::Invitations), [bulk invite (D19)](crate::Rule::BulkInvite)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The address.
    pub email: Email,
    /// The role.
    pub role: Role,
    /// The template to assign, if any.
    pub template_id: Option<TemplateId>,
    /// CRM access (forced on for admins, [CRM access (D5)](crate::Rule::CrmAccess)).
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

/// The checks of an invite that do not depend on the address: [management authority (D7)](crate::Rule::ManagementAuthority) and the template.
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
        identity: None,
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

/// Invites one user ([unique email (D3)](crate::Rule::UniqueEmail), [CRM access (D5)](crate::Rule::CrmAccess), [management authority (D7)](crate::Rule::ManagementAuthority), [seat limit (D9)](crate::Rule::SeatLimit), [invitations (D10)](crate::Rule::Invitations)).
///
/// `template` is the template named by `request.template_id` as the store returned it;
/// `email_taken` is whether a user of the tenant already has the address's key.
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) when the actor may not invite this, [unique email (D3)](crate::Rule::UniqueEmail) when the address is taken, [seat limit (D9)](crate::Rule::SeatLimit) at the limit,
/// [tenant isolation (D15)](crate::Rule::TenantIsolation) when the template is not the tenant's.
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

/// Many addresses invited with the same role, template, CRM access and grants ([bulk invite (D19)](crate::Rule::BulkInvite)).
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

/// The outcome for one address of a bulk invite ([bulk invite (D19)](crate::Rule::BulkInvite)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum BulkOutcome {
    /// Invited as this user.
    Invited {
        /// The new user's id.
        user_id: UserId,
    },
    /// The address is already a user of the tenant, or was invited earlier in the same call.
    Duplicate,
    /// The address is not acceptable ([unique email (D3)](crate::Rule::UniqueEmail)).
    Invalid {
        /// Why.
        reason: EmailError,
    },
    /// No seat was left for it ([seat limit (D9)](crate::Rule::SeatLimit)).
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

/// Invites many addresses in one change ([bulk invite (D19)](crate::Rule::BulkInvite)). Authority ([management authority (D7)](crate::Rule::ManagementAuthority)) is checked once for the whole
/// call; each address then gets its own outcome and the seat limit holds exactly.
///
/// `taken(key)` says whether the tenant has a user with that email key; `fresh()` draws new
/// ids for each invited address.
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) or [tenant isolation (D15)](crate::Rule::TenantIsolation) for the call as a whole; per-address problems are outcomes, not errors.
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
            Ok(email) if taken(email.key()) || seen.contains(email.key()) => BulkOutcome::Duplicate,
            // Only an address invited by this call counts as seen: a repeat of one refused
            // for the seat limit gets what it would get on its own (the limit again).
            Ok(email) => match push_invite(
                ctx,
                &mut out,
                actor,
                email.clone(),
                role,
                request.template_id,
                request.crm_access,
                request.grants,
                fresh(),
            ) {
                Ok(user_id) => {
                    seen.insert(email.key().to_owned());
                    BulkOutcome::Invited { user_id }
                }
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

/// Sends an invitation again ([invitations (D10)](crate::Rule::Invitations)): a new token, every older one revoked, never a second
/// user. `template` is the one the target references; `recent_resends` are the times of
/// this user's earlier resends (any age).
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) when the actor may not, [within own access (D21)](crate::Rule::WithinOwnAccess) when the target holds more than a non-admin actor, [invitations (D10)](crate::Rule::Invitations)
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

/// Accepts an invitation ([invitations (D10)](crate::Rule::Invitations)): the invited user becomes active and its last login is now.
///
/// Pass the invitation found by the token's hash and its user; a missing one is
/// [`Error::InvalidInvitation`] at the caller.
///
/// # Errors
/// [invitations (D10)](crate::Rule::Invitations): [`Error::InvalidInvitation`] for an expired, used, revoked or foreign token (one kind,
/// revealing nothing), [`Error::InvitationEmailMismatch`] when the addresses differ.
pub fn accept(
    ctx: Ctx<'_>,
    invitation: &Invitation,
    user: &User,
    signup_email: &Email,
) -> Result<Change, Error> {
    accept_as(ctx, invitation, user, signup_email, None, false)
}

/// [`accept`], attaching the host's identity id of the person signing up
/// ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)). `identity_taken` is whether another user of the tenant
/// holds `identity`; the invitation and the address are checked first, so a taken
/// identity reveals nothing about a token that is not valid. With `None` the user keeps
/// whatever identity it has.
///
/// # Errors
/// Those of [`accept`], then [`Error::IdentityTaken`].
pub fn accept_as(
    ctx: Ctx<'_>,
    invitation: &Invitation,
    user: &User,
    signup_email: &Email,
    identity: Option<IdentityId>,
    identity_taken: bool,
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
    let identity_change = match identity {
        Some(i) if user.identity.as_ref() != Some(&i) => {
            if identity_taken {
                return Err(Error::IdentityTaken);
            }
            Some(i)
        }
        _ => None,
    };
    let mut out = Change::on(ctx.state);
    out.writes.push(Write::RevokeInvitations(user.id));
    out.writes.push(Write::UseInvitation(invitation.token_hash));
    let mut accepted = User {
        status: Status::Active,
        last_login: Some(ctx.now),
        invite_expires_at: None,
        ..user.clone()
    };
    let mut changes = vec![
        change(
            Field::Status,
            Value::Status(Status::Invited),
            Value::Status(Status::Active),
        ),
        change(Field::LastLogin, Value::None, Value::Time(ctx.now)),
    ];
    if let Some(i) = identity_change {
        let before = user
            .identity
            .as_ref()
            .map_or(Value::None, |b| Value::Text(b.as_str().to_owned()));
        changes.push(change(
            Field::Identity,
            before,
            Value::Text(i.as_str().to_owned()),
        ));
        accepted.identity = Some(i);
    }
    if accepted.is_active_admin() {
        out.counters.active_admins = out.counters.active_admins.saturating_add(1);
    }
    out.writes.push(Write::UpdateUser(accepted));
    out.events.push(ctx.event(
        ActorRef::User(user.id),
        AuditAction::InvitationAccepted,
        AuditTarget::User(user.id),
        changes,
    ));
    Ok(out)
}

/// Records a failed accept attempt ([accept attempts (D24)](crate::Rule::AcceptAttempts)): a sign-up on a live token with a wrong address.
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
            rule: crate::Rule::AcceptAttempts,
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

/// Records a successful sign-in reported by the host ([sign-in (D14)](crate::Rule::SignIn)).
///
/// # Errors
/// [sign-in (D14)](crate::Rule::SignIn): invited and suspended users are refused.
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
