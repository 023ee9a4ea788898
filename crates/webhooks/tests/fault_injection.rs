#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Step 4: over 1,000 dispatch runs against real loopback receivers with injected faults —
//! receiver down, 500, slow past the timeout, connection reset mid-request, 429, and the
//! dispatcher aborted between a send and its cursor update — no event is lost, none arrives
//! out of order per endpoint, and an event arrives twice only after a fault, always with the
//! same `webhook-id`.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use support::{Arrival, Fault, Receiver, Rng};
use tenantry_service::{ActorRef, AuditAction, AuditEvent, AuditTarget, Outcome, Store};
use tenantry_webhooks::{
    Dispatcher, DispatcherSettings, EndpointStore, InMemoryEndpointStore, Webhooks, webhook_id,
};
use time::Duration;
use tokio::sync::mpsc;

/// Dispatch runs in this test (each one `run_once`, possibly aborted).
const RUNS: u64 = 1_100;

fn plan(rng: Arc<Rng>) -> support::Plan {
    Arc::new(move || match rng.below(100) {
        0..=5 => Fault::Status500,
        6 => Fault::Slow(350),
        8..=11 => Fault::Reset,
        12..=13 => Fault::TooMany(1),
        14..=16 => Fault::Hold,
        _ => Fault::Ok,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_or_reordered_under_faults_and_duplicates_follow_faults_only() {
    let t0 = time::macros::datetime!(2026-03-02 09:00 UTC);
    let (app, clock, tenant, admin) = support::service(t0).await;
    // The run a request was sent in, from its `webhook-timestamp`: the clock moves 5 s a run
    // (the receiver may handle a request a little after the run that sent it ended).
    let sent_in = |a: &Arrival| -> u64 {
        let ts: i64 = a.timestamp.parse().unwrap();
        u64::try_from((ts - t0.unix_timestamp()) / 5).unwrap() + 1
    };
    let endpoints = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), endpoints.clone());
    let settings = DispatcherSettings {
        connect_timeout: StdDuration::from_millis(200),
        request_timeout: StdDuration::from_millis(250),
        backoff: Duration::seconds(1),
        max_backoff: Duration::seconds(4),
        disable_after: Duration::days(365),
        batch: 7,
        reuse_connections: false,
        ..DispatcherSettings::default()
    };
    let dispatcher =
        Dispatcher::with_clock(&app, endpoints.clone(), settings, Arc::new(clock.clone())).unwrap();
    let (tx, mut held) = mpsc::unbounded_channel();
    let mut receivers = Vec::new();
    let mut ids = Vec::new();
    let kinds: [&[AuditAction]; 3] = [&[], &[AuditAction::SignedIn], &[AuditAction::UserEdited]];
    for (i, events) in kinds.iter().enumerate() {
        let r = Receiver::start(plan(Arc::new(Rng::new(0x9E37_79B9 + i as u64))), tx.clone()).await;
        let e = hooks
            .register(tenant, ActorRef::User(admin), &r.url("/in"), events)
            .await
            .unwrap();
        ids.push(e.endpoint.id);
        receivers.push(r);
    }
    let chaos = Rng::new(42);
    let mut aborted_rounds = HashSet::new();
    // (endpoint, run) where the dispatcher recorded a failure: an answer the receiver sent
    // but the dispatcher did not take (too late on a loaded machine) is a fault too.
    let mut failed_runs = HashSet::new();
    let mut appended = 0u64;
    for round in 1..=RUNS {
        for r in &receivers {
            r.set_round(round);
        }
        // New events now and then, of two kinds.
        for _ in 0..chaos.below(3) {
            let action = if chaos.below(2) == 0 {
                AuditAction::SignedIn
            } else {
                AuditAction::UserEdited
            };
            let event = AuditEvent {
                tenant_id: tenant,
                actor: ActorRef::System,
                action,
                target: AuditTarget::Tenant,
                at: app.now(),
                outcome: Outcome::Success,
                changes: vec![],
            };
            app.store().append_audit(&event).await.unwrap();
            appended += 1;
        }
        // A receiver goes down, or comes back.
        for r in &receivers {
            if r.is_up() && chaos.below(100) < 2 {
                r.stop();
            } else if !r.is_up() && chaos.below(100) < 40 {
                r.restart().await;
            }
        }
        while held.try_recv().is_ok() {}
        let d = dispatcher.clone();
        let mut run = tokio::spawn(async move { d.run_once().await });
        tokio::select! {
            done = &mut run => { done.unwrap().unwrap(); }
            _ = held.recv() => {
                // A request is at a receiver and not answered: kill the dispatcher now,
                // between the send and the cursor update.
                run.abort();
                let _ = run.await;
                aborted_rounds.insert(round);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if endpoints
                .get(tenant, *id)
                .await
                .unwrap()
                .unwrap()
                .status
                .attempts
                > 0
            {
                failed_runs.insert((i, round));
            }
        }
        clock.advance(Duration::seconds(5));
    }
    // Calm: everything up and answering, until every endpoint is caught up.
    for r in &receivers {
        if !r.is_up() {
            r.restart().await;
        }
        r.set_plan(Arc::new(|| Fault::Ok));
        r.set_round(RUNS + 1);
    }
    for _ in 0..20 {
        dispatcher.run_once().await.unwrap();
        clock.advance(Duration::seconds(5));
    }

    let log = app.store().audit(tenant, 0, 10_000).await.unwrap();
    let last = log.last().unwrap().seq;
    let mut faults = 0;
    let mut duplicates = 0;
    for (i, (r, id)) in receivers.iter().zip(&ids).enumerate() {
        let (_, status) = hooks.endpoint_status(tenant, *id).await.unwrap();
        assert_eq!(status.delivered_seq, last, "endpoint {i} caught up");
        let stored = endpoints.get(tenant, *id).await.unwrap().unwrap();
        let arrivals = r.arrivals();
        // Expected: every record from the endpoint's own registration on, of its kinds.
        let registered = log
            .iter()
            .filter(|x| x.event.action == AuditAction::WebhookEndpointAdded)
            .nth(i)
            .unwrap()
            .seq;
        let expected: Vec<u64> = log
            .iter()
            .filter(|x| x.seq >= registered && stored.endpoint.wants(x.event.action))
            .map(|x| x.seq)
            .collect();
        // In order, as the receiver sees them: each event's first arrival comes after the
        // first arrival of every earlier event.
        let mut seen = HashSet::new();
        let firsts: Vec<u64> = arrivals
            .iter()
            .map(Arrival::seq)
            .filter(|s| seen.insert(*s))
            .collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "endpoint {i} out of order"
        );
        // In order, as the dispatcher sent them (by the run in their timestamp; within a run
        // one endpoint's requests are sequential): never back to an earlier event. A request
        // the dispatcher gave up on (killed or timed out) may reach the receiver after a
        // later one; it is then a repeat, with the same id.
        let mut sent = arrivals.clone();
        sent.sort_by_key(|a| sent_in(a));
        let seqs: Vec<u64> = sent.iter().map(Arrival::seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "endpoint {i} sent out of order"
        );
        // Nothing lost: every expected event was answered 2xx at least once.
        let answered: Vec<u64> = {
            let mut v: Vec<u64> = arrivals
                .iter()
                .filter(|a| a.fault == Fault::Ok)
                .map(Arrival::seq)
                .collect();
            v.dedup();
            v
        };
        assert_eq!(
            answered, expected,
            "endpoint {i}: lost or unexpected events"
        );
        // Duplicates only after a fault (a failed answer, or a dispatcher killed in that run),
        // always with the same id, body and a valid signature.
        let mut by_seq: BTreeMap<u64, Vec<&Arrival>> = BTreeMap::new();
        for a in &sent {
            by_seq.entry(a.seq()).or_default().push(a);
            assert_eq!(a.id, webhook_id(tenant, a.seq()));
            let ts: i64 = a.timestamp.parse().unwrap();
            assert_eq!(a.signature, stored.secrets.current.sign(&a.id, ts, &a.body));
            assert_eq!(a.json()["data"]["seq"], a.seq());
            if a.fault != Fault::Ok {
                faults += 1;
            }
        }
        for (seq, all) in &by_seq {
            let (final_one, earlier) = all.split_last().unwrap();
            assert_eq!(
                final_one.fault,
                Fault::Ok,
                "endpoint {i} seq {seq}: ends answered"
            );
            for e in earlier {
                duplicates += 1;
                assert!(
                    e.fault != Fault::Ok
                        || aborted_rounds.contains(&sent_in(e))
                        || failed_runs.contains(&(i, sent_in(e))),
                    "endpoint {i} seq {seq}: a duplicate without a fault: {:?}",
                    all.iter()
                        .map(|a| (sent_in(a), a.fault))
                        .collect::<Vec<_>>()
                );
                assert_eq!(e.body, final_one.body, "the same event, the same body");
            }
        }
    }
    eprintln!(
        "{RUNS} runs, {appended} events appended, {} aborted runs, {faults} faulty answers, {duplicates} repeats",
        aborted_rounds.len()
    );
    assert!(aborted_rounds.len() > 20, "the abort fault was exercised");
    assert!(faults > 100, "faults were exercised");
    assert!(duplicates > 0);
}
