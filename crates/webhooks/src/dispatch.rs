//! The dispatcher: each endpoint's audit feed POSTed in order, at least once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tenantry_core::{
    ActorRef, AuditAction, AuditEvent, AuditRecord, AuditTarget, Field, FieldChange, Outcome, Value,
};
use tenantry_service::{Clock, Tenantry};
use tenantry_store::Store;
use time::{Duration, OffsetDateTime};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{
    DeliveryStatus, EndpointId, EndpointStore, StoredEndpoint, WebhookError, body,
    signature_header, webhook_id,
};

/// How the dispatcher delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherSettings {
    /// How long a connection may take to open (default 5 s).
    pub connect_timeout: std::time::Duration,
    /// How long one request may take, response headers included (default 10 s).
    pub request_timeout: std::time::Duration,
    /// The delay after the first failure; it doubles with each failure in a row (default 30 s).
    pub backoff: Duration,
    /// The longest delay between attempts, and the longest `Retry-After` honoured (default 1 h).
    pub max_backoff: Duration,
    /// An endpoint failing without a success for this long is disabled (default 3 days).
    pub disable_after: Duration,
    /// How many endpoints are delivered to at once (default 16).
    pub max_concurrency: usize,
    /// How many audit records are read at a time (default 100).
    pub batch: u32,
    /// How often [`Dispatcher::spawn`]'s loop looks for due endpoints (default 1 s).
    pub poll_interval: std::time::Duration,
    /// Whether connections are kept alive between requests (default `true`).
    pub reuse_connections: bool,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            connect_timeout: std::time::Duration::from_secs(5),
            request_timeout: std::time::Duration::from_secs(10),
            backoff: Duration::seconds(30),
            max_backoff: Duration::hours(1),
            disable_after: Duration::days(3),
            max_concurrency: 16,
            batch: 100,
            poll_interval: std::time::Duration::from_secs(1),
            reuse_connections: true,
        }
    }
}

/// What one pass of [`Dispatcher::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Endpoints delivered to (those due and not already being delivered to).
    pub endpoints: usize,
    /// Events delivered (a 2xx answer).
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Endpoints disabled for failing too long.
    pub disabled: u64,
}

impl DispatchReport {
    fn add(&mut self, other: DispatchReport) {
        self.endpoints = self.endpoints.saturating_add(other.endpoints);
        self.delivered = self.delivered.saturating_add(other.delivered);
        self.failed = self.failed.saturating_add(other.failed);
        self.disabled = self.disabled.saturating_add(other.disabled);
    }
}

/// Why one attempt failed. Its text names the kind of failure only: never the URL, the
/// body or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connect,
    Transport,
    Status(u16),
    TooManyRequests(Option<Duration>),
    Internal,
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Timeout => "timed out".to_owned(),
            Failure::Connect => "connection failed".to_owned(),
            Failure::Transport => "request failed".to_owned(),
            Failure::Status(code) => format!("HTTP {code}"),
            Failure::TooManyRequests(_) => "HTTP 429".to_owned(),
            Failure::Internal => "internal error".to_owned(),
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            Failure::Timeout
        } else if err.is_connect() {
            Failure::Connect
        } else {
            Failure::Transport
        }
    }
}

/// The service's clock, through [`Tenantry::now`].
#[derive(Debug)]
struct AppClock(Tenantry);

impl Clock for AppClock {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    endpoints: Arc<dyn EndpointStore>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    settings: DispatcherSettings,
    running: Mutex<HashSet<EndpointId>>,
    permits: Arc<Semaphore>,
}

/// Marks an endpoint as being delivered to; unmarks it when dropped (also when its task is
/// aborted).
struct Running {
    inner: Arc<Inner>,
    id: EndpointId,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Delivers every enabled endpoint's events: per endpoint, the tenant's audit records after
/// its durable cursor, in order, filtered by kind, each POSTed signed, the cursor saved
/// after each 2xx answer (at least once, in order per endpoint).
///
/// Each endpoint is delivered to by a task of its own, at most
/// [`DispatcherSettings::max_concurrency`] at once, so a slow or dead endpoint holds up no
/// other and no use case. Timeouts, connection errors, 5xx and other non-2xx answers are
/// failures, retried with exponential backoff; a 429's `Retry-After` (seconds or an HTTP date) sets the
/// next attempt. An endpoint failing for longer than [`DispatcherSettings::disable_after`]
/// is disabled, recorded as `webhook_endpoint_changed` by the system actor. Redirects are
/// not followed (a 3xx is a failure).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenantry_service::{InMemoryStore, Tenantry};
/// use tenantry_webhooks::{Dispatcher, DispatcherSettings, InMemoryEndpointStore};
///
/// let app = Tenantry::builder(InMemoryStore::new()).build()?;
/// let endpoints = Arc::new(InMemoryEndpointStore::new());
/// let dispatcher = Dispatcher::new(&app, endpoints, DispatcherSettings::default())?;
/// let task = dispatcher.spawn(); // runs until aborted
/// # task.abort();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// A dispatcher over the service's store (the audit log) and clock, and `endpoints`.
    ///
    /// # Errors
    /// [`WebhookError::Client`] when the HTTP client cannot be built.
    pub fn new(
        app: &Tenantry,
        endpoints: Arc<dyn EndpointStore>,
        settings: DispatcherSettings,
    ) -> Result<Self, WebhookError> {
        Self::with_clock(app, endpoints, settings, Arc::new(AppClock(app.clone())))
    }

