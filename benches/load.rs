//! Loading through the public API (issue 15): per user, invite, deliver the invitation through
//! the dispatcher (the claim path), then accept; the cost per user at the start of a tenant
//! (its first 10,000 users) and at the end of a tenant of 1,000,000 users, in one run. The
//! target: the second costs at most 1.3 times the first (no claim, listing or lookup walks
//! rows it does not return).
//!
//! Not a criterion bench: loading a million users takes a while and is done once; each
//! window of 10,000 users is timed with `Instant`, and the run prints the windows and the
//! ratio. `LOAD_USERS` (default 1,000,000) sets the size.
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
use tenantry::prelude::*;
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

const WINDOW: usize = 10_000;

fn main() {
    let total: usize = std::env::var("LOAD_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = Tenantry::builder(InMemoryStore::new())
            .mailer(Discard)
            .delivery(tenantry::DeliverySettings {
                inline: false,
                ..Default::default()
            })
            .build()
            .unwrap();
        let (tenant, admin) = app
            .create_tenant("Load", None, Email::parse("admin@load.test").unwrap())
            .await
            .unwrap();
        let mut windows: Vec<(usize, Duration)> = Vec::new();
        let mut start = Instant::now();
        for i in 0..total {
            let email = format!("firstname.lastname{i}@example-company.test");
            let invited = app
                .invite(
                    tenant,
                    admin,
                    &InviteRequest {
                        email: Email::parse(&email).unwrap(),
                        role: Role::User,
                        template_id: None,
                        crm_access: i % 2 == 0,
                        grants: Permissions::CONVERSATIONS_VIEW,
                    },
                )
                .await
                .unwrap();
            let report = app.dispatch(tenant).await.unwrap();
            std::hint::black_box(report);
            let token = invited.accept_link.token().unwrap();
            app.accept_invitation(&token, &email).await.unwrap();
            if (i + 1) % WINDOW == 0 {
                windows.push((i + 1, start.elapsed()));
                start = Instant::now();
            }
        }
        let per_user = |d: Duration| d.as_secs_f64() * 1e6 / WINDOW as f64;
        for (n, d) in &windows {
            if *n == WINDOW || n % 100_000 == 0 {
                println!("load/in_memory_store: users {:>8}-{n:<8} {:>7.2} µs per user", n - WINDOW, per_user(*d));
            }
        }
        let (first, last) = (windows.first().unwrap().1, windows.last().unwrap().1);
        let ratio = per_user(last) / per_user(first);
        println!(
            "load/in_memory_store: per-user cost of the last {WINDOW} users at {total} over the first {WINDOW}: {ratio:.2} (target <= 1.3)"
        );
        // The same over five windows at each end, which evens out a resize or a busy moment
        // of the shared machine.
        let k = windows.len().min(5);
        let sum = |w: &[(usize, Duration)]| w.iter().map(|(_, d)| *d).sum::<Duration>() / k as u32;
        let (head, tail) = (sum(&windows[..k]), sum(&windows[windows.len() - k..]));
        println!(
            "load/in_memory_store: first {} users {:.2} µs per user, last {} users {:.2} µs per user: ratio {:.2}",
            k * WINDOW,
            per_user(head),
            k * WINDOW,
            per_user(tail),
            per_user(tail) / per_user(head)
        );
        // Every invitation was delivered and accepted: nothing is pending.
        let pending = app.store().outbox(tenant, true, 10).await.unwrap();
        assert!(pending.is_empty(), "every message was delivered");
        let seats = app.seat_usage(tenant).await.unwrap();
        println!("load/in_memory_store: {seats:?}");
    });
}
