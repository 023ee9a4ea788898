//! # tenantry-mail
//!
//! How tenantry hands invitation emails to the outside world:
//!
//! - [`Message`]: one rendered email with its idempotency key ([`Message::id`], sent as the
//!   `Message-ID` header by real transports, so a retried delivery can be recognised).
//! - [`Mailer`]: the async transport trait. Its [`MailError`] says whether a failure is
//!   transient (retry later) or permanent (give up and show the reason).
//! - [`Renderer`] and [`DefaultRenderer`]: turn an [`Invitation`] into subject, plain text
//!   and HTML; hosts supply their own to brand the mail.
//! - [`InMemoryMailer`]: records what was sent, and can be told to fail; for tests and the
//!   zero-setup default.
//!
//! ```
//! use tenantry_mail::{DefaultRenderer, Invitation, Renderer};
//! let mail = DefaultRenderer.render(&Invitation {
//!     tenant_name: "Acme".into(),
//!     inviter: Some("ada@acme.test".into()),
//!     to: "bob@acme.test".into(),
//!     accept_url: "https://app.test/accept?token=abc".into(),
//!     expires_at: time::OffsetDateTime::UNIX_EPOCH,
//! });
//! assert!(mail.subject.contains("Acme"));
//! assert!(mail.text.contains("https://app.test/accept?token=abc"));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenantry_core::{MessageId, TenantId, UserId};
use time::OffsetDateTime;

/// One email ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its idempotency key; transports send it as the `Message-ID` header.
    pub id: MessageId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The invited user.
    pub user_id: UserId,
    /// The recipient address, exactly as stored for the user.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
    /// The time to put in the `Date` header. The service sets it from its injected clock
    /// each time it hands the message to a mailer; `None` (as stored in the outbox) lets the
    /// transport use its own clock.
    #[serde(default)]
    pub date: Option<OffsetDateTime>,
}

impl Message {
    /// The `Message-ID` header value for this message (`<uuid@tenantry>`).
    #[must_use]
    pub fn message_id_header(&self) -> String {
        format!("<{}@tenantry>", self.id)
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum MailError {
    /// Worth retrying later: a 4xx answer, a refused connection, a time-out.
    #[error("temporary mail delivery failure: {0}")]
    Transient(String),
    /// Not worth retrying: a 5xx answer, an address the server refuses.
    #[error("permanent mail delivery failure: {0}")]
    Permanent(String),
}

impl MailError {
    /// Whether a retry may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }

    /// Whether retrying is pointless.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Permanent(_))
    }

    /// The reason text.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            MailError::Transient(r) | MailError::Permanent(r) => r,
        }
    }
}

/// A mail transport. Implementations must be safe to call concurrently.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// Delivers one message.
    ///
    /// # Errors
    /// [`MailError`] saying whether a retry may help.
    async fn send(&self, message: &Message) -> Result<(), MailError>;
}

#[async_trait]
impl<M: Mailer + ?Sized> Mailer for Arc<M> {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        (**self).send(message).await
    }
}

/// What an invitation email says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The tenant's display name.
    pub tenant_name: String,
    /// Who invited (their address), if a user did.
    pub inviter: Option<String>,
    /// The recipient address.
    pub to: String,
    /// The accept link, built from the configured base URL (never from request data).
    pub accept_url: String,
    /// When the link stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A rendered email body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Renders invitation emails. Hosts implement it to brand their mail.
pub trait Renderer: Send + Sync + fmt::Debug + 'static {
    /// Renders one invitation.
    fn render(&self, invitation: &Invitation) -> Rendered;
}

