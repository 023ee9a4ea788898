//! Role templates ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).

use super::*;

impl Tenantry {
    /// Every role template of the tenant, by name ([role templates (D12)](tenantry_core::Rule::RoleTemplates)), for a viewer with `users:view`.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), store failures.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// app.create_template(tenant, admin, "Support", Permissions::CONVERSATIONS_VIEW).await?;
    /// app.create_template(tenant, admin, "billing", Permissions::SETTINGS_VIEW).await?;
    /// let names: Vec<_> = app.templates(tenant, ActorRef::User(admin)).await?
    ///     .into_iter()
    ///     .map(|t| t.name.as_str().to_owned())
    ///     .collect();
    /// assert_eq!(names, ["billing", "Support"]); // by name, ignoring case
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let (other, other_admin) = app.create_tenant("Globex", None, Email::parse("hank@globex.test")?).await?;
    /// let support = app.create_template(tenant, admin, "Support", Permissions::CONVERSATIONS_VIEW).await?;
    /// assert_eq!(app.template(tenant, ActorRef::System, support.id).await?, support);
    ///
    /// // Another tenant's id is unknown here (tenant isolation, D15).
    /// let elsewhere = app.template(other, ActorRef::User(other_admin), support.id).await;
    /// assert!(matches!(elsewhere, Err(Error::Rule(RuleError::TemplateNotFound))));
    /// # Ok(()) }
    /// ```
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

    /// The users that reference a template, page by page ([role templates (D12)](tenantry_core::Rule::RoleTemplates)); the
    /// query's other filters, sort and cursor apply as in [`Tenantry::list_users`].
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let support = app.create_template(tenant, admin, "Support", Permissions::CONVERSATIONS_VIEW).await?;
    /// let emails = ["bob@acme.test", "cy@acme.test"].map(String::from).to_vec();
    /// let bulk = BulkInvite { emails, template_id: Some(support.id), ..BulkInvite::default() };
    /// app.invite_many(tenant, admin, &bulk).await?;
    ///
    /// let page = app.template_users(tenant, ActorRef::User(admin), support.id, &UserQuery::default()).await?;
    /// let emails: Vec<_> = page.items.iter().map(|u| u.email.as_str()).collect();
    /// assert_eq!(emails, ["bob@acme.test", "cy@acme.test"]); // not Ada
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let perms = Permissions::parse_list(["conversations:view", "conversations:edit"])?;
    /// let support = app.create_template(tenant, admin, " Support agent ", perms).await?;
    /// assert_eq!(support.name.as_str(), "Support agent");
    /// assert!(support.permissions.has(Permission::new(Category::Conversations, Action::Edit)));
    ///
    /// // Names are unique per tenant, ignoring case (role templates, D12).
    /// let taken = app.create_template(tenant, admin, "SUPPORT AGENT", perms).await;
    /// assert!(matches!(taken, Err(Error::Rule(RuleError::TemplateNameTaken { .. }))));
    /// let blank = app.create_template(tenant, admin, "   ", perms).await;
    /// assert!(matches!(blank, Err(Error::Rule(RuleError::InvalidTemplateName(_)))));
    /// # Ok(()) }
    /// ```
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
                        .actor(
                            tenant,
                            actor,
                            tenantry_core::Action::Manage,
                            Some(AuditAction::TemplateCreated),
                        )
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
            retry!(self, tenant =>
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
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Manage,
                Some(AuditAction::TemplateCreated),
            )
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::TemplateName;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let support = app.create_template(tenant, admin, "Support", Permissions::CONVERSATIONS_VIEW).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: Some(support.id),
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let bob = app.accept_invitation(&invited.accept_link.token().unwrap(), "bob@acme.test").await?;
    /// let edit_conversations = Permission::new(Category::Conversations, Action::Edit);
    /// assert!(!app.authorize(tenant, bob.id, edit_conversations.into()).await?.is_allowed());
    ///
    /// let edit = TemplateEdit {
    ///     name: Some(TemplateName::parse("Support (senior)")?),
    ///     permissions: Some(Permissions::CONVERSATIONS_VIEW | Permissions::CONVERSATIONS_EDIT),
    /// };
    /// let senior = app.edit_template(tenant, admin, support.id, &edit).await?;
    /// assert_eq!(senior.name.as_str(), "Support (senior)");
    /// // Bob's very next check sees the new permissions (current access, D6).
    /// assert!(app.authorize(tenant, bob.id, edit_conversations.into()).await?.is_allowed());
    /// # Ok(()) }
    /// ```
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
            retry!(self, tenant => self.try_edit_template(tenant, actor, id, edit))
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
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Manage,
                Some(AuditAction::TemplateEdited),
            )
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
    ///
    /// Returns how many users referenced the template.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let old = app.create_template(tenant, admin, "Support", Permissions::CONVERSATIONS_VIEW).await?;
    /// let new = app.create_template(tenant, admin, "Support v2", Permissions::CONVERSATIONS_VIEW).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: Some(old.id),
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    ///
    /// // Refuse (the default) keeps a template that is in use.
    /// let refused = app.delete_template(tenant, admin, old.id, TemplateDeletion::Refuse).await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::TemplateInUse { users: 1 }))));
    /// // Reassign moves its users to another template...
    /// assert_eq!(app.delete_template(tenant, admin, old.id, TemplateDeletion::Reassign(new.id)).await?, 1);
    /// assert_eq!(app.user(tenant, ActorRef::System, bob.id).await?.template_id, Some(new.id));
    /// // ...and Detach clears their reference; they keep their direct grants only.
    /// assert_eq!(app.delete_template(tenant, admin, new.id, TemplateDeletion::Detach).await?, 1);
    /// assert_eq!(app.user(tenant, ActorRef::System, bob.id).await?.template_id, None);
    /// # Ok(()) }
    /// ```
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
            retry!(self, tenant => self.try_delete_template(tenant, actor, id, mode))
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
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Manage,
                Some(AuditAction::TemplateDeleted),
            )
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
