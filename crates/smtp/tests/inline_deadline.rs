//! D25 ("mail never holds a request") through the real `Tenantry` service and the real
//! `SmtpMailer`, against a "black hole" mail server: a TCP listener that accepts and never
//! writes a byte, not even the greeting. The mailer's own time-out is left long (30 s), so
//! only the inline deadline (1 s here) can end the wait.
//!
//! The deadline bounds the mail server's part only. A send it cuts off is recorded as a
//! transient failure ("inline delivery stopped waiting after N ms; left to the
//! dispatcher"): the message stays pending with one attempt counted and is due again after
//! the first backoff (30 s), not after the claim's lease. A send that finished is always
//! recorded, even past the deadline, so a delivered message is never sent again.
//!
//! Each test checks that the use case returns within the deadline (plus a margin for a
//! loaded machine, and far below the mailer's time-out), that it touched only the messages
//! it queued itself, and then lets the server answer — the black hole is replaced by a real
//! aiosmtpd on the same port — and checks that the background dispatcher delivers every
//! message exactly once, the cut-off ones only after their backoff (at their second
//! attempt).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use support::{BASE_URL, BlackHole, ServerTls, SmtpServer, T0, part};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, Subject, TemplateId,
    TenantState, TokenHash, Tombstone, User,
};
use tenantry_service::prelude::*;
use tenantry_service::{
    DeliverySettings, DeliveryState, Mailer, ManualClock, Message, OutboxRecord, Page, Store,
    StoreError, TenantId, UserId,
};
use tenantry_smtp::SmtpMailer;
use tenantry_store::DeliveryUpdate;

/// The inline deadline under test.
const DEADLINE: Duration = Duration::from_secs(1);
/// What a loaded machine may add to it.
const MARGIN: Duration = Duration::from_millis(1500);
/// The mailer's own time-out: long, so that only the deadline can end the wait.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// What the reason of a send cut off by the deadline says.
const CUT_OFF: &str = "inline delivery stopped waiting";

fn lease() -> time::Duration {
    DeliverySettings::default().lease
}

/// The wait before a message's second attempt (`backoff_after(0)`): a cut-off send is
/// due again this long after it was recorded.
fn backoff() -> time::Duration {
    DeliverySettings::default().backoff
}

fn request(email: &str) -> InviteRequest {
    InviteRequest {
        email: Email::parse(email).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::CONVERSATIONS_VIEW,
    }
}

/// Runs `fut`, returns its output and how long it took.
async fn timed<F: Future>(fut: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = fut.await;
    (out, started.elapsed())
}

/// The call waited on the silent server (at least the deadline) and no longer than the
/// deadline plus the margin — far less than the mailer's own time-out.
fn assert_within_deadline(what: &str, elapsed: Duration) {
    println!("D25 {what}: returned after {elapsed:?} (deadline {DEADLINE:?})");
    assert!(
        elapsed + Duration::from_millis(50) >= DEADLINE,
        "{what} returned after {elapsed:?}: it did not wait for the mail at all"
    );
    assert!(
        elapsed <= DEADLINE + MARGIN,
        "{what} took {elapsed:?}: the inline deadline is {DEADLINE:?} (+{MARGIN:?} margin)"
    );
    assert!(elapsed < SMTP_TIMEOUT / 4);
}

/// A send cut off by the deadline at `now` (the manual clock does not move during the
/// call), recorded as a transient failure: pending, one attempt, the reason kept, due
/// again after the first backoff (not the claim's lease), the bodies kept for the retry.
fn assert_cut_off(r: &OutboxRecord, now: time::OffsetDateTime) {
    assert_eq!(r.state, DeliveryState::Pending, "{r:?}");
    assert_eq!(r.attempts, 1, "a cut-off send is a recorded attempt: {r:?}");
    assert!(
        r.last_error.as_deref().is_some_and(|e| e.contains(CUT_OFF)),
        "the reason says the inline delivery stopped waiting: {r:?}"
    );
    assert_eq!(
        r.next_attempt_at,
        now + backoff(),
        "due again after the first backoff, not the lease: {r:?}"
    );
    assert!(
        !r.message.text.is_empty() && !r.message.html.is_empty(),
        "pending: the store keeps the bodies: {r:?}"
    );
}

