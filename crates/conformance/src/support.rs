//! Helpers shared by the scenarios: a test environment around one [`Tenantry`], scripted
//! randomness, paging helpers, outcome tallies and consistency checks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tenantry_core::{AuditRecord, Counters, MessageId};
use tenantry_service::{
    ActorRef, DeliverySettings, Email, Error, InMemoryMailer, InviteRequest, Invited, MailError,
    Mailer, ManualClock, Message, OsRandom, Permissions, Policy, Random, Resent, Role,
    RoleTemplate, Status, Store, TemplateId, TenantId, Tenantry, User, UserEdit, UserId, UserQuery,
};
use time::OffsetDateTime;
use time::macros::datetime;

/// The instant every scenario's [`ManualClock`] starts at.
pub const START: OffsetDateTime = datetime!(2026-01-05 09:00 UTC);

/// The base URL scenarios configure for accept links.
pub const BASE_URL: &str = "https://app.conformance.test/accept";

/// A randomness source that hands out scripted bytes to the next draws of a given length
/// and OS randomness otherwise; lets scenarios force id or token collisions.
#[derive(Debug, Clone, Default)]
pub struct ScriptedRandom {
    script: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl ScriptedRandom {
    /// The next draw of `bytes.len()` bytes returns `bytes`.
    pub fn push(&self, bytes: &[u8]) {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(bytes.to_vec());
    }

    /// Forgets every scripted draw not yet taken.
    pub fn clear(&self) {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl Random for ScriptedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), String> {
        let scripted = {
            let mut script = self
                .script
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            script
                .iter()
                .position(|b| b.len() == buf.len())
                .and_then(|i| script.remove(i))
        };
        match scripted {
            Some(bytes) => {
                buf.copy_from_slice(&bytes);
                Ok(())
            }
            None => OsRandom.fill(buf),
        }
    }
}

/// A delay every send of an [`Env`]'s mailer waits (real time) before it is delivered, to
/// play a slow or silent mail server ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)). Shared by the clones of one environment.
#[derive(Debug, Clone, Default)]
pub struct MailDelay(Arc<Mutex<Option<std::time::Duration>>>);

impl MailDelay {
    /// Every later send first waits `delay`; `None` sends at once again.
    pub fn set(&self, delay: Option<std::time::Duration>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delay;
    }

    fn get(&self) -> Option<std::time::Duration> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The mail transport of an [`Env`]: an [`InMemoryMailer`] behind a [`MailDelay`]. A send
/// cut off while it waits (a deadline dropping it) delivers nothing and counts no attempt.
#[derive(Debug, Clone)]
struct DelayedMailer {
    inner: InMemoryMailer,
    delay: MailDelay,
}

// `Mailer` is an `async_trait` trait; this is the shape the macro gives its method (the
// conformance crate does not depend on `async-trait` itself).
impl Mailer for DelayedMailer {
    fn send<'life0, 'life1, 'async_trait>(
        &'life0 self,
        message: &'life1 Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), MailError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let Some(delay) = self.delay.get() {
                tokio::time::sleep(delay).await;
            }
            self.inner.send(message).await
        })
    }
}

/// How to set up an [`Env`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The first tenant's seat limit.
    pub user_limit: Option<u32>,
    /// Deliver invitation mail inside the invite call.
    pub inline: bool,
    /// Invitation lifetime and resend limits.
    pub policy: Policy,
    /// The first admin's address.
    pub admin_email: &'static str,
    /// How long an invite or resend waits for its inline delivery ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)).
    pub inline_deadline: time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            user_limit: None,
            inline: true,
            policy: Policy::default(),
            admin_email: "Admin@Acme.test",
            inline_deadline: DeliverySettings::default().inline_deadline,
        }
    }
}

/// A [`Tenantry`] on the store under test with a manual clock, an in-memory mailer, a
/// scripted randomness source and one tenant with its first admin.
#[derive(Debug, Clone)]
pub struct Env {
    /// The service.
    pub app: Tenantry,
    /// Its clock.
    pub clock: ManualClock,
    /// Its mailer.
    pub mailer: InMemoryMailer,
    /// The delay of its mailer's sends (none unless a scenario sets one).
    pub mail_delay: MailDelay,
    /// The accept links the environment's own invite and resend helpers were handed ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)),
    /// by message: the token each carries.
    pub links: Arc<Mutex<HashMap<MessageId, String>>>,
    /// Its randomness source.
    pub random: ScriptedRandom,
    /// The first tenant.
    pub tenant: TenantId,
    /// The first tenant's admin.
    pub admin: UserId,
}

