//! The use cases: each reads a snapshot, decides with `tenantry_core`, and commits only if
//! the tenant's version is unchanged, retrying a bounded number of times (D16).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tenantry_core::decide::{
    self, Acting, BulkInvite, BulkOutcome, Ctx, InviteRequest, NewInvite, TemplateDeletion,
    TemplateEdit, UserEdit,
};
use tenantry_core::{
    ActorRef, AuditAction, AuditRecord, AuditTarget, Category, Change, Decision, Email, Field,
    FieldChange, InvitationKind, MessageId, Permission, Permissions, Request, RoleTemplate,
    SeatUsage, TemplateId, TemplateName, Tenant, TenantId, TenantState, TokenHash, Tombstone, User,
    UserId, Value, Write,
};
use tenantry_mail::Message;
use tenantry_store::{Constraint, Page, StoreError, UserQuery};

use crate::error::QueryError;
use crate::{Error, Tenantry, token};

/// An invitation's accept link: a secret (D26). It is handed out once, in the result of the
/// invite or resend that created it, so that a host can offer "copy invite link"; no read
/// returns it afterwards. `Debug` does not show it, so it never reaches a log by accident.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tenantry::Error> {
/// use tenantry::prelude::*;
/// let app = Tenantry::builder(InMemoryStore::new()).build()?;
/// let (t, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
/// let invited = app.invite(t, admin, &InviteRequest {
///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
///     crm_access: false, grants: Permissions::empty(),
/// }).await?;
/// assert!(invited.accept_link.expose().contains("token="));
/// assert_eq!(format!("{:?}", invited.accept_link), "AcceptLink(<redacted>)");
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AcceptLink(String);

impl AcceptLink {
    /// The link itself, to show to the person who may copy it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The link as an owned string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }

    /// The token the link carries (what [`Tenantry::accept_invitation`] takes).
    #[must_use]
    pub fn token(&self) -> Option<String> {
        crate::token_from_link(&self.0)
    }
}

impl std::fmt::Debug for AcceptLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptLink(<redacted>)")
    }
}

/// The result of an invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invited {
    /// The new user row (status invited).
    pub user: User,
    /// The outbox message carrying the invitation (see [`Tenantry::outbox_message`]).
    pub message_id: MessageId,
    /// The accept link, returned this once (D26).
    pub accept_link: AcceptLink,
}

/// The result of a resend (D10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resent {
    /// The outbox message carrying the new invitation.
    pub message_id: MessageId,
    /// The new accept link, returned this once (D26); every older one is dead.
    pub accept_link: AcceptLink,
    /// When the new link expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

/// What became of one address of a bulk invite (D19), with its accept link when invited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResult {
    /// The address as typed.
    pub input: String,
    /// Its outcome.
    pub outcome: BulkOutcome,
    /// The accept link of an invited address, returned this once (D26).
    pub accept_link: Option<AcceptLink>,
}

/// Who made a record: a current user, or a deleted one's tombstone (D11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Attribution {
    /// The user still exists.
    User(User),
    /// The user was deleted; this is what remains.
    Deleted(Tombstone),
}

/// Retries `$call` while the store reports a version mismatch (D16).
macro_rules! retry {
    ($self:ident, $call:expr) => {{
        let max = $self.inner.settings.max_attempts;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let started = tokio::time::Instant::now();
            match $call.await {
                Err(Error::Store(e)) if e.is_retryable() && attempt < max => {
                    tracing::debug!(target: "tenantry", attempt, error = %e, "retrying on a fresh snapshot");
                    $self.backoff(attempt, started.elapsed()).await;
                }
                Err(Error::Store(e)) if e.is_retryable() => {
                    tracing::warn!(target: "tenantry", attempts = attempt, error = %e, "gave up: the tenant kept changing");
                    tracing::Span::current().record("attempts", attempt);
                    break Err(Error::Contention { attempts: attempt });
                }
                other => {
                    tracing::Span::current().record("attempts", attempt);
                    break other;
                }
            }
        }
    }};
}