/// A message the call did not claim: as queued, due since `queued_at`.
fn assert_unclaimed(r: &OutboxRecord, queued_at: time::OffsetDateTime) {
    assert_eq!(r.state, DeliveryState::Pending, "{r:?}");
    assert_eq!(r.attempts, 0, "never tried: {r:?}");
    assert_eq!(r.last_error, None, "{r:?}");
    assert_eq!(r.next_attempt_at, queued_at, "not claimed: {r:?}");
}

// ------------------------------------------------------------------------ a slow store

/// The in-memory store, with [`Store::record_delivery`] taking `delay` before it writes:
/// recording a finished send ends past the inline deadline.
#[derive(Debug)]
struct SlowRecording {
    inner: tenantry_service::InMemoryStore,
    delay: Duration,
    /// Calls of `record_delivery` so far.
    recorded: AtomicUsize,
}

#[async_trait]
impl Store for SlowRecording {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.inner.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(tenant, id).await
    }
    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        self.inner.subject(tenant, id).await
    }
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_email(tenant, key).await
    }
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.inner.template(tenant, id).await
    }
    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.inner.template_by_name(tenant, key).await
    }
    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        self.inner.templates(tenant).await
    }
    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        self.inner.count_template_users(tenant, template).await
    }
    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.inner.invitation(tenant, hash).await
    }
    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.inner.invitations_of(tenant, user).await
    }
    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        self.inner.list_users(tenant, query).await
    }
    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.inner.tombstone(tenant, user).await
    }
    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit(tenant, after, limit).await
    }
    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.inner.commit(change, outbox).await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.inner.append_audit(event).await
    }
    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.outbox(tenant, pending_only, limit).await
    }
    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.inner.outbox_message(tenant, id).await
    }
    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: time::OffsetDateTime,
        lease_until: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner
            .claim_due_mail(tenant, now, lease_until, limit)
            .await
    }
    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: time::OffsetDateTime,
        lease_until: time::OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.inner.claim_message(tenant, id, now, lease_until).await
    }
    /// Slow: `delay`, then the write.
    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.recorded.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.record_delivery(tenant, id, update).await
    }
    async fn tenants_with_due_mail(
        &self,
        now: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.inner.tenants_with_due_mail(now, limit).await
    }
}

// ------------------------------------------------------------------------ the rig

/// A tenant on a shared store (in-memory unless told otherwise), reached by two services
/// with one manual clock and one SMTP mailer pointed at a black hole: `app` delivers inline
/// within [`DEADLINE`], `queue` never delivers inline (it only queues, for "older"
/// messages). `server` is a real aiosmtpd reserved on the black hole's port, started by
/// [`Rig::answer`].
struct Rig {
    hole: BlackHole,
    server: SmtpServer,
    clock: ManualClock,
    store: Arc<dyn Store>,
    app: Tenantry,
    queue: Tenantry,
    t: TenantId,
    admin: UserId,
}

impl Rig {
    async fn new() -> Self {
        Self::with_store(Arc::new(tenantry_service::InMemoryStore::new())).await
    }

    async fn with_store(store: Arc<dyn Store>) -> Self {
        // Fail (never skip) without aiosmtpd, before anything else.
        support::python();
        let server = SmtpServer::reserve(ServerTls::None);
        let hole = BlackHole::bind(server.port).await;
        let config = server.config().with_timeout(SMTP_TIMEOUT);
        let mailer: Arc<dyn Mailer> = Arc::new(SmtpMailer::new(config).unwrap());
        let clock = ManualClock::new(T0);
        let build = |delivery: DeliverySettings| {
            Tenantry::builder(Arc::clone(&store))
                .mailer(Arc::clone(&mailer))
                .clock(clock.clone())
                .base_url(BASE_URL)
                .delivery(delivery)
                .build()
                .unwrap()
        };
        let app = build(DeliverySettings {
            inline_deadline: time::Duration::try_from(DEADLINE).unwrap(),
            ..DeliverySettings::default()
        });
        let queue = build(DeliverySettings {
            inline: false,
            ..DeliverySettings::default()
        });
        let delivery = app.settings().delivery;
        assert!(delivery.lease > time::Duration::try_from(SMTP_TIMEOUT).unwrap());
        assert_eq!(delivery.backoff, backoff());
        assert!(
            backoff() < lease(),
            "a cut-off message is due again before a lease would have run out"
        );
        let (t, admin) = app
            .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
            .await
            .unwrap();
        Self {
            hole,
            server,
            clock,
            store,
            app,
            queue,
            t,
            admin,
        }
    }

