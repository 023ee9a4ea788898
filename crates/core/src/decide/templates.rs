//! Role templates: create, edit, delete ([management authority (D7)](crate::Rule::ManagementAuthority), [role templates (D12)](crate::Rule::RoleTemplates), [names (D22)](crate::Rule::Names)).

use super::*;

/// Creates a role template ([role templates (D12)](crate::Rule::RoleTemplates)). `name_taken` is whether the tenant has a template with the
/// same name key.
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) (needs `users:manage`; a non-admin may not put in it what it does not hold), [role templates (D12)](crate::Rule::RoleTemplates).
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

/// Edits a role template ([role templates (D12)](crate::Rule::RoleTemplates)): every user that references it holds the new permissions at
/// its next check ([current access (D6)](crate::Rule::CurrentAccess)). `name_taken` is whether *another* template has the new name's key;
/// `referencing` are the users that reference the template, so that the audit event names
/// those whose access changes ([`Field::ChangedUsers`]).
///
/// # Errors
/// [management authority (D7)](crate::Rule::ManagementAuthority) (needs `users:manage`; a non-admin may not add what it does not hold, nor change a
/// template it references itself), [within own access (D21)](crate::Rule::WithinOwnAccess) (a non-admin may not change the permissions of a
/// template that a user holding more than it references), [role templates (D12)](crate::Rule::RoleTemplates) (name taken), [tenant isolation (D15)](crate::Rule::TenantIsolation).
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
    if after.permissions != template.permissions {
        // D21: changing a template's permissions changes the access of every user on it.
        actor.check_all_within(referencing, Some(template))?;
    }
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

/// What to do with the users of a template being deleted ([role templates (D12)](crate::Rule::RoleTemplates)).
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

/// Deletes a role template ([role templates (D12)](crate::Rule::RoleTemplates)). `referencing` is how many users reference it;
/// `reassign_to` is the template named by [`TemplateDeletion::Reassign`]; `users` are the
/// referencing users (as many as the caller read), so that the audit event names those
/// whose access changes ([`Field::ChangedUsers`]).
///
/// # Errors
/// [role templates (D12)](crate::Rule::RoleTemplates) ([`Error::TemplateInUse`] with the count when refusing), [management authority (D7)](crate::Rule::ManagementAuthority), [within own access (D21)](crate::Rule::WithinOwnAccess) (a non-admin may not
/// detach or reassign users who hold more than it), [tenant isolation (D15)](crate::Rule::TenantIsolation).
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
        // D21: a detach or reassign changes the template of every user on it.
        actor.check_all_within(users, Some(template))?;
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
