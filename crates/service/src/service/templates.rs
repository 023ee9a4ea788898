//! Role templates ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).

use super::*;

impl Tenantry {
    /// Every role template of the tenant, by name ([role templates (D12)](tenantry_core::Rule::RoleTemplates)), for a viewer with `users:view`.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), store failures.
    pub async fn templates(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
    ) -> Result<Vec<RoleTemplate>, Error> {
        self.require_view(tenant, viewer).await?;
        Ok(self.inner.store.templates(tenant).await?)
    }

    /// One role template.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) ([`tenantry_core::Error::TemplateNotFound`]).
    pub async fn template(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        id: TemplateId,
    ) -> Result<RoleTemplate, Error> {
        self.require_view(tenant, viewer).await?;
        self.inner
            .store
            .template(tenant, id)
            .await?
            .ok_or(Error::Rule(tenantry_core::Error::TemplateNotFound))
    }

    /// The users that reference a template, page by page ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    pub async fn template_users(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        id: TemplateId,
        query: &UserQuery,
    ) -> Result<Page<User>, Error> {
        let q = UserQuery {
            template_id: Some(id),
            ..query.clone()
        };
        self.list_users(tenant, viewer, &q).await
    }

    /// Creates a role template ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) (`users:manage`, escalation), [role templates (D12)](tenantry_core::Rule::RoleTemplates) (name), store failures; refusals are audited.
    pub async fn create_template(
        &self,
        tenant: TenantId,
        actor: UserId,
        name: &str,
        permissions: Permissions,
    ) -> Result<RoleTemplate, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "create_template",
            tenant = %tenant, actor = %actor,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let name = match TemplateName::parse(name) {
                Ok(n) => n,
                Err(e) => {
                    // D7 first (an unknown actor or one without `users:manage` is told so);
                    // D13: a refused attempt by an actor of the tenant is audited, a bad name too.
                    let acting = self
                        .actor(tenant, actor, tenantry_core::Action::Manage)
                        .await?;
                    let e = Self::authority_first(
                        tenant,
                        &acting,
                        tenantry_core::Action::Manage,
                        tenantry_core::Error::InvalidTemplateName(e),
                    );
                    return Err(self
                        .refuse(
                            tenant,
                            actor,
                            AuditAction::TemplateCreated,
                            AuditTarget::Tenant,
                            e,
                        )
                        .await);
                }
            };
            retry!(
                self,
                self.try_create_template(tenant, actor, &name, permissions)
            )
        })
        .await
    }

    async fn try_create_template(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        name: &TemplateName,
        permissions: Permissions,
    ) -> Result<RoleTemplate, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Manage)
            .await?;
        let taken = self
            .inner
            .store
            .template_by_name(tenant, name.key())
            .await?
            .is_some();
        let id = self.new_template_id()?;
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::TemplateCreated,
                AuditTarget::Tenant,
                decide::create_template(
                    self.ctx(&state),
                    &actor.acting(),
                    id,
                    name.clone(),
                    permissions,
                    taken,
                ),
            )
            .await?;
        self.commit(&change, &[]).await?;
        saved_template(&change, id)
    }

    /// Renames a template or changes its permissions ([role templates (D12)](tenantry_core::Rule::RoleTemplates)); every referencing user holds
    /// the new permissions at its next check ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [role templates (D12)](tenantry_core::Rule::RoleTemplates), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation); refusals are audited.
    pub async fn edit_template(
        &self,
        tenant: TenantId,
        actor: UserId,
        id: TemplateId,
        edit: &TemplateEdit,
    ) -> Result<RoleTemplate, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "edit_template",
            tenant = %tenant, actor = %actor, template = %id,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, self.try_edit_template(tenant, actor, id, edit))
        })
        .await
    }

    async fn try_edit_template(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        id: TemplateId,
        edit: &TemplateEdit,
    ) -> Result<RoleTemplate, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Manage)
            .await?;
        let target = AuditTarget::Template(id);
        let template = self
            .managed_template(tenant, &actor, id, AuditAction::TemplateEdited)
            .await?;
        let taken = match &edit.name {
            Some(n) => self
                .inner
                .store
                .template_by_name(tenant, n.key())
                .await?
                .is_some_and(|t| t.id != id),
            None => false,
        };
        let referencing = match edit.permissions {
            Some(p) if p != template.permissions => self.referencing_users(tenant, id).await?,
            _ => Vec::new(),
        };
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::TemplateEdited,
                target,
                decide::edit_template(
                    self.ctx(&state),
                    &actor.acting(),
                    &template,
                    edit,
                    taken,
                    &referencing,
                ),
            )
            .await?;
        self.commit(&change, &[]).await?;
        saved_template(&change, id).or(Ok(template))
    }

    /// Deletes a role template ([role templates (D12)](tenantry_core::Rule::RoleTemplates)). With [`TemplateDeletion::Refuse`] a referenced
    /// template is kept and the count of referencing users returned in the error; `Detach`
    /// clears their reference; `Reassign` moves them to another template.
    ///
    /// # Errors
    /// [role templates (D12)](tenantry_core::Rule::RoleTemplates) ([`tenantry_core::Error::TemplateInUse`]), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation); refusals are audited.
    pub async fn delete_template(
        &self,
        tenant: TenantId,
        actor: UserId,
        id: TemplateId,
        mode: TemplateDeletion,
    ) -> Result<u64, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "delete_template",
            tenant = %tenant, actor = %actor, template = %id,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, self.try_delete_template(tenant, actor, id, mode))
        })
        .await
    }

    /// Every user that references the template, read page by page (for the audit event
    /// of a template edit or deletion, which names the users whose access changed).
    async fn referencing_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<Vec<User>, Error> {
        let mut all = Vec::new();
        let mut query = UserQuery {
            template_id: Some(template),
            limit: tenantry_store::MAX_PAGE_SIZE,
            ..UserQuery::default()
        };
        loop {
            let page = self.inner.store.list_users(tenant, &query).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn try_delete_template(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        id: TemplateId,
        mode: TemplateDeletion,
    ) -> Result<u64, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Manage)
            .await?;
        let target = AuditTarget::Template(id);
        let template = self
            .managed_template(tenant, &actor, id, AuditAction::TemplateDeleted)
            .await?;
        let referencing = self.inner.store.count_template_users(tenant, id).await?;
        let reassign_to = match mode {
            TemplateDeletion::Reassign(to) => self.inner.store.template(tenant, to).await?,
            _ => None,
        };
        let users = if referencing > 0 && mode != TemplateDeletion::Refuse {
            self.referencing_users(tenant, id).await?
        } else {
            Vec::new()
        };
        let decided = decide::delete_template(
            self.ctx(&state),
            &actor.acting(),
            &template,
            referencing,
            mode,
            reassign_to.as_ref(),
            &users,
        );
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::TemplateDeleted,
                target,
                decided,
            )
            .await?;
        self.commit(&change, &[]).await?;
        Ok(referencing)
    }
}
