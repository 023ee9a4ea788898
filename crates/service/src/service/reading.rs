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
        let actor = self
            .actor(tenant, id, tenantry_core::Action::View, None)
            .await?;
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
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// assert_eq!(app.user(tenant, ActorRef::User(admin), bob.id).await?.email, bob.email);
    ///
    /// // Bob holds no `users:view`: he may not look at Ada's row.
    /// match app.user(tenant, ActorRef::User(bob.id), admin).await {
    ///     Err(Error::Rule(RuleError::NotAllowed { needed })) => {
    ///         assert_eq!(needed, Permission::new(Category::Users, Action::View));
    ///     }
    ///     other => panic!("expected NotAllowed, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
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
    ///
    /// Filters combine with AND; a page's [`Page::next`] is the cursor of the next one:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let emails = ["bob@acme.test", "cy@acme.test", "dee@partner.test"].map(String::from).to_vec();
    /// app.invite_many(tenant, admin, &BulkInvite { emails, ..BulkInvite::default() }).await?;
    /// let viewer = ActorRef::User(admin);
    ///
    /// let query = UserQuery {
    ///     status: Some(Status::Invited),
    ///     email_contains: Some("@acme".into()),
    ///     ..UserQuery::default() // sorted by email
    /// };
    /// let page = app.list_users(tenant, viewer, &query).await?;
    /// let found: Vec<_> = page.items.iter().map(|u| u.email.as_str()).collect();
    /// assert_eq!(found, ["bob@acme.test", "cy@acme.test"]);
    ///
    /// // Newest first, two per page.
    /// let mut query = UserQuery {
    ///     sort: SortBy::CreatedAt,
    ///     descending: true,
    ///     limit: 2,
    ///     ..UserQuery::default()
    /// };
    /// let mut all = Vec::new();
    /// loop {
    ///     let page = app.list_users(tenant, viewer, &query).await?;
    ///     all.extend(page.items);
    ///     match page.next {
    ///         Some(cursor) => query.after = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(all.len(), 4);
    /// assert_eq!(all[3].id, admin); // the oldest row comes last
    /// # Ok(()) }
    /// ```
    pub async fn list_users(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        query: &UserQuery,
    ) -> Result<Page<User>, Error> {
        Self::check_query(query)?;
        if viewer == ActorRef::System {
            // One read where one will do: rows are scoped to their tenant, so a page with a
            // row proves the tenant exists; only an empty page needs the tenant looked up
            // (tenant isolation, D15: an unknown tenant is not an empty one).
            let page = self.inner.store.list_users(tenant, query).await?;
            if page.items.is_empty() {
                self.state(tenant).await?;
            }
            return Ok(page);
        }
        self.state(tenant).await?;
        self.require_view(tenant, viewer).await?;
        Ok(self.inner.store.list_users(tenant, query).await?)
    }

    /// Users who have not signed in since `since`, or never ([sign-in (D14)](tenantry_core::Rule::SignIn)).
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::ManualClock;
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    /// let app = Tenantry::builder(InMemoryStore::new()).clock(clock.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let bob = app.accept_invitation(&invited.accept_link.token().unwrap(), "bob@acme.test").await?;
    ///
    /// clock.advance(time::Duration::days(40));
    /// app.record_sign_in(tenant, admin).await?; // Ada keeps signing in; Bob does not
    /// let month_ago = app.now() - time::Duration::days(30);
    /// let page = app.inactive_users(tenant, ActorRef::System, month_ago, &UserQuery::default()).await?;
    /// assert_eq!(page.items.iter().map(|u| u.id).collect::<Vec<_>>(), [bob.id]);
    /// # Ok(()) }
    /// ```
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

    /// Invited users whose invitation has expired ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)). They keep
    /// their seat until they are deleted or purged ([`Tenantry::purge_expired_invitations`]),
    /// and a resend revives them.
    ///
    /// # Errors
    /// As [`Tenantry::list_users`].
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::ManualClock;
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    /// let app = Tenantry::builder(InMemoryStore::new()).clock(clock.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// let all = UserQuery::default();
    /// assert!(app.expired_invitations(tenant, ActorRef::System, &all).await?.items.is_empty());
    ///
    /// clock.advance(time::Duration::days(8)); // invitations live 7 days by default
    /// let expired = app.expired_invitations(tenant, ActorRef::System, &all).await?;
    /// assert_eq!(expired.items[0].id, bob.id);
    /// assert_eq!(app.seat_usage(tenant).await?.used, 2); // still holding its seat
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::ManualClock;
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    /// let app = Tenantry::builder(InMemoryStore::new()).clock(clock.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", Some(2), Email::parse("ada@acme.test")?).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// assert!(app.purge_expired_invitations(tenant, admin).await?.is_empty()); // not expired yet
    ///
    /// clock.advance(time::Duration::days(8));
    /// assert_eq!(app.purge_expired_invitations(tenant, admin).await?, [bob.id]);
    /// assert_eq!(app.seat_usage(tenant).await?.used, 1);
    /// # Ok(()) }
    /// ```
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
                let batch = retry!(self, tenant => self.try_purge(tenant, actor))?;
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
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Delete,
                Some(AuditAction::UserDeleted),
            )
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
    ///
    /// A feed consumer keeps the last `seq` it read and asks for what came after:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{AuditAction, Outcome, Rule};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", Some(1), Email::parse("ada@acme.test")?).await?;
    /// let mut cursor = 0;
    /// let batch = app.audit_log(tenant, ActorRef::System, cursor, 100).await?;
    /// let actions: Vec<_> = batch.iter().map(|r| r.event.action).collect();
    /// assert_eq!(actions, [AuditAction::TenantCreated, AuditAction::UserInvited]);
    /// cursor = batch.last().map_or(cursor, |r| r.seq);
    ///
    /// // A refused attempt is recorded too: here the tenant's one seat is taken.
    /// let _ = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await;
    /// let batch = app.audit_log(tenant, ActorRef::System, cursor, 100).await?;
    /// assert_eq!(batch.len(), 1);
    /// assert!(matches!(batch[0].event.outcome, Outcome::Refused { rule: Rule::SeatLimit, .. }));
    /// # Ok(()) }
    /// ```
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