    /// [`Dispatcher::new`] with another clock (for backoff and disabling; the
    /// `webhook-timestamp` too).
    ///
    /// # Errors
    /// [`WebhookError::Client`] when the HTTP client cannot be built.
    pub fn with_clock(
        app: &Tenantry,
        endpoints: Arc<dyn EndpointStore>,
        settings: DispatcherSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebhookError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tenantry-webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.reuse_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().map_err(|_| WebhookError::Client)?;
        let permits = Arc::new(Semaphore::new(settings.max_concurrency.max(1)));
        Ok(Self {
            inner: Arc::new(Inner {
                store: app.store().clone(),
                endpoints,
                clock,
                client,
                settings,
                running: Mutex::new(HashSet::new()),
                permits,
            }),
        })
    }

    /// Starts a task per due endpoint (enabled, its next attempt due, not already running).
    async fn start_due(&self, tasks: &mut JoinSet<DispatchReport>) -> Result<usize, WebhookError> {
        let now = self.inner.clock.now();
        let mut started = 0;
        for ep in self.inner.endpoints.all().await? {
            if !ep.endpoint.enabled || ep.status.next_attempt_at.is_some_and(|t| t > now) {
                continue;
            }
            let id = ep.endpoint.id;
            let fresh = self
                .inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id);
            if !fresh {
                continue;
            }
            let guard = Running {
                inner: self.inner.clone(),
                id,
            };
            let inner = self.inner.clone();
            tasks.spawn(async move {
                let _guard = guard;
                let Ok(_permit) = inner.permits.clone().acquire_owned().await else {
                    return DispatchReport::default();
                };
                deliver(&inner, ep).await
            });
            started += 1;
        }
        Ok(started)
    }

    /// One pass: delivers to every due endpoint until it is caught up or fails, and waits
    /// for all of them. Dropping (aborting) the future aborts its deliveries; an event sent
    /// but whose cursor was not saved is sent again, with the same `webhook-id`.
    ///
    /// # Errors
    /// When the endpoint store cannot list the endpoints.
    pub async fn run_once(&self) -> Result<DispatchReport, WebhookError> {
        let mut tasks = JoinSet::new();
        self.start_due(&mut tasks).await?;
        let mut report = DispatchReport::default();
        while let Some(done) = tasks.join_next().await {
            if let Ok(r) = done {
                report.add(r);
            }
        }
        Ok(report)
    }

    /// Runs the dispatcher in the background until the handle is aborted: every
    /// [`DispatcherSettings::poll_interval`] it starts the due endpoints that are not
    /// running yet (a slow endpoint never delays the others' next pass).
    #[must_use]
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                while tasks.try_join_next().is_some() {}
                if let Err(err) = this.start_due(&mut tasks).await {
                    tracing::warn!(error = %err, "webhook dispatcher could not list endpoints");
                }
                tokio::time::sleep(this.inner.settings.poll_interval).await;
            }
        })
    }
}

fn delay_after(settings: &DispatcherSettings, attempts: u32, failure: &Failure) -> Duration {
    if let Failure::TooManyRequests(Some(after)) = failure {
        return (*after).clamp(Duration::ZERO, settings.max_backoff);
    }
    let factor = 2i32.saturating_pow(attempts.saturating_sub(1).min(30));
    settings
        .backoff
        .checked_mul(factor)
        .unwrap_or(settings.max_backoff)
        .min(settings.max_backoff)
}

/// A `Retry-After` value (RFC 9110 §10.2.3): a number of seconds, or an HTTP date, read
/// against `now`; a date in the past is no delay. `None` for anything else (the ordinary
/// backoff then applies).
pub(crate) fn retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u32>() {
        return Some(Duration::seconds(i64::from(seconds)));
    }
    // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (the form senders must use); RFC 2822
    // reads it, "GMT" being an obsolete but known zone.
    let at = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some((at - now).max(Duration::ZERO))
}