struct Actor {
    user: User,
    template: Option<RoleTemplate>,
}

impl Actor {
    fn acting(&self) -> Acting<'_> {
        Acting {
            user: &self.user,
            template: self.template.as_ref(),
        }
    }
}

impl Tenantry {
    /// Waits before retry `attempt` of a call whose last try took `took`: a random time up
    /// to `took × 2^(attempt-1)` (at least 0.5 ms, at most 30 s). Scaling with the time a
    /// try takes spreads many callers of one tenant over as long as the store needs to serve
    /// them; a fixed millisecond-scale backoff lets thousands of callers retry in lockstep,
    /// each wave taking as long as the whole queue and committing one change (a livelock).
    async fn backoff(&self, attempt: u32, took: std::time::Duration) {
        let mut b = [0u8; 4];
        let unit = if self.inner.random.fill(&mut b).is_ok() {
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
        } else {
            0.5
        };
        let window = took
            .max(std::time::Duration::from_micros(500))
            .saturating_mul(1 << attempt.saturating_sub(1).min(6))
            .min(std::time::Duration::from_secs(30));
        tokio::time::sleep(window.mul_f64(unit)).await;
    }

    fn random_bytes<const N: usize>(&self) -> Result<[u8; N], Error> {
        let mut buf = [0u8; N];
        self.inner
            .random
            .fill(&mut buf)
            .map_err(Error::Randomness)?;
        Ok(buf)
    }

    fn unix_millis(&self) -> u64 {
        u64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    fn new_user_id(&self) -> Result<UserId, Error> {
        Ok(UserId::from_parts(self.unix_millis(), self.random_bytes()?))
    }

    fn new_template_id(&self) -> Result<TemplateId, Error> {
        Ok(TemplateId::from_parts(
            self.unix_millis(),
            self.random_bytes()?,
        ))
    }

    fn new_message_id(&self) -> Result<MessageId, Error> {
        Ok(MessageId::from_parts(
            self.unix_millis(),
            self.random_bytes()?,
        ))
    }

    fn new_token(&self, tenant: TenantId) -> Result<(String, TokenHash), Error> {
        let random = self.random_bytes::<{ token::TOKEN_RANDOM_BYTES }>()?;
        let text = token::format(tenant, &random);
        let hash = token::hash(&text);
        Ok((text, hash))
    }

    fn accept_link(&self, token: &str) -> AcceptLink {
        let base = &self.inner.settings.base_url;
        let sep = if base.contains('?') { '&' } else { '?' };
        AcceptLink(format!("{base}{sep}token={token}"))
    }

    fn message(
        &self,
        state: &TenantState,
        inviter: Option<&User>,
        user: &User,
        token: &str,
        expires_at: time::OffsetDateTime,
    ) -> Result<Message, Error> {
        let rendered = self.inner.renderer.render(&tenantry_mail::Invitation {
            tenant_name: state.tenant.name.clone(),
            inviter: inviter.map(|u| u.email.to_string()),
            to: user.email.to_string(),
            accept_url: self.accept_link(token).into_string(),
            expires_at,
        });
        Ok(Message {
            id: self.new_message_id()?,
            tenant_id: state.tenant.id,
            user_id: user.id,
            to: user.email.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        })
    }

    fn ctx<'a>(&'a self, state: &'a TenantState) -> Ctx<'a> {
        Ctx {
            state,
            now: self.now(),
            policy: &self.inner.settings.policy,
        }
    }

    async fn state(&self, tenant: TenantId) -> Result<TenantState, Error> {
        self.inner
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::Rule(tenantry_core::Error::TenantNotFound))
    }

    async fn template_of(
        &self,
        tenant: TenantId,
        user: &User,
    ) -> Result<Option<RoleTemplate>, Error> {
        match user.template_id {
            Some(id) => Ok(self.inner.store.template(tenant, id).await?),
            None => Ok(None),
        }
    }

