//! Fault injection for D17 ("a failure to deliver an invitation never loses, duplicates or
//! rolls back the invited user"), over the real `Tenantry` service.
//!
//! Each run drives a random sequence of invites, resends, dispatches and clock moves
//! through a Store wrapper and a Mailer wrapper that inject faults at random:
//!
//! - **before commit**: the commit of an invite or resend fails (a backend error, or a
//!   retryable "busy"), or the process "crashes" there (the call's future is dropped);
//! - **after commit, before send**: the process crashes right after the commit; claiming
//!   due mail fails or crashes; the mailer fails or crashes before handing the message over;
//! - **after send, before marking sent**: the mailer delivers and then fails or crashes
//!   (a lost `250`), or recording "sent" fails or crashes.
//!
//! A crash is simulated by the wrapper parking forever after signalling, and the driver
//! dropping the call's future, so no line after that point runs. Afterwards the faults
//! stop, time moves past every lease and backoff, and dispatch runs until nothing is due.
//! Then, from the store's own rows: every committed invitation (initial or resend) has
//! exactly one outbox message and it was delivered (0 lost); no message exists or was
//! delivered for an invite that was not committed (0 orphans); a message was delivered
//! twice only after an after-send fault, and every copy carries the same `Message-ID`; the
//! newest link of every invited user works.
//!
//! 1,000 runs use an in-memory mailer; 150 more go through `SmtpMailer` to a real SMTP
//! server (aiosmtpd on loopback) and read what it received. A last test runs two
//! dispatchers at once against a slow mailer, with no fault at all: no message may be sent
//! twice (it was, before the dispatcher claimed one message per lease).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use support::{SmtpServer, T0, part};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, TemplateId, TenantId,
    TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_service::prelude::*;
use tenantry_service::{
    DeliverySettings, DeliveryState, MailError, Mailer, ManualClock, Message, OutboxRecord, Page,
    Store, StoreError,
};
use tenantry_store::DeliveryUpdate;
use tokio::sync::Notify;

// ------------------------------------------------------------------------ randomness

/// splitmix64: small, seedable, reproducible (the failing seed is printed).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

// ------------------------------------------------------------------------ the faults

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Stage {
    BeforeCommit,
    AfterCommitBeforeSend,
    AfterSendBeforeMark,
}

#[derive(Debug, Default)]
struct Log {
    /// Faults injected during the current operation.
    op: Vec<Stage>,
    /// Faults injected per stage over the run, with how (error or crash).
    by_stage: BTreeMap<(Stage, &'static str), u64>,
    /// Messages that had an after-send fault (the only ones allowed a second delivery).
    after_send: HashSet<MessageId>,
}

#[derive(Debug)]
struct Faults {
    /// A tenant whose mail claims always fail (a broken tenant, not a random fault).
    broken: Mutex<Option<TenantId>>,
    rng: Mutex<Rng>,
    per_mille: u64,
    enabled: AtomicBool,
    crash: Notify,
    log: Mutex<Log>,
}

enum Injected {
    None,
    Error,
    Crash,
}

impl Faults {
    fn new(seed: u64, per_mille: u64) -> Arc<Self> {
        Arc::new(Self {
            broken: Mutex::new(None),
            rng: Mutex::new(Rng(seed ^ 0xA5A5_5A5A)),
            per_mille,
            enabled: AtomicBool::new(true),
            crash: Notify::new(),
            log: Mutex::new(Log::default()),
        })
    }

    /// Decides whether to inject a fault at this point, and logs it.
    fn roll(&self, stage: Stage, id: Option<MessageId>) -> Injected {
        if !self.enabled.load(Ordering::SeqCst) {
            return Injected::None;
        }
        let mut rng = self.rng.lock().unwrap();
        if !rng.chance(self.per_mille) {
            return Injected::None;
        }
        let crash = rng.chance(400);
        drop(rng);
        let mut log = self.log.lock().unwrap();
        log.op.push(stage);
        *log.by_stage
            .entry((stage, if crash { "crash" } else { "error" }))
            .or_default() += 1;
        if stage == Stage::AfterSendBeforeMark
            && let Some(id) = id
        {
            log.after_send.insert(id);
        }
        if crash {
            Injected::Crash
        } else {
            Injected::Error
        }
    }

    /// The process "dies" here: signal the driver, which drops this call's future.
    async fn crash(&self) -> ! {
        self.crash.notify_one();
        loop {
            std::future::pending::<()>().await;
        }
    }

