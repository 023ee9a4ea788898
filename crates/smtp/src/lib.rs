//! # tenantry-smtp
//!
//! Delivers tenantry's invitation mail with lettre, in two ways:
//!
//! - [`SmtpMailer`]: tenantry's own SMTP mailer on lettre's SMTP connection (Tokio, rustls
//!   with the `ring` provider and the webpki roots; no OpenSSL). Prefer it for SMTP: its
//!   time-out covers the whole exchange and its pool takes a connection back only after a
//!   complete exchange ([`LettreMailer`] says why lettre's own transport does neither).
//! - [`LettreMailer`]: any lettre `AsyncTransport` the host already has (its own SMTP
//!   transport, sendmail, a file transport in staging), used as it is; errors classified by
//!   [`TransportError`].
//!
//! The rest of this page is about [`SmtpMailer`].
//!
//! - [`SmtpConfig`]: host, port, [`TlsMode`] (none, STARTTLS, implicit TLS), optional
//!   [`Credentials`], the `From` mailbox, a time-out, the connection-pool size, and extra
//!   trusted root certificates for relays with a private CA. [`SmtpMailer::new`] checks it
//!   and says what is wrong with a typed [`SmtpConfigError`].
//! - Each message goes out as `multipart/alternative` (plain text, then HTML) with its
//!   `Message-ID` header set to [`Message::message_id_header`], the outbox's idempotency key:
//!   a message delivered twice after a fault carries the same `Message-ID` both times (mail delivery (D17)).
//! - Authentication ([`Credentials`], `AUTH PLAIN` or `LOGIN`, whichever the server offers)
//!   happens only after TLS: credentials with [`TlsMode::None`] are refused by
//!   [`SmtpMailer::new`] ([`SmtpConfigError::CredentialsWithoutTls`]), and a STARTTLS server
//!   that does not offer the upgrade is never sent them. Wrong credentials are a permanent
//!   failure carrying the server's reply (`535 …`); the password appears in no error and no
//!   `Debug` output.
//! - The `Date` header is [`Message::date`] when set: the service sets it from its injected
//!   clock each time it hands a message over.
//! - Failures are classified for the outbox's retry policy: a 4xx answer, a refused
//!   connection, a time-out or any other network or TLS failure is
//!   [`MailError::Transient`] (retry later); a 5xx answer is [`MailError::Permanent`] with
//!   the server's code and reason text; so is an address the mailer cannot send to.
//! - Connections are pooled, and a connection goes back to the pool only after a complete
//!   transaction: a send that fails, times out or is cancelled half-way closes its
//!   connection, so a later message never reads an earlier one's reply. Sending needs a
//!   Tokio runtime.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tenantry_smtp::{Credentials, SmtpConfig, SmtpMailer, TlsMode};
//!
//! let mailer = SmtpMailer::new(
//!     SmtpConfig::new("smtp.example.com", "Acme <no-reply@example.com>")
//!         .with_tls(TlsMode::StartTls)
//!         .with_port(587)
//!         .with_credentials(Credentials::new("no-reply@example.com", "secret"))
//!         .with_timeout(Duration::from_secs(20))
//!         .with_pool_size(4),
//! )?;
//! // The service queues each invitation in the invite's commit and hands it to the mailer
//! // after commit, retrying transient failures (D17).
//! let app = tenantry_service::Tenantry::builder(tenantry_service::InMemoryStore::new())
//!     .mailer(mailer)
//!     .base_url("https://app.example.com/accept")
//!     .build()?;
//! # let _ = app;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{self};
use tenantry_mail::{MailError, Mailer, Message};
use tokio::sync::Semaphore;

mod transport;
pub use transport::{LettreMailer, TransportError};

/// How the connection to the SMTP server is secured.
///
/// ```
/// use tenantry_smtp::TlsMode;
/// assert_eq!(TlsMode::StartTls.default_port(), 587);
/// assert_eq!(TlsMode::Implicit.default_port(), 465);
/// assert_eq!(TlsMode::None.default_port(), 25);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// Plain text, never encrypted. Only for a relay on the same host or a trusted network.
    None,
    /// Connect in plain text, then require the server to upgrade with `STARTTLS`; nothing is
    /// sent (no credentials, no mail) unless the upgrade succeeds. The usual port is 587.
    #[default]
    StartTls,
    /// TLS from the first byte ("SMTPS", "submissions"). The usual port is 465.
    Implicit,
}

