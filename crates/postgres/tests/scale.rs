//! D8, D9, D10 and D16 at scale on PostgreSQL, through the real `Tenantry` service: many
//! concurrent callers, one tenant. Each test prints what it counted and how long it took.
//! The tests run one at a time (they share the server's connection budget and the CPU).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use tenantry_service::prelude::*;
use tenantry_service::{Error, TenantId, User, UserId};
use tokio::sync::Mutex;

/// One scale test at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn plain(address: &str, role: Role) -> InviteRequest {
    InviteRequest {
        email: Email::parse(address).unwrap(),
        role,
        template_id: None,
        crm_access: role == Role::Admin,
        grants: Permissions::empty(),
    }
}

/// A short name for an outcome, to count them.
fn outcome<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(Error::Rule(e)) => format!("refused {:?}", e.rule()),
        Err(Error::Contention { .. }) => "contention".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

async fn users(app: &Tenantry, t: TenantId) -> Vec<User> {
    let mut out = Vec::new();
    let mut q = UserQuery {
        limit: 500,
        ..UserQuery::default()
    };
    loop {
        let page = app.list_users(t, ActorRef::System, &q).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(c) => q.after = Some(c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d9_d16_ten_thousand_concurrent_invites_at_the_limit() {
    let _serial = SERIAL.lock().await;
    const INVITES: usize = 10_000;
    const FREE_SEATS: u32 = 100;
    let (store, _guard) = common::fresh(50).await;
    let app = Tenantry::builder(store.clone())
        .base_url("https://app.test/accept")
        .build()
        .unwrap();
    // D9: the first admin holds a seat too, so the limit leaves exactly 100 seats free.
    let (t, admin) = app
        .create_tenant(
            "Acme",
            Some(FREE_SEATS + 1),
            Email::parse("admin@acme.test").unwrap(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..INVITES)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = app
                    .invite(t, admin, &plain(&format!("u{i}@acme.test"), Role::User))
                    .await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut seat_refusals = 0usize;
    let mut last_success = std::time::Duration::ZERO;
    for task in tasks {
        let (r, at) = task.await.unwrap();
        if r.is_ok() {
            last_success = last_success.max(at);
        }
        if matches!(
            r,
            Err(Error::Rule(tenantry_core::Error::SeatLimitReached { .. }))
        ) {
            seat_refusals += 1;
        }
        *counts.entry(outcome(&r)).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let rows = users(&app, t).await;
    let invited = rows.iter().filter(|u| u.status == Status::Invited).count();
    let seats = app.seat_usage(t).await.unwrap();
    let succeeded = counts.get("ok").copied().unwrap_or(0);
    println!(
        "10,000 concurrent invites, limit {} (100 free seats), pool of 50: {succeeded} succeeded, \
         {seat_refusals} refused at the limit (D9); outcomes {counts:?}; invited rows {invited}, \
         rows {}, seats used {}; {:.1} s in all, the 100th success after {:.1} s",
        FREE_SEATS + 1,
        rows.len(),
        seats.used,
        elapsed.as_secs_f64(),
        last_success.as_secs_f64()
    );
    assert_eq!(
        succeeded, FREE_SEATS as usize,
        "exactly 100 invites succeed"
    );
    assert_eq!(seat_refusals, INVITES - FREE_SEATS as usize);
    assert_eq!(invited, FREE_SEATS as usize);
    assert_eq!(seats.used as usize, rows.len(), "seats used = rows");
    assert_eq!(rows.len(), FREE_SEATS as usize + 1);
    let db_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(db_rows as usize, rows.len());
}

/// What one admin does to another in a round.
#[derive(Debug, Clone, Copy)]
enum Move {
    Demote,
    Suspend,
    Delete,
}

async fn play(app: &Tenantry, t: TenantId, actor: UserId, target: UserId, m: Move) -> String {
    match m {
        Move::Demote => outcome(
            &app.edit_user(
                t,
                actor,
                target,
                &UserEdit {
                    role: Some(Role::User),
                    ..UserEdit::default()
                },
            )
            .await,
        ),
        Move::Suspend => outcome(
            &app.edit_user(
                t,
                actor,
                target,
                &UserEdit {
                    status: Some(Status::Suspended),
                    ..UserEdit::default()
                },
            )
            .await,
        ),
        Move::Delete => outcome(&app.delete_user(t, actor, target).await),
    }
}

/// A tenant with three active admins.
async fn three_admins(
    app: &Tenantry,
    mailer: &InMemoryMailer,
    round: usize,
) -> (TenantId, [UserId; 3]) {
    let (t, first) = app
        .create_tenant(
            &format!("Round {round}"),
            None,
            Email::parse(&format!("a0@r{round}.test")).unwrap(),
        )
        .await
        .unwrap();
    let mut ids = [first; 3];
    for (k, slot) in ids.iter_mut().enumerate().skip(1) {
        let address = format!("a{k}@r{round}.test");
        let invited = app
            .invite(t, first, &plain(&address, Role::Admin))
            .await
            .unwrap();
        let message = mailer
            .sent()
            .into_iter()
            .rev()
            .find(|m| m.id == invited.message_id)
            .expect("the invitation was delivered inline");
        let token = tenantry_service::token_from_link(&message.text).unwrap();
        *slot = app.accept_invitation(&token, &address).await.unwrap().id;
    }
    (t, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d8_d16_a_thousand_rounds_of_admins_racing_to_remove_each_other() {
    let _serial = SERIAL.lock().await;
    const ROUNDS: usize = 1_000;
    const AT_ONCE: usize = 10;
    let (store, _guard) = common::fresh(30).await;
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(store)
        .mailer(mailer.clone())
        .base_url("https://app.test/accept")
        .build()
        .unwrap();
    let started = Instant::now();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut survivors: BTreeMap<usize, usize> = BTreeMap::new();
    for batch in 0..ROUNDS.div_ceil(AT_ONCE) {
        let rounds: Vec<_> = (batch * AT_ONCE..((batch + 1) * AT_ONCE).min(ROUNDS))
            .map(|round| {
                let app = app.clone();
                let mailer = mailer.clone();
                tokio::spawn(async move {
                    let (t, admins) = three_admins(&app, &mailer, round).await;
                    // Each admin picks a target (itself included: only the last admin's own
                    // move can hit D8, since only an active admin may act on an admin, D7)
                    // and a move, from a generator seeded by the round.
                    let mut x = (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut next = move |n: usize| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % n as u64) as usize
                    };
                    let moves = [Move::Demote, Move::Suspend, Move::Delete];
                    let racers: Vec<_> = (0..3)
                        .map(|k| {
                            let app = app.clone();
                            let (actor, target) = (admins[k], admins[next(3)]);
                            let m = moves[next(3)];
                            tokio::spawn(async move { play(&app, t, actor, target, m).await })
                        })
                        .collect();
                    let mut outcomes = Vec::new();
                    for r in racers {
                        outcomes.push(r.await.unwrap());
                    }
                    let rows = users(&app, t).await;
                    let active_admins = rows.iter().filter(|u| u.is_active_admin()).count();
                    let state = app.tenant(t).await.unwrap();
                    assert_eq!(
                        state.counters.active_admins as usize, active_admins,
                        "round {round}: the counter equals the rows"
                    );
                    assert_eq!(state.counters.seats_used as usize, rows.len());
                    (round, active_admins, outcomes)
                })
            })
            .collect();
        for r in rounds {
            let (round, active_admins, outcomes) = r.await.unwrap();
            assert!(
                active_admins >= 1,
                "D8: round {round} left no active admin ({outcomes:?})"
            );
            *survivors.entry(active_admins).or_default() += 1;
            for o in outcomes {
                *counts.entry(o).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{ROUNDS} rounds of 3 admins racing to demote, suspend and delete each other \
         ({AT_ONCE} rounds at a time, 3 concurrent tasks each): rounds by active admins left \
         {survivors:?} (never 0); moves {counts:?}; {:.1} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(survivors.values().sum::<usize>(), ROUNDS);
    assert!(!survivors.contains_key(&0));
    assert!(
        counts.contains_key("refused LastAdmin"),
        "some rounds reached the last admin (D8)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d10_d16_a_hundred_concurrent_accepts_of_one_token() {
    let _serial = SERIAL.lock().await;
    const ACCEPTS: usize = 100;
    let (store, _guard) = common::fresh(50).await;
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(store)
        .mailer(mailer.clone())
        .base_url("https://app.test/accept")
        .build()
        .unwrap();
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("admin@acme.test").unwrap())
        .await
        .unwrap();
    let invited = app
        .invite(t, admin, &plain("bob@acme.test", Role::User))
        .await
        .unwrap();
    let token = tenantry_service::token_from_link(&mailer.sent()[0].text).unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..ACCEPTS)
        .map(|_| {
            let app = app.clone();
            let token = token.clone();
            tokio::spawn(async move { app.accept_invitation(&token, "Bob@acme.test").await })
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut invalid = 0usize;
    for task in tasks {
        let r = task.await.unwrap();
        if matches!(r, Err(Error::Rule(tenantry_core::Error::InvalidInvitation))) {
            invalid += 1;
        }
        *counts.entry(outcome(&r)).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let succeeded = counts.get("ok").copied().unwrap_or(0);
    println!(
        "{ACCEPTS} concurrent accepts of one token: {succeeded} succeeded, {invalid} refused as \
         invalid (D10); outcomes {counts:?}; {:.2} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(succeeded, 1, "exactly one accept succeeds");
    assert_eq!(invalid, ACCEPTS - 1);
    let bob = app
        .user(t, ActorRef::System, invited.user.id)
        .await
        .unwrap();
    assert_eq!(bob.status, Status::Active);
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
}
