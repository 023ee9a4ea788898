//! One person across tenants ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)):
//! the host's identity id on a user, and the memberships of a person.

use tenantry_core::IdentityId;
use tenantry_store::{Membership, Person};

use super::*;

impl Tenantry {
    /// Attaches the host's identity id (for example the OpenID Connect subject) to a user,
    /// replaces it, or clears it with `None` ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)). Only an
    /// active admin of the tenant may; the id is unique per tenant. Audited as
    /// `UserEdited` with `Field::Identity`, a refusal too. The same value again changes
    /// nothing. Returns the user as it is now.
    ///
    /// # Errors
    /// [`tenantry_core::Error::NotAllowed`] / [`tenantry_core::Error::AdminOnly`]
    /// ([management authority (D7)](tenantry_core::Rule::ManagementAuthority)), [`tenantry_core::Error::UserNotFound`],
    /// [`tenantry_core::Error::IdentityTaken`], store failures.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, IdentityId, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, ada) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let sub = IdentityId::parse("oidc|ada")?;
    /// let user = app.set_identity(tenant, ada, ada, Some(sub.clone())).await?;
    /// assert_eq!(user.identity.as_ref(), Some(&sub));
    ///
    /// let bob = app.invite(tenant, ada, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// // Unique per tenant.
    /// let taken = app.set_identity(tenant, ada, bob.id, Some(sub)).await;
    /// assert!(matches!(taken, Err(Error::Rule(RuleError::IdentityTaken))));
    /// # Ok(()) }
    /// ```
    pub async fn set_identity(
        &self,
        tenant: TenantId,
        actor: UserId,
        user: UserId,
        identity: Option<IdentityId>,
    ) -> Result<User, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "set_identity",
            tenant = %tenant, actor = %actor, user = %user,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            retry!(self, tenant =>
                self.try_set_identity(tenant, actor, user, identity.clone())
            )
        })
        .await
    }

    async fn try_set_identity(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        user_id: UserId,
        identity: Option<IdentityId>,
    ) -> Result<User, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Edit,
                Some(AuditAction::UserEdited),
            )
            .await?;
        let target = self
            .managed_user(
                tenant,
                &actor,
                user_id,
                tenantry_core::Action::Edit,
                AuditAction::UserEdited,
            )
            .await?;
        let taken = self
            .identity_taken(tenant, identity.as_ref(), user_id)
            .await?;
        let decided =
            decide::set_identity(self.ctx(&state), &actor.acting(), &target, identity, taken);
        let change = self
            .audited(
                tenant,
                actor_id,
                AuditAction::UserEdited,
                AuditTarget::User(user_id),
                decided,
            )
            .await?;
        commit_identity(self, &change).await?;
        Ok(updated_user(&change, user_id).unwrap_or(target))
    }

    /// Whether a user of `tenant` other than `except` holds `identity`.
    pub(super) async fn identity_taken(
        &self,
        tenant: TenantId,
        identity: Option<&IdentityId>,
        except: UserId,
    ) -> Result<bool, Error> {
        let Some(identity) = identity else {
            return Ok(false);
        };
        Ok(self
            .inner
            .store
            .user_by_identity(tenant, identity)
            .await?
            .is_some_and(|u| u.id != except))
    }

    /// Every tenant where the person with this address is a user
    /// ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)): tenant id and name, user id, role, status and
    /// last login, sorted by tenant name (byte order) then id, `limit` per page (clamped to
    /// 1..=500). Addresses compare by their canonical key ([unique email (D3)](tenantry_core::Rule::UniqueEmail)), so `Ada@X.test`
    /// finds `ada@x.test`. Deleted users never appear.
    ///
    /// This is a read for the host's sign-in, after its own authentication: it has no actor,
    /// and it returns this person's own rows only. Each tenant keeps its own user (one row
    /// per tenant, [unique email (D3)](tenantry_core::Rule::UniqueEmail) stays per tenant).
    ///
    /// # Errors
    /// Store failures ([`tenantry_store::StoreError::Unsupported`] from a custom store that
    /// does not implement [`Store::memberships`](tenantry_store::Store::memberships)).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let ada = Email::parse("ada@example.test")?;
    /// let (acme, _) = app.create_tenant("Acme", None, ada.clone()).await?;
    /// let (zenith, _) = app.create_tenant("Zenith", None, ada.clone()).await?;
    /// let page = app.memberships_by_email(&Email::parse("ADA@example.test")?, None, 50).await?;
    /// let tenants: Vec<_> = page.items.iter().map(|m| (m.tenant_id, m.tenant_name.as_str())).collect();
    /// assert_eq!(tenants, [(acme, "Acme"), (zenith, "Zenith")]);
    /// assert!(page.next.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn memberships_by_email(
        &self,
        email: &Email,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Page<Membership, TenantCursor>, Error> {
        self.memberships(&Person::Email(email.clone()), after, limit)
            .await
    }

    /// Every tenant where a user holds this identity id ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)),
    /// as [`Tenantry::memberships_by_email`] lists them. The id compares byte for byte.
    ///
    /// # Errors
    /// Store failures.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry::prelude::*;
    /// use tenantry::IdentityId;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (acme, ada) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let sub = IdentityId::parse("oidc|ada")?;
    /// app.set_identity(acme, ada, ada, Some(sub.clone())).await?;
    /// let page = app.memberships_by_identity(&sub, None, 50).await?;
    /// assert_eq!(page.items.len(), 1);
    /// assert_eq!((page.items[0].tenant_id, page.items[0].user_id), (acme, ada));
    /// # Ok(()) }
    /// ```
    pub async fn memberships_by_identity(
        &self,
        identity: &IdentityId,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Page<Membership, TenantCursor>, Error> {
        self.memberships(&Person::Identity(identity.clone()), after, limit)
            .await
    }

    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Page<Membership, TenantCursor>, Error> {
        let limit = limit.clamp(1, tenantry_store::MAX_PAGE_SIZE);
        let items = self
            .inner
            .store
            .memberships(person, after, limit.saturating_add(1))
            .await?;
        Ok(cut_page(items, limit, Membership::cursor))
    }
}

/// Commits a change that sets an identity id: the store's uniqueness refusal (a race the
/// version check did not see) is reported as the rule.
pub(super) async fn commit_identity(app: &Tenantry, change: &Change) -> Result<(), Error> {
    match app.commit(change, &[]).await {
        Err(Error::Store(StoreError::Conflict {
            constraint: Constraint::UserIdentity,
        })) => Err(Error::Rule(tenantry_core::Error::IdentityTaken)),
        other => other,
    }
}