impl TlsMode {
    /// The customary port for the mode: 25, 587 or 465.
    ///
    /// ```
    /// assert_eq!(tenantry_smtp::TlsMode::Implicit.default_port(), 465);
    /// ```
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "none",
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "implicit",
        })
    }
}

/// A user name and password for SMTP authentication (`AUTH PLAIN` or `LOGIN`, whichever
/// the server offers). Its `Debug` output never shows the password.
///
/// ```
/// use tenantry_smtp::Credentials;
/// let c = Credentials::new("mailer@acme.test", "hunter2");
/// assert_eq!(c.user(), "mailer@acme.test");
/// assert!(!format!("{c:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    /// Credentials for `user` with `password`.
    ///
    /// ```
    /// let c = tenantry_smtp::Credentials::new("u", "p");
    /// assert_eq!(c.user(), "u");
    /// ```
    #[must_use]
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    ///
    /// ```
    /// assert_eq!(tenantry_smtp::Credentials::new("u", "p").user(), "u");
    /// ```
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where and how to send: the SMTP server, its security, the sender.
///
/// Start from [`SmtpConfig::new`] (STARTTLS on port 587, no credentials, a 30 second
/// time-out, a pool of 4 connections) and change what differs with the `with_*` methods or
/// the public fields. [`SmtpMailer::new`] checks it.
///
/// ```
/// use std::time::Duration;
/// use tenantry_smtp::{SmtpConfig, TlsMode};
/// let config = SmtpConfig::new("127.0.0.1", "Acme <no-reply@acme.test>")
///     .with_tls(TlsMode::None)
///     .with_port(2525)
///     .with_timeout(Duration::from_secs(5));
/// assert_eq!(config.port, 2525);
/// assert_eq!(config.pool_size, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmtpConfig {
    /// The server's host name or IP address (also the name its TLS certificate must carry).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: TlsMode,
    /// Credentials to authenticate with, if the server wants them.
    pub credentials: Option<Credentials>,
    /// The `From` mailbox, as `Name <address>` or a bare address.
    pub from: String,
    /// The most one delivery may take — connecting, TLS, authentication and the whole SMTP
    /// transaction — before it is given up as a transient failure.
    pub timeout: Duration,
    /// At most this many connections are open at once (further sends wait for one); idle
    /// ones are kept and reused.
    pub pool_size: u32,
    /// The name sent with `EHLO` (default: this machine's host name).
    pub hello_name: Option<String>,
    /// PEM certificates trusted as roots in addition to the built-in web PKI roots, for a
    /// relay whose certificate comes from a private CA.
    pub extra_root_certificates: Vec<String>,
}

