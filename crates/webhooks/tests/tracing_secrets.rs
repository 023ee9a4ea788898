#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! No secret, body, signature or URL reaches a log line or a recorded error: every failure
//! kind is logged (at every level, TRACE included) while the test looks for them.

mod support;

use std::sync::{Arc, Mutex};

use support::{Fault, Receiver};
use tenantry_service::ActorRef;
use tenantry_webhooks::{Dispatcher, DispatcherSettings, InMemoryEndpointStore, Webhooks};
use tokio::sync::mpsc;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn failures_are_logged_without_secret_body_signature_or_url() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (app, clock, tenant, admin) =
        support::service(time::macros::datetime!(2026-03-02 09:00 UTC)).await;
    let endpoints = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), endpoints.clone());
    let settings = DispatcherSettings {
        request_timeout: std::time::Duration::from_millis(200),
        backoff: time::Duration::seconds(1),
        max_backoff: time::Duration::seconds(1),
        disable_after: time::Duration::seconds(30),
        ..DispatcherSettings::default()
    };
    let dispatcher =
        Dispatcher::with_clock(&app, endpoints, settings, Arc::new(clock.clone())).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let receiver = Receiver::start(Arc::new(|| Fault::Status500), tx).await;
    let url = receiver.url("/in?token=tok-SENSITIVE-7731");
    let made = hooks
        .register(tenant, ActorRef::User(admin), &url, &[])
        .await
        .unwrap();
    let plans: [(support::Plan, &str); 5] = [
        (Arc::new(|| Fault::Status500), "HTTP 500"),
        (Arc::new(|| Fault::Status(404)), "HTTP 404"),
        (Arc::new(|| Fault::Slow(600)), "timed out"),
        (Arc::new(|| Fault::Reset), "request failed"),
        (Arc::new(|| Fault::TooMany(1)), "HTTP 429"),
    ];
    let mut errors = Vec::new();
    for (plan, expected) in plans {
        receiver.set_plan(plan);
        dispatcher.run_once().await.unwrap();
        let (_, status) = hooks
            .endpoint_status(tenant, made.endpoint.id)
            .await
            .unwrap();
        assert_eq!(status.last_error.as_deref(), Some(expected));
        errors.push(status.last_error.unwrap());
        clock.advance(time::Duration::seconds(2));
    }
    receiver.stop();
    for _ in 0..20 {
        dispatcher.run_once().await.unwrap();
        clock.advance(time::Duration::seconds(2));
    }
    let (endpoint, status) = hooks
        .endpoint_status(tenant, made.endpoint.id)
        .await
        .unwrap();
    assert!(!endpoint.enabled, "disabled after failing 30 s");
    errors.push(status.last_error.unwrap());

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("webhook delivery failed"), "{log}");
    assert!(log.contains("disabled after failing too long"), "{log}");
    assert!(log.contains(&made.endpoint.id.to_string()));
    let arrivals = receiver.arrivals();
    assert!(!arrivals.is_empty());
    let key = made.secret.expose().trim_start_matches("whsec_");
    let everything = format!("{log}\n{}", errors.join("\n"));
    assert!(!everything.contains(key), "the secret leaked");
    assert!(!everything.contains("SENSITIVE"), "the URL leaked");
    // The HTTP client's own DEBUG/TRACE lines (hyper-util) name the host and port it
    // connects to, never the path or query; this crate's lines name neither.
    let ours: Vec<&str> = everything
        .lines()
        .filter(|l| !l.contains("hyper_util::"))
        .collect();
    assert!(ours.iter().any(|l| l.contains("tenantry_webhooks")));
    let addr = receiver.addr.to_string();
    assert!(ours.iter().all(|l| !l.contains(&addr)), "the URL leaked");
    for a in &arrivals {
        let signature = a.signature.trim_start_matches("v1,");
        assert!(!everything.contains(signature), "a signature leaked");
        assert!(!everything.contains(&a.id), "a body or header leaked");
        assert!(
            !everything.contains(std::str::from_utf8(&a.body).unwrap()),
            "a body leaked"
        );
    }
}