impl Env {
    /// Default options: unlimited seats, inline delivery.
    pub async fn new(store: Arc<dyn Store>) -> Self {
        Self::with(store, Options::default()).await
    }

    /// Builds the environment with `options`.
    pub async fn with(store: Arc<dyn Store>, options: Options) -> Self {
        let clock = ManualClock::new(START);
        let mailer = InMemoryMailer::new();
        let mail_delay = MailDelay::default();
        let random = ScriptedRandom::default();
        let app = Self::service(
            store,
            &clock,
            &mailer,
            &mail_delay,
            &random,
            &options,
            options.inline,
            options.inline_deadline,
        );
        let (tenant, admin) = app
            .create_tenant("Acme", options.user_limit, email(options.admin_email))
            .await
            .expect("create tenant");
        Self {
            app,
            clock,
            mailer,
            mail_delay,
            links: Arc::default(),
            random,
            tenant,
            admin,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn service(
        store: Arc<dyn Store>,
        clock: &ManualClock,
        mailer: &InMemoryMailer,
        mail_delay: &MailDelay,
        random: &ScriptedRandom,
        options: &Options,
        inline: bool,
        inline_deadline: time::Duration,
    ) -> Tenantry {
        Tenantry::builder(store)
            .clock(clock.clone())
            .mailer(DelayedMailer {
                inner: mailer.clone(),
                delay: mail_delay.clone(),
            })
            .random(random.clone())
            .base_url(BASE_URL)
            .policy(options.policy)
            .delivery(DeliverySettings {
                inline,
                inline_deadline,
                ..DeliverySettings::default()
            })
            .build()
            .expect("valid settings")
    }

    /// The same environment (store, clock, mailer, randomness, tenant) seen through a
    /// second service whose inline delivery is `inline`, waiting at most `inline_deadline`
    /// ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)), as when a host restarts with other settings.
    #[must_use]
    pub fn with_delivery(&self, inline: bool, inline_deadline: time::Duration) -> Self {
        let app = Self::service(
            Arc::clone(self.app.store()),
            &self.clock,
            &self.mailer,
            &self.mail_delay,
            &self.random,
            &Options {
                policy: self.app.settings().policy,
                ..Options::default()
            },
            inline,
            inline_deadline,
        );
        Self {
            app,
            ..self.clone()
        }
    }

    /// Another tenant on the same service and store.
    pub async fn other_tenant(&self, name: &str, admin_email: &str) -> (TenantId, UserId) {
        self.app
            .create_tenant(name, None, email(admin_email))
            .await
            .expect("create second tenant")
    }

    /// Invites a plain user (no grants, no template, no CRM) into the first tenant.
    pub async fn invite(&self, address: &str) -> Invited {
        self.invite_as(self.tenant, self.admin, &request(address, Role::User))
            .await
    }

    /// Invites with a full request as `actor` into `tenant`.
    pub async fn invite_as(
        &self,
        tenant: TenantId,
        actor: UserId,
        request: &InviteRequest,
    ) -> Invited {
        let invited = self
            .app
            .invite(tenant, actor, request)
            .await
            .unwrap_or_else(|e| panic!("invite {}: {e:?}", request.email));
        self.remember(invited.message_id, &invited.accept_link);
        invited
    }

    /// Resends `user`'s invitation as the first admin.
    pub async fn resend(&self, user: UserId) -> Resent {
        let resent = self
            .app
            .resend_invitation(self.tenant, self.admin, user)
            .await
            .unwrap_or_else(|e| panic!("resend {user}: {e:?}"));
        self.remember(resent.message_id, &resent.accept_link);
        resent
    }

    /// Records the token of an accept link handed out for message `id` ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the link is
    /// readable only from the call that created it).
    pub fn remember(&self, id: MessageId, link: &tenantry_service::AcceptLink) {
        let token = link.token().expect("D26: the accept link carries a token");
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, token);
    }

    /// The invitation token carried by message `id`: from the link the invite or resend
    /// returned ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)), from the mailer once delivered (both must agree), or else from the
    /// store's record of the undelivered message (whose body the store keeps until it is
    /// sent or has failed for good; the service's outbox reads never show it, [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    pub async fn token(&self, tenant: TenantId, id: MessageId) -> String {
        let linked = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned();
        let mailed = self
            .mailer
            .sent()
            .into_iter()
            .rev()
            .find(|m| m.id == id)
            .map(|m| tenantry_service::token_from_link(&m.text).expect("a token in the sent mail"));
        match (linked, mailed) {
            (Some(l), Some(m)) => {
                assert_eq!(l, m, "D26: the returned link is the one mailed");
                return l;
            }
            (Some(t), None) | (None, Some(t)) => return t,
            (None, None) => {}
        }
        let record = self
            .app
            .store()
            .outbox_message(tenant, id)
            .await
            .expect("outbox read")
            .expect("the message is in the outbox");
        tenantry_service::token_from_link(&record.message.text).expect("a token in the queued mail")
    }

