//! Creating a tenant and changing its seat limit ([seat limit (D9)](crate::Rule::SeatLimit), [names (D22)](crate::Rule::Names), [first seat (D23)](crate::Rule::FirstSeat)).

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