    /// The message as the store holds it (bodies included while it is pending).
    async fn record(&self, id: MessageId) -> OutboxRecord {
        self.store
            .outbox_message(self.t, id)
            .await
            .unwrap()
            .unwrap()
    }

    /// `n` older messages, queued without inline delivery and due now.
    async fn queue_older(&self, n: usize, tag: &str) -> Vec<MessageId> {
        let mut ids = Vec::new();
        for i in 0..n {
            let invited = self
                .queue
                .invite(self.t, self.admin, &request(&format!("{tag}{i}@acme.test")))
                .await
                .unwrap();
            ids.push(invited.message_id);
        }
        // A second later, so that what comes next is strictly newer (message ids are
        // ordered by time, then at random).
        self.clock.advance(time::Duration::seconds(1));
        ids
    }

    /// The server answers at last: the black hole closes and a real aiosmtpd listens on
    /// the same port, where the mailer is still pointed.
    async fn answer(&mut self) {
        self.hole.stop().await;
        self.server.start();
    }

    /// How often aiosmtpd received each Message-ID.
    fn received(&self) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for r in self.server.messages() {
            *n.entry(r["message_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        n
    }

    /// The background dispatcher's part: past every lease and backoff, `dispatch_all`
    /// until nothing is pending; then every message of the tenant is sent, exactly once,
    /// bodies cleared — the `cut_off` ones at their second recorded attempt (the cut-off
    /// send was the first), every other one at its first.
    async fn drain_and_check_each_delivered_once(&self, cut_off: &[MessageId]) {
        for _ in 0..5 {
            self.clock.advance(lease() + time::Duration::seconds(1));
            self.app.dispatch_all().await.unwrap();
            if self
                .app
                .outbox(self.t, true, 1000)
                .await
                .unwrap()
                .is_empty()
            {
                break;
            }
        }
        let received = self.received();
        let outbox = self.store.outbox(self.t, false, 1000).await.unwrap();
        assert!(!outbox.is_empty());
        let cut_off: HashSet<MessageId> = cut_off.iter().copied().collect();
        let ids: HashSet<MessageId> = outbox.iter().map(|r| r.message.id).collect();
        assert!(cut_off.is_subset(&ids), "{cut_off:?} not in {outbox:?}");
        for r in &outbox {
            assert!(matches!(r.state, DeliveryState::Sent { .. }), "{r:?}");
            if cut_off.contains(&r.message.id) {
                assert_eq!(
                    r.attempts, 2,
                    "cut off at the first attempt, sent at the second: {r:?}"
                );
            } else {
                assert_eq!(r.attempts, 1, "sent at the first recorded attempt: {r:?}");
            }
            assert!(
                r.message.text.is_empty() && r.message.html.is_empty(),
                "bodies cleared once sent (D26): {r:?}"
            );
            let header = r.message.message_id_header();
            assert_eq!(received.get(&header), Some(&1), "{header}: {received:?}");
        }
        assert_eq!(received.len(), outbox.len(), "nothing else was sent");
        // And never again, however long the dispatcher keeps running.
        self.clock.advance(time::Duration::hours(3));
        assert_eq!(
            self.app.dispatch_all().await.unwrap(),
            tenantry_service::DispatchReport::default()
        );
        assert_eq!(self.received(), received);
    }
}

// ------------------------------------------------------------------------ the tests

/// D25 a: an invite against a server that never answers returns Ok within the deadline; the
/// user exists and the cut-off send is recorded as a transient failure: the message stays
/// pending with one attempt, the reason, and a retry after the first backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_invite_returns_within_the_deadline_when_the_server_never_answers() {
    let mut rig = Rig::new().await;
    let now = rig.app.now();
    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("bob@acme.test"))).await;
    let invited = invited.unwrap();
    assert_within_deadline("invite", elapsed);
    assert_eq!(
        rig.hole.accepted(),
        1,
        "the inline send reached the black hole"
    );

    let user = rig
        .app
        .user(rig.t, ActorRef::User(rig.admin), invited.user.id)
        .await
        .unwrap();
    assert_eq!(user.status, Status::Invited, "the invite is committed");
    let out = rig.record(invited.message_id).await;
    assert_cut_off(&out, now);
    println!("D25 cut-off reason: {:?}", out.last_error);
    assert!(invited.accept_link.expose().contains("token="));

    rig.answer().await;
    rig.drain_and_check_each_delivered_once(&[invited.message_id])
        .await;
    let got = rig.server.messages();
    let mailed = tenantry_service::token_from_link(&part(&got[0], "text/plain"));
    assert_eq!(
        mailed,
        invited.accept_link.token(),
        "the mailed link is the returned one"
    );
    rig.app
        .accept_invitation(&mailed.unwrap(), "bob@acme.test")
        .await
        .unwrap();
}

