//! Authorization checks ([current access (D6)](tenantry_core::Rule::CurrentAccess)).

use super::*;

impl Tenantry {
    /// Decides a request for a user on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess)): the user's row and its
    /// template's permissions are read now, so edits apply at the very next check. An
    /// unknown or deleted user, or one of another tenant, is denied. A store that answers
    /// from memory ([`Tenantry::authorize_now`]) is asked when this is called, so the
    /// returned future is ready at its first poll.
    ///
    /// # Errors
    /// Store failures only; every answer is a [`Decision`].
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
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: Some(support.id),
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let view = Permission::new(Category::Conversations, Action::View);
    /// let bob = invited.user.id;
    /// assert_eq!(app.authorize(tenant, bob, view.into()).await?.reason(), Reason::Invited);
    ///
    /// app.accept_invitation(&invited.accept_link.token().unwrap(), "bob@acme.test").await?;
    /// let decision = app.authorize(tenant, bob, view.into()).await?;
    /// assert!(decision.is_allowed());
    /// assert_eq!(decision.reason(), Reason::Template { template_id: support.id });
    /// assert_eq!(app.authorize(tenant, bob, Request::Crm).await?.reason(), Reason::NoCrmAccess);
    ///
    /// app.delete_user(tenant, admin, bob).await?;
    /// assert_eq!(app.authorize(tenant, bob, view.into()).await?.reason(), Reason::UnknownUser);
    /// # Ok(()) }
    /// ```
    pub fn authorize(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> impl Future<Output = Result<Decision, Error>> + Send + '_ {
        // A store that answers from memory is asked at once, before the future is even made:
        // the check then costs no future of the store's, no allocation, and a future that is
        // the answer itself, ready at its first poll. Only the other path is boxed.
        match self.authorize_now(tenant, user, request) {
            Some(answer) => Authorize::Ready(Some(answer)),
            None => Authorize::Read(Box::pin(async move {
                let Some(subject) = self.inner.store.subject(tenant, user).await? else {
                    return Ok(Decision::unknown_user());
                };
                Ok(tenantry_core::authorize_subject(&subject, request))
            })),
        }
    }

    /// [`Tenantry::authorize`] without waiting: the decision when the store can answer from
    /// memory at once ([`Store::decide_now`]: the
    /// in-memory store, an owning SQLite store's cache), else `None`, and then
    /// [`Tenantry::authorize`] reads the store. Whenever it answers it gives what
    /// [`Tenantry::authorize`] gives, on current state ([current access (D6)](tenantry_core::Rule::CurrentAccess)).
    ///
    /// # Errors
    /// Inside the `Some`: store failures only.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let view = Permission::new(Category::Users, Action::View);
    /// let now = app.authorize_now(tenant, admin, view.into()).expect("answered from memory")?;
    /// assert_eq!(now.reason(), Reason::Admin);
    /// assert_eq!(now, app.authorize(tenant, admin, view.into()).await?);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn authorize_now(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> Option<Result<Decision, Error>> {
        Some(
            self.inner
                .store
                .decide_now(tenant, user, request)?
                .map_err(Into::into),
        )
    }

    /// Takes hold of one user's checks, for a host that checks the same user many times (keep
    /// it with the session): [`Tenantry::authorize_held_now`] then decides without finding
    /// the tenant and the user again. `None` when the store cannot answer from memory
    /// ([`Store::hold_now`]: the in-memory store can, and an owning SQLite store for the
    /// users its cache holds) or does not hold the user now; use [`Tenantry::authorize`]
    /// then.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let held = app.hold(tenant, admin).expect("held in memory");
    /// let view = Permission::new(Category::Users, Action::View);
    /// let now = app.authorize_held_now(&held, view.into()).expect("answered from memory")?;
    /// assert_eq!(now, app.authorize(tenant, admin, view.into()).await?);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn hold(&self, tenant: TenantId, user: UserId) -> Option<tenantry_store::HeldCheck> {
        self.inner.store.hold_now(tenant, user)
    }

    /// [`Tenantry::authorize_now`] through a check held with [`Tenantry::hold`] (on this
    /// service's store): the same answers, on current state
    /// ([current access (D6)](tenantry_core::Rule::CurrentAccess)), without finding the tenant
    /// and the user again. When the held place no longer answers (the tenant's table grew,
    /// or a cache stopped holding the user), it asks by ids ([`Tenantry::authorize_now`],
    /// itself `None` when the store must be read: [`Tenantry::authorize`] then); hold again
    /// for later checks.
    ///
    /// # Errors
    /// Inside the `Some`: store failures only.
    #[inline]
    pub fn authorize_held_now(
        &self,
        held: &tenantry_store::HeldCheck,
        request: Request,
    ) -> Option<Result<Decision, Error>> {
        match held.decide_now(request) {
            Some(decision) => Some(Ok(decision)),
            None => self.authorize_now(held.tenant(), held.user(), request),
        }
    }

    /// What a user holds now ([current access (D6)](tenantry_core::Rule::CurrentAccess)), with its CRM access.
    ///
    /// # Errors
    /// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) for an unknown user, store failures.
    ///
    /// A user holds its direct grants and its template's permissions, and nothing at all
    /// until it is active:
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
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: Some(support.id),
    ///     crm_access: true, grants: Permissions::USERS_VIEW,
    /// }).await?;
    /// let bob = invited.user.id;
    /// assert_eq!(app.effective_permissions(tenant, bob).await?, (Permissions::empty(), false));
    ///
    /// app.accept_invitation(&invited.accept_link.token().unwrap(), "bob@acme.test").await?;
    /// let (held, crm) = app.effective_permissions(tenant, bob).await?;
    /// assert_eq!(held, Permissions::USERS_VIEW | Permissions::CONVERSATIONS_VIEW);
    /// assert!(crm);
    /// assert_eq!(held.to_strings(), ["conversations:view", "users:view"]);
    /// # Ok(()) }
    /// ```
    pub async fn effective_permissions(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<(Permissions, bool), Error> {
        let user = self.target(tenant, user).await?;
        let template = self.template_of(tenant, &user).await?;
        Ok((
            tenantry_core::effective_permissions(&user, template.as_ref()),
            tenantry_core::effective_crm(&user),
        ))
    }
}

/// The future of [`Tenantry::authorize`]: the answer at once, or the store's read.
enum Authorize<'a> {
    /// Answered from memory; taken at the first poll.
    Ready(Option<Result<Decision, Error>>),
    /// Read from the store.
    Read(std::pin::Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send + 'a>>),
}

impl Future for Authorize<'_> {
    type Output = Result<Decision, Error>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            // Polled again after it finished: it never finishes twice.
            Authorize::Ready(answer) => answer
                .take()
                .map_or(std::task::Poll::Pending, std::task::Poll::Ready),
            Authorize::Read(read) => read.as_mut().poll(cx),
        }
    }
}