    fn take_op(&self) -> Vec<Stage> {
        std::mem::take(&mut self.log.lock().unwrap().op)
    }
}

fn injected() -> StoreError {
    StoreError::Backend {
        backend: "fault-injection",
        source: "injected fault".into(),
    }
}

// ------------------------------------------------------------------------ the store wrapper

#[derive(Debug)]
struct FaultyStore {
    inner: tenantry_service::InMemoryStore,
    faults: Arc<Faults>,
}

#[async_trait]
impl Store for FaultyStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.inner.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(tenant, id).await
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
        if outbox.is_empty() {
            return self.inner.commit(change, outbox).await;
        }
        // Before the commit: nothing may be written.
        match self.faults.roll(Stage::BeforeCommit, None) {
            Injected::None => {}
            Injected::Error => {
                // Half of them retryable (the service takes a new snapshot and commits).
                return Err(if self.faults.rng.lock().unwrap().chance(500) {
                    StoreError::Busy {
                        backend: "fault-injection",
                        reason: "injected".into(),
                    }
                } else {
                    injected()
                });
            }
            Injected::Crash => self.faults.crash().await,
        }
        self.inner.commit(change, outbox).await?;
        // After the commit: the invite is durable whatever the caller learns.
        match self.faults.roll(Stage::AfterCommitBeforeSend, None) {
            Injected::None => Ok(()),
            Injected::Error => Err(injected()),
            Injected::Crash => self.faults.crash().await,
        }
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
        if *self.faults.broken.lock().unwrap() == Some(tenant) {
            return Err(injected());
        }
        match self.faults.roll(Stage::AfterCommitBeforeSend, None) {
            Injected::None => {}
            Injected::Error => return Err(injected()),
            Injected::Crash => self.faults.crash().await,
        }
        self.inner
            .claim_due_mail(tenant, now, lease_until, limit)
            .await
    }

    /// The one-message claim of inline delivery (D25) fails and crashes like
    /// [`FaultyStore::claim_due_mail`]: the same point, after commit and before send.
    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: time::OffsetDateTime,
        lease_until: time::OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        if *self.faults.broken.lock().unwrap() == Some(tenant) {
            return Err(injected());
        }
        match self.faults.roll(Stage::AfterCommitBeforeSend, None) {
            Injected::None => {}
            Injected::Error => return Err(injected()),
            Injected::Crash => self.faults.crash().await,
        }
        self.inner.claim_message(tenant, id, now, lease_until).await
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let stage = match update {
            DeliveryUpdate::Sent { .. } => Stage::AfterSendBeforeMark,
            // A failed attempt that is not recorded: nothing was delivered.
            _ => Stage::AfterCommitBeforeSend,
        };
        match self.faults.roll(stage, Some(id)) {
            Injected::None => {}
            Injected::Error => return Err(injected()),
            Injected::Crash => self.faults.crash().await,
        }
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

// ------------------------------------------------------------------------ the mailer wrapper

#[derive(Debug)]
struct FaultyMailer {
    inner: Arc<dyn Mailer>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Mailer for FaultyMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        match self
            .faults
            .roll(Stage::AfterCommitBeforeSend, Some(message.id))
        {
            Injected::None => {}
            Injected::Error => return Err(MailError::Transient("421 injected".into())),
            Injected::Crash => self.faults.crash().await,
        }
        self.inner.send(message).await?;
        match self
            .faults
            .roll(Stage::AfterSendBeforeMark, Some(message.id))
        {
            Injected::None => Ok(()),
            // The server took the message but the 250 never arrived.
            Injected::Error => Err(MailError::Transient("connection reset after DATA".into())),
            Injected::Crash => self.faults.crash().await,
        }
    }
}

// ------------------------------------------------------------------------ what was delivered

/// One delivered copy, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    message_id_header: String,
    to: String,
    subject: String,
    text: String,
}

enum Sink {
    Memory(InMemoryMailer),
    Smtp(Arc<SmtpServer>),
}

impl Sink {
    /// Every copy delivered for run `tag` (the recipients of a run carry its tag).
    fn delivered(&self, tag: &str) -> Vec<Delivered> {
        match self {
            Sink::Memory(m) => m
                .sent()
                .into_iter()
                .map(|m| Delivered {
                    message_id_header: m.message_id_header(),
                    to: m.to.clone(),
                    subject: m.subject.clone(),
                    text: m.text.clone(),
                })
                .collect(),
            Sink::Smtp(server) => server
                .messages()
                .into_iter()
                .filter(|r| r["to"].as_str().unwrap().contains(tag))
                .map(|r| {
                    assert_eq!(r["rcpt_tos"], serde_json::json!([r["to"]]));
                    Delivered {
                        message_id_header: r["message_id"].as_str().unwrap().to_owned(),
                        to: r["to"].as_str().unwrap().to_owned(),
                        subject: r["subject"].as_str().unwrap().to_owned(),
                        text: part(&r, "text/plain").replace("\r\n", "\n"),
                    }
                })
                .collect(),
        }
    }
}

