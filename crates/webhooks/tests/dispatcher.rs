#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Step 3: the dispatcher against a real receiver on loopback: order, kind filter, retries
//! with backoff, 429's Retry-After, 4xx and 3xx as failures, disabling, isolation of a slow
//! endpoint.

mod support;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use support::{Fault, Receiver};
use tenantry_service::{
    ActorRef, AuditAction, AuditEvent, AuditTarget, Field, ManualClock, Outcome, TenantId,
    Tenantry, Value,
};
use tenantry_webhooks::{
    Dispatcher, DispatcherSettings, EndpointUpdate, InMemoryEndpointStore, Webhooks,
};
use time::Duration;
use tokio::sync::mpsc;

const T0: time::OffsetDateTime = time::macros::datetime!(2026-03-02 09:00 UTC);

fn settings() -> DispatcherSettings {
    DispatcherSettings {
        connect_timeout: StdDuration::from_millis(500),
        request_timeout: StdDuration::from_millis(500),
        backoff: Duration::seconds(1),
        max_backoff: Duration::seconds(8),
        disable_after: Duration::seconds(60),
        ..DispatcherSettings::default()
    }
}

async fn signed_in(app: &Tenantry, tenant: TenantId, n: usize) {
    for _ in 0..n {
        let event = AuditEvent {
            tenant_id: tenant,
            actor: ActorRef::System,
            action: AuditAction::SignedIn,
            target: AuditTarget::Tenant,
            at: app.now(),
            outcome: Outcome::Success,
            changes: vec![],
        };
        app.store().append_audit(&event).await.unwrap();
    }
}

struct World {
    app: Tenantry,
    clock: ManualClock,
    tenant: TenantId,
    admin: ActorRef,
    hooks: Webhooks,
    dispatcher: Dispatcher,
}