impl SmtpConfig {
    /// A configuration for `host` sending as `from`: STARTTLS on port 587, no credentials, a
    /// 30 second time-out, a pool of 4 connections.
    ///
    /// ```
    /// let c = tenantry_smtp::SmtpConfig::new("smtp.acme.test", "no-reply@acme.test");
    /// assert_eq!((c.port, c.tls), (587, tenantry_smtp::TlsMode::StartTls));
    /// ```
    #[must_use]
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: TlsMode::StartTls.default_port(),
            tls: TlsMode::StartTls,
            credentials: None,
            from: from.into(),
            timeout: Duration::from_secs(30),
            pool_size: 4,
            hello_name: None,
            extra_root_certificates: Vec::new(),
        }
    }

    /// Sets the port.
    ///
    /// ```
    /// let c = tenantry_smtp::SmtpConfig::new("h", "a@b.test").with_port(2525);
    /// assert_eq!(c.port, 2525);
    /// ```
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the TLS mode and, with it, the mode's customary port (set another port after
    /// this call if the server listens elsewhere).
    ///
    /// ```
    /// use tenantry_smtp::{SmtpConfig, TlsMode};
    /// let c = SmtpConfig::new("h", "a@b.test").with_tls(TlsMode::Implicit);
    /// assert_eq!(c.port, 465);
    /// ```
    #[must_use]
    pub fn with_tls(mut self, tls: TlsMode) -> Self {
        self.tls = tls;
        self.port = tls.default_port();
        self
    }

    /// Sets the credentials.
    ///
    /// ```
    /// use tenantry_smtp::{Credentials, SmtpConfig};
    /// let c = SmtpConfig::new("h", "a@b.test").with_credentials(Credentials::new("u", "p"));
    /// assert_eq!(c.credentials.map(|c| c.user().to_owned()).as_deref(), Some("u"));
    /// ```
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the most one delivery may take (connecting, TLS, the whole SMTP transaction).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = tenantry_smtp::SmtpConfig::new("h", "a@b.test").with_timeout(Duration::from_secs(3));
    /// assert_eq!(c.timeout, Duration::from_secs(3));
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many connections may be open at once (and are kept for reuse).
    ///
    /// ```
    /// let c = tenantry_smtp::SmtpConfig::new("h", "a@b.test").with_pool_size(1);
    /// assert_eq!(c.pool_size, 1);
    /// ```
    #[must_use]
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets the name sent with `EHLO`.
    ///
    /// ```
    /// let c = tenantry_smtp::SmtpConfig::new("h", "a@b.test").with_hello_name("app.acme.test");
    /// assert_eq!(c.hello_name.as_deref(), Some("app.acme.test"));
    /// ```
    #[must_use]
    pub fn with_hello_name(mut self, name: impl Into<String>) -> Self {
        self.hello_name = Some(name.into());
        self
    }

    /// Trusts one more root certificate (PEM), besides the built-in web PKI roots.
    ///
    /// ```
    /// let c = tenantry_smtp::SmtpConfig::new("h", "a@b.test")
    ///     .with_root_certificate("-----BEGIN CERTIFICATE-----\n…");
    /// assert_eq!(c.extra_root_certificates.len(), 1);
    /// ```
    #[must_use]
    pub fn with_root_certificate(mut self, pem: impl Into<String>) -> Self {
        self.extra_root_certificates.push(pem.into());
        self
    }
}