/// D25 b: with 11 older messages pending and due (8 queued without inline delivery, 3 left
/// pending by earlier invites cut off by the deadline, their backoff run out), one more
/// invite still returns within the deadline and claims only its own message: the older
/// ones keep their attempt counts and are not claimed (their due time is untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_older_due_messages_are_left_to_the_dispatcher() {
    let mut rig = Rig::new().await;
    let mut older = rig.queue_older(8, "queued").await;
    assert_eq!(rig.hole.accepted(), 0, "queueing alone sends nothing");
    let mut earlier = Vec::new();
    for i in 0..3 {
        let now = rig.app.now();
        let (invited, elapsed) = timed(rig.app.invite(
            rig.t,
            rig.admin,
            &request(&format!("earlier{i}@acme.test")),
        ))
        .await;
        assert_within_deadline("an earlier invite", elapsed);
        let id = invited.unwrap().message_id;
        assert_cut_off(&rig.record(id).await, now);
        earlier.push(id);
    }
    older.extend(&earlier);
    assert_eq!(rig.hole.accepted(), 3);
    rig.clock.advance(backoff() + time::Duration::seconds(1));
    let now = rig.app.now();
    let mut before = Vec::new();
    for id in &older {
        let r = rig.record(*id).await;
        assert_eq!(r.state, DeliveryState::Pending);
        assert!(r.next_attempt_at <= now, "due: {r:?}");
        before.push(r);
    }
    assert_eq!(before.len(), 11);

    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("new@acme.test"))).await;
    let invited = invited.unwrap();
    assert_within_deadline("an invite with 11 older due messages", elapsed);
    assert_eq!(
        rig.hole.accepted(),
        4,
        "one more connection: its own message only"
    );
    for (id, was) in older.iter().zip(&before) {
        let r = rig.record(*id).await;
        assert_eq!(&r, was, "an older message was touched by the call");
    }
    assert_cut_off(&rig.record(invited.message_id).await, now);

    rig.answer().await;
    let mut cut_off = earlier;
    cut_off.push(invited.message_id);
    rig.drain_and_check_each_delivered_once(&cut_off).await;
    assert_eq!(rig.server.messages().len(), 12);
}