async fn world(settings: DispatcherSettings) -> World {
    let (app, clock, tenant, admin) = support::service(T0).await;
    let endpoints = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), endpoints.clone());
    let dispatcher =
        Dispatcher::with_clock(&app, endpoints, settings, Arc::new(clock.clone())).unwrap();
    World {
        app,
        clock,
        tenant,
        admin: ActorRef::User(admin),
        hooks,
        dispatcher,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_filtered_by_kind_and_the_cursor_follows() {
    let w = world(settings()).await;
    let all = Receiver::ok().await;
    let some = Receiver::ok().await;
    let a = w
        .hooks
        .register(w.tenant, w.admin, &all.url("/a"), &[])
        .await
        .unwrap();
    let s = w
        .hooks
        .register(w.tenant, w.admin, &some.url("/s"), &[AuditAction::SignedIn])
        .await
        .unwrap();
    signed_in(&w.app, w.tenant, 250).await; // more than a batch of 100
    let report = w.dispatcher.run_once().await.unwrap();
    assert_eq!(report.endpoints, 2);
    let got: Vec<u64> = all.arrivals().iter().map(support::Arrival::seq).collect();
    let first = got[0];
    assert_eq!(got, (first..first + 252).collect::<Vec<_>>()); // 2 added + 250 sign-ins
    let kinds: Vec<String> = some
        .arrivals()
        .iter()
        .map(|x| x.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, vec!["signed_in"; 250]);
    let (_, sa) = w
        .hooks
        .endpoint_status(w.tenant, a.endpoint.id)
        .await
        .unwrap();
    let (_, ss) = w
        .hooks
        .endpoint_status(w.tenant, s.endpoint.id)
        .await
        .unwrap();
    assert_eq!(sa.delivered_seq, first + 251);
    assert_eq!(ss.delivered_seq, first + 251);
    // Nothing new: nothing sent.
    let again = w.dispatcher.run_once().await.unwrap();
    assert_eq!((again.delivered, again.failed), (0, 0));
    assert_eq!(all.arrivals().len(), 252);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_exponentially_and_429_honours_retry_after() {
    let w = world(settings()).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let r = Receiver::start(Arc::new(|| Fault::Status500), tx).await;
    let e = w
        .hooks
        .register(w.tenant, w.admin, &r.url("/x?token=abc"), &[])
        .await
        .unwrap();
    let id = e.endpoint.id;
    let mut expected_delay = 1;
    for attempt in 1..=5u32 {
        let rep = w.dispatcher.run_once().await.unwrap();
        assert_eq!((rep.delivered, rep.failed), (0, 1), "attempt {attempt}");
        let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
        assert_eq!(st.attempts, attempt);
        assert_eq!(st.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(st.failing_since, Some(T0));
        assert_eq!(
            st.next_attempt_at,
            Some(w.app.now() + Duration::seconds(expected_delay))
        );
        // Not due yet: nothing is tried.
        assert_eq!(w.dispatcher.run_once().await.unwrap().endpoints, 0);
        w.clock.advance(Duration::seconds(expected_delay));
        expected_delay = (expected_delay * 2).min(8);
    }
    assert_eq!(r.arrivals().len(), 5);
    assert!(
        r.arrivals().iter().all(|a| a.id == r.arrivals()[0].id),
        "one event, one id"
    );

    r.set_plan(Arc::new(|| Fault::TooMany(7)));
    w.dispatcher.run_once().await.unwrap();
    let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert_eq!(st.last_error.as_deref(), Some("HTTP 429"));
    assert_eq!(st.next_attempt_at, Some(w.app.now() + Duration::seconds(7)));

    // Other 4xx and a redirect are failures too; the redirect is not followed.
    for (code, text) in [(404, "HTTP 404"), (410, "HTTP 410"), (302, "HTTP 302")] {
        w.clock.advance(Duration::seconds(10));
        r.set_plan(Arc::new(move || Fault::Status(code)));
        let rep = w.dispatcher.run_once().await.unwrap();
        assert_eq!(rep.failed, 1);
        let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
        assert_eq!(st.last_error.as_deref(), Some(text));
    }
    assert!(r.arrivals().iter().all(|a| a.path == "/x"));

    // A success clears the failures and moves on.
    w.clock.advance(Duration::seconds(10));
    r.set_plan(Arc::new(|| Fault::Ok));
    let rep = w.dispatcher.run_once().await.unwrap();
    assert_eq!(rep.delivered, 1);
    let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert_eq!(
        (
            st.attempts,
            st.last_error,
            st.next_attempt_at,
            st.failing_since
        ),
        (0, None, None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_dead_endpoints_are_failures_that_name_no_url() {
    let w = world(DispatcherSettings {
        request_timeout: StdDuration::from_millis(150),
        ..settings()
    })
    .await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let slow = Receiver::start(Arc::new(|| Fault::Slow(600)), tx).await;
    let dead = Receiver::ok().await;
    dead.stop();
    let s = w
        .hooks
        .register(w.tenant, w.admin, &slow.url("/secret-path"), &[])
        .await
        .unwrap();
    let d = w
        .hooks
        .register(w.tenant, w.admin, &dead.url("/secret-path"), &[])
        .await
        .unwrap();
    let rep = w.dispatcher.run_once().await.unwrap();
    assert_eq!(rep.failed, 2);
    let (_, st) = w
        .hooks
        .endpoint_status(w.tenant, s.endpoint.id)
        .await
        .unwrap();
    assert_eq!(st.last_error.as_deref(), Some("timed out"));
    let (_, st) = w
        .hooks
        .endpoint_status(w.tenant, d.endpoint.id)
        .await
        .unwrap();
    assert_eq!(st.last_error.as_deref(), Some("connection failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled_by_the_system_and_can_be_enabled_again() {
    let w = world(settings()).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let r = Receiver::start(Arc::new(|| Fault::Status500), tx).await;
    let e = w
        .hooks
        .register(w.tenant, w.admin, &r.url("/x"), &[])
        .await
        .unwrap();
    let id = e.endpoint.id;
    let mut disabled = 0;
    for _ in 0..20 {
        disabled += w.dispatcher.run_once().await.unwrap().disabled;
        w.clock.advance(Duration::seconds(8));
    }
    assert_eq!(disabled, 1);
    let (ep, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert!(!ep.enabled);
    assert!(st.disabled_at.unwrap() >= T0 + Duration::seconds(60));
    let tries = r.arrivals().len();
    w.clock.advance(Duration::hours(1));
    assert_eq!(w.dispatcher.run_once().await.unwrap().endpoints, 0);
    assert_eq!(
        r.arrivals().len(),
        tries,
        "a disabled endpoint gets nothing"
    );

    let log = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 100)
        .await
        .unwrap();
    let off = log
        .iter()
        .find(|x| {
            x.event.actor == ActorRef::System
                && x.event.action == AuditAction::WebhookEndpointChanged
        })
        .unwrap();
    let c = off
        .event
        .changes
        .iter()
        .find(|c| c.field == Field::WebhookEnabled)
        .unwrap();
    assert_eq!(
        (&c.before, &c.after),
        (&Value::Bool(true), &Value::Bool(false))
    );

    // The admin turns it back on: failures forgiven, the backlog (with the disabling) follows.
    r.set_plan(Arc::new(|| Fault::Ok));
    let on = EndpointUpdate {
        enabled: Some(true),
        ..EndpointUpdate::default()
    };
    w.hooks.update(w.tenant, w.admin, id, &on).await.unwrap();
    let rep = w.dispatcher.run_once().await.unwrap();
    assert_eq!(rep.delivered, 3); // added, disabled by the system, enabled by the admin
    let (ep, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert!(ep.enabled);
    assert_eq!((st.attempts, st.disabled_at), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_holds_up_no_other_endpoint() {
    let w = world(DispatcherSettings {
        request_timeout: StdDuration::from_secs(30),
        poll_interval: StdDuration::from_millis(20),
        ..settings()
    })
    .await;
    let (tx, mut held) = mpsc::unbounded_channel();
    // The slow one holds each request for 2 s.
    let slow = Receiver::start(Arc::new(|| Fault::Hold), tx).await;
    let fast = Receiver::ok().await;
    w.hooks
        .register(w.tenant, w.admin, &slow.url("/slow"), &[])
        .await
        .unwrap();
    w.hooks
        .register(w.tenant, w.admin, &fast.url("/fast"), &[])
        .await
        .unwrap();
    let task = w.dispatcher.spawn();
    held.recv().await.unwrap(); // the slow endpoint's first request is being held
    signed_in(&w.app, w.tenant, 20).await;
    let mut waited = 0;
    while fast.arrivals().len() < 21 && waited < 500 {
        tokio::time::sleep(StdDuration::from_millis(10)).await;
        waited += 1;
    }
    // The fast endpoint got everything while the slow one still holds its first request.
    assert_eq!(fast.arrivals().len(), 21); // its own registration and the 20 sign-ins
    assert_eq!(slow.arrivals().len(), 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_may_be_an_http_date() {
    let w = world(settings()).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    // Retry-After as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT" form), read against the
    // dispatcher's clock (and, like seconds, capped by the longest backoff: 8 s here); a
    // date already past is no extra delay.
    let until = (w.app.now() + Duration::seconds(6)).unix_timestamp();
    let r = Receiver::start(Arc::new(move || Fault::TooManyUntil(until)), tx).await;
    let id = w
        .hooks
        .register(w.tenant, w.admin, &r.url("/x"), &[])
        .await
        .unwrap()
        .endpoint
        .id;
    w.dispatcher.run_once().await.unwrap();
    let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert_eq!(st.last_error.as_deref(), Some("HTTP 429"));
    assert_eq!(st.next_attempt_at, Some(w.app.now() + Duration::seconds(6)));
    w.clock.advance(Duration::seconds(6));
    let far = (w.app.now() + Duration::hours(5)).unix_timestamp();
    r.set_plan(Arc::new(move || Fault::TooManyUntil(far)));
    w.dispatcher.run_once().await.unwrap();
    let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert_eq!(
        st.next_attempt_at,
        Some(w.app.now() + Duration::seconds(8)),
        "capped"
    );
    w.clock.advance(Duration::seconds(8));
    let past = (w.app.now() - Duration::seconds(30)).unix_timestamp();
    r.set_plan(Arc::new(move || Fault::TooManyUntil(past)));
    w.dispatcher.run_once().await.unwrap();
    let (_, st) = w.hooks.endpoint_status(w.tenant, id).await.unwrap();
    assert_eq!(st.next_attempt_at, Some(w.app.now()));
    assert_eq!(st.attempts, 3);
}
