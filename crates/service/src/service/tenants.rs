//! Tenants and seats ([seat limit (D9)](tenantry_core::Rule::SeatLimit), [names (D22)](tenantry_core::Rule::Names), [first seat (D23)](tenantry_core::Rule::FirstSeat)).

use super::*;

impl Tenantry {
    /// Creates a tenant with its first admin (active). Returns the tenant and admin ids.
    ///
    /// # Errors
    /// [`tenantry_core::Error::InvalidTenantName`] ([names (D22)](tenantry_core::Rule::Names)),
    /// [`tenantry_core::Error::FirstSeatRequired`] for a limit of 0 ([first seat (D23)](tenantry_core::Rule::FirstSeat)), store failures;
    /// only a colliding id is reported as [`tenantry_core::Error::TenantExists`].
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("  Acme  ", Some(10), Email::parse("ada@acme.test")?).await?;
    /// assert_eq!(app.tenant(tenant).await?.tenant.name, "Acme"); // trimmed
    /// let ada = app.user(tenant, ActorRef::System, admin).await?;
    /// assert_eq!((ada.role, ada.status), (Role::Admin, Status::Active));
    ///
    /// // The first admin needs a seat (first seat, D23).
    /// let zero = app.create_tenant("Empty", Some(0), Email::parse("eve@empty.test")?).await;
    /// assert!(matches!(zero, Err(Error::Rule(RuleError::FirstSeatRequired))));
    /// # Ok(()) }
    /// ```
    pub async fn create_tenant(
        &self,
        name: &str,
        user_limit: Option<u32>,
        admin_email: Email,
    ) -> Result<(TenantId, UserId), Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "create_tenant",
            tenant = tracing::field::Empty, actor = "system",
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let tenant = Tenant {
                id: TenantId::from_parts(self.unix_millis(), self.random_bytes()?),
                name: name.to_owned(),
                user_limit,
                created_at: self.now(),
            };
            let (tid, admin) = (tenant.id, self.new_user_id()?);
            tracing::Span::current().record("tenant", tracing::field::display(tid));
            let change = decide::create_tenant(tenant, admin, admin_email)?;
            match self.inner.store.commit(&change, &[]).await {
                Err(StoreError::Conflict {
                    constraint: Constraint::TenantId,
                }) => Err(Error::Rule(tenantry_core::Error::TenantExists)),
                other => other.map_err(Error::from),
            }?;
            Ok((tid, admin))
        })
        .await
    }

    /// The tenant with its counters.
    ///
    /// # Errors
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) when it does not exist.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError, TenantId};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, _) = app.create_tenant("Acme", Some(10), Email::parse("ada@acme.test")?).await?;
    /// let state = app.tenant(tenant).await?;
    /// assert_eq!((state.tenant.user_limit, state.counters.active_admins), (Some(10), 1));
    ///
    /// let unknown = TenantId::from_parts(1_700_000_000_000, [0; 10]);
    /// assert!(matches!(app.tenant(unknown).await, Err(Error::Rule(RuleError::TenantNotFound))));
    /// # Ok(()) }
    /// ```
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantState, Error> {
        self.state(tenant).await
    }

    /// Sets the seat limit ([seat limit (D9)](tenantry_core::Rule::SeatLimit)), as the host's billing does; `None` is unlimited. It may be
    /// set below current usage.
    ///
    /// # Errors
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation), store failures, [`Error::Contention`].
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
    /// // Billing downgraded the plan to one seat, which Ada already takes.
    /// let seats = app.set_user_limit(tenant, Some(1)).await?;
    /// assert!(seats.at_limit);
    /// let bob = InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// };
    /// let refused = app.invite(tenant, admin, &bob).await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::SeatLimitReached { used: 1, limit: 1 }))));
    ///
    /// app.set_user_limit(tenant, None).await?; // unlimited again
    /// app.invite(tenant, admin, &bob).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_user_limit(
        &self,
        tenant: TenantId,
        limit: Option<u32>,
    ) -> Result<SeatUsage, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "set_user_limit",
            tenant = %tenant, actor = "system",
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, tenant => self.try_set_user_limit(tenant, limit))
        })
        .await
    }

    async fn try_set_user_limit(
        &self,
        tenant: TenantId,
        limit: Option<u32>,
    ) -> Result<SeatUsage, Error> {
        let state = self.state(tenant).await?;
        let change = decide::set_user_limit(self.ctx(&state), ActorRef::System, limit);
        self.commit(&change, &[]).await?;
        Ok(SeatUsage::new(change.counters.seats_used, limit))
    }

    /// A page of tenants in order of name, then id, for operators (a back office, a host's
    /// admin tooling): each with its name, seat limit, seats used and creation time. Pass the
    /// page's `next` as `after` for the next one; `limit` is clamped into 1..=500. It takes no
    /// actor, like [`Tenantry::create_tenant`]: it is the host's own view, never a tenant
    /// user's, and it shows no user.
    ///
    /// # Errors
    /// Store failures ([`StoreError::Unsupported`]
    /// from a custom store without the listing).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// for (name, admin) in [("Globex", "hank@globex.test"), ("Acme", "ada@acme.test"), ("Initech", "bill@initech.test")] {
    ///     app.create_tenant(name, None, Email::parse(admin)?).await?;
    /// }
    /// let first = app.tenants(None, 2).await?;
    /// let names: Vec<_> = first.items.iter().map(|t| t.tenant.name.as_str()).collect();
    /// assert_eq!(names, ["Acme", "Globex"]);
    /// assert_eq!(first.items[0].counters.seats_used, 1);
    /// let rest = app.tenants(first.next.as_ref(), 2).await?;
    /// assert_eq!(rest.items[0].tenant.name, "Initech");
    /// assert!(rest.next.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Page<TenantState, TenantCursor>, Error> {
        let limit = limit.clamp(1, tenantry_store::MAX_PAGE_SIZE);
        let items = self
            .inner
            .store
            .tenants(after, limit.saturating_add(1))
            .await?;
        Ok(cut_page(items, limit, |s| TenantCursor::of(&s.tenant)))
    }

    /// Renames the tenant ([names (D22)](tenantry_core::Rule::Names)): only an active admin
    /// of the tenant may; the name is trimmed and checked; the rename is audited
    /// (`TenantRenamed`, the old and new name), and a refusal too
    /// ([audit log (D13)](tenantry_core::Rule::AuditLog)). The same name again changes nothing.
    /// Returns the tenant as it is now.
    ///
    /// # Errors
    /// [`tenantry_core::Error::NotAllowed`] for an actor that is not an active user of the
    /// tenant with `users:edit`, [`tenantry_core::Error::AdminOnly`] for any other non-admin
    /// ([management authority (D7)](tenantry_core::Rule::ManagementAuthority)),
    /// [`tenantry_core::Error::InvalidTenantName`], store failures.
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
    /// let renamed = app.rename_tenant(tenant, admin, "  Acme Support ").await?;
    /// assert_eq!(renamed.name, "Acme Support");
    /// let refused = app.rename_tenant(tenant, admin, "Acme\u{200b}Support").await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::InvalidTenantName(_)))));
    /// # Ok(()) }
    /// ```
    pub async fn rename_tenant(
        &self,
        tenant: TenantId,
        actor: UserId,
        name: &str,
    ) -> Result<Tenant, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "rename_tenant",
            tenant = %tenant, actor = %actor,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, tenant => self.try_rename_tenant(tenant, actor, name))
        })
        .await
    }

    async fn try_rename_tenant(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        name: &str,
    ) -> Result<Tenant, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Edit,
                Some(AuditAction::TenantRenamed),
            )
            .await?;
        let decided = decide::rename_tenant(self.ctx(&state), &actor.acting(), name);
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::TenantRenamed,
                AuditTarget::Tenant,
                decided,
            )
            .await?;
        self.commit(&change, &[]).await?;
        Ok(change
            .writes
            .iter()
            .find_map(|w| match w {
                Write::UpdateTenant(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap_or(state.tenant))
    }

    /// Seat usage: used, limit, remaining, at limit ([seat limit (D9)](tenantry_core::Rule::SeatLimit)).
    ///
    /// # Errors
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation), store failures.
    ///
    /// Every user row takes a seat, invited ones too:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", Some(3), Email::parse("ada@acme.test")?).await?;
    /// app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let seats = app.seat_usage(tenant).await?;
    /// assert_eq!((seats.used, seats.limit, seats.remaining), (2, Some(3), Some(1)));
    /// assert!(!seats.at_limit);
    /// # Ok(()) }
    /// ```
    pub async fn seat_usage(&self, tenant: TenantId) -> Result<SeatUsage, Error> {
        Ok(self.state(tenant).await?.seat_usage())
    }
}