/// The built-in plain and HTML invitation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRenderer;

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Renderer for DefaultRenderer {
    fn render(&self, inv: &Invitation) -> Rendered {
        let tenant = one_line(&inv.tenant_name);
        let expires = inv
            .expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| inv.expires_at.to_string());
        let by = inv
            .inviter
            .as_deref()
            .map(|i| format!("{} invited you", one_line(i)))
            .unwrap_or_else(|| "You have been invited".to_owned());
        let text = format!(
            "{by} to join {tenant}.\n\nAccept the invitation and complete your sign-up:\n{url}\n\nThis link works once and expires at {expires}.\nIf you did not expect this email you can ignore it.\n",
            url = inv.accept_url,
        );
        let html = format!(
            "<!doctype html><html><body><p>{by} to join <strong>{tenant}</strong>.</p>\
             <p><a href=\"{url}\">Accept the invitation</a></p>\
             <p>This link works once and expires at {expires}.</p>\
             <p>If you did not expect this email you can ignore it.</p></body></html>",
            by = escape_html(&by),
            tenant = escape_html(&tenant),
            url = escape_html(&inv.accept_url),
            expires = escape_html(&expires),
        );
        Rendered {
            subject: format!("You are invited to join {tenant}"),
            text,
            html,
        }
    }
}

#[derive(Debug, Default)]
struct Recorded {
    sent: Vec<Message>,
    attempts: u64,
    script: VecDeque<MailError>,
    fail_all: Option<MailError>,
}

/// A mailer that keeps every delivered message in memory. It can be scripted to fail, so
/// tests can drive the outbox through transient and permanent failures.
///
/// ```
/// use tenantry_mail::{InMemoryMailer, MailError};
/// let mailer = InMemoryMailer::new();
/// mailer.fail_next(MailError::Transient("421 try later".into()));
/// assert!(mailer.sent().is_empty());
/// assert_eq!(mailer.attempts(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryMailer {
    inner: Arc<Mutex<Recorded>>,
}

impl InMemoryMailer {
    /// A mailer that delivers everything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every message delivered so far, oldest first.
    #[must_use]
    pub fn sent(&self) -> Vec<Message> {
        self.lock().sent.clone()
    }

    /// How many sends were attempted (delivered or failed).
    #[must_use]
    pub fn attempts(&self) -> u64 {
        self.lock().attempts
    }

    /// The next send fails with `error` (queued: several calls fail several sends).
    pub fn fail_next(&self, error: MailError) {
        self.lock().script.push_back(error);
    }

    /// Every send fails with `error` until [`InMemoryMailer::recover`] is called.
    pub fn fail_all(&self, error: MailError) {
        self.lock().fail_all = Some(error);
    }

    /// Ends [`InMemoryMailer::fail_all`] and clears queued failures.
    pub fn recover(&self) {
        let mut r = self.lock();
        r.fail_all = None;
        r.script.clear();
    }
}

#[async_trait]
impl Mailer for InMemoryMailer {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let mut r = self.lock();
        r.attempts = r.attempts.saturating_add(1);
        if let Some(e) = r.fail_all.clone() {
            return Err(e);
        }
        if let Some(e) = r.script.pop_front() {
            return Err(e);
        }
        r.sent.push(message.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn default_renderer_escapes_html_and_keeps_link() {
        let r = DefaultRenderer.render(&Invitation {
            tenant_name: "<Acme & Co>".into(),
            inviter: None,
            to: "x@y.test".into(),
            accept_url: "https://h.test/a?token=t&x=1".into(),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        });
        assert!(r.html.contains("&lt;Acme &amp; Co&gt;"));
        assert!(r.html.contains("https://h.test/a?token=t&amp;x=1"));
        assert!(r.text.contains("https://h.test/a?token=t&x=1"));
        assert!(!r.subject.contains('\n'));
    }

    #[tokio::test]
    async fn in_memory_mailer_records_and_fails_as_scripted() {
        let m = InMemoryMailer::new();
        let msg = Message {
            id: MessageId::from_parts(1, [0; 10]),
            tenant_id: TenantId::from_parts(1, [1; 10]),
            user_id: UserId::from_parts(1, [2; 10]),
            to: "a@b.test".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            date: None,
        };
        m.fail_next(MailError::Transient("421".into()));
        assert!(m.send(&msg).await.unwrap_err().is_transient());
        m.send(&msg).await.unwrap();
        m.fail_all(MailError::Permanent("550".into()));
        assert!(m.send(&msg).await.unwrap_err().is_permanent());
        m.recover();
        m.send(&msg).await.unwrap();
        assert_eq!(m.sent().len(), 2);
        assert_eq!(m.attempts(), 4);
        assert_eq!(msg.message_id_header(), format!("<{}@tenantry>", msg.id));
    }
}
