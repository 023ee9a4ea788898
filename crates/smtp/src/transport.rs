//! [`LettreMailer`]: tenantry's mail over any lettre [`AsyncTransport`] the host already has.

use std::fmt;

use async_trait::async_trait;
use lettre::AsyncTransport;
use lettre::message::Mailbox;
use tenantry_mail::{MailError, Mailer, Message};

use crate::{SmtpConfigError, build_email, classify_smtp};

/// How a transport's error maps onto the outbox's retry policy:
/// [`MailError::Transient`] (try again later) or [`MailError::Permanent`] (give up).
///
/// Implemented for lettre's SMTP errors (classified as [`SmtpMailer`](crate::SmtpMailer)
/// classifies them: a 4xx reply, a time-out or a network failure is transient, a 5xx reply
/// is permanent with the server's words) and, with this crate's features `file-transport`
/// and `sendmail-transport`, for lettre's file and sendmail errors (both transient: a full
/// disk or a failing local MTA may recover). A host with its own transport implements it
/// for its error type.
///
/// ```
/// use tenantry_mail::MailError;
/// use tenantry_smtp::TransportError;
///
/// #[derive(Debug)]
/// struct ApiError { status: u16 }
///
/// impl TransportError for ApiError {
///     fn classify(&self) -> MailError {
///         if self.status >= 500 || self.status == 429 {
///             MailError::Transient(format!("mail API answered {}", self.status))
///         } else {
///             MailError::Permanent(format!("mail API refused with {}", self.status))
///         }
///     }
/// }
/// assert!(ApiError { status: 503 }.classify().is_transient());
/// assert!(!ApiError { status: 400 }.classify().is_transient());
/// ```
pub trait TransportError {
    /// The classified failure. The reason must not hold secrets (credentials, bodies).
    fn classify(&self) -> MailError;
}

impl TransportError for lettre::transport::smtp::Error {
    fn classify(&self) -> MailError {
        classify_smtp(self, "smtp")
    }
}

#[cfg(feature = "file-transport")]
impl TransportError for lettre::transport::file::Error {
    fn classify(&self) -> MailError {
        MailError::Transient(format!("file transport: {self}"))
    }
}

#[cfg(feature = "sendmail-transport")]
impl TransportError for lettre::transport::sendmail::Error {
    fn classify(&self) -> MailError {
        MailError::Transient(format!("sendmail transport: {self}"))
    }
}

/// A [`Mailer`] over any lettre [`AsyncTransport`]: the host's own SMTP transport with its
/// own settings, sendmail, or a file transport in staging, used as it is.
///
/// Each message is built exactly as [`SmtpMailer`](crate::SmtpMailer) builds it
/// (`multipart/alternative`, the outbox's `Message-ID`, the service clock's `Date`), and the
/// transport's errors are classified by [`TransportError`].
///
/// # When to prefer [`SmtpMailer`](crate::SmtpMailer)
/// For SMTP, use [`SmtpMailer`](crate::SmtpMailer) unless the host must share an existing
/// `AsyncSmtpTransport`. Two behaviours of lettre 0.11's asynchronous SMTP transport
/// (checked in lettre 0.11.23; the second with lettre's `pool` feature, one of its defaults)
/// make the difference:
/// - **Its time-out bounds only the TCP connect.** `AsyncSmtpTransportBuilder::timeout` is
///   passed to the connect (`transport/smtp/client/async_net.rs`); no command, reply or
///   `DATA` transfer is bounded, so a relay that accepts and then stalls holds a send for as
///   long as it likes. [`SmtpMailer`](crate::SmtpMailer)'s time-out covers the whole
///   exchange: connect, TLS, AUTH and the mail transaction.
/// - **A cancelled send returns its connection to the pool.** Its pooled connection's
///   `Drop` (`transport/smtp/pool/async_impl.rs`) recycles the connection whenever it is not
///   marked broken, and a send whose future was dropped half-way (by a caller's time-out,
///   or the service's inline deadline (D25)) is not marked broken. The next message can then
///   start on a connection in the middle of another transaction and read its replies.
///   [`SmtpMailer`](crate::SmtpMailer) checks a connection back in only after a complete
///   exchange, and closes it otherwise.
///
/// So with a pooled lettre SMTP transport, set the service's inline deadline
/// (`DeliverySettings::inline_deadline`) high enough that it never cuts a send off, or build
/// the transport with pooling off. File and sendmail transports have neither problem.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lettre::{AsyncSmtpTransport, Tokio1Executor};
/// use tenantry_smtp::LettreMailer;
///
/// // The host's transport, configured its own way.
/// let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
///     .port(2525)
///     .build();
/// let mailer = LettreMailer::new(transport, "Acme <no-reply@acme.test>")?;
/// let app = tenantry_service::Tenantry::builder(tenantry_service::InMemoryStore::new())
///     .mailer(mailer)
///     .base_url("https://app.example.com/accept")
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
pub struct LettreMailer<T> {
    transport: T,
    from: Mailbox,
}

impl<T> fmt::Debug for LettreMailer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LettreMailer")
            .field("transport", &std::any::type_name::<T>())
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl<T> LettreMailer<T> {
    /// A mailer sending through `transport` as `from` (a mailbox such as
    /// `"Acme <no-reply@acme.test>"`).
    ///
    /// ```
    /// use lettre::transport::stub::AsyncStubTransport;
    /// use tenantry_smtp::{LettreMailer, SmtpConfigError};
    /// assert!(LettreMailer::new(AsyncStubTransport::new_ok(), "a@acme.test").is_ok());
    /// assert!(matches!(
    ///     LettreMailer::new(AsyncStubTransport::new_ok(), "not an address"),
    ///     Err(SmtpConfigError::InvalidFrom { .. })
    /// ));
    /// ```
    ///
    /// # Errors
    /// [`SmtpConfigError::InvalidFrom`] when `from` is not a mailbox.
    pub fn new(transport: T, from: &str) -> Result<Self, SmtpConfigError> {
        let from = from
            .trim()
            .parse()
            .map_err(
                |e: lettre::address::AddressError| SmtpConfigError::InvalidFrom {
                    from: from.to_owned(),
                    reason: e.to_string(),
                },
            )?;
        Ok(Self { transport, from })
    }

    /// The transport inside.
    ///
    /// ```
    /// use lettre::transport::stub::AsyncStubTransport;
    /// let mailer = tenantry_smtp::LettreMailer::new(AsyncStubTransport::new_ok(), "a@acme.test")?;
    /// let _stub: &AsyncStubTransport = mailer.transport();
    /// # Ok::<(), tenantry_smtp::SmtpConfigError>(())
    /// ```
    #[must_use]
    pub fn transport(&self) -> &T {
        &self.transport
    }
}

impl TransportError for lettre::transport::stub::Error {
    fn classify(&self) -> MailError {
        MailError::Transient("stub transport: refused".to_owned())
    }
}

#[async_trait]
impl<T> Mailer for LettreMailer<T>
where
    T: AsyncTransport + Send + Sync + 'static,
    T::Error: TransportError + Send,
{
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let email = build_email(&self.from, message)?;
        self.transport
            .send(email)
            .await
            .map(drop)
            .map_err(|e| e.classify())
    }
}