async fn post(inner: &Inner, ep: &StoredEndpoint, record: &AuditRecord) -> Result<(), Failure> {
    let body = body(record).map_err(|_| Failure::Internal)?;
    let id = webhook_id(record.event.tenant_id, record.seq);
    let now = inner.clock.now();
    let timestamp = now.unix_timestamp();
    let signature = signature_header(&ep.secrets.signing_at(now), &id, timestamp, &body);
    let response = inner
        .client
        .post(&ep.endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::from_reqwest(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.as_u16() == 429 {
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, now));
        return Err(Failure::TooManyRequests(after));
    }
    Err(Failure::Status(status.as_u16()))
}

async fn save(inner: &Inner, ep: &StoredEndpoint, status: &DeliveryStatus) -> bool {
    let e = &ep.endpoint;
    match inner.endpoints.save_status(e.tenant_id, e.id, status).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(endpoint = %e.id, tenant = %e.tenant_id, error = %err,
                "webhook status not saved");
            false
        }
    }
}

/// Delivers one endpoint's due events until it is caught up, fails, or is gone.
async fn deliver(inner: &Inner, ep: StoredEndpoint) -> DispatchReport {
    let mut report = DispatchReport {
        endpoints: 1,
        ..DispatchReport::default()
    };
    let mut status = ep.status.clone();
    let tenant = ep.endpoint.tenant_id;
    loop {
        let batch = match inner
            .store
            .audit(tenant, status.delivered_seq, inner.settings.batch.max(1))
            .await
        {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(endpoint = %ep.endpoint.id, tenant = %tenant, error = %err,
                    "webhook dispatcher could not read the audit log");
                return report;
            }
        };
        if batch.is_empty() {
            return report;
        }
        let mut skipped = false;
        for record in &batch {
            if !ep.endpoint.wants(record.event.action) {
                status.delivered_seq = record.seq;
                skipped = true;
                continue;
            }
            match post(inner, &ep, record).await {
                Ok(()) => {
                    status.delivered_seq = record.seq;
                    status.attempts = 0;
                    status.last_error = None;
                    status.next_attempt_at = None;
                    status.failing_since = None;
                    skipped = false;
                    report.delivered = report.delivered.saturating_add(1);
                    if !save(inner, &ep, &status).await {
                        return report;
                    }
                }
                Err(failure) => {
                    report.failed = report.failed.saturating_add(1);
                    fail(inner, &ep, &mut status, &failure, &mut report).await;
                    return report;
                }
            }
        }
        if skipped && !save(inner, &ep, &status).await {
            return report;
        }
    }
}

async fn fail(
    inner: &Inner,
    ep: &StoredEndpoint,
    status: &mut DeliveryStatus,
    failure: &Failure,
    report: &mut DispatchReport,
) {
    let now = inner.clock.now();
    let e = &ep.endpoint;
    status.attempts = status.attempts.saturating_add(1);
    status.last_error = Some(failure.describe());
    let since = *status.failing_since.get_or_insert(now);
    status.next_attempt_at = Some(now + delay_after(&inner.settings, status.attempts, failure));
    tracing::warn!(endpoint = %e.id, tenant = %e.tenant_id, attempts = status.attempts,
        error = %failure.describe(), "webhook delivery failed");
    if !save(inner, ep, status).await {
        return;
    }
    if now - since < inner.settings.disable_after {
        return;
    }
    match inner.endpoints.disable(e.tenant_id, e.id, now).await {
        Ok(true) => {
            report.disabled = report.disabled.saturating_add(1);
            tracing::warn!(endpoint = %e.id, tenant = %e.tenant_id,
                "webhook endpoint disabled after failing too long");
            let event = AuditEvent {
                tenant_id: e.tenant_id,
                actor: ActorRef::System,
                action: AuditAction::WebhookEndpointChanged,
                target: AuditTarget::Tenant,
                at: now,
                outcome: Outcome::Success,
                changes: vec![
                    FieldChange {
                        field: Field::WebhookEndpoint,
                        before: Value::Text(e.id.to_string()),
                        after: Value::Text(e.id.to_string()),
                    },
                    FieldChange {
                        field: Field::WebhookEnabled,
                        before: Value::Bool(true),
                        after: Value::Bool(false),
                    },
                ],
            };
            if let Err(err) = inner.store.append_audit(&event).await {
                tracing::warn!(endpoint = %e.id, tenant = %e.tenant_id, error = %err,
                    "the disabling of a webhook endpoint was not recorded");
            }
        }
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(endpoint = %e.id, tenant = %e.tenant_id, error = %err,
                "webhook endpoint not disabled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_nothing_else() {
        let now = time::macros::datetime!(1994-11-06 08:49:00 UTC);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::seconds(120)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::seconds(37))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:48:37 GMT", now),
            Some(Duration::ZERO),
            "a date already past is no delay"
        );
        for junk in [
            "",
            "-5",
            "1.5",
            "soon",
            "99999999999",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }
}
