//! Editing and deleting users ([status transitions (D2)](tenantry_core::Rule::StatusTransitions), [unique email (D3)](tenantry_core::Rule::UniqueEmail), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [last admin (D8)](tenantry_core::Rule::LastAdmin), [permanent delete (D11)](tenantry_core::Rule::PermanentDelete), [within own access (D21)](tenantry_core::Rule::WithinOwnAccess)).

use super::*;

impl Tenantry {
    /// Edits a user's email, role, status, template, CRM access or grants ([status transitions (D2)](tenantry_core::Rule::StatusTransitions), [unique email (D3)](tenantry_core::Rule::UniqueEmail), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [management authority (D7)](tenantry_core::Rule::ManagementAuthority),
    /// [last admin (D8)](tenantry_core::Rule::LastAdmin)). Returns the row as saved.
    ///
    /// # Errors
    /// The refusing rule; refusals are audited ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    pub async fn edit_user(
        &self,
        tenant: TenantId,
        actor: UserId,
        user: UserId,
        edit: &UserEdit,
    ) -> Result<User, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "edit_user",
            tenant = %tenant, actor = %actor, target = %user,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, self.try_edit(tenant, actor, user, edit))
        })
        .await
    }

    async fn try_edit(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        user_id: UserId,
        edit: &UserEdit,
    ) -> Result<User, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Edit)
            .await?;
        let audit_target = AuditTarget::User(user_id);
        let target = self
            .managed_user(
                tenant,
                &actor,
                user_id,
                tenantry_core::Action::Edit,
                AuditAction::UserEdited,
            )
            .await?;
        let current = self.template_of(tenant, &target).await?;
        let new_template = match edit.template_id {
            Some(Some(id)) => self.inner.store.template(tenant, id).await?,
            Some(None) => None,
            None => current.clone(),
        };
        let taken = match &edit.email {
            Some(e) => self
                .inner
                .store
                .user_by_email(tenant, e.key())
                .await?
                .is_some_and(|u| u.id != user_id),
            None => false,
        };
        let decided = decide::edit(
            self.ctx(&state),
            &actor.acting(),
            &target,
            current.as_ref(),
            new_template.as_ref(),
            edit,
            taken,
        );
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::UserEdited,
                audit_target,
                decided,
            )
            .await?;
        self.commit(&change, &[]).await?;
        Ok(updated_user(&change, user_id).unwrap_or(target))
    }

    /// Deletes a user for good ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)). Returns the tombstone that remains.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [within own access (D21)](tenantry_core::Rule::WithinOwnAccess) (a non-admin deleting a user who holds more than it), [last admin (D8)](tenantry_core::Rule::LastAdmin) (last active admin),
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation); refusals are audited.
    pub async fn delete_user(
        &self,
        tenant: TenantId,
        actor: UserId,
        user: UserId,
    ) -> Result<Tombstone, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "delete_user",
            tenant = %tenant, actor = %actor, target = %user,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, self.try_delete(tenant, actor, user))
        })
        .await
    }

    async fn try_delete(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        user_id: UserId,
    ) -> Result<Tombstone, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Delete)
            .await?;
        let audit_target = AuditTarget::User(user_id);
        let target = self
            .managed_user(
                tenant,
                &actor,
                user_id,
                tenantry_core::Action::Delete,
                AuditAction::UserDeleted,
            )
            .await?;
        let template = self.template_of(tenant, &target).await?;
        let decided = decide::delete(
            self.ctx(&state),
            &actor.acting(),
            &target,
            template.as_ref(),
        );
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::UserDeleted,
                audit_target,
                decided,
            )
            .await?;
        self.commit(&change, &[]).await?;
        change
            .writes
            .iter()
            .find_map(|w| match w {
                Write::DeleteUser(t) => Some(t.clone()),
                _ => None,
            })
            .ok_or(Error::Rule(tenantry_core::Error::UserNotFound))
    }

    /// Who made a record: the user, or its tombstone once deleted ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)).
    ///
    /// # Errors
    /// Store failures; `Ok(None)` when the id never belonged to this tenant.
    pub async fn attribution(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Attribution>, Error> {
        if let Some(u) = self.inner.store.user(tenant, user).await? {
            return Ok(Some(Attribution::User(u)));
        }
        Ok(self
            .inner
            .store
            .tombstone(tenant, user)
            .await?
            .map(Attribution::Deleted))
    }
}