/// D25 c: a message cut off by the deadline waits out its backoff: when the server
/// answers, the dispatcher sends the older due messages at once but not that one; once the
/// backoff has run out it is delivered, exactly once, at its second attempt, and marked
/// sent with its bodies cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_a_cut_off_message_is_delivered_once_when_the_server_answers() {
    let mut rig = Rig::new().await;
    let older = rig.queue_older(2, "older").await;
    let now = rig.app.now();
    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("cut@acme.test"))).await;
    let invited = invited.unwrap();
    assert_within_deadline("invite", elapsed);
    let cut = rig.record(invited.message_id).await;
    assert_cut_off(&cut, now);
    let header = cut.message.message_id_header();

    rig.answer().await;
    // Within the backoff: the cut-off message is not sent again yet; the older ones are.
    let report = rig.app.dispatch_all().await.unwrap();
    assert_eq!(
        (report.sent, report.retrying, report.failed),
        (2, 0, 0),
        "{report:?}"
    );
    let received = rig.received();
    for id in &older {
        let r = rig.record(*id).await;
        assert!(matches!(r.state, DeliveryState::Sent { .. }), "{r:?}");
        assert_eq!(r.attempts, 1, "{r:?}");
        assert_eq!(received.get(&r.message.message_id_header()), Some(&1));
    }
    assert_eq!(received.get(&header), None, "backing off: not sent yet");
    assert_eq!(
        rig.record(invited.message_id).await,
        cut,
        "not claimed within its backoff"
    );

    rig.clock.advance(backoff() - time::Duration::seconds(1));
    assert_eq!(
        rig.app.dispatch(rig.t).await.unwrap(),
        tenantry_service::DispatchReport::default(),
        "a second before the backoff runs out"
    );
    assert_eq!(rig.received().get(&header), None);
    assert_eq!(rig.record(invited.message_id).await, cut);

    rig.clock.advance(time::Duration::seconds(2)); // past the backoff
    let report = rig.app.dispatch_all().await.unwrap();
    assert_eq!(
        (report.sent, report.retrying, report.failed),
        (1, 0, 0),
        "{report:?}"
    );
    assert_eq!(
        rig.received().get(&header),
        Some(&1),
        "delivered exactly once"
    );
    let out = rig.record(invited.message_id).await;
    assert!(matches!(out.state, DeliveryState::Sent { .. }), "{out:?}");
    assert_eq!(
        out.attempts, 2,
        "the cut-off attempt, then the dispatcher's"
    );
    assert!(out.message.text.is_empty() && out.message.html.is_empty());
    rig.drain_and_check_each_delivered_once(&[invited.message_id])
        .await;

    let got = rig.server.messages();
    let mine = got
        .iter()
        .find(|r| r["message_id"] == header.as_str())
        .unwrap();
    assert_eq!(mine["rcpt_tos"], serde_json::json!(["cut@acme.test"]));
    let token = tenantry_service::token_from_link(&part(mine, "text/plain")).unwrap();
    assert_eq!(invited.accept_link.token().as_deref(), Some(token.as_str()));
    rig.app
        .accept_invitation(&token, "cut@acme.test")
        .await
        .unwrap();
}

/// D25 d: a resend against the silent server returns within the deadline with its new link;
/// the new message's cut-off send is recorded as a transient failure and the earlier
/// message is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_resend_returns_within_the_deadline_when_the_server_never_answers() {
    let mut rig = Rig::new().await;
    let invited = rig
        .queue
        .invite(rig.t, rig.admin, &request("rae@acme.test"))
        .await
        .unwrap();
    let first = rig.record(invited.message_id).await;
    rig.clock.advance(time::Duration::seconds(1)); // the resend's message is strictly newer
    let now = rig.app.now();

    let (resent, elapsed) =
        timed(rig.app.resend_invitation(rig.t, rig.admin, invited.user.id)).await;
    let resent = resent.unwrap();
    assert_within_deadline("resend", elapsed);
    assert_eq!(rig.hole.accepted(), 1);
    assert_ne!(resent.message_id, invited.message_id);
    assert_ne!(resent.accept_link, invited.accept_link);
    assert!(resent.expires_at > now);
    let new = rig.record(resent.message_id).await;
    assert_cut_off(&new, now);
    assert_eq!(
        rig.record(invited.message_id).await,
        first,
        "the older message untouched"
    );

    rig.answer().await;
    rig.drain_and_check_each_delivered_once(&[resent.message_id])
        .await;
    let got = rig.server.messages();
    let header = new.message.message_id_header();
    let mine = got
        .iter()
        .find(|r| r["message_id"] == header.as_str())
        .unwrap();
    let token = tenantry_service::token_from_link(&part(mine, "text/plain")).unwrap();
    assert_eq!(resent.accept_link.token().as_deref(), Some(token.as_str()));
    assert!(
        rig.app
            .accept_invitation(&invited.accept_link.token().unwrap(), "rae@acme.test")
            .await
            .is_err(),
        "the first link died with the resend (D10)"
    );
    rig.app
        .accept_invitation(&token, "rae@acme.test")
        .await
        .unwrap();
}

