//! Loading through the public API (issue 15): per user, invite, deliver the invitation through
//! the dispatcher (the claim path), then accept. Criterion times one user's load in a tenant
//! of 1,000,000 users (`load/large_tenant`) beside its floor, the same work in a tenant of at
//! most 10,000 users (`load/small_tenant`: a fresh tenant every 10,000 users), in one run.
//! The target: the large tenant's cost per user is at most 1.3 times the small one's (no
//! claim, listing or lookup walks rows it does not return).
//!
//! Every user a bench adds stays (the large tenant grows past its 1,000,000 as criterion
//! iterates); once timing ends, the run checks that every message was delivered and every
//! user accepted. `LOAD_USERS` (default 1,000,000) sets the large tenant's size before timing.
//!
//! `cargo bench --bench load`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use tenantry::prelude::*;
use tenantry::{TenantId, UserId};
use tenantry_mail::{MailError, Mailer, Message};

/// Takes every message and keeps nothing (the host's SMTP server, at no cost).
#[derive(Debug)]
struct Discard;

#[async_trait]
impl Mailer for Discard {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        std::hint::black_box(message);
        Ok(())
    }
}

/// The small tenant's size: its floor's users are added to tenants of at most this many.
const SMALL: usize = 10_000;

/// A tenant being loaded through the public API.
struct Loader {
    app: Tenantry,
    tenant: TenantId,
    admin: UserId,
    /// Users added to the current tenant.
    users: usize,
    /// Every user added, in every tenant (for unique, realistic addresses).
    added: usize,
    /// Tenants created.
    tenants: Vec<TenantId>,
}

impl Loader {
    async fn new() -> Self {
        let app = Tenantry::builder(InMemoryStore::new())
            .mailer(Discard)
            .delivery(tenantry::DeliverySettings {
                inline: false,
                ..Default::default()
            })
            .build()
            .unwrap();
        let (tenant, admin) = app
            .create_tenant("Load 0", None, Email::parse("admin@load.test").unwrap())
            .await
            .unwrap();
        Self {
            app,
            tenant,
            admin,
            users: 0,
            added: 0,
            tenants: vec![tenant],
        }
    }

    /// A fresh tenant to add users to (not timed).
    async fn next_tenant(&mut self) {
        let (tenant, admin) = self
            .app
            .create_tenant(
                &format!("Load {}", self.tenants.len()),
                None,
                Email::parse("admin@load.test").unwrap(),
            )
            .await
            .unwrap();
        self.tenant = tenant;
        self.admin = admin;
        self.users = 0;
        self.tenants.push(tenant);
    }

    /// One user: invited, the invitation delivered by the dispatcher, then accepted.
    async fn add(&mut self) {
        let email = format!("firstname.lastname{}@example-company.test", self.added);
        let invited = self
            .app
            .invite(
                self.tenant,
                self.admin,
                &InviteRequest {
                    email: Email::parse(&email).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: self.added.is_multiple_of(2),
                    grants: Permissions::CONVERSATIONS_VIEW,
                },
            )
            .await
            .unwrap();
        let report = self.app.dispatch(self.tenant).await.unwrap();
        std::hint::black_box(report);
        let token = invited.accept_link.token().unwrap();
        self.app.accept_invitation(&token, &email).await.unwrap();
        self.users += 1;
        self.added += 1;
    }

    /// `iters` users added, the time of the adds alone; with `cap`, a fresh tenant (untimed)
    /// whenever the current one holds `cap` users.
    async fn time(&mut self, iters: u64, cap: Option<usize>) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            if cap.is_some_and(|cap| self.users >= cap) {
                self.next_tenant().await;
            }
            let t0 = Instant::now();
            self.add().await;
            spent += t0.elapsed();
        }
        spent
    }

    /// Every invitation was delivered and accepted: nothing is pending, every user holds a
    /// seat.
    async fn verify(&self) {
        let mut seats = 0;
        for t in &self.tenants {
            let pending = self.app.store().outbox(*t, true, 10).await.unwrap();
            assert!(pending.is_empty(), "every message was delivered");
            let usage = self.app.seat_usage(*t).await.unwrap();
            seats += usage.used;
        }
        // Each tenant's admin holds a seat too.
        assert_eq!(
            seats as usize,
            self.added + self.tenants.len(),
            "every user accepted"
        );
    }
}

fn load(c: &mut Criterion) {
    let total: usize = std::env::var("LOAD_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut small = rt.block_on(Loader::new());
    let mut large = rt.block_on(async {
        let mut large = Loader::new().await;
        let t0 = Instant::now();
        for _ in 0..total {
            large.add().await;
        }
        println!(
            "load: {total} users loaded into one tenant in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        large
    });
    let mut g = c.benchmark_group("load");
    g.bench_function("small_tenant", |b| {
        b.iter_custom(|iters| rt.block_on(small.time(iters, Some(SMALL))));
    });
    g.bench_function("large_tenant", |b| {
        b.iter_custom(|iters| rt.block_on(large.time(iters, None)));
    });
    g.finish();
    rt.block_on(async {
        small.verify().await;
        large.verify().await;
    });
    println!(
        "load: the large tenant ended at {} users; the small ones held at most {SMALL} each ({} tenants)",
        large.added,
        small.tenants.len()
    );
}

criterion_group!(benches, load);
criterion_main!(benches);
