//! Reading: users, pages, expired invitations and their purge, the audit log ([audit log (D13)](tenantry_core::Rule::AuditLog), [listing (D18)](tenantry_core::Rule::Listing), [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)).

use super::*;

impl Tenantry {
    pub(super) async fn require_view(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
    ) -> Result<(), Error> {
        let ActorRef::User(id) = viewer else {
            return Ok(());
        };
        let needed = Permission::new(Category::Users, tenantry_core::Action::View);
        let actor = self.actor(tenant, id, tenantry_core::Action::View).await?;
        if actor.acting().holds().has(needed) {
            Ok(())
        } else {
            Err(Error::Rule(tenantry_core::Error::NotAllowed { needed }))
        }
    }

    fn check_query(query: &UserQuery) -> Result<(), Error> {
        if query.limit == 0 || query.limit > tenantry_store::MAX_PAGE_SIZE {
            return Err(QueryError::LimitOutOfRange { limit: query.limit }.into());
        }
        if query.after.as_ref().is_some_and(|c| c.sort() != query.sort) {
            return Err(QueryError::CursorMismatch.into());
        }
        Ok(())
    }

    /// A user by id, as `viewer` may see it ([management authority (D7)](tenantry_core::Rule::ManagementAuthority): admin or `users:view`; the host itself as
    /// [`ActorRef::System`]).
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) ([`tenantry_core::Error::UserNotFound`]).
    pub async fn user(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        user: UserId,
    ) -> Result<User, Error> {
        self.require_view(tenant, viewer).await?;
        Ok(self.target(tenant, user).await?)
    }

    /// One page of the user table ([listing (D18)](tenantry_core::Rule::Listing)), for a viewer with admin or `users:view` ([management authority (D7)](tenantry_core::Rule::ManagementAuthority)).
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [listing (D18)](tenantry_core::Rule::Listing) (page size, cursor), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation), store failures.
    pub async fn list_users(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        query: &UserQuery,
    ) -> Result<Page<User>, Error> {
        Self::check_query(query)?;
        self.state(tenant).await?;
        self.require_view(tenant, viewer).await?;
        Ok(self.inner.store.list_users(tenant, query).await?)
    }

    /// Users who have not signed in since `since`, or never ([sign-in (D14)](tenantry_core::Rule::SignIn)).
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    pub async fn inactive_users(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        since: time::OffsetDateTime,
        query: &UserQuery,
    ) -> Result<Page<User>, Error> {
        let q = UserQuery {
            inactive_since: Some(since),
            ..query.clone()
        };
        self.list_users(tenant, viewer, &q).await
    }

    /// Invited users whose invitation has expired ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)).
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    pub async fn expired_invitations(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        query: &UserQuery,
    ) -> Result<Page<User>, Error> {
        let q = UserQuery {
            invitation_expired_at: Some(self.now()),
            ..query.clone()
        };
        self.list_users(tenant, viewer, &q).await
    }

    /// Deletes every expired invitation in one call, freeing their seats ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)). Returns the
    /// deleted ids.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) (needs `users:delete`), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation), store failures.
    pub async fn purge_expired_invitations(
        &self,
        tenant: TenantId,
        actor: UserId,
    ) -> Result<Vec<UserId>, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "purge_expired_invitations",
            tenant = %tenant, actor = %actor,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let mut all = Vec::new();
            loop {
                let batch = retry!(self, self.try_purge(tenant, actor))?;
                if batch.is_empty() {
                    return Ok(all);
                }
                all.extend(batch);
            }
        })
        .await
    }

    async fn try_purge(&self, tenant: TenantId, actor_id: UserId) -> Result<Vec<UserId>, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Delete)
            .await?;
        let now = self.now();
        let templates = if actor.acting().is_admin() {
            Vec::new()
        } else {
            self.inner.store.templates(tenant).await?
        };
        let mut query = UserQuery {
            invitation_expired_at: Some(now),
            // A non-admin may not delete admins' invitations (D7): leaving them out of the
            // page keeps a page full of them from ending the purge early.
            role: (!actor.acting().is_admin()).then_some(tenantry_core::Role::User),
            limit: tenantry_store::MAX_PAGE_SIZE,
            ..UserQuery::default()
        };
        loop {
            let page = self.inner.store.list_users(tenant, &query).await?;
            let decided =
                decide::purge_expired(self.ctx(&state), &actor.acting(), &page.items, &templates);
            let (change, deleted) = match decided {
                Ok(v) => v,
                Err(e) => {
                    return Err(self
                        .refuse(
                            tenant,
                            actor_id,
                            AuditAction::UserDeleted,
                            AuditTarget::Tenant,
                            e,
                        )
                        .await);
                }
            };
            if !deleted.is_empty() {
                self.commit(&change, &[]).await?;
                return Ok(deleted);
            }
            // D21: a page of invitations the actor may not delete (they hold more than it)
            // does not end the purge; read on past them.
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(deleted),
            }
        }
    }

    /// The audit log from `after` (exclusive), oldest first ([audit log (D13)](tenantry_core::Rule::AuditLog)). Pass the last `seq`
    /// read to continue: a feed read this way misses and repeats nothing.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) for a viewer without `users:view`, store failures.
    pub async fn audit_log(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, Error> {
        if limit == 0 || limit > tenantry_store::MAX_PAGE_SIZE {
            return Err(QueryError::LimitOutOfRange { limit }.into());
        }
        self.require_view(tenant, viewer).await?;
        Ok(self.inner.store.audit(tenant, after, limit).await?)
    }
}
