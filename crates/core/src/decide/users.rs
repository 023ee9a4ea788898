//! Editing, deleting and purging users ([status transitions (D2)](crate::Rule::StatusTransitions), [unique email (D3)](crate::Rule::UniqueEmail), [CRM access (D5)](crate::Rule::CrmAccess), [management authority (D7)](crate::Rule::ManagementAuthority), [last admin (D8)](crate::Rule::LastAdmin), [permanent delete (D11)](crate::Rule::PermanentDelete), [expired invitations (D20)](crate::Rule::ExpiredInvitations), [within own access (D21)](crate::Rule::WithinOwnAccess)).

use super::*;

/// The fields an edit may change; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserEdit {
    /// A new address.
    pub email: Option<Email>,
    /// A new role.
    pub role: Option<Role>,
    /// A new status (only active ↔ suspended, [status transitions (D2)](crate::Rule::StatusTransitions)).
    pub status: Option<Status>,
    /// A new template: `Some(None)` clears it. On the wire an absent field leaves the
    /// template alone, `null` clears it and an id sets it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::clearable"
    )]
    pub template_id: Option<Option<TemplateId>>,
    /// New CRM access.
    pub crm_access: Option<bool>,
    /// New direct grants (the whole set).
    pub grants: Option<Permissions>,
}

/// Edits a user ([status transitions (D2)](crate::Rule::StatusTransitions), [unique email (D3)](crate::Rule::UniqueEmail), [CRM access (D5)](crate::Rule::CrmAccess), [management authority (D7)](crate::Rule::ManagementAuthority), [last admin (D8)](crate::Rule::LastAdmin)).
///
/// `current_template` is the template the target references now; `new_template` the one it
/// will reference after the edit (the same one when the edit leaves the template alone).
/// `email_taken` is whether another user of the tenant has the new address's key.
///
/// # Errors
/// The refusing rule: [management authority (D7)](crate::Rule::ManagementAuthority) (authority, admin targets, escalation, self-change), [within own access (D21)](crate::Rule::WithinOwnAccess) (a target
/// holding more than a non-admin actor, whatever the edit), [status transitions (D2)](crate::Rule::StatusTransitions) (transition), [CRM access (D5)](crate::Rule::CrmAccess) (admin
/// CRM), [last admin (D8)](crate::Rule::LastAdmin) (last admin), [unique email (D3)](crate::Rule::UniqueEmail) (address taken), [tenant isolation (D15)](crate::Rule::TenantIsolation) (template).
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

/// Deletes a user for good ([permanent delete (D11)](crate::Rule::PermanentDelete)): its tokens die, its seat is freed, a tombstone remains.
/// `template` is the one the target references.
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) (authority, admin target), [within own access (D21)](crate::Rule::WithinOwnAccess) (a target holding more than a non-admin actor), [last admin (D8)](crate::Rule::LastAdmin)
/// (last active admin), [tenant isolation (D15)](crate::Rule::TenantIsolation).
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
/// ([expired invitations (D20)](crate::Rule::ExpiredInvitations)). Candidates that are not expired invitations, or that the actor may not delete (an
/// admin's, or one holding more than the actor, for a non-admin actor: [management authority (D7)](crate::Rule::ManagementAuthority), [within own access (D21)](crate::Rule::WithinOwnAccess)), are left
/// alone. `templates` are the tenant's templates (those the candidates reference suffice).
/// Returns the ids deleted.
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) when the actor may not delete users.
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

/// Attaches the host's identity id to a user, replaces it, or clears it with `None`
/// ([one person, several tenants (D28)](crate::Rule::OnePersonSeveralTenants)). Only an active admin of the tenant may; any
/// status of the target will do. `identity_taken` is whether another user of the tenant
/// holds `identity`. The same value again is an empty change (nothing to commit or audit).
///
/// # Errors
/// [`Error::NotAllowed`] (`users:edit`) for an actor that is not an active user of the
/// tenant holding it, [`Error::AdminOnly`] for any other non-admin
/// ([management authority (D7)](crate::Rule::ManagementAuthority)), [`Error::UserNotFound`] for a target of another tenant,
/// [`Error::IdentityTaken`].
pub fn set_identity(
    ctx: Ctx<'_>,
    actor: &Acting<'_>,
    target: &User,
    identity: Option<IdentityId>,
    identity_taken: bool,
) -> Result<Change, Error> {
    let tenant = ctx.state.tenant.id;
    actor.require(tenant, Action::Edit)?;
    if !actor.is_admin() {
        return Err(Error::AdminOnly);
    }
    if target.tenant_id != tenant {
        return Err(Error::UserNotFound);
    }
    let mut out = Change::on(ctx.state);
    if target.identity == identity {
        return Ok(out);
    }
    if identity.is_some() && identity_taken {
        return Err(Error::IdentityTaken);
    }
    let text = |i: &Option<IdentityId>| {
        i.as_ref()
            .map_or(Value::None, |i| Value::Text(i.as_str().to_owned()))
    };
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::UserEdited,
        AuditTarget::User(target.id),
        vec![change(
            Field::Identity,
            text(&target.identity),
            text(&identity),
        )],
    ));
    out.writes.push(Write::UpdateUser(User {
        identity,
        ..target.clone()
    }));
    Ok(out)
}
