//! The test harness: a real HTTP receiver on loopback (hyper serving an axum router, behind
//! an accept loop of our own that can reset connections or go down), recording every
//! request it processed; and the tenantry service on an in-memory store with a manual clock.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tenantry_service::{Email, InMemoryStore, ManualClock, TenantId, Tenantry, UserId};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// What the receiver does with one request (or connection, for `Reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 200.
    Ok,
    /// Answer 500.
    Status500,
    /// Answer this status.
    Status(u16),
    /// Answer 429 with `Retry-After: n`.
    TooMany(u32),
    /// Answer 429 with `Retry-After` as an HTTP date (IMF-fixdate) of this Unix time.
    TooManyUntil(i64),
    /// Answer 200 after this many milliseconds (past the client's timeout).
    Slow(u64),
    /// Record the request, tell the test (which aborts the dispatcher), answer 200 much later.
    Hold,
    /// Read part of the request, then reset the connection (nothing recorded).
    Reset,
}

/// One request the receiver processed.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub fault: Fault,
    pub round: u64,
    pub path: String,
}

impl Arrival {
    /// The audit seq from the webhook id `evt_<tenant>_<seq>`.
    pub fn seq(&self) -> u64 {
        self.id.rsplit('_').next().unwrap().parse().unwrap()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Decides the fault of each request.
pub type Plan = Arc<dyn Fn() -> Fault + Send + Sync>;

/// A small deterministic generator (xorshift64*), for reproducible fault plans.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed.max(1)))
    }
    /// A number in 0..n.
    pub fn below(&self, n: u64) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[derive(Clone)]
struct Shared {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    plan: Arc<Mutex<Plan>>,
    round: Arc<AtomicU64>,
    held: mpsc::UnboundedSender<()>,
}

/// A recording HTTP receiver on 127.0.0.1.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    server: Mutex<Option<JoinSet<()>>>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn handle(shared: Shared, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let fault = {
        let plan = shared.plan.lock().unwrap().clone();
        let f = plan();
        if f == Fault::Reset { Fault::Ok } else { f }
    };
    shared.arrivals.lock().unwrap().push(Arrival {
        id: header(&headers, "webhook-id"),
        timestamp: header(&headers, "webhook-timestamp"),
        signature: header(&headers, "webhook-signature"),
        body: body.to_vec(),
        fault,
        round: shared.round.load(Ordering::SeqCst),
        path,
    });
    match fault {
        Fault::Ok | Fault::Reset => StatusCode::OK.into_response(),
        Fault::Status500 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            if status.is_redirection() {
                (status, [("location", "http://127.0.0.1:9/elsewhere")]).into_response()
            } else {
                status.into_response()
            }
        }
        Fault::TooMany(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Fault::TooManyUntil(unix) => {
            let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let at = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", at.format(&format).unwrap())],
            )
                .into_response()
        }
        Fault::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK.into_response()
        }
        Fault::Hold => {
            let _ = shared.held.send(());
            tokio::time::sleep(Duration::from_secs(2)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    /// A receiver answering by `plan`; `held` hears of every `Hold`.
    pub async fn start(plan: Plan, held: mpsc::UnboundedSender<()>) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            arrivals: Arc::default(),
            plan: Arc::new(Mutex::new(plan)),
            round: Arc::default(),
            held,
        };
        let this = Arc::new(Self {
            addr,
            shared,
            server: Mutex::new(None),
        });
        this.serve(listener);
        this
    }

    /// A receiver that answers 200 to everything.
    pub async fn ok() -> Arc<Self> {
        let (tx, _rx) = mpsc::unbounded_channel();
        Self::start(Arc::new(|| Fault::Ok), tx).await
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()).http1_only());
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let reset = (shared.plan.lock().unwrap().clone())() == Fault::Reset;
                if reset {
                    conns.spawn(async move {
                        let mut buf = [0u8; 64];
                        let _ = stream.read(&mut buf).await;
                        // An RST instead of a FIN: linger 0 then drop.
                        #[allow(deprecated)]
                        let _ = stream.set_linger(Some(Duration::ZERO));
                        drop(stream);
                    });
                    continue;
                }
                let s = shared.clone();
                let router = Router::new().fallback(
                    move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                        let s = s.clone();
                        async move { handle(s, uri.path().to_owned(), headers, body).await }
                    },
                );
                let service = TowerToHyperService::new(router);
                let builder = Arc::clone(&builder);
                conns.spawn(async move {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(set);
    }

    /// Stops listening and drops every connection: the receiver is down.
    pub fn stop(&self) {
        if let Some(mut set) = self.server.lock().unwrap().take() {
            set.abort_all();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        // The aborted accept loop lets go of the port at once (tokio sets SO_REUSEADDR).
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn is_up(&self) -> bool {
        self.server.lock().unwrap().is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.shared.plan.lock().unwrap() = plan;
    }

    pub fn set_round(&self, round: u64) {
        self.shared.round.store(round, Ordering::SeqCst);
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The service on an in-memory store with a manual clock at `t0`, and a tenant with its
/// admin.
pub async fn service(t0: time::OffsetDateTime) -> (Tenantry, ManualClock, TenantId, UserId) {
    let clock = ManualClock::new(t0);
    let app = Tenantry::builder(InMemoryStore::new())
        .clock(clock.clone())
        .build()
        .unwrap();
    let (tenant, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    (app, clock, tenant, admin)
}

/// Now, to the second (the Standard Webhooks verifier allows five minutes of skew).
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap()
}

/// The venv python that can import `standardwebhooks` (from `bash scripts/services.sh`),
/// or `None` outside CI when it is missing (the test then says it skipped). Under
/// `CI=true` a missing verifier fails the test.
pub fn verifier_python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".tools/venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let message = format!(
        "{} cannot import standardwebhooks; run `bash scripts/services.sh`",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}