    /// Accepts `invited`'s invitation with its own address.
    pub async fn accept(&self, tenant: TenantId, invited: &Invited) -> User {
        let token = self.token(tenant, invited.message_id).await;
        self.app
            .accept_invitation(&token, invited.user.email.as_str())
            .await
            .unwrap_or_else(|e| panic!("accept {}: {e:?}", invited.user.email))
    }

    /// Invites and accepts a user into the first tenant, as its admin.
    pub async fn active(&self, request: &InviteRequest) -> User {
        let invited = self.invite_as(self.tenant, self.admin, request).await;
        self.accept(self.tenant, &invited).await
    }

    /// Invites and accepts a plain user (no grants) into the first tenant.
    pub async fn active_user(&self, address: &str) -> User {
        self.active(&request(address, Role::User)).await
    }

    /// Invites and accepts an admin into the first tenant.
    pub async fn active_admin(&self, address: &str) -> User {
        self.active(&request(address, Role::Admin)).await
    }

    /// A user row as the host reads it.
    pub async fn user(&self, tenant: TenantId, id: UserId) -> User {
        self.app
            .user(tenant, ActorRef::System, id)
            .await
            .unwrap_or_else(|e| panic!("read user {id}: {e:?}"))
    }

    /// Every user row of `tenant` (read as the host, by email).
    pub async fn users(&self, tenant: TenantId) -> Vec<User> {
        self.collect(
            tenant,
            &UserQuery {
                limit: 500,
                ..UserQuery::default()
            },
        )
        .await
    }

    /// Every row matching `query`, page after page, following the cursors (passed through
    /// their text form, as a host passes them through URLs).
    pub async fn collect(&self, tenant: TenantId, query: &UserQuery) -> Vec<User> {
        let mut out = Vec::new();
        let mut q = query.clone();
        for _ in 0..10_000 {
            let page = self
                .app
                .list_users(tenant, ActorRef::System, &q)
                .await
                .unwrap_or_else(|e| panic!("list_users {q:?}: {e:?}"));
            assert!(
                page.items.len() <= q.limit as usize,
                "D18: a page holds at most its limit"
            );
            if page.next.is_some() {
                assert_eq!(
                    page.items.len(),
                    q.limit as usize,
                    "D18: only the last page may be short"
                );
            }
            out.extend(page.items);
            match page.next {
                Some(c) => {
                    let text = c.to_string();
                    let parsed: tenantry_service::Cursor =
                        text.parse().expect("cursor text round trip");
                    assert_eq!(parsed, c, "D18: cursor text round trip");
                    q.after = Some(parsed);
                }
                None => return out,
            }
        }
        panic!("D18: paging did not end");
    }