// ------------------------------------------------------------------------ one run

#[derive(Debug, Default, Clone)]
struct Counts {
    runs: u64,
    invites_attempted: u64,
    invites_committed: u64,
    invites_not_committed: u64,
    resends_committed: u64,
    messages: u64,
    deliveries: u64,
    duplicates: u64,
    duplicates_without_after_send_fault: u64,
    lost: u64,
    orphans: u64,
    links_checked: u64,
    faults: BTreeMap<(Stage, &'static str), u64>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.runs += o.runs;
        self.invites_attempted += o.invites_attempted;
        self.invites_committed += o.invites_committed;
        self.invites_not_committed += o.invites_not_committed;
        self.resends_committed += o.resends_committed;
        self.messages += o.messages;
        self.deliveries += o.deliveries;
        self.duplicates += o.duplicates;
        self.duplicates_without_after_send_fault += o.duplicates_without_after_send_fault;
        self.lost += o.lost;
        self.orphans += o.orphans;
        self.links_checked += o.links_checked;
        for (k, v) in &o.faults {
            *self.faults.entry(*k).or_default() += v;
        }
    }

    fn print(&self, label: &str) {
        println!("== D17 fault injection ({label})");
        println!(
            "runs {}, invites attempted {}, committed {}, not committed {}, resends committed {}",
            self.runs,
            self.invites_attempted,
            self.invites_committed,
            self.invites_not_committed,
            self.resends_committed
        );
        println!(
            "messages queued {}, deliveries {}, duplicate deliveries {} (all after an after-send fault, same Message-ID; without one: {})",
            self.messages,
            self.deliveries,
            self.duplicates,
            self.duplicates_without_after_send_fault
        );
        println!(
            "invites lost {}, messages for uncommitted invites {}, users whose newest link was accepted {}",
            self.lost, self.orphans, self.links_checked
        );
        for ((stage, how), n) in &self.faults {
            println!("faults injected {stage:?}/{how}: {n}");
        }
    }
}

/// Runs `fut` unless the process "crashes" inside it; `None` then.
async fn guarded<F: Future>(faults: &Faults, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        () = faults.crash.notified() => None,
    }
}

#[derive(Debug)]
enum Outcome {
    Ok,
    Err(String),
    Crashed,
}

struct Attempt {
    email: String,
    outcome: Outcome,
    faults: Vec<Stage>,
}

