//! Invitations: invite, bulk invite, resend, accept, sign-in ([invitations (D10)](tenantry_core::Rule::Invitations), [sign-in (D14)](tenantry_core::Rule::SignIn), [bulk invite (D19)](tenantry_core::Rule::BulkInvite), [within own access (D21)](tenantry_core::Rule::WithinOwnAccess), [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)–[live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).

use super::*;
use tenantry_core::IdentityId;

impl Tenantry {
    /// Invites a user ([unique email (D3)](tenantry_core::Rule::UniqueEmail), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [seat limit (D9)](tenantry_core::Rule::SeatLimit), [invitations (D10)](tenantry_core::Rule::Invitations)). The invitation mail is queued in the same
    /// commit and delivered afterwards ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)).
    ///
    /// # Errors
    /// The refusing rule ([unique email (D3)](tenantry_core::Rule::UniqueEmail), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [seat limit (D9)](tenantry_core::Rule::SeatLimit), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)) or store failures. Refusals are audited ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", Some(5), Email::parse("ada@acme.test")?).await?;
    /// let request = InviteRequest {
    ///     email: Email::parse("bob@acme.test")?,
    ///     role: Role::User,
    ///     template_id: None,
    ///     crm_access: true,
    ///     grants: Permissions::CONVERSATIONS_VIEW | Permissions::CONVERSATIONS_CREATE,
    /// };
    /// let invited = app.invite(tenant, admin, &request).await?;
    /// assert_eq!((invited.user.status, invited.user.grants), (Status::Invited, request.grants));
    ///
    /// // The address is taken now, in any case (unique email, D3).
    /// let again = InviteRequest { email: Email::parse("BOB@acme.test")?, ..request };
    /// match app.invite(tenant, admin, &again).await {
    ///     Err(Error::Rule(RuleError::EmailTaken { email })) => assert_eq!(email, "BOB@acme.test"),
    ///     other => panic!("expected EmailTaken, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn invite(
        &self,
        tenant: TenantId,
        actor: UserId,
        request: &InviteRequest,
    ) -> Result<Invited, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "invite",
            tenant = %tenant, actor = %actor,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let out = retry!(self, tenant => self.try_invite(tenant, actor, request))?;
            self.after_commit(tenant, &[out.message_id]).await;
            Ok(out)
        })
        .await
    }

    async fn try_invite(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        request: &InviteRequest,
    ) -> Result<Invited, Error> {
        let read = SnapshotRequest::default()
            .actor(actor_id)
            .template(request.template_id)
            .email_key(request.email.key());
        let (state, snap) = self.snapshot(tenant, &read).await?;
        let actor = self
            .actor_of(
                tenant,
                actor_id,
                snap.actor,
                snap.actor_template,
                tenantry_core::Action::Create,
                Some(AuditAction::UserInvited),
            )
            .await?;
        let template = snap.template;
        let taken = snap.email_user.is_some();
        let (token, token_hash) = self.new_token(tenant)?;
        let new = NewInvite {
            user_id: self.new_user_id()?,
            token_hash,
        };
        let decided = decide::invite(
            self.ctx(&state),
            &actor.acting(),
            request,
            template.as_ref(),
            taken,
            new,
        );
        let change = match decided {
            Ok(c) => c,
            Err(e) => {
                // The refusal records the address that was tried.
                let tried = vec![FieldChange {
                    field: Field::Email,
                    before: Value::None,
                    after: Value::Text(request.email.to_string()),
                }];
                return Err(self
                    .refuse_with(
                        tenant,
                        actor_id,
                        AuditAction::UserInvited,
                        AuditTarget::Tenant,
                        e,
                        tried,
                    )
                    .await);
            }
        };
        let user = inserted_user(&change, new.user_id)?;
        let expires = user.invite_expires_at.unwrap_or_else(|| self.now());
        let message = self.message(&state, Some(&actor.user), &user, &token, expires)?;
        let message_id = message.id;
        self.commit(&change, &[message]).await?;
        Ok(Invited {
            user,
            message_id,
            accept_link: self.accept_link(&token),
        })
    }

    /// Invites many addresses at once ([bulk invite (D19)](tenantry_core::Rule::BulkInvite)): one outcome per address, with the accept link
    /// of each invited one ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)); the seat limit holds exactly.
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) or [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) for the call as a whole (audited), store failures.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// // Three seats: Ada takes one, two are left.
    /// let (tenant, admin) = app.create_tenant("Acme", Some(3), Email::parse("ada@acme.test")?).await?;
    /// let request = BulkInvite {
    ///     emails: ["bob@acme.test", "not an address", "Bob@acme.test", "cy@acme.test", "dee@acme.test"]
    ///         .map(String::from)
    ///         .to_vec(),
    ///     role: Some(Role::User),
    ///     grants: Permissions::CONVERSATIONS_VIEW,
    ///     ..BulkInvite::default()
    /// };
    /// let results = app.invite_many(tenant, admin, &request).await?;
    /// assert!(matches!(results[0].outcome, BulkOutcome::Invited { .. }));
    /// assert!(results[0].accept_link.is_some());
    /// assert!(matches!(results[1].outcome, BulkOutcome::Invalid { .. }));
    /// assert_eq!(results[2].outcome, BulkOutcome::Duplicate);
    /// assert!(matches!(results[3].outcome, BulkOutcome::Invited { .. }));
    /// assert_eq!(results[4].outcome, BulkOutcome::LimitReached { used: 3, limit: 3 });
    /// assert_eq!(app.seat_usage(tenant).await?.used, 3);
    /// # Ok(()) }
    /// ```
    pub async fn invite_many(
        &self,
        tenant: TenantId,
        actor: UserId,
        request: &BulkInvite,
    ) -> Result<Vec<BulkResult>, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "invite_many",
            tenant = %tenant, actor = %actor, addresses = request.emails.len(),
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let (out, queued) =
                retry!(self, tenant => self.try_invite_many(tenant, actor, request))?;
            self.after_commit(tenant, &queued).await;
            Ok(out)
        })
        .await
    }

    async fn try_invite_many(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        request: &BulkInvite,
    ) -> Result<(Vec<BulkResult>, Vec<MessageId>), Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Create,
                Some(AuditAction::UserInvited),
            )
            .await?;
        let template = match request.template_id {
            Some(id) => self.inner.store.template(tenant, id).await?,
            None => None,
        };
        let mut taken = HashSet::new();
        for input in &request.emails {
            if let Ok(e) = Email::parse(input)
                && self
                    .inner
                    .store
                    .user_by_email(tenant, e.key())
                    .await?
                    .is_some()
            {
                taken.insert(e.key().to_owned());
            }
        }
        let mut tokens: Vec<(UserId, String)> = Vec::new();
        let mut failure = None;
        let mut fresh = || {
            let drawn = self
                .new_token(tenant)
                .and_then(|(text, hash)| Ok((self.new_user_id()?, text, hash)));
            match drawn {
                Ok((user_id, text, token_hash)) => {
                    tokens.push((user_id, text));
                    NewInvite {
                        user_id,
                        token_hash,
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    NewInvite {
                        user_id: UserId::from_uuid(uuid::Uuid::nil()),
                        token_hash: TokenHash([0; 32]),
                    }
                }
            }
        };
        let decided = decide::invite_many(
            self.ctx(&state),
            &actor.acting(),
            request,
            template.as_ref(),
            &|key| taken.contains(key),
            &mut fresh,
        );
        if let Some(e) = failure {
            return Err(e);
        }
        let (change, items) = self
            .audited(
                tenant,
                actor_id,
                AuditAction::UserInvited,
                AuditTarget::Tenant,
                decided,
            )
            .await?;
        let mut messages = Vec::new();
        for (user_id, token) in &tokens {
            if let Ok(user) = inserted_user(&change, *user_id) {
                let expires = user.invite_expires_at.unwrap_or_else(|| self.now());
                messages.push(self.message(&state, Some(&actor.user), &user, token, expires)?);
            }
        }
        self.commit(&change, &messages).await?;
        let results = items
            .into_iter()
            .map(|item| {
                let accept_link = match &item.outcome {
                    BulkOutcome::Invited { user_id } => tokens
                        .iter()
                        .find(|(id, _)| id == user_id)
                        .map(|(_, token)| self.accept_link(token)),
                    _ => None,
                };
                BulkResult {
                    input: item.input,
                    outcome: item.outcome,
                    accept_link,
                }
            })
            .collect();
        Ok((results, messages.iter().map(|m| m.id).collect()))
    }

    /// Sends an invitation again ([invitations (D10)](tenantry_core::Rule::Invitations)): a fresh token, older ones revoked, same user.
    /// Returns the new message's id and the new accept link ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): this once).
    ///
    /// # Errors
    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [within own access (D21)](tenantry_core::Rule::WithinOwnAccess) (a non-admin resending to a user who holds more than it), [invitations (D10)](tenantry_core::Rule::Invitations) (not invited,
    /// rate limited with the time of the next allowed resend), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation).
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
    /// let first = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let resent = app.resend_invitation(tenant, admin, first.user.id).await?;
    /// assert_ne!(resent.accept_link, first.accept_link);
    ///
    /// // Only the newest link works.
    /// let old = first.accept_link.token().unwrap();
    /// let refused = app.accept_invitation(&old, "bob@acme.test").await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::InvalidInvitation))));
    /// let new = resent.accept_link.token().unwrap();
    /// assert_eq!(app.accept_invitation(&new, "bob@acme.test").await?.id, first.user.id);
    ///
    /// // An active user is not invited any more.
    /// let again = app.resend_invitation(tenant, admin, first.user.id).await;
    /// assert!(matches!(again, Err(Error::Rule(RuleError::NotInvited { status: Status::Active }))));
    /// # Ok(()) }
    /// ```
    pub async fn resend_invitation(
        &self,
        tenant: TenantId,
        actor: UserId,
        user: UserId,
    ) -> Result<Resent, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "resend_invitation",
            tenant = %tenant, actor = %actor, target = %user,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let out = retry!(self, tenant => self.try_resend(tenant, actor, user))?;
            self.after_commit(tenant, &[out.message_id]).await;
            Ok(out)
        })
        .await
    }

    async fn try_resend(
        &self,
        tenant: TenantId,
        actor_id: UserId,
        user_id: UserId,
    ) -> Result<Resent, Error> {
        let state = self.state(tenant).await?;
        let actor = self
            .actor(
                tenant,
                actor_id,
                tenantry_core::Action::Create,
                Some(AuditAction::InvitationResent),
            )
            .await?;
        let audit_target = AuditTarget::User(user_id);
        let target = self
            .managed_user(
                tenant,
                &actor,
                user_id,
                tenantry_core::Action::Create,
                AuditAction::InvitationResent,
            )
            .await?;
        let resends: Vec<_> = self
            .inner
            .store
            .invitations_of(tenant, user_id)
            .await?
            .into_iter()
            .filter(|i| i.kind == InvitationKind::Resend)
            .map(|i| i.created_at)
            .collect();
        let (token, hash) = self.new_token(tenant)?;
        let template = self.template_of(tenant, &target).await?;
        let decided = decide::resend(
            self.ctx(&state),
            &actor.acting(),
            &target,
            template.as_ref(),
            &resends,
            hash,
        );
        let change = match decided {
            Ok(c) => c,
            Err(e) => {
                return Err(self
                    .refuse(
                        tenant,
                        actor_id,
                        AuditAction::InvitationResent,
                        audit_target,
                        e,
                    )
                    .await);
            }
        };
        let user = updated_user(&change, user_id).unwrap_or(target);
        let expires = user.invite_expires_at.unwrap_or_else(|| self.now());
        let message = self.message(&state, Some(&actor.user), &user, &token, expires)?;
        let id = message.id;
        self.commit(&change, &[message]).await?;
        Ok(Resent {
            message_id: id,
            accept_link: self.accept_link(&token),
            expires_at: expires,
        })
    }

    /// Accepts an invitation ([invitations (D10)](tenantry_core::Rule::Invitations)) with the address the person signed up with. The user
    /// becomes active and its last login is now. Of concurrent accepts of one token exactly
    /// one succeeds.
    ///
    /// # Errors
    /// [`tenantry_core::Error::InvalidInvitation`] for any expired, used, superseded or
    /// unknown token (one kind, revealing nothing);
    /// [`tenantry_core::Error::InvitationEmailMismatch`] with the attempts left ([accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): each is
    /// counted and audited; the fifth kills the token, which a resend replaces); an invalid
    /// address ([unique email (D3)](tenantry_core::Rule::UniqueEmail)).
    ///
    /// The host's sign-up page takes the token from the link and the address the person
    /// signed up with:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, RuleError};
    ///
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new()).mailer(mailer.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let token = tenantry::token_from_link(&mailer.sent()[0].text).unwrap();
    ///
    /// let wrong = app.accept_invitation(&token, "robert@acme.test").await;
    /// assert!(matches!(wrong, Err(Error::Rule(RuleError::InvitationEmailMismatch { attempts_left: 4 }))));
    /// let bob = app.accept_invitation(&token, "Bob@Acme.test").await?;
    /// assert_eq!(bob.status, Status::Active);
    /// assert!(bob.last_login.is_some());
    ///
    /// // Single use.
    /// let reused = app.accept_invitation(&token, "bob@acme.test").await;
    /// assert!(matches!(reused, Err(Error::Rule(RuleError::InvalidInvitation))));
    /// # Ok(()) }
    /// ```
    pub async fn accept_invitation(&self, token: &str, signup_email: &str) -> Result<User, Error> {
        self.accept_with(token, signup_email, None).await
    }

    /// [`Tenantry::accept_invitation`], attaching the host's identity id of the person
    /// signing up (for example the OpenID Connect subject its sign-in returned) to the user
    /// ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)). The token and the address are checked first; then the
    /// id must not be held by another user of the tenant. Audited with the acceptance
    /// (`Field::Identity` in `InvitationAccepted`).
    ///
    /// # Errors
    /// Those of [`Tenantry::accept_invitation`], then
    /// [`tenantry_core::Error::IdentityTaken`] (nothing changes: the user stays invited and
    /// the token stays live).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry::prelude::*;
    /// use tenantry::IdentityId;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let token = invited.accept_link.token().ok_or("no token")?;
    /// let sub = IdentityId::parse("oidc|bob")?;
    /// let bob = app.accept_invitation_as(&token, "bob@acme.test", sub.clone()).await?;
    /// assert_eq!((bob.status, bob.identity), (Status::Active, Some(sub)));
    /// # Ok(()) }
    /// ```
    pub async fn accept_invitation_as(
        &self,
        token: &str,
        signup_email: &str,
        identity: IdentityId,
    ) -> Result<User, Error> {
        self.accept_with(token, signup_email, Some(&identity)).await
    }

    async fn accept_with(
        &self,
        token: &str,
        signup_email: &str,
        identity: Option<&IdentityId>,
    ) -> Result<User, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "accept_invitation",
            tenant = tracing::field::Empty, actor = "anonymous",
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async {
            let email = Email::parse(signup_email)?;
            let Some(tenant) = token::tenant_of(token) else {
                return Err(Error::Rule(tenantry_core::Error::InvalidInvitation));
            };
            let hash = token::hash(token);
            tracing::Span::current().record("tenant", tracing::field::display(tenant));
            retry!(self, tenant => self.try_accept(tenant, &hash, &email, identity))
        })
        .await
    }

    async fn try_accept(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        email: &Email,
        identity: Option<&IdentityId>,
    ) -> Result<User, Error> {
        let invalid = || Error::Rule(tenantry_core::Error::InvalidInvitation);
        let state = self.inner.store.tenant(tenant).await?.ok_or_else(invalid)?;
        let invitation = self
            .inner
            .store
            .invitation(tenant, hash)
            .await?
            .ok_or_else(invalid)?;
        let user = self
            .inner
            .store
            .user(tenant, invitation.user_id)
            .await?
            .ok_or_else(invalid)?;
        let ctx = self.ctx(&state);
        let taken = self.identity_taken(tenant, identity, user.id).await?;
        let decided = decide::accept_as(ctx, &invitation, &user, email, identity.cloned(), taken);
        let change = match decided {
            Ok(c) => c,
            Err(e @ tenantry_core::Error::InvitationEmailMismatch { .. }) => {
                // D24: the failed attempt is counted (and audited) before it is answered.
                self.commit(&decide::failed_accept(ctx, &invitation, &e), &[])
                    .await?;
                return Err(Error::Rule(e));
            }
            Err(e) => return Err(Error::Rule(e)),
        };
        super::people::commit_identity(self, &change).await?;
        updated_user(&change, user.id).ok_or_else(invalid)
    }

    /// Records a successful sign-in that the host authenticated ([sign-in (D14)](tenantry_core::Rule::SignIn)).
    ///
    /// # Errors
    /// [sign-in (D14)](tenantry_core::Rule::SignIn) for invited and suspended users, [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation) for unknown ones.
    ///
    /// Call it after the host's own authentication succeeded; a refusal means the host
    /// must not let the person in.
    ///
    /// A sign-in is not a change of the tenant ([sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange)): the store
    /// records it in one step that checks the user is still active, outside the tenant's
    /// version, so sign-ins never make admin changes retry, nor the reverse, and a sign-in
    /// racing a suspension or deletion lands wholly before it or is refused. (A custom
    /// store that does not implement [`Store::record_sign_in`](tenantry_store::Store::record_sign_in) records it as an ordinary
    /// change instead.)
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, ManualClock, RuleError};
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-05-04 8:30 UTC));
    /// let app = Tenantry::builder(InMemoryStore::new()).clock(clock.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let ada = app.record_sign_in(tenant, admin).await?;
    /// assert_eq!(ada.last_login, Some(time::macros::datetime!(2026-05-04 8:30 UTC)));
    ///
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// let refused = app.record_sign_in(tenant, bob.id).await;
    /// assert!(matches!(refused, Err(Error::Rule(RuleError::SignInRefused { status: Status::Invited }))));
    /// # Ok(()) }
    /// ```
    pub async fn record_sign_in(&self, tenant: TenantId, user: UserId) -> Result<User, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "record_sign_in",
            tenant = %tenant, actor = %user,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        traced(span, async { retry!(self, self.try_sign_in(tenant, user)) }).await
    }

    /// [sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange): the store
    /// records the sign-in outside the tenant's version, checking the status again in the
    /// same step; a store without [`Store::record_sign_in`] gets an ordinary commit.
    async fn try_sign_in(&self, tenant: TenantId, user_id: UserId) -> Result<User, Error> {
        let state = self.state(tenant).await?;
        let user = self.target(tenant, user_id).await?;
        let ctx = self.ctx(&state);
        let at = ctx.now;
        let change = decide::sign_in(ctx, &user)?;
        if let Some(event) = change.events.first() {
            match self
                .inner
                .store
                .record_sign_in(tenant, user_id, at, event)
                .await?
            {
                SignInOutcome::Recorded(user) => return Ok(user),
                SignInOutcome::NotActive(status) => {
                    return Err(tenantry_core::Error::SignInRefused { status }.into());
                }
                SignInOutcome::NotFound => return Err(tenantry_core::Error::UserNotFound.into()),
                // The store records sign-ins as changes: commit below.
                _ => {}
            }
        }
        self.commit(&change, &[]).await?;
        Ok(updated_user(&change, user_id).unwrap_or(user))
    }
}