/// What is wrong with an [`SmtpConfig`].
///
/// ```
/// use tenantry_smtp::{SmtpConfig, SmtpConfigError, SmtpMailer};
/// let err = SmtpMailer::new(SmtpConfig::new("", "a@b.test")).unwrap_err();
/// assert_eq!(err, SmtpConfigError::EmptyHost);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpConfigError {
    /// The host is empty or holds white space or control characters.
    #[error("the SMTP host must be a non-empty host name or IP address without spaces")]
    EmptyHost,
    /// The port is 0.
    #[error("the SMTP port must not be 0")]
    ZeroPort,
    /// The `From` mailbox does not parse.
    #[error("the From mailbox {from:?} is invalid: {reason}")]
    InvalidFrom {
        /// The refused value.
        from: String,
        /// Why.
        reason: String,
    },
    /// The time-out is zero.
    #[error("the SMTP time-out must be longer than zero")]
    ZeroTimeout,
    /// The pool size is zero.
    #[error("the SMTP connection pool size must be at least 1")]
    ZeroPoolSize,
    /// The `EHLO` name is empty or holds characters a host name cannot.
    #[error("the EHLO name {name:?} is not a host name")]
    InvalidHelloName {
        /// The refused value.
        name: String,
    },
    /// An extra root certificate does not parse.
    #[error("extra root certificate #{index} is invalid: {reason}")]
    InvalidCertificate {
        /// Its position in [`SmtpConfig::extra_root_certificates`].
        index: usize,
        /// Why.
        reason: String,
    },
    /// Credentials were set on a connection without TLS ([`TlsMode::None`]). The mailer
    /// never offers a password in clear text: use [`TlsMode::StartTls`] or
    /// [`TlsMode::Implicit`].
    ///
    /// ```
    /// use tenantry_smtp::{Credentials, SmtpConfig, SmtpConfigError, SmtpMailer, TlsMode};
    /// let clear = SmtpConfig::new("smtp.acme.test", "a@acme.test")
    ///     .with_tls(TlsMode::None)
    ///     .with_credentials(Credentials::new("mailer", "s3cret"));
    /// let err = SmtpMailer::new(clear).unwrap_err();
    /// assert_eq!(err, SmtpConfigError::CredentialsWithoutTls);
    /// assert!(!err.to_string().contains("s3cret"));
    /// ```
    #[error(
        "SMTP credentials need TLS (starttls or implicit); they are never sent over a plain connection"
    )]
    CredentialsWithoutTls,
    /// The TLS settings could not be built (for example a host name TLS cannot verify).
    #[error("the TLS settings for {host:?} are invalid: {reason}")]
    Tls {
        /// The configured host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A [`Mailer`] that sends over SMTP. Cheap to share (`Arc` it, or hand it to the service
/// builder, which does).
///
/// Connections are opened when needed, at most [`SmtpConfig::pool_size`] at once, and kept
/// for reuse (each checked with `NOOP` first, and dropped after a minute idle). A
/// connection is returned to the pool only after a complete transaction: when a send fails,
/// times out or its future is dropped half-way, its connection is closed, so a later
/// message can never read an earlier message's reply.
///
/// ```
/// use tenantry_smtp::{SmtpConfig, SmtpMailer, TlsMode};
/// let mailer = SmtpMailer::new(
///     SmtpConfig::new("127.0.0.1", "Acme <no-reply@acme.test>").with_tls(TlsMode::None).with_port(2525),
/// )?;
/// assert_eq!(mailer.config().port, 2525);
/// # Ok::<(), tenantry_smtp::SmtpConfigError>(())
/// ```
pub struct SmtpMailer {
    config: SmtpConfig,
    host: String,
    from: Mailbox,
    hello: ClientId,
    tls: Option<TlsParameters>,
    credentials: Option<smtp::authentication::Credentials>,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

/// A connection parked after a complete transaction.
struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// How long a parked connection is kept.
const MAX_IDLE: Duration = Duration::from_secs(60);

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.config.host)
            .field("port", &self.config.port)
            .field("tls", &self.config.tls)
            .field("credentials", &self.config.credentials)
            .field("from", &self.config.from)
            .field("timeout", &self.config.timeout)
            .field("pool_size", &self.config.pool_size)
            .field("idle_connections", &self.idle().len())
            .finish_non_exhaustive()
    }
}

