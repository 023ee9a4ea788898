//! The use cases: each reads a snapshot, decides with `tenantry_core`, and commits only if
//! the tenant's version is unchanged, retrying a bounded number of times ([concurrency (D16)](tenantry_core::Rule::Concurrency)).

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
use tenantry_store::{
    Constraint, Page, SignInOutcome, Snapshot, SnapshotRequest, Store, StoreError, TenantCursor,
    UserQuery,
};

use crate::error::QueryError;
use crate::{Error, Tenantry, token};

/// An invitation's accept link: a secret ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)). It is handed out once, in the result of the
/// invite or resend that created it, so that a host can offer "copy invite link"; no read
/// returns it afterwards. `Debug` does not show it, so it never reaches a log by accident.
///
/// ```
/// # use tenantry_service as tenantry;
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
    /// The accept link, returned this once ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    pub accept_link: AcceptLink,
}

/// The result of a resend ([invitations (D10)](tenantry_core::Rule::Invitations)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resent {
    /// The outbox message carrying the new invitation.
    pub message_id: MessageId,
    /// The new accept link, returned this once ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)); every older one is dead.
    pub accept_link: AcceptLink,
    /// When the new link expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

/// What became of one address of a bulk invite ([bulk invite (D19)](tenantry_core::Rule::BulkInvite)), with its accept link when invited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResult {
    /// The address as typed.
    pub input: String,
    /// Its outcome.
    pub outcome: BulkOutcome,
    /// The accept link of an invited address, returned this once ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    pub accept_link: Option<AcceptLink>,
}

/// Who made a record: a current user, or a deleted one's tombstone ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Attribution {
    /// The user still exists.
    User(User),
    /// The user was deleted; this is what remains.
    Deleted(Tombstone),
}

