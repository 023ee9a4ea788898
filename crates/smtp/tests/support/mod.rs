//! The test harness: a real SMTP server (Debian's `python3-aiosmtpd`) started on a free
//! loopback port with the recording handler `tenantry_smtp_recorder.py` beside this file,
//! optionally with STARTTLS or implicit TLS on certificates made by a throw-away CA; and the
//! tenantry service wired to a mailer, an in-memory store and a manual clock.
//!
//! Nothing is skipped: when aiosmtpd (or openssl, for the TLS tests) is missing, the test
//! fails and says what to install.
#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenantry_service::{DeliverySettings, Mailer, ManualClock, Tenantry};
use tenantry_smtp::{SmtpConfig, SmtpMailer, TlsMode};

/// Where the fixed test time starts.
pub const T0: time::OffsetDateTime = time::macros::datetime!(2026-03-02 09:00 UTC);
/// The accept page the service builds links from.
pub const BASE_URL: &str = "https://app.tenantry.test/accept";

const INSTALL_HINT: &str = "the SMTP tests need Debian's aiosmtpd: run `apt-get install -y python3-aiosmtpd` \
     (scripts/services.sh does it)";

/// The Python interpreter that can import aiosmtpd. Debian's package installs it for
/// `/usr/bin/python3`, which a pyenv or virtualenv `python3` earlier on PATH lacks, so that
/// one is tried first. `TENANTRY_TEST_PYTHON` overrides.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Ok(p) = std::env::var("TENANTRY_TEST_PYTHON") {
            candidates.push(p);
        }
        candidates.push("/usr/bin/python3".to_owned());
        candidates.push("python3".to_owned());
        for c in &candidates {
            let ok = Command::new(c)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return c.clone();
            }
        }
        panic!("`python3 -c 'import aiosmtpd'` failed for {candidates:?}: {INSTALL_HINT}");
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tenantry-smtp-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI.
#[derive(Debug)]
pub struct TestCerts {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the TLS tests need the openssl CLI (`apt-get install -y openssl`): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    /// A new CA and a leaf certificate signed by it, in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=tenantry test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req", "-new", "-nodes"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Self {
            ca_pem: std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// How the test server secures its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    /// Plain SMTP.
    None,
    /// STARTTLS offered and required before MAIL.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// What an authenticating server accepts (see `tenantry_smtp_auth_server.py`).
#[derive(Debug, Clone)]
pub struct ServerAuth {
    pub user: String,
    pub password: String,
    /// `PLAIN` or `LOGIN`: the only mechanism offered.
    pub mechanism: &'static str,
}

/// A running (or stopped) aiosmtpd with the recording handler.
#[derive(Debug)]
pub struct SmtpServer {
    child: Option<Child>,
    pub port: u16,
    pub tls: ServerTls,
    pub certs: Option<TestCerts>,
    pub spool: PathBuf,
    pub auth: Option<ServerAuth>,
    dir: Scratch,
}

impl SmtpServer {
    /// A server on a free port, not started yet (for "the server is down" tests).
    pub fn reserve(tls: ServerTls) -> Self {
        let dir = Scratch::new("server");
        let spool = dir.0.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let certs = (tls != ServerTls::None).then(|| TestCerts::generate(&dir.0));
        Self {
            child: None,
            port: free_port(),
            tls,
            certs,
            spool,
            auth: None,
            dir,
        }
    }

    /// A started server with `tls` (not `None`) that requires AUTH with `auth` after TLS,
    /// started through aiosmtpd's Python API (`tenantry_smtp_auth_server.py`).
    pub fn start_auth(tls: ServerTls, auth: ServerAuth) -> Self {
        assert_ne!(tls, ServerTls::None, "the auth server always requires TLS");
        let mut s = Self::reserve(tls);
        s.auth = Some(auth);
        s.start();
        s
    }

    /// A started plain-SMTP server.
    pub fn start_plain() -> Self {
        let mut s = Self::reserve(ServerTls::None);
        s.start();
        s
    }