fn is_host_like(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl SmtpMailer {
    /// Checks `config` and prepares the mailer. Nothing is connected yet: the first
    /// [`Mailer::send`] (or [`SmtpMailer::check_connection`]) connects.
    ///
    /// ```
    /// use tenantry_smtp::{SmtpConfig, SmtpConfigError, SmtpMailer};
    /// assert!(SmtpMailer::new(SmtpConfig::new("smtp.acme.test", "Acme <a@acme.test>")).is_ok());
    /// assert!(matches!(
    ///     SmtpMailer::new(SmtpConfig::new("smtp.acme.test", "not an address")),
    ///     Err(SmtpConfigError::InvalidFrom { .. })
    /// ));
    /// ```
    ///
    /// # Errors
    /// [`SmtpConfigError`] naming the setting that is wrong.
    pub fn new(config: SmtpConfig) -> Result<Self, SmtpConfigError> {
        let host = config.host.trim().to_owned();
        if !is_host_like(&host) {
            return Err(SmtpConfigError::EmptyHost);
        }
        if config.port == 0 {
            return Err(SmtpConfigError::ZeroPort);
        }
        if config.timeout.is_zero() {
            return Err(SmtpConfigError::ZeroTimeout);
        }
        let permits = usize::try_from(config.pool_size)
            .ok()
            .filter(|n| (1..=Semaphore::MAX_PERMITS).contains(n))
            .ok_or(SmtpConfigError::ZeroPoolSize)?;
        let from: Mailbox =
            config
                .from
                .trim()
                .parse()
                .map_err(
                    |e: lettre::address::AddressError| SmtpConfigError::InvalidFrom {
                        from: config.from.clone(),
                        reason: e.to_string(),
                    },
                )?;
        let hello = match &config.hello_name {
            Some(name) if is_host_like(name) => ClientId::Domain(name.clone()),
            Some(name) => return Err(SmtpConfigError::InvalidHelloName { name: name.clone() }),
            None => ClientId::default(),
        };
        if config.credentials.is_some() && config.tls == TlsMode::None {
            return Err(SmtpConfigError::CredentialsWithoutTls);
        }
        let tls = match config.tls {
            TlsMode::None => None,
            TlsMode::StartTls | TlsMode::Implicit => Some(Self::tls_parameters(&host, &config)?),
        };
        let credentials = config
            .credentials
            .as_ref()
            .map(|c| smtp::authentication::Credentials::new(c.user.clone(), c.password.clone()));
        Ok(Self {
            host,
            from,
            hello,
            tls,
            credentials,
            permits: Semaphore::new(permits),
            idle: Mutex::new(Vec::new()),
            config,
        })
    }

    fn tls_parameters(host: &str, config: &SmtpConfig) -> Result<TlsParameters, SmtpConfigError> {
        let mut params = TlsParameters::builder(host.to_owned());
        for (index, pem) in config.extra_root_certificates.iter().enumerate() {
            let invalid = |reason: String| SmtpConfigError::InvalidCertificate { index, reason };
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("no PEM certificate found".to_owned()));
            }
            let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            // Checked alone first, so a bad one is named by its position.
            TlsParameters::builder(host.to_owned())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert.clone())
                .build_rustls()
                .map_err(|e| invalid(e.to_string()))?;
            params = params.add_root_certificate(cert);
        }
        params.build_rustls().map_err(|e| SmtpConfigError::Tls {
            host: host.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The configuration in force.
    ///
    /// ```
    /// # let mailer = tenantry_smtp::SmtpMailer::new(tenantry_smtp::SmtpConfig::new("h", "a@b.test"))?;
    /// assert_eq!(mailer.config().host, "h");
    /// # Ok::<(), tenantry_smtp::SmtpConfigError>(())
    /// ```
    #[must_use]
    pub fn config(&self) -> &SmtpConfig {
        &self.config
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a connection: TCP (TLS from the first byte in implicit mode), EHLO, STARTTLS
    /// when required (nothing else is sent if the server does not offer it), AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, smtp::Error> {
        let wrapper = match self.config.tls {
            TlsMode::Implicit => self.tls.clone(),
            TlsMode::None | TlsMode::StartTls => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.config.port),
            Some(self.config.timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        if let (TlsMode::StartTls, Some(params)) = (self.config.tls, &self.tls) {
            conn.starttls(params.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }

    /// A parked connection that still answers `NOOP`, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, smtp::Error> {
        loop {
            let parked = self.idle().pop();
            match parked {
                Some(p) if p.since.elapsed() <= MAX_IDLE => {
                    let mut conn = p.conn;
                    if conn.test_connected().await && !conn.has_broken() {
                        return Ok(conn);
                    }
                }
                Some(_) => {}
                None => return self.connect().await,
            }
        }
    }

    /// Parks a connection after a complete transaction (broken ones are dropped).
    fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < usize::try_from(self.config.pool_size).unwrap_or(usize::MAX) {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Does `work` on a pooled connection within the configured time-out.
    async fn with_connection(&self, work: Work<'_>) -> Result<(), MailError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailError::Permanent(
                "the SMTP mailer must be used inside a Tokio runtime".to_owned(),
            ));
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(MailError::Transient(
                "the SMTP mailer is shutting down".to_owned(),
            ));
        };
        let attempt = async {
            let mut conn = self.checkout().await?;
            let out = match work {
                Work::Noop => conn.command(smtp::commands::Noop).await.map(drop),
                Work::Send { envelope, bytes } => conn.send(envelope, bytes).await.map(drop),
            };
            // Back to the pool only after a complete exchange; on error lettre has already
            // closed it (it is "broken"), and a dropped future drops it with the socket.
            self.checkin(conn);
            out
        };
        match tokio::time::timeout(self.config.timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(MailError::Transient(format!(
                "smtp {}:{}: timed out after {:?}",
                self.config.host, self.config.port, self.config.timeout
            ))),
        }
    }

    /// Builds the email that [`Mailer::send`] would send for `message`, as it goes on the
    /// wire (RFC 5322 bytes): `From` from the configuration, `To` the message's recipient,
    /// `Message-ID` the message's idempotency key, and a `multipart/alternative` body with
    /// the plain text first and the HTML second.
    ///
    /// ```
    /// use tenantry_core::{MessageId, TenantId, UserId};
    /// use tenantry_mail::Message;
    /// use tenantry_smtp::{SmtpConfig, SmtpMailer};
    ///
    /// let mailer = SmtpMailer::new(SmtpConfig::new("h", "Acme <no-reply@acme.test>"))?;
    /// let message = Message {
    ///     id: MessageId::from_parts(1, [7; 10]),
    ///     tenant_id: TenantId::from_parts(1, [1; 10]),
    ///     user_id: UserId::from_parts(1, [2; 10]),
    ///     to: "bob@acme.test".into(),
    ///     subject: "You are invited to join Acme".into(),
    ///     text: "Accept: https://app.test/accept?token=t".into(),
    ///     html: "<p>Accept</p>".into(),
    ///     date: None,
    /// };
    /// let wire = String::from_utf8(mailer.format(&message)?).unwrap();
    /// assert!(wire.contains(&format!("Message-ID: {}", message.message_id_header())));
    /// assert!(wire.contains("multipart/alternative"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`MailError::Permanent`] when the recipient is not a valid address.
    pub fn format(&self, message: &Message) -> Result<Vec<u8>, MailError> {
        Ok(self.email(message)?.formatted())
    }

    fn email(&self, message: &Message) -> Result<lettre::Message, MailError> {
        build_email(&self.from, message)
    }

    /// Opens (or reuses) a connection and checks that the server answers, for a host's
    /// health check or start-up check.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mailer = tenantry_smtp::SmtpMailer::new(tenantry_smtp::SmtpConfig::new(
    ///     "smtp.acme.test",
    ///     "no-reply@acme.test",
    /// ))?;
    /// mailer.check_connection().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The failure, classified as for [`Mailer::send`].
    pub async fn check_connection(&self) -> Result<(), MailError> {
        self.with_connection(Work::Noop).await
    }

    /// Maps a lettre error onto the outbox's retry policy.
    fn classify(&self, e: &smtp::Error) -> MailError {
        classify_smtp(
            e,
            &format!("smtp {}:{}", self.config.host, self.config.port),
        )
    }
}

/// Maps a lettre SMTP error onto the outbox's retry policy; `place` prefixes the reasons that
/// are not the server's own words.
pub(crate) fn classify_smtp(e: &smtp::Error, place: &str) -> MailError {
    if let Some(code) = e.status() {
        // The server answered with a negative reply: keep its words.
        let text = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        let reason = format!("{code} {text}").trim_end().to_owned();
        return if e.is_permanent() {
            MailError::Permanent(reason)
        } else {
            MailError::Transient(reason)
        };
    }
    if e.is_timeout() {
        MailError::Transient(format!("{place}: timed out: {e}"))
    } else if e.is_client() {
        // The client refused to go on (no STARTTLS offered, no usable AUTH mechanism,
        // an address the server cannot take): retrying the same message will not help.
        MailError::Permanent(format!("{place}: {e}"))
    } else {
        // Refused or dropped connections, I/O, TLS handshakes (an untrusted certificate
        // included: the host may fix it), garbled replies: the next attempt may succeed.
        MailError::Transient(format!("{place}: {e}"))
    }
}

/// The email for `message` from `from`: `multipart/alternative` (text, then HTML), with the
/// message's `Message-ID` and, when set, its `Date`.
pub(crate) fn build_email(from: &Mailbox, message: &Message) -> Result<lettre::Message, MailError> {
    let to: Mailbox = message.to.trim().parse().map_err(|e| {
        MailError::Permanent(format!("invalid recipient address {:?}: {e}", message.to))
    })?;
    let subject: String = message
        .subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut builder = lettre::Message::builder();
    if let Some(date) = message.date {
        // The service's clock (lettre would otherwise stamp the system time).
        builder = builder.date(std::time::SystemTime::from(date));
    }
    builder
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(message.message_id_header()))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(message.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(message.html.clone()),
                ),
        )
        .map_err(|e| MailError::Permanent(format!("cannot build the email: {e}")))
}