/// D25 with a bulk invite: five addresses queued, the call returns within one deadline (not
/// one per message); the one message it was sending is recorded as cut off (backing off),
/// the other four are not even claimed once the deadline has passed and stay due for the
/// dispatcher; every invited address gets its link in the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_invite_many_returns_within_one_deadline() {
    let mut rig = Rig::new().await;
    let now = rig.app.now();
    let bulk = BulkInvite {
        emails: (0..5).map(|i| format!("bulk{i}@acme.test")).collect(),
        role: Some(Role::User),
        ..BulkInvite::default()
    };
    let (results, elapsed) = timed(rig.app.invite_many(rig.t, rig.admin, &bulk)).await;
    let results = results.unwrap();
    assert_within_deadline("invite_many of 5", elapsed);
    assert_eq!(results.len(), 5);
    assert!(
        results
            .iter()
            .all(|r| matches!(r.outcome, BulkOutcome::Invited { .. }) && r.accept_link.is_some()),
        "{results:?}"
    );
    assert_eq!(
        rig.hole.accepted(),
        1,
        "one send was under way when the deadline came"
    );
    let outbox = rig.store.outbox(rig.t, true, 100).await.unwrap();
    assert_eq!(outbox.len(), 5);
    let (tried, untried): (Vec<_>, Vec<_>) = outbox.iter().partition(|r| r.attempts > 0);
    assert_eq!(
        tried.len(),
        1,
        "only the message being sent was tried: {outbox:?}"
    );
    assert_cut_off(tried[0], now);
    for r in &untried {
        assert_unclaimed(r, now);
    }

    rig.answer().await;
    // The four never tried go out at once; the cut-off one after its backoff.
    let report = rig.app.dispatch(rig.t).await.unwrap();
    assert_eq!(
        (report.sent, report.retrying, report.failed),
        (4, 0, 0),
        "{report:?}"
    );
    assert_eq!(rig.record(tried[0].message.id).await, *tried[0]);
    rig.drain_and_check_each_delivered_once(&[tried[0].message.id])
        .await;
}

/// D25 with a server that answers, but slowly (each message takes 3 s at the end of DATA):
/// the invite still returns within the deadline, its send recorded as cut off. The server
/// may take the message after the client has left; the dispatcher then delivers it again
/// after the backoff, with the same Message-ID (the after-send case of D17) — at most
/// twice, and marked sent once, at the second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_a_slow_server_never_holds_the_invite_past_the_deadline() {
    let mut rig = Rig::new().await;
    rig.answer().await; // a real server from the start, …
    rig.server.slow_data(3.0); // … but a slow one
    let now = rig.app.now();
    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("sly@acme.test"))).await;
    let invited = invited.unwrap();
    assert_within_deadline("invite to a slow server", elapsed);
    let out = rig.record(invited.message_id).await;
    assert_cut_off(&out, now);
    let header = out.message.message_id_header();

    tokio::time::sleep(Duration::from_millis(3500)).await; // let a late copy land
    rig.server.accept_all();
    let early = rig.received().get(&header).copied().unwrap_or(0);
    println!("D25 slow server: {early} copy(ies) landed after the client left");
    assert!(early <= 1);
    assert_eq!(
        rig.app.dispatch(rig.t).await.unwrap(),
        tenantry_service::DispatchReport::default(),
        "backing off"
    );
    rig.clock.advance(backoff() + time::Duration::seconds(1));
    assert_eq!(rig.app.dispatch(rig.t).await.unwrap().sent, 1);
    let copies = rig.received()[&header];
    println!("D25 slow server: {copies} copy(ies) in all");
    assert!(
        copies > early && copies <= 2,
        "the dispatcher's copy, and at most one late one, all with the same Message-ID: \
         {early} then {copies}"
    );
    let out = rig.record(invited.message_id).await;
    assert!(matches!(out.state, DeliveryState::Sent { .. }), "{out:?}");
    assert_eq!(
        out.attempts, 2,
        "the cut-off attempt, then the dispatcher's"
    );
    rig.clock.advance(time::Duration::hours(3));
    assert_eq!(
        rig.app.dispatch_all().await.unwrap(),
        tenantry_service::DispatchReport::default()
    );
    assert_eq!(rig.received()[&header], copies, "never again");
}