async fn run(seed: u64, sink_kind: &SinkKind) -> Counts {
    let mut rng = Rng(seed);
    let per_mille = [50, 150, 300][usize::try_from(rng.below(3)).unwrap()];
    let faults = Faults::new(seed, per_mille);
    let (sink, inner): (Sink, Arc<dyn Mailer>) = match sink_kind {
        SinkKind::Memory => {
            let m = InMemoryMailer::new();
            (Sink::Memory(m.clone()), Arc::new(m))
        }
        SinkKind::Smtp(server, mailer) => (Sink::Smtp(Arc::clone(server)), Arc::clone(mailer)),
    };
    let store = FaultyStore {
        inner: tenantry_service::InMemoryStore::new(),
        faults: Arc::clone(&faults),
    };
    let clock = ManualClock::new(T0);
    let app = Tenantry::builder(store)
        .mailer(FaultyMailer {
            inner,
            faults: Arc::clone(&faults),
        })
        .clock(clock.clone())
        .base_url(support::BASE_URL)
        .delivery(DeliverySettings {
            max_attempts: 1000,
            backoff: time::Duration::seconds(1),
            max_backoff: time::Duration::seconds(60),
            lease: time::Duration::minutes(2),
            inline: !rng.chance(200),
            // The default inline deadline (D25): a send cut off by it stays pending under
            // its lease and is delivered by the heal below, like any other after-commit
            // fault. The deadline itself is tested in inline_deadline.rs.
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    let tag = format!("r{seed}");
    faults.enabled.store(false, Ordering::SeqCst);
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    faults.enabled.store(true, Ordering::SeqCst);

    let mut attempts: Vec<Attempt> = Vec::new();
    let ops = 3 + rng.below(8);
    for _ in 0..ops {
        faults.take_op();
        match rng.below(100) {
            0..60 => {
                let email = format!("u{}.{tag}@acme.test", attempts.len());
                let req = InviteRequest {
                    email: Email::parse(&email).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants: Permissions::CONVERSATIONS_VIEW,
                };
                let out = guarded(&faults, app.invite(t, admin, &req)).await;
                let outcome = match out {
                    Some(Ok(inv)) => {
                        let u = app.store().user(t, inv.user.id).await.unwrap();
                        assert!(
                            u.is_some(),
                            "seed {seed}: an invite that returned Ok is stored"
                        );
                        Outcome::Ok
                    }
                    Some(Err(e)) => Outcome::Err(e.to_string()),
                    None => Outcome::Crashed,
                };
                attempts.push(Attempt {
                    email,
                    outcome,
                    faults: faults.take_op(),
                });
            }
            60..75 => {
                if attempts.is_empty() {
                    continue;
                }
                let k = usize::try_from(rng.below(attempts.len() as u64)).unwrap();
                let key = attempts[k].email.to_ascii_lowercase();
                if let Some(u) = app.store().user_by_email(t, &key).await.unwrap() {
                    let _ = guarded(&faults, app.resend_invitation(t, admin, u.id)).await;
                }
            }
            75..90 => {
                let _ = guarded(&faults, app.dispatch(t)).await;
            }
            _ => clock.advance(time::Duration::seconds(
                i64::try_from(rng.below(180)).unwrap(),
            )),
        }
    }

    // Heal: no more faults; move past every lease and backoff; deliver what is due.
    faults.enabled.store(false, Ordering::SeqCst);
    for _ in 0..20 {
        clock.advance(time::Duration::minutes(5));
        app.dispatch(t).await.unwrap();
        if app.outbox(t, true, 1000).await.unwrap().is_empty() {
            break;
        }
    }

    check(seed, &app, t, &attempts, &sink, &tag, &faults).await
}

async fn check(
    seed: u64,
    app: &Tenantry,
    t: TenantId,
    attempts: &[Attempt],
    sink: &Sink,
    tag: &str,
    faults: &Faults,
) -> Counts {
    let mut c = Counts {
        runs: 1,
        ..Counts::default()
    };
    let (by_stage, after_send) = {
        let log = faults.log.lock().unwrap();
        (log.by_stage.clone(), log.after_send.clone())
    };
    c.faults = by_stage;

    let outbox = app.outbox(t, false, 10_000).await.unwrap();
    let delivered = sink.delivered(tag);
    c.messages = outbox.len() as u64;
    c.deliveries = delivered.len() as u64;
    let mut copies: HashMap<&str, Vec<&Delivered>> = HashMap::new();
    for d in &delivered {
        copies
            .entry(d.message_id_header.as_str())
            .or_default()
            .push(d);
    }
    let known: HashSet<String> = outbox
        .iter()
        .map(|r| r.message.message_id_header())
        .collect();

    // 0 orphans: nothing was delivered that the outbox does not hold (and so no mail for an
    // invite that was not committed: the outbox is written in the invite's commit).
    for d in &delivered {
        if !known.contains(&d.message_id_header) {
            c.orphans += 1;
            eprintln!("seed {seed}: delivered a message the outbox does not hold: {d:?}");
        }
    }

    for a in attempts {
        c.invites_attempted += 1;
        let key = a.email.to_ascii_lowercase();
        let user = app.store().user_by_email(t, &key).await.unwrap();
        let Some(user) = user else {
            c.invites_not_committed += 1;
            // Not committed: the call must have failed or crashed before the commit, and
            // no message for the address may exist anywhere.
            assert!(
                !matches!(a.outcome, Outcome::Ok),
                "seed {seed}: {} returned Ok but is not stored",
                a.email
            );
            assert!(
                a.faults.contains(&Stage::BeforeCommit),
                "seed {seed}: {} not stored without a before-commit fault ({:?}, {:?})",
                a.email,
                a.outcome,
                a.faults
            );
            let stray = outbox.iter().filter(|r| r.message.to == a.email).count()
                + delivered.iter().filter(|d| d.to == a.email).count();
            c.orphans += stray as u64;
            continue;
        };
        c.invites_committed += 1;
        if let Outcome::Err(e) = &a.outcome {
            // Committed although the call failed: only when the failure came after the
            // commit (the caller could not know; the invite is kept, D17).
            assert!(
                a.faults.contains(&Stage::AfterCommitBeforeSend)
                    || a.faults.contains(&Stage::AfterSendBeforeMark),
                "seed {seed}: {} committed but the call failed with {e} and faults {:?}",
                a.email,
                a.faults
            );
        }
        // Exactly one message per committed invitation (initial + resends), all delivered.
        let invitations = app.store().invitations_of(t, user.id).await.unwrap();
        c.resends_committed += invitations.len().saturating_sub(1) as u64;
        let mine: Vec<&OutboxRecord> = outbox
            .iter()
            .filter(|r| r.message.user_id == user.id)
            .collect();
        if mine.len() != invitations.len() {
            c.lost += invitations.len().saturating_sub(mine.len()) as u64;
            eprintln!(
                "seed {seed}: {} has {} invitations but {} messages",
                a.email,
                invitations.len(),
                mine.len()
            );
        }
        for r in &mine {
            assert_eq!(r.message.to, user.email.to_string(), "seed {seed}");
            let header = r.message.message_id_header();
            let n = copies.get(header.as_str()).map_or(0, Vec::len);
            if n == 0 || !matches!(r.state, DeliveryState::Sent { .. }) {
                c.lost += 1;
                eprintln!(
                    "seed {seed}: message {header} to {} not delivered: {r:?}",
                    a.email
                );
            }
            if n > 1 {
                c.duplicates += (n - 1) as u64;
                if !after_send.contains(&r.message.id) {
                    c.duplicates_without_after_send_fault += (n - 1) as u64;
                    eprintln!(
                        "seed {seed}: {header} delivered {n} times without an after-send fault"
                    );
                }
                let first = copies[header.as_str()][0];
                for d in &copies[header.as_str()] {
                    assert_eq!(*d, first, "seed {seed}: duplicate copies differ");
                }
            }
        }
        // Of all the links the user received, exactly one works: the newest; older ones
        // were superseded by the resend (D10). Tried in any order: the outbox cannot say
        // which of two messages queued in the same millisecond is newer.
        let mut tokens: Vec<String> = mine
            .iter()
            .filter_map(|r| copies.get(r.message.message_id_header().as_str()))
            .filter_map(|v| v.first())
            .map(|d| {
                assert!(d.subject.contains("Acme"), "seed {seed}");
                tenantry_service::token_from_link(&d.text).unwrap()
            })
            .collect();
        tokens.dedup();
        let mut accepted = 0;
        for token in &tokens {
            if app.accept_invitation(token, &a.email).await.is_ok() {
                accepted += 1;
            }
        }
        if !tokens.is_empty() {
            assert_eq!(
                accepted,
                1,
                "seed {seed}: {} links, {accepted} accepted",
                tokens.len()
            );
            c.links_checked += 1;
        }
    }
    c
}

enum SinkKind {
    Memory,
    Smtp(Arc<SmtpServer>, Arc<dyn Mailer>),
}

fn assert_clean(total: &Counts, runs: u64) {
    assert_eq!(total.runs, runs);
    assert_eq!(total.lost, 0, "invites lost");
    assert_eq!(total.orphans, 0, "messages for uncommitted invites");
    assert_eq!(
        total.duplicates_without_after_send_fault, 0,
        "duplicates without an after-send fault"
    );
    let stages: HashSet<Stage> = total.faults.keys().map(|(s, _)| *s).collect();
    assert_eq!(
        stages.len(),
        3,
        "every stage was exercised: {:?}",
        total.faults
    );
    assert!(total.invites_not_committed > 0 && total.invites_committed > 0);
}

#[tokio::test]
async fn d17_fault_injection_1000_runs_in_memory() {
    const RUNS: u64 = 1000;
    let mut total = Counts::default();
    for seed in 0..RUNS {
        total.add(&run(seed, &SinkKind::Memory).await);
    }
    total.print("in-memory mailer, 1000 runs");
    assert_clean(&total, RUNS);
    assert!(
        total.duplicates > 0,
        "after-send faults produced duplicates"
    );
}

#[tokio::test]
async fn d17_fault_injection_150_runs_over_real_smtp() {
    const RUNS: u64 = 150;
    let server = Arc::new(SmtpServer::start_plain());
    let mailer: Arc<dyn Mailer> = Arc::new(server.mailer());
    let kind = SinkKind::Smtp(Arc::clone(&server), mailer);
    let mut total = Counts::default();
    for seed in 10_000..10_000 + RUNS {
        total.add(&run(seed, &kind).await);
    }
    total.print("SmtpMailer to aiosmtpd, 150 runs");
    assert_clean(&total, RUNS);
}

// ------------------------------------------------------------------------ slow mail, two dispatchers

/// A mailer whose every send takes `per_send` of (manual) time and lets other tasks run
/// meanwhile, as a slow SMTP server does.
#[derive(Debug)]
struct SlowMailer {
    inner: InMemoryMailer,
    clock: ManualClock,
    per_send: time::Duration,
}

#[async_trait]
impl Mailer for SlowMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        self.clock.advance(self.per_send);
        self.inner.send(message).await
    }
}