/// What to do on a pooled connection.
enum Work<'m> {
    /// `NOOP`: is the server there?
    Noop,
    /// One mail transaction.
    Send {
        envelope: &'m lettre::address::Envelope,
        bytes: &'m [u8],
    },
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let email = self.email(message)?;
        let bytes = email.formatted();
        self.with_connection(Work::Send {
            envelope: email.envelope(),
            bytes: &bytes,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use tenantry_core::{MessageId, TenantId, UserId};

    #[test]
    fn config_errors_are_typed() {
        let ok = || SmtpConfig::new("127.0.0.1", "Acme <a@acme.test>");
        assert_eq!(
            SmtpMailer::new(SmtpConfig::new("  ", "a@b.test")).unwrap_err(),
            SmtpConfigError::EmptyHost
        );
        assert_eq!(
            SmtpMailer::new(SmtpConfig::new("a b", "a@b.test")).unwrap_err(),
            SmtpConfigError::EmptyHost
        );
        assert_eq!(
            SmtpMailer::new(ok().with_port(0)).unwrap_err(),
            SmtpConfigError::ZeroPort
        );
        assert_eq!(
            SmtpMailer::new(ok().with_timeout(Duration::ZERO)).unwrap_err(),
            SmtpConfigError::ZeroTimeout
        );
        assert_eq!(
            SmtpMailer::new(ok().with_pool_size(0)).unwrap_err(),
            SmtpConfigError::ZeroPoolSize
        );
        assert!(matches!(
            SmtpMailer::new(SmtpConfig::new("h", "no at sign")).unwrap_err(),
            SmtpConfigError::InvalidFrom { .. }
        ));
        assert!(matches!(
            SmtpMailer::new(ok().with_hello_name("bad name")).unwrap_err(),
            SmtpConfigError::InvalidHelloName { .. }
        ));
        assert!(matches!(
            SmtpMailer::new(ok().with_root_certificate("not a pem")).unwrap_err(),
            SmtpConfigError::InvalidCertificate { index: 0, .. }
        ));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            SmtpMailer::new(ok().with_root_certificate(garbage)).unwrap_err(),
            SmtpConfigError::InvalidCertificate { index: 0, .. }
        ));
        assert!(SmtpMailer::new(ok().with_tls(TlsMode::Implicit)).is_ok());
        assert!(SmtpMailer::new(ok().with_tls(TlsMode::None)).is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let m = SmtpMailer::new(
            SmtpConfig::new("h", "a@b.test").with_credentials(Credentials::new("u", "s3cret")),
        )
        .unwrap();
        let d = format!("{m:?}");
        assert!(d.contains("\"u\""));
        assert!(!d.contains("s3cret"));
    }

    #[test]
    fn invalid_recipient_is_permanent_and_subject_stays_one_line() {
        let m = SmtpMailer::new(SmtpConfig::new("h", "a@b.test")).unwrap();
        let mut msg = Message {
            id: MessageId::from_parts(1, [3; 10]),
            tenant_id: TenantId::from_parts(1, [1; 10]),
            user_id: UserId::from_parts(1, [2; 10]),
            to: "not-an-address".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            date: None,
        };
        assert!(m.format(&msg).unwrap_err().is_permanent());
        msg.to = "bob@acme.test".into();
        msg.subject = "Hello\r\nBcc: eve@evil.test".into();
        let wire = String::from_utf8(m.format(&msg).unwrap()).unwrap();
        assert!(!wire.contains("\r\nBcc:"));
    }

    #[test]
    fn send_outside_a_runtime_is_an_error_not_a_panic() {
        let m = SmtpMailer::new(SmtpConfig::new("h", "a@b.test")).unwrap();
        let e = futures_lite_block_on(m.check_connection()).unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
    }

    /// Polls a future to completion on this thread, outside any Tokio runtime.
    fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