    /// The whole audit log of `tenant`.
    pub async fn audit(&self, tenant: TenantId) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        loop {
            let after = out.last().map_or(0, |r| r.seq);
            let page = self
                .app
                .audit_log(tenant, ActorRef::System, after, 500)
                .await
                .expect("audit log");
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// The counters of `tenant`.
    pub async fn counters(&self, tenant: TenantId) -> Counters {
        self.app.tenant(tenant).await.expect("tenant").counters
    }

    /// Asserts the tenant's counters agree with its rows ([last admin (D8)](tenantry_core::Rule::LastAdmin), [seat limit (D9)](tenantry_core::Rule::SeatLimit)) and returns the rows.
    pub async fn assert_consistent(&self, tenant: TenantId) -> Vec<User> {
        let users = self.users(tenant).await;
        let counters = self.counters(tenant).await;
        assert_eq!(
            counters.seats_used as usize,
            users.len(),
            "D9: seats used equals the user rows"
        );
        let active_admins = users.iter().filter(|u| u.is_active_admin()).count();
        assert_eq!(
            counters.active_admins as usize, active_admins,
            "D8: the active-admin counter equals the active admin rows"
        );
        assert!(active_admins >= 1, "D8: at least one active admin");
        let usage = self.app.seat_usage(tenant).await.expect("seat usage");
        assert_eq!(usage.used as usize, users.len(), "D9: reported usage");
        let mut keys: Vec<&str> = users.iter().map(|u| u.email.key()).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(
            before,
            keys.len(),
            "D3: email keys are unique in the tenant"
        );
        users
    }

    /// Creates a role template in the first tenant as its admin.
    pub async fn new_template(
        &self,
        template_name: &str,
        permissions: Permissions,
    ) -> RoleTemplate {
        self.app
            .create_template(self.tenant, self.admin, template_name, permissions)
            .await
            .unwrap_or_else(|e| panic!("create template {template_name}: {e:?}"))
    }

    /// Edits a user of the first tenant as its admin.
    pub async fn edit(&self, user: UserId, edit: &UserEdit) -> User {
        self.app
            .edit_user(self.tenant, self.admin, user, edit)
            .await
            .unwrap_or_else(|e| panic!("edit {user}: {e:?}"))
    }

    /// The number of outbox messages of `tenant` (any state).
    pub async fn outbox_len(&self, tenant: TenantId) -> usize {
        self.app
            .outbox(tenant, false, 10_000)
            .await
            .expect("outbox")
            .len()
    }

    /// Where anything a host (or the store, for messages no longer pending) can read of
    /// `tenant` still shows `secret` ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)): the service's outbox reads, the store's records
    /// of messages sent or failed for good, the audit log, the user table and single rows,
    /// template, expired-invitation and inactive-user lists, attributions, the tenant, and
    /// the stored invitations (hashes only). Each is searched in its `Debug` text and, where
    /// it has one, its JSON. Empty when nothing shows it.
    pub async fn secret_shown(&self, tenant: TenantId, secret: &str) -> Vec<String> {
        // A macro, not a generic function: the crate names no `serde` trait.
        macro_rules! check {
            ($found:expr, $what:expr, $value:expr, $secret:expr $(,)?) => {{
                let value = $value;
                let debug = format!("{value:?}");
                let json = serde_json::to_string(&value).expect("serializable");
                if debug.contains($secret) || json.contains($secret) {
                    $found.push(String::from($what));
                }
            }};
        }
        let mut found = Vec::new();
        let app = &self.app;
        let outbox = app.outbox(tenant, false, 500).await.expect("outbox");
        check!(&mut found, "outbox()", &outbox, secret);
        check!(
            &mut found,
            "outbox(pending only)",
            &app.outbox(tenant, true, 500).await.expect("outbox"),
            secret,
        );
        for r in &outbox {
            let one = app
                .outbox_message(tenant, r.message.id)
                .await
                .expect("outbox_message");
            check!(&mut found, "outbox_message()", &one, secret);
            let stored = self
                .app
                .store()
                .outbox_message(tenant, r.message.id)
                .await
                .expect("store outbox_message")
                .expect("stored");
            if stored.state != tenantry_service::DeliveryState::Pending {
                check!(
                    &mut found,
                    "the store's record of a message sent or failed for good",
                    &stored,
                    secret,
                );
            }
        }
        check!(&mut found, "audit_log()", &self.audit(tenant).await, secret);
        let users = self.users(tenant).await;
        check!(&mut found, "list_users()", &users, secret);
        for u in &users {
            check!(&mut found, "user()", &self.user(tenant, u.id).await, secret);
            check!(
                &mut found,
                "attribution()",
                &app.attribution(tenant, u.id).await.expect("attribution"),
                secret,
            );
            let invitations = app
                .store()
                .invitations_of(tenant, u.id)
                .await
                .expect("invitations_of");
            check!(&mut found, "the stored invitations", &invitations, secret);
        }
        let templates = app
            .templates(tenant, ActorRef::System)
            .await
            .expect("templates");
        check!(&mut found, "templates()", &templates, secret);
        for t in &templates {
            let page = app
                .template_users(tenant, ActorRef::System, t.id, &UserQuery::default())
                .await
                .expect("template_users");
            check!(&mut found, "template_users()", &page.items, secret);
        }
        let expired = app
            .expired_invitations(tenant, ActorRef::System, &UserQuery::default())
            .await
            .expect("expired_invitations");
        check!(&mut found, "expired_invitations()", &expired.items, secret);
        let inactive = app
            .inactive_users(
                tenant,
                ActorRef::System,
                self.clock_now() + time::Duration::days(365),
                &UserQuery::default(),
            )
            .await
            .expect("inactive_users");
        check!(&mut found, "inactive_users()", &inactive.items, secret);
        check!(
            &mut found,
            "tenant()",
            &app.tenant(tenant).await.expect("tenant"),
            secret,
        );
        found
    }

    /// The clock's current time.
    #[must_use]
    pub fn clock_now(&self) -> OffsetDateTime {
        self.app.now()
    }
}

/// Parses an address that is known to be valid.
#[track_caller]
pub fn email(address: &str) -> Email {
    Email::parse(address).unwrap_or_else(|e| panic!("{address:?} should be valid: {e}"))
}

/// An invite request with no grants, no template and no CRM access.
#[track_caller]
pub fn request(address: &str, role: Role) -> InviteRequest {
    InviteRequest {
        email: email(address),
        role,
        template_id: None,
        crm_access: false,
        grants: Permissions::empty(),
    }
}

/// An invite request for a user with grants, template and CRM access.
#[track_caller]
pub fn request_with(
    address: &str,
    grants: Permissions,
    template_id: Option<TemplateId>,
    crm_access: bool,
) -> InviteRequest {
    InviteRequest {
        email: email(address),
        role: Role::User,
        template_id,
        crm_access,
        grants,
    }
}

/// The product-rule error of a result that must have failed with one.
#[track_caller]
pub fn rule<T: Debug>(result: Result<T, Error>) -> tenantry_core::Error {
    match result {
        Ok(v) => panic!("expected a rule error, got Ok({v:?})"),
        Err(Error::Rule(e)) => e,
        Err(e) => panic!("expected a rule error, got {e:?}"),
    }
}

/// Asserts that `result` failed with exactly the product-rule error `expected`.
#[track_caller]
pub fn assert_rule<T: Debug>(result: Result<T, Error>, expected: &tenantry_core::Error) {
    let got = rule(result);
    assert_eq!(&got, expected, "expected {expected:?}, got {got:?}");
}

/// A comparable rendering of a call's result, for "behaves exactly like" checks ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)).
pub fn outcome<T: Debug>(result: &Result<T, Error>) -> String {
    match result {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?}: {e})"),
    }
}