    /// Loads the acting user; an unknown actor is refused as lacking `needed` (D7, D15).
    async fn actor(
        &self,
        tenant: TenantId,
        id: UserId,
        needed: tenantry_core::Action,
    ) -> Result<Actor, Error> {
        let Some(user) = self.inner.store.user(tenant, id).await? else {
            return Err(Error::Rule(tenantry_core::Error::NotAllowed {
                needed: Permission::new(Category::Users, needed),
            }));
        };
        let template = self.template_of(tenant, &user).await?;
        Ok(Actor { user, template })
    }

    async fn target(&self, tenant: TenantId, id: UserId) -> Result<User, tenantry_core::Error> {
        match self.inner.store.user(tenant, id).await {
            Ok(Some(u)) => Ok(u),
            _ => Err(tenantry_core::Error::UserNotFound),
        }
    }

    /// D7 before D15: an actor without the permission is told so, whether or not the id it
    /// named exists, so it learns nothing about the tenant's ids.
    fn authority_first(
        tenant: TenantId,
        actor: &Actor,
        action: tenantry_core::Action,
        missing: tenantry_core::Error,
    ) -> tenantry_core::Error {
        match actor.acting().require(tenant, action) {
            Err(e) => e,
            Ok(()) => missing,
        }
    }

    /// The user an actor manages: a missing one is refused (D7 before D15) and audited.
    async fn managed_user(
        &self,
        tenant: TenantId,
        actor: &Actor,
        id: UserId,
        needed: tenantry_core::Action,
        action: AuditAction,
    ) -> Result<User, Error> {
        match self.target(tenant, id).await {
            Ok(u) => Ok(u),
            Err(e) => {
                let e = Self::authority_first(tenant, actor, needed, e);
                Err(self
                    .refuse(tenant, actor.user.id, action, AuditTarget::User(id), e)
                    .await)
            }
        }
    }

    /// The template an actor manages: a missing one is refused (D7 before D15) and audited.
    async fn managed_template(
        &self,
        tenant: TenantId,
        actor: &Actor,
        id: TemplateId,
        action: AuditAction,
    ) -> Result<RoleTemplate, Error> {
        if let Some(t) = self.inner.store.template(tenant, id).await? {
            return Ok(t);
        }
        let e = Self::authority_first(
            tenant,
            actor,
            tenantry_core::Action::Manage,
            tenantry_core::Error::TemplateNotFound,
        );
        Err(self
            .refuse(tenant, actor.user.id, action, AuditTarget::Template(id), e)
            .await)
    }

    /// The decision, or its refusal recorded in the audit log (D13) and handed back.
    async fn audited<T>(
        &self,
        tenant: TenantId,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        decided: Result<T, tenantry_core::Error>,
    ) -> Result<T, Error> {
        match decided {
            Ok(v) => Ok(v),
            Err(e) => Err(self.refuse(tenant, actor, action, target, e).await),
        }
    }

    /// Records a refused management attempt (D13) and hands the error back.
    async fn refuse(
        &self,
        tenant: TenantId,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        error: tenantry_core::Error,
    ) -> Error {
        self.refuse_with(tenant, actor, action, target, error, Vec::new())
            .await
    }

    /// As [`Tenantry::refuse`], with what the attempt tried to set (for example the
    /// address of a refused invite).
    async fn refuse_with(
        &self,
        tenant: TenantId,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        error: tenantry_core::Error,
        tried: Vec<FieldChange>,
    ) -> Error {
        let mut event = decide::refused_event(
            tenant,
            ActorRef::User(actor),
            action,
            target,
            self.now(),
            &error,
        );
        event.changes = tried;
        if let Err(e) = self.inner.store.append_audit(&event).await {
            tracing::warn!(error = %e, "could not record a refused attempt in the audit log");
        }
        Error::Rule(error)
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), Error> {
        if change.is_empty() {
            return Ok(());
        }
        self.inner.store.commit(change, outbox).await?;
        Ok(())
    }