    /// A started server with the given TLS.
    pub fn start_tls(tls: ServerTls) -> Self {
        let mut s = Self::reserve(tls);
        s.start();
        s
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
        let mut cmd = Command::new(python());
        cmd.env("PYTHONPATH", &support)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        if let (Some(auth), Some(certs)) = (&self.auth, &self.certs) {
            let mode = if self.tls == ServerTls::Implicit {
                "implicit"
            } else {
                "starttls"
            };
            cmd.arg(support.join("tenantry_smtp_auth_server.py"))
                .args(["--port", &self.port.to_string(), "--tls", mode])
                .arg("--cert")
                .arg(&certs.cert)
                .arg("--key")
                .arg(&certs.key)
                .args(["--user", &auth.user, "--mechanism", auth.mechanism])
                .args(["--password-env", "TENANTRY_TEST_SMTP_PASSWORD"])
                .env("TENANTRY_TEST_SMTP_PASSWORD", &auth.password)
                .arg(&self.spool);
        } else {
            cmd.args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{}", self.port));
        }
        match (self.tls, &self.certs) {
            _ if self.auth.is_some() => {}
            (ServerTls::StartTls, Some(c)) => {
                cmd.arg("--tlscert")
                    .arg(&c.cert)
                    .arg("--tlskey")
                    .arg(&c.key);
            }
            (ServerTls::Implicit, Some(c)) => {
                cmd.arg("--smtpscert")
                    .arg(&c.cert)
                    .arg("--smtpskey")
                    .arg(&c.key);
            }
            _ => {}
        }
        if self.auth.is_none() {
            cmd.args(["-c", "tenantry_smtp_recorder.Recorder"])
                .arg(&self.spool);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.0.join("server.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.0.join("server.err")).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err =
                    std::fs::read_to_string(self.dir.0.join("server.err")).unwrap_or_default();
                panic!("aiosmtpd exited with {status}: {err}\n{INSTALL_HINT}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("aiosmtpd did not listen on port {} within 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.child = Some(child);
    }

    /// Stops the server (the port refuses connections afterwards).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A mailer configured for this server: plain, or TLS trusting the test CA.
    pub fn mailer(&self) -> SmtpMailer {
        SmtpMailer::new(self.config()).unwrap()
    }

    /// The configuration [`SmtpServer::mailer`] uses.
    pub fn config(&self) -> SmtpConfig {
        let mode = match self.tls {
            ServerTls::None => TlsMode::None,
            ServerTls::StartTls => TlsMode::StartTls,
            ServerTls::Implicit => TlsMode::Implicit,
        };
        let mut c = SmtpConfig::new("127.0.0.1", "Acme Invitations <invites@acme.test>")
            .with_tls(mode)
            .with_port(self.port)
            .with_timeout(Duration::from_secs(10))
            .with_pool_size(2)
            .with_hello_name("tests.tenantry.test");
        if let Some(certs) = &self.certs {
            c = c.with_root_certificate(certs.ca_pem.clone());
        }
        c
    }

    /// Makes the server answer `reply` to RCPT TO (`stage = "rcpt"`) or to the end of DATA
    /// (`stage = "data"`) until [`SmtpServer::accept_all`].
    pub fn refuse(&self, stage: &str, reply: &str) {
        let body = serde_json::json!({ stage: reply }).to_string();
        let tmp = self.spool.join(".control.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, self.spool.join("control.json")).unwrap();
    }

    /// Makes the server wait `seconds` before taking each message (end of DATA).
    pub fn slow_data(&self, seconds: f64) {
        let body = serde_json::json!({ "data_delay": seconds }).to_string();
        let tmp = self.spool.join(".control.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(tmp, self.spool.join("control.json")).unwrap();
    }

    /// Ends [`SmtpServer::refuse`] and [`SmtpServer::slow_data`].
    pub fn accept_all(&self) {
        let _ = std::fs::remove_file(self.spool.join("control.json"));
    }

    /// Every message received, oldest first, as the handler recorded it.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.spool)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("msg-") && n.ends_with(".json"))
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// The server's RCPT/DATA decisions, in order (`"rcpt 250"`, `"data 554 …"`).
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.spool.join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text of the part with `content_type` in a recorded message.
pub fn part(record: &Value, content_type: &str) -> String {
    record["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == content_type)
        .and_then(|p| p["content"].as_str())
        .unwrap_or_else(|| panic!("no {content_type} part in {record}"))
        .to_owned()
}

/// A tenantry service on an in-memory store, with `mailer`, a manual clock at [`T0`] and the
/// default delivery settings (first retry after 30 s, doubling, 5 attempts).
pub fn service(mailer: impl Mailer) -> (Tenantry, ManualClock) {
    service_with(mailer, DeliverySettings::default())
}

/// As [`service`], with other delivery settings.
pub fn service_with(mailer: impl Mailer, delivery: DeliverySettings) -> (Tenantry, ManualClock) {
    let clock = ManualClock::new(T0);
    let app = Tenantry::builder(tenantry_service::InMemoryStore::new())
        .mailer(mailer)
        .clock(clock.clone())
        .base_url(BASE_URL)
        .delivery(delivery)
        .build()
        .unwrap();
    (app, clock)
}

/// A "black hole" mail server: a TCP listener that accepts every connection and never
/// writes a byte (no greeting), holding the connections open until it is stopped. A client
/// waits on it until its own time-out, or until whoever called it gives up.
#[derive(Debug)]
pub struct BlackHole {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BlackHole {
    /// A black hole on `port` of 127.0.0.1 (0: a free one).
    pub async fn bind(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the black hole to port {port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self {
            port,
            accepted,
            task: Some(task),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the listener and every held connection; the port is free once this returns.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates the tenant "Acme" (admin ada@acme.test, no seat limit) and invites `address` as a
/// plain user with `conversations:view`: the invitation is queued and delivered inline.
pub async fn invite_into_new_tenant(
    app: &Tenantry,
    address: &str,
) -> (tenantry_service::TenantId, tenantry_service::Invited) {
    use tenantry_service::prelude::*;
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let invited = app
        .invite(
            t,
            admin,
            &InviteRequest {
                email: Email::parse(address).unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::CONVERSATIONS_VIEW,
            },
        )
        .await
        .unwrap();
    (t, invited)
}