/// Rows with the given status.
#[must_use]
pub fn with_status(users: &[User], status: Status) -> usize {
    users.iter().filter(|u| u.status == status).count()
}

/// An id that no tenant holds.
#[must_use]
pub fn unknown_user() -> UserId {
    UserId::from_uuid(uuid::Uuid::now_v7())
}

/// A template id that no tenant holds.
#[must_use]
pub fn unknown_template() -> TemplateId {
    TemplateId::from_uuid(uuid::Uuid::now_v7())
}

/// The 10 random bytes that rebuild a UUID v7 id with [`UserId::from_parts`] at the same
/// millisecond (version and variant bits are set again, so this is exact).
#[must_use]
pub fn id_random_bytes(id: UserId) -> [u8; 10] {
    let bytes = id.as_uuid().into_bytes();
    let mut out = [0u8; 10];
    out.copy_from_slice(&bytes[6..16]);
    out
}

/// Counts the outcomes of many concurrent calls ([concurrency (D16)](tenantry_core::Rule::Concurrency)).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls that gave up with [`Error::Contention`].
    pub contention: usize,
    /// Every other failure, by its rendering.
    pub refused: BTreeMap<String, usize>,
}

impl Tally {
    /// Counts one result.
    pub fn add<T>(&mut self, result: &Result<T, Error>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(Error::Contention { .. }) => self.contention += 1,
            Err(Error::Rule(e)) => *self.refused.entry(kind_of(e)).or_default() += 1,
            Err(e) => *self.refused.entry(format!("{e:?}")).or_default() += 1,
        }
    }

    /// How many calls were refused with a rule error whose kind (variant name) is `kind`.
    #[must_use]
    pub fn refused(&self, kind: &str) -> usize {
        self.refused.get(kind).copied().unwrap_or(0)
    }

    /// Every call counted.
    #[must_use]
    pub fn total(&self) -> usize {
        self.ok + self.contention + self.refused.values().sum::<usize>()
    }
}

/// The variant name of a rule error (`"SeatLimitReached"`).
#[must_use]
pub fn kind_of(error: &tenantry_core::Error) -> String {
    let text = format!("{error:?}");
    text.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}