    /// D25: delivers inline only the messages this call queued, within the inline
    /// deadline; whatever is not delivered by then (and every older message) is left to the
    /// dispatcher. The deadline bounds the mail server's part only: a send cut off by it is
    /// recorded as a transient failure (retried after the backoff), and a finished send is
    /// always recorded, so a delivered message is never sent again.
    async fn after_commit(&self, tenant: TenantId, queued: &[MessageId]) {
        let delivery = &self.inner.settings.delivery;
        if !delivery.inline || queued.is_empty() {
            return;
        }
        let budget = std::time::Duration::try_from(delivery.inline_deadline)
            .unwrap_or(std::time::Duration::ZERO);
        let deadline = tokio::time::Instant::now() + budget;
        for id in queued {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::info!(
                    target: "tenantry",
                    tenant = %tenant,
                    "inline delivery reached its deadline; the rest is left to the dispatcher"
                );
                return;
            }
            let now = self.now();
            let lease = now.saturating_add(delivery.lease);
            match self
                .inner
                .store
                .claim_message(tenant, *id, now, lease)
                .await
            {
                Ok(Some(record)) => {
                    if let Err(e) = self.deliver(tenant, &record, Some(left)).await {
                        tracing::warn!(target: "tenantry", error = %e, "inline delivery could not record its result; the message stays pending");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "tenantry", error = %e, "inline delivery could not claim its message; it stays pending");
                }
            }
        }
    }

    // ---------------------------------------------------------------- tenants and seats

    /// Creates a tenant with its first admin (active). Returns the tenant and admin ids.
    ///
    /// # Errors
    /// [`tenantry_core::Error::InvalidTenantName`] (D22),
    /// [`tenantry_core::Error::FirstSeatRequired`] for a limit of 0 (D23), store failures;
    /// only a colliding id is reported as [`tenantry_core::Error::TenantExists`].
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
    /// D15 when it does not exist.
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantState, Error> {
        self.state(tenant).await
    }

    /// Sets the seat limit (D9), as the host's billing does; `None` is unlimited. It may be
    /// set below current usage.
    ///
    /// # Errors
    /// D15, store failures, [`Error::Contention`].
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
            retry!(self, self.try_set_user_limit(tenant, limit))
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

    /// Seat usage: used, limit, remaining, at limit (D9).
    ///
    /// # Errors
    /// D15, store failures.
    pub async fn seat_usage(&self, tenant: TenantId) -> Result<SeatUsage, Error> {
        Ok(self.state(tenant).await?.seat_usage())
    }

    // ---------------------------------------------------------------- invitations

    /// Invites a user (D3, D5, D7, D9, D10). The invitation mail is queued in the same
    /// commit and delivered afterwards (D17).
    ///
    /// # Errors
    /// The refusing rule (D3, D7, D9, D15) or store failures. Refusals are audited (D13).
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
            let out = retry!(self, self.try_invite(tenant, actor, request))?;
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
        let state = self.state(tenant).await?;
        let actor = self
            .actor(tenant, actor_id, tenantry_core::Action::Create)
            .await?;
        let template = match request.template_id {
            Some(id) => self.inner.store.template(tenant, id).await?,
            None => None,
        };
        let taken = self
            .inner
            .store
            .user_by_email(tenant, request.email.key())
            .await?
            .is_some();
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

    /// Invites many addresses at once (D19): one outcome per address, with the accept link
    /// of each invited one (D26); the seat limit holds exactly.
    ///
    /// # Errors
    /// D7 or D15 for the call as a whole (audited), store failures.
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
            let (out, queued) = retry!(self, self.try_invite_many(tenant, actor, request))?;
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
            .actor(tenant, actor_id, tenantry_core::Action::Create)
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

    /// Sends an invitation again (D10): a fresh token, older ones revoked, same user.
    /// Returns the new message's id and the new accept link (D26: this once).
    ///
    /// # Errors
    /// D7, D21 (a non-admin resending to a user who holds more than it), D10 (not invited,
    /// rate limited with the time of the next allowed resend), D15.
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
            let out = retry!(self, self.try_resend(tenant, actor, user))?;
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
            .actor(tenant, actor_id, tenantry_core::Action::Create)
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

    /// Accepts an invitation (D10) with the address the person signed up with. The user
    /// becomes active and its last login is now. Of concurrent accepts of one token exactly
    /// one succeeds.
    ///
    /// # Errors
    /// [`tenantry_core::Error::InvalidInvitation`] for any expired, used, superseded or
    /// unknown token (one kind, revealing nothing);
    /// [`tenantry_core::Error::InvitationEmailMismatch`] with the attempts left (D24: each is
    /// counted and audited; the fifth kills the token, which a resend replaces); an invalid
    /// address (D3).
    pub async fn accept_invitation(&self, token: &str, signup_email: &str) -> Result<User, Error> {
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
            retry!(self, self.try_accept(tenant, &hash, &email))
        })
        .await
    }

    async fn try_accept(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        email: &Email,
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
        let change = match decide::accept(ctx, &invitation, &user, email) {
            Ok(c) => c,
            Err(e @ tenantry_core::Error::InvitationEmailMismatch { .. }) => {
                // D24: the failed attempt is counted (and audited) before it is answered.
                self.commit(&decide::failed_accept(ctx, &invitation, &e), &[])
                    .await?;
                return Err(Error::Rule(e));
            }
            Err(e) => return Err(Error::Rule(e)),
        };
        self.commit(&change, &[]).await?;
        updated_user(&change, user.id).ok_or_else(invalid)
    }

    /// Records a successful sign-in that the host authenticated (D14).
    ///
    /// # Errors
    /// D14 for invited and suspended users, D15 for unknown ones.
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

    async fn try_sign_in(&self, tenant: TenantId, user_id: UserId) -> Result<User, Error> {
        let state = self.state(tenant).await?;
        let user = self.target(tenant, user_id).await?;
        let change = decide::sign_in(self.ctx(&state), &user)?;
        self.commit(&change, &[]).await?;
        Ok(updated_user(&change, user_id).unwrap_or(user))
    }

    // ---------------------------------------------------------------- edit and delete

    /// Edits a user's email, role, status, template, CRM access or grants (D2, D3, D5, D7,
    /// D8). Returns the row as saved.
    ///
    /// # Errors
    /// The refusing rule; refusals are audited (D13).
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

    /// Deletes a user for good (D11). Returns the tombstone that remains.
    ///
    /// # Errors
    /// D7, D21 (a non-admin deleting a user who holds more than it), D8 (last active admin),
    /// D15; refusals are audited.
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

    /// Who made a record: the user, or its tombstone once deleted (D11).
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

    // ---------------------------------------------------------------- reading

    async fn require_view(&self, tenant: TenantId, viewer: ActorRef) -> Result<(), Error> {
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

    /// A user by id, as `viewer` may see it (D7: admin or `users:view`; the host itself as
    /// [`ActorRef::System`]).
    ///
    /// # Errors
    /// D7, D15 ([`tenantry_core::Error::UserNotFound`]).
    pub async fn user(
        &self,
        tenant: TenantId,
        viewer: ActorRef,
        user: UserId,
    ) -> Result<User, Error> {
        self.require_view(tenant, viewer).await?;
        Ok(self.target(tenant, user).await?)
    }

    /// One page of the user table (D18), for a viewer with admin or `users:view` (D7).
    ///
    /// # Errors
    /// D7, D18 (page size, cursor), D15, store failures.
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

    /// Users who have not signed in since `since`, or never (D14).
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

    /// Invited users whose invitation has expired (D20).
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

    /// Deletes every expired invitation in one call, freeing their seats (D20). Returns the
    /// deleted ids.
    ///
    /// # Errors
    /// D7 (needs `users:delete`), D15, store failures.
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

    /// The audit log from `after` (exclusive), oldest first (D13). Pass the last `seq`
    /// read to continue: a feed read this way misses and repeats nothing.
    ///
    /// # Errors
    /// D7 for a viewer without `users:view`, store failures.
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

    // ---------------------------------------------------------------- authorization

    /// Decides a request for a user on current state (D6): the user's row and its
    /// template's permissions are read now, so edits apply at the very next check. An
    /// unknown or deleted user, or one of another tenant, is denied.
    ///
    /// # Errors
    /// Store failures only; every answer is a [`Decision`].
    pub async fn authorize(
        &self,
        tenant: TenantId,
        user: UserId,
        request: Request,
    ) -> Result<Decision, Error> {
        let Some(subject) = self.inner.store.subject(tenant, user).await? else {
            return Ok(Decision::unknown_user());
        };
        Ok(tenantry_core::authorize_subject(&subject, request))
    }

    /// What a user holds now (D6), with its CRM access.
    ///
    /// # Errors
    /// D15 for an unknown user, store failures.
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

    // ---------------------------------------------------------------- role templates

    /// Every role template of the tenant, by name (D12), for a viewer with `users:view`.
    ///
    /// # Errors
    /// D7, store failures.
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
    /// D7, D15 ([`tenantry_core::Error::TemplateNotFound`]).
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

    /// The users that reference a template, page by page (D12).
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

    /// Creates a role template (D12).
    ///
    /// # Errors
    /// D7 (`users:manage`, escalation), D12 (name), store failures; refusals are audited.
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

    /// Renames a template or changes its permissions (D12); every referencing user holds
    /// the new permissions at its next check (D6).
    ///
    /// # Errors
    /// D7, D12, D15; refusals are audited.
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

    /// Deletes a role template (D12). With [`TemplateDeletion::Refuse`] a referenced
    /// template is kept and the count of referencing users returned in the error; `Detach`
    /// clears their reference; `Reassign` moves them to another template.
    ///
    /// # Errors
    /// D12 ([`tenantry_core::Error::TemplateInUse`]), D7, D15; refusals are audited.
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

/// Runs one use case in its span and records how it ended: `outcome` (`ok` or the error's
/// kind) and `rule` (the refusing rule), then an event with the same fields. Spans and
/// events carry ids, counts and rule names only: never a token, a link, an address or a
/// message body (D26).
pub(crate) async fn traced<T>(
    span: tracing::Span,
    body: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let out = tracing::Instrument::instrument(body, span.clone()).await;
    let _entered = span.enter();
    match &out {
        Ok(_) => {
            span.record("outcome", "ok");
            tracing::debug!(target: "tenantry", outcome = "ok", "use case done");
        }
        Err(e) => {
            let kind = e.kind().as_str();
            span.record("outcome", kind);
            match e.rule() {
                Some(rule) => {
                    span.record("rule", tracing::field::display(rule));
                    tracing::info!(target: "tenantry", outcome = kind, rule = %rule, "use case refused");
                }
                None => {
                    tracing::warn!(target: "tenantry", outcome = kind, error = %e, "use case failed");
                }
            }
        }
    }
    out
}

fn inserted_user(change: &Change, id: UserId) -> Result<User, Error> {
    change
        .writes
        .iter()
        .find_map(|w| match w {
            Write::InsertUser(u) if u.id == id => Some(u.clone()),
            _ => None,
        })
        .ok_or(Error::Rule(tenantry_core::Error::UserNotFound))
}

fn updated_user(change: &Change, id: UserId) -> Option<User> {
    change.writes.iter().rev().find_map(|w| match w {
        Write::UpdateUser(u) if u.id == id => Some(u.clone()),
        _ => None,
    })
}

fn saved_template(change: &Change, id: TemplateId) -> Result<RoleTemplate, Error> {
    change
        .writes
        .iter()
        .find_map(|w| match w {
            Write::InsertTemplate(t) | Write::UpdateTemplate(t) if t.id == id => Some(t.clone()),
            _ => None,
        })
        .ok_or(Error::Rule(tenantry_core::Error::TemplateNotFound))
}
