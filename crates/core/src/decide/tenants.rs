//! Creating a tenant, renaming it and changing its seat limit ([seat limit (D9)](crate::Rule::SeatLimit), [names (D22)](crate::Rule::Names), [first seat (D23)](crate::Rule::FirstSeat)).

use super::*;

/// Creates a tenant with its first admin, active from the start. The name is checked and
/// trimmed ([names (D22)](crate::Rule::Names)); a limit, if given, must leave the first admin its seat ([first seat (D23)](crate::Rule::FirstSeat)).
///
/// # Errors
/// [`Error::InvalidTenantName`] ([names (D22)](crate::Rule::Names)), [`Error::FirstSeatRequired`] ([first seat (D23)](crate::Rule::FirstSeat)).
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
        identity: None,
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

/// Changes the seat limit ([seat limit (D9)](crate::Rule::SeatLimit)). It may be set below current usage; `None` is unlimited.
#[must_use]
pub fn set_user_limit(ctx: Ctx<'_>, actor: ActorRef, limit: Option<u32>) -> Change {
    let mut out = Change::on(ctx.state);
    let before = ctx.state.tenant.user_limit;
    if before == limit {
        // Nothing to write: an empty change, which the service does not commit.
        return out;
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

/// Renames the tenant: only an active admin of the tenant may, and the name follows
/// [names (D22)](crate::Rule::Names) (trimmed, length-limited, no invisible or control
/// characters). The same name again is an empty change (nothing to commit, nothing audited).
///
/// # Errors
/// [`Error::NotAllowed`] (`users:edit`) for an actor that is not an active user of the
/// tenant holding it, [`Error::AdminOnly`] for any other non-admin
/// ([management authority (D7)](crate::Rule::ManagementAuthority)),
/// [`Error::InvalidTenantName`] ([names (D22)](crate::Rule::Names)).
///
/// ```
/// use tenantry_core::decide::{self, Acting, Ctx};
/// use tenantry_core::{AuditAction, Counters, Email, Error, Field, Policy, Role, Status, Tenant,
///     TenantId, TenantState, UserId, Value, Write};
/// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// let created = decide::create_tenant(new.clone(), ada, Email::parse("ada@acme.test")?)?;
/// let Some(Write::InsertUser(admin)) = created.writes.get(1) else { panic!() };
/// let state = TenantState { tenant: new, counters: created.counters };
/// let ctx = Ctx { state: &state, now, policy: &Policy::default() };
/// let acting = Acting { user: admin, template: None };
///
/// let change = decide::rename_tenant(ctx, &acting, "  Acme Support ")?;
/// assert!(matches!(&change.writes[..], [Write::UpdateTenant(t)] if t.name == "Acme Support"));
/// assert_eq!(change.events[0].action, AuditAction::TenantRenamed);
/// assert_eq!(change.events[0].changes[0].after, Value::Text("Acme Support".into()));
/// assert!(decide::rename_tenant(ctx, &acting, "Acme")?.is_empty());
/// assert!(matches!(decide::rename_tenant(ctx, &acting, "Acme\u{202e}"), Err(Error::InvalidTenantName(_))));
///
/// let bob = tenantry_core::User { role: Role::User, ..admin.clone() };
/// let user = Acting { user: &bob, template: None };
/// assert!(matches!(decide::rename_tenant(ctx, &user, "Other"), Err(Error::NotAllowed { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rename_tenant(ctx: Ctx<'_>, actor: &Acting<'_>, name: &str) -> Result<Change, Error> {
    actor.require(ctx.state.tenant.id, Action::Edit)?;
    if !actor.is_admin() {
        return Err(Error::AdminOnly);
    }
    let name = TenantName::parse(name)
        .map_err(Error::InvalidTenantName)?
        .into_string();
    let mut out = Change::on(ctx.state);
    let before = &ctx.state.tenant.name;
    if *before == name {
        return Ok(out);
    }
    out.events.push(ctx.event(
        actor.reference(),
        AuditAction::TenantRenamed,
        AuditTarget::Tenant,
        vec![change(
            Field::Name,
            Value::Text(before.clone()),
            Value::Text(name.clone()),
        )],
    ));
    out.writes.push(Write::UpdateTenant(Tenant {
        name,
        ..ctx.state.tenant.clone()
    }));
    Ok(out)
}
