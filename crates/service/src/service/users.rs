//! Editing and deleting users ([status transitions (D2)](tenantry_core::Rule::StatusTransitions), [unique email (D3)](tenantry_core::Rule::UniqueEmail), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [last admin (D8)](tenantry_core::Rule::LastAdmin), [permanent delete (D11)](tenantry_core::Rule::PermanentDelete), [within own access (D21)](tenantry_core::Rule::WithinOwnAccess)).

use super::*;

impl Tenantry {
    /// Edits a user's email, role, status, template, CRM access or grants ([status transitions (D2)](tenantry_core::Rule::StatusTransitions), [unique email (D3)](tenantry_core::Rule::UniqueEmail), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [management authority (D7)](tenantry_core::Rule::ManagementAuthority),
    /// [last admin (D8)](tenantry_core::Rule::LastAdmin)). Returns the row as saved.
    ///
    /// # Errors
    /// The refusing rule; refusals are audited ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    ///
    /// Every field of [`UserEdit`] left `None` stays as it is. The template is one level
    /// deeper: `template_id: None` leaves it alone, `Some(None)` clears it and
    /// `Some(Some(id))` sets it.
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
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    ///
    /// let set = UserEdit { template_id: Some(Some(support.id)), ..UserEdit::default() };
    /// assert_eq!(app.edit_user(tenant, admin, bob.id, &set).await?.template_id, Some(support.id));
    ///
    /// let absent = UserEdit { crm_access: Some(true), ..UserEdit::default() };
    /// let bob = app.edit_user(tenant, admin, bob.id, &absent).await?;
    /// assert_eq!((bob.crm_access, bob.template_id), (true, Some(support.id))); // template kept
    ///
    /// let clear = UserEdit { template_id: Some(None), ..UserEdit::default() };
    /// assert_eq!(app.edit_user(tenant, admin, bob.id, &clear).await?.template_id, None);
    /// # Ok(()) }
    /// ```
    ///
    /// Refusals name their rule, here [last admin (D8)](tenantry_core::Rule::LastAdmin):
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
    /// let demote = UserEdit { role: Some(Role::User), ..UserEdit::default() };
    /// let refused = app.edit_user(tenant, admin, admin, &demote).await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::LastAdmin))));
    /// # Ok(()) }
    /// ```
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
            retry!(self, tenant => self.try_edit(tenant, actor, user, edit))
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
        let mut read = SnapshotRequest::default()
            .actor(actor_id)
            .target(user_id)
            .template(edit.template_id.flatten());
        if let Some(e) = &edit.email {
            read = read.email_key(e.key());
        }
        let (state, snap) = self.snapshot(tenant, &read).await?;
        let actor = self
            .actor_of(
                tenant,
                actor_id,
                snap.actor,
                snap.actor_template,
                tenantry_core::Action::Edit,
                Some(AuditAction::UserEdited),
            )
            .await?;
        let audit_target = AuditTarget::User(user_id);
        let target = self
            .managed_user_of(
                tenant,
                &actor,
                user_id,
                snap.target,
                tenantry_core::Action::Edit,
                AuditAction::UserEdited,
            )
            .await?;
        let current = snap.target_template;
        let new_template = match edit.template_id {
            Some(Some(_)) => snap.template,
            Some(None) => None,
            None => current.clone(),
        };
        let taken = edit.email.is_some() && snap.email_user.is_some_and(|u| u.id != user_id);
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", Some(2), Email::parse("ada@acme.test")?).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// let tombstone = app.delete_user(tenant, admin, bob.id).await?;
    /// assert_eq!(tombstone.email.as_str(), "bob@acme.test");
    /// assert_eq!(tombstone.deleted_by, ActorRef::User(admin));
    /// assert_eq!(app.seat_usage(tenant).await?.used, 1); // the seat is free again
    ///
    /// let refused = app.delete_user(tenant, admin, admin).await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::LastAdmin))));
    /// # Ok(()) }
    /// ```
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
            retry!(self, tenant => self.try_delete(tenant, actor, user))
        })
        .await
    }

    async fn try_delete(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        user_id: UserId,
    ) -> Result<Tombstone, Error> {
        let read = SnapshotRequest::default().actor(actor_id).target(user_id);
        let (state, snap) = self.snapshot(tenant, &read).await?;
        let actor = self
            .actor_of(
                tenant,
                actor_id,
                snap.actor,
                snap.actor_template,
                tenantry_core::Action::Delete,
                Some(AuditAction::UserDeleted),
            )
            .await?;
        let audit_target = AuditTarget::User(user_id);
        let target = self
            .managed_user_of(
                tenant,
                &actor,
                user_id,
                snap.target,
                tenantry_core::Action::Delete,
                AuditAction::UserDeleted,
            )
            .await?;
        let template = snap.target_template;
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::Attribution;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// assert!(matches!(app.attribution(tenant, bob.id).await?, Some(Attribution::User(_))));
    ///
    /// app.delete_user(tenant, admin, bob.id).await?;
    /// // Bob's old records still say who made them.
    /// match app.attribution(tenant, bob.id).await? {
    ///     Some(Attribution::Deleted(t)) => assert_eq!(t.email.as_str(), "bob@acme.test"),
    ///     other => panic!("expected a tombstone, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
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