/// D25 against a server that answers at once: an inline invite delivers its own message
/// only, at its first attempt; the older due messages are left, untouched, to the
/// dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_inline_delivery_sends_only_the_calls_own_message() {
    let mut rig = Rig::new().await;
    let older = rig.queue_older(11, "old").await;
    rig.answer().await;
    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("own@acme.test"))).await;
    let invited = invited.unwrap();
    println!("D25 inline invite to a working server: returned after {elapsed:?}");
    assert!(elapsed < DEADLINE + MARGIN);
    let got = rig.server.messages();
    assert_eq!(got.len(), 1, "only the call's own message");
    let own = rig.record(invited.message_id).await;
    assert!(matches!(own.state, DeliveryState::Sent { .. }), "{own:?}");
    assert_eq!(own.attempts, 1, "{own:?}");
    assert_eq!(own.last_error, None, "{own:?}");
    assert_eq!(got[0]["message_id"], own.message.message_id_header());
    for id in &older {
        assert_unclaimed(&rig.record(*id).await, T0);
    }
    assert_eq!(rig.app.dispatch(rig.t).await.unwrap().sent, 11);
    rig.drain_and_check_each_delivered_once(&[]).await;
}

/// D25 and D17: the deadline bounds the send, not its recording. Against a working server
/// the send finishes well within the deadline, but the store takes 1.5 s to record it, so
/// the recording ends past the deadline: it is still waited for (the call returns after
/// the store's delay), the message is marked sent at its first attempt, and the
/// dispatcher never sends it again — the server holds exactly one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d25_a_send_that_finished_is_recorded_even_past_the_deadline() {
    const STORE_DELAY: Duration = Duration::from_millis(1500);
    let store = Arc::new(SlowRecording {
        inner: tenantry_service::InMemoryStore::new(),
        delay: STORE_DELAY,
        recorded: AtomicUsize::new(0),
    });
    let mut rig = Rig::with_store(Arc::clone(&store) as Arc<dyn Store>).await;
    assert!(STORE_DELAY > DEADLINE);
    rig.answer().await;

    let (invited, elapsed) =
        timed(rig.app.invite(rig.t, rig.admin, &request("fin@acme.test"))).await;
    let invited = invited.unwrap();
    println!(
        "D25 slow recording: returned after {elapsed:?} (deadline {DEADLINE:?}, \
         store delay {STORE_DELAY:?})"
    );
    assert!(
        elapsed >= STORE_DELAY,
        "returned after {elapsed:?}: the recording ({STORE_DELAY:?}) was not waited for"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "took {elapsed:?}: more than the deadline plus the store's delay"
    );
    assert_eq!(
        store.recorded.load(Ordering::SeqCst),
        1,
        "one attempt recorded"
    );

    let out = rig.record(invited.message_id).await;
    assert!(matches!(out.state, DeliveryState::Sent { .. }), "{out:?}");
    assert_eq!(out.attempts, 1, "{out:?}");
    assert_eq!(out.last_error, None, "{out:?}");
    assert!(
        out.message.text.is_empty() && out.message.html.is_empty(),
        "bodies cleared once sent (D26): {out:?}"
    );
    let header = out.message.message_id_header();
    let received = rig.received();
    assert_eq!(received, HashMap::from([(header.clone(), 1)]));

    rig.clock.advance(time::Duration::hours(3));
    assert_eq!(
        rig.app.dispatch_all().await.unwrap(),
        tenantry_service::DispatchReport::default(),
        "nothing left to send"
    );
    assert_eq!(store.recorded.load(Ordering::SeqCst), 1);
    let got = rig.server.messages();
    assert_eq!(got.len(), 1, "exactly one copy: {got:?}");
    assert_eq!(got[0]["message_id"], header.as_str());
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["fin@acme.test"]));
    let token = tenantry_service::token_from_link(&part(&got[0], "text/plain")).unwrap();
    assert_eq!(invited.accept_link.token().as_deref(), Some(token.as_str()));
}