/// D17: with no fault at all, two dispatchers running at once (a background
/// `dispatch_all` and the inline dispatch of another invite) never send one message twice,
/// even when the mail server is slow enough that a whole batch outlasts the claim's lease.
#[tokio::test]
async fn slow_mail_and_concurrent_dispatchers_never_send_twice() {
    let clock = ManualClock::new(T0);
    let sent = InMemoryMailer::new();
    let app = Tenantry::builder(tenantry_service::InMemoryStore::new())
        .mailer(SlowMailer {
            inner: sent.clone(),
            clock: clock.clone(),
            per_send: time::Duration::seconds(25),
        })
        .clock(clock.clone())
        .base_url(support::BASE_URL)
        .delivery(DeliverySettings {
            inline: false,
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    for n in 0..12 {
        let req = InviteRequest {
            email: Email::parse(&format!("slow{n}@acme.test")).unwrap(),
            role: Role::User,
            template_id: None,
            crm_access: false,
            grants: Permissions::CONVERSATIONS_VIEW,
        };
        app.invite(t, admin, &req).await.unwrap();
    }
    let second = async {
        for _ in 0..40 {
            app.dispatch(t).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let (first, ()) = tokio::join!(app.dispatch(t), second);
    first.unwrap();
    app.dispatch(t).await.unwrap();

    let mut ids: Vec<String> = sent.sent().iter().map(Message::message_id_header).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    println!(
        "slow mail, two dispatchers: {total} deliveries of {} messages",
        ids.len()
    );
    assert_eq!(ids.len(), 12, "every message delivered");
    assert_eq!(total, 12, "no message delivered twice");
    for r in app.outbox(t, false, 100).await.unwrap() {
        assert!(matches!(r.state, DeliveryState::Sent { .. }), "{r:?}");
        assert_eq!(r.attempts, 1, "{r:?}");
    }
}

/// D17: `dispatch_all` goes on past a tenant whose store calls fail; that tenant's mail stays
/// pending and goes out on a later pass.
#[tokio::test]
async fn d17_dispatch_all_goes_on_past_a_tenant_whose_store_fails() {
    let faults = Faults::new(1, 0);
    let sent = InMemoryMailer::new();
    let store = Arc::new(FaultyStore {
        inner: tenantry_service::InMemoryStore::new(),
        faults: Arc::clone(&faults),
    });
    let app = Tenantry::builder(store.clone() as Arc<dyn Store>)
        .mailer(sent.clone())
        .base_url(support::BASE_URL)
        .delivery(DeliverySettings {
            inline: false,
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    for name in ["a", "b", "c"] {
        let (t, admin) = app
            .create_tenant(
                name,
                None,
                Email::parse(&format!("admin@{name}.test")).unwrap(),
            )
            .await
            .unwrap();
        let req = InviteRequest {
            email: Email::parse(&format!("new@{name}.test")).unwrap(),
            role: Role::User,
            template_id: None,
            crm_access: false,
            grants: Permissions::empty(),
        };
        app.invite(t, admin, &req).await.unwrap();
    }
    // Break the tenant the dispatcher visits first.
    let due = store
        .tenants_with_due_mail(
            time::OffsetDateTime::now_utc() + time::Duration::days(1),
            10,
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    *faults.broken.lock().unwrap() = due.first().copied();
    let report = app.dispatch_all().await.unwrap();
    assert_eq!((report.sent, report.tenants_failed), (2, 1), "{report:?}");
    let broken = due[0];
    assert_eq!(app.outbox(broken, true, 10).await.unwrap().len(), 1);
    // Mended: the next pass delivers what was left.
    *faults.broken.lock().unwrap() = None;
    let report = app.dispatch_all().await.unwrap();
    assert_eq!((report.sent, report.tenants_failed), (1, 0), "{report:?}");
    assert_eq!(sent.sent().len(), 3);
}