/// Retries `$call` while the store reports a version mismatch ([concurrency (D16)](tenantry_core::Rule::Concurrency)).
/// With `$tenant =>`, the whole of it runs in its turn at the tenant's gate (see `gate`), so
/// the service's own callers do not decide on a version another of them is about to move.
macro_rules! retry {
    ($self:ident, $tenant:expr => $call:expr) => {{
        let _pass = $self.inner.gates.enter($tenant).await;
        retry!($self, $call)
    }};
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
            date: None,
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

    /// Loads the acting user; an unknown actor is refused as lacking `needed` ([management authority (D7)](tenantry_core::Rule::ManagementAuthority), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)).
    /// The acting user, or `NotAllowed` when `id` is not a user of `tenant` (the same
    /// answer whether or not the id or the tenant exists). With `audit`, such a refusal of a
    /// management attempt is recorded as sampled by [`crate::foreign`] ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    async fn actor(
        &self,
        tenant: TenantId,
        id: UserId,
        needed: tenantry_core::Action,
        audit: Option<AuditAction>,
    ) -> Result<Actor, Error> {
        let user = self.inner.store.user(tenant, id).await?;
        let template = match &user {
            Some(u) => self.template_of(tenant, u).await?,
            None => None,
        };
        self.actor_of(tenant, id, user, template, needed, audit)
            .await
    }

    /// [`Self::actor`] on rows already read (a [`Snapshot`]'s actor and its template).
    async fn actor_of(
        &self,
        tenant: TenantId,
        id: UserId,
        user: Option<User>,
        template: Option<RoleTemplate>,
        needed: tenantry_core::Action,
        audit: Option<AuditAction>,
    ) -> Result<Actor, Error> {
        let Some(user) = user else {
            let error = tenantry_core::Error::NotAllowed {
                needed: Permission::new(Category::Users, needed),
            };
            if let Some(action) = audit {
                self.refuse_foreign(tenant, id, action, &error).await;
            }
            return Err(Error::Rule(error));
        };
        Ok(Actor { user, template })
    }

    /// The rows a use case decides on, in one read of the store ([`Store::snapshot`]); the
    /// tenant must exist ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)).
    async fn snapshot(
        &self,
        tenant: TenantId,
        request: &SnapshotRequest,
    ) -> Result<(TenantState, Snapshot), Error> {
        let mut snap = self.inner.store.snapshot(tenant, request).await?;
        let state = snap
            .state
            .take()
            .ok_or(Error::Rule(tenantry_core::Error::TenantNotFound))?;
        Ok((state, snap))
    }

    async fn target(&self, tenant: TenantId, id: UserId) -> Result<User, tenantry_core::Error> {
        match self.inner.store.user(tenant, id).await {
            Ok(Some(u)) => Ok(u),
            _ => Err(tenantry_core::Error::UserNotFound),
        }
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) before [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): an actor without the permission is told so, whether or not the id it
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

    /// The user an actor manages: a missing one is refused ([management authority (D7)](tenantry_core::Rule::ManagementAuthority) before [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)) and audited.
    async fn managed_user(
        &self,
        tenant: TenantId,
        actor: &Actor,
        id: UserId,
        needed: tenantry_core::Action,
        action: AuditAction,
    ) -> Result<User, Error> {
        let found = self.target(tenant, id).await.ok();
        self.managed_user_of(tenant, actor, id, found, needed, action)
            .await
    }

    /// [`Self::managed_user`] on the row already read (a [`Snapshot`]'s target).
    async fn managed_user_of(
        &self,
        tenant: TenantId,
        actor: &Actor,
        id: UserId,
        found: Option<User>,
        needed: tenantry_core::Action,
        action: AuditAction,
    ) -> Result<User, Error> {
        match found.ok_or(tenantry_core::Error::UserNotFound) {
            Ok(u) => Ok(u),
            Err(e) => {
                let e = Self::authority_first(tenant, actor, needed, e);
                Err(self
                    .refuse(tenant, actor.user.id, action, AuditTarget::User(id), e)
                    .await)
            }
        }
    }

    /// The template an actor manages: a missing one is refused ([management authority (D7)](tenantry_core::Rule::ManagementAuthority) before [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)) and audited.
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

    /// The decision, or its refusal recorded in the audit log ([audit log (D13)](tenantry_core::Rule::AuditLog)) and handed back.
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

    /// Records a refused management attempt ([audit log (D13)](tenantry_core::Rule::AuditLog)) and hands the error back.
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

    /// Records a refused attempt by `actor`, which is not a user of `tenant`, the way the
    /// service records its own ([audit log (D13)](tenantry_core::Rule::AuditLog)): sampled, at
    /// most one event per tenant per minute, the next recorded one carrying how many were
    /// only counted (`Field::UnrecordedRefusals`), so that naming any tenant cannot grow its
    /// log without bound. Nothing is recorded for a tenant that does not exist. For adapters
    /// that guard management actions of their own (the webhook admin of tenantry-webhooks).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{AuditAction, RuleError, UserId};
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, _) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let before = app.audit_log(tenant, ActorRef::System, 0, 100).await?.len();
    /// let stranger = UserId::from_parts(1, [7; 10]);
    /// for _ in 0..100 {
    ///     app.record_foreign_refusal(tenant, stranger, AuditAction::UserInvited, &RuleError::AdminOnly).await;
    /// }
    /// let log = app.audit_log(tenant, ActorRef::System, 0, 100).await?;
    /// assert_eq!(log.len(), before + 1, "one recorded, 99 counted for the next one");
    /// # Ok(()) }
    /// ```
    pub async fn record_foreign_refusal(
        &self,
        tenant: TenantId,
        actor: UserId,
        action: AuditAction,
        error: &tenantry_core::Error,
    ) {
        self.refuse_foreign(tenant, actor, action, error).await;
    }

    /// Records (sampled, see [`crate::foreign`]) a refused attempt by `actor`, which is not a
    /// user of `tenant`. Nothing is recorded for a tenant that does not exist.
    async fn refuse_foreign(
        &self,
        tenant: TenantId,
        actor: UserId,
        action: AuditAction,
        error: &tenantry_core::Error,
    ) {
        let now = self.now();
        let crate::foreign::Sample::Record { unrecorded } = self.inner.foreign.sample(tenant, now)
        else {
            return;
        };
        match self.inner.store.tenant(tenant).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a refused attempt in the audit log");
                return;
            }
        }
        let mut event = decide::refused_event(
            tenant,
            ActorRef::User(actor),
            action,
            AuditTarget::Tenant,
            now,
            error,
        );
        event.changes = vec![FieldChange {
            field: tenantry_core::Field::UnrecordedRefusals,
            before: tenantry_core::Value::None,
            after: tenantry_core::Value::Number(unrecorded),
        }];
        if let Err(e) = self.inner.store.append_audit(&event).await {
            tracing::warn!(error = %e, "could not record a refused attempt in the audit log");
        }
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), Error> {
        if change.is_empty() {
            return Ok(());
        }
        self.inner.store.commit(change, outbox).await?;
        Ok(())
    }

    /// [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest): delivers inline only the messages this call queued, within the inline
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
}

mod authorization;
mod invitations;
mod people;
mod reading;
mod templates;
mod tenants;
mod users;

/// Runs one use case in its span and records how it ended: `outcome` (`ok` or the error's
/// kind) and `rule` (the refusing rule), then an event with the same fields. Spans and
/// events carry ids, counts and rule names only: never a token, a link, an address or a
/// message body ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
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

/// A page of at most `limit` from `items`, read with one more than the page (so a full
/// page knows whether another follows): the cursor after its last item when one does.
fn cut_page<T, C>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Page<T, C> {
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > keep;
    items.truncate(keep);
    let next = if more { items.last().map(cursor) } else { None };
    Page { items, next }
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
