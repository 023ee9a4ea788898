//! Delivering the outbox ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)): after commit, with bounded retries and backoff, each
//! message's state visible to the host.

use serde::{Deserialize, Serialize};
use tenantry_core::{MessageId, TenantId};
use tenantry_store::{DeliveryUpdate, OutboxRecord};
use time::Duration;

use crate::{Error, Tenantry};

/// What one dispatch pass did; see [`Tenantry::dispatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DispatchReport {
    /// Messages delivered.
    pub sent: u32,
    /// Messages that failed and will be retried.
    pub retrying: u32,
    /// Messages given up on.
    pub failed: u32,
    /// Tenants [`Tenantry::dispatch_all`] could not finish because a store call failed (each
    /// logged as a warning); their remaining messages stay pending for the next pass.
    #[serde(default)]
    pub tenants_failed: u32,
}

impl DispatchReport {
    fn add(&mut self, other: DispatchReport) {
        self.sent = self.sent.saturating_add(other.sent);
        self.retrying = self.retrying.saturating_add(other.retrying);
        self.failed = self.failed.saturating_add(other.failed);
        self.tenants_failed = self.tenants_failed.saturating_add(other.tenants_failed);
    }
}

/// Messages claimed per lease. One: a lease starts when its message is claimed, right
/// before that message is sent. A batch claimed under one lease and sent one after the
/// other outlasts its lease when the mail server is slow, and a concurrent dispatcher then
/// re-claims and sends the batch's tail a second time ([mail delivery (D17)](tenantry_core::Rule::MailDelivery); test
/// `slow_mail_and_concurrent_dispatchers_never_send_twice` in crates/smtp). So a message is
/// sent twice without a fault only if its single send outlasts the lease (keep the mailer's
/// time-out below [`crate::DeliverySettings::lease`]).
const CLAIM: u32 = 1;

impl Tenantry {
    fn backoff_after(&self, attempts: u32) -> Duration {
        let d = &self.inner.settings.delivery;
        let factor = 2i32.saturating_pow(attempts.min(20));
        let wait = d.backoff.saturating_mul(factor);
        if wait > d.max_backoff {
            d.max_backoff
        } else {
            wait
        }
    }

    /// Delivers the tenant's due outbox messages now ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)). Each message is claimed with a
    /// lease right before it is sent, so concurrent dispatchers never send one message twice
    /// at once (as long as one send takes less than the lease).
    ///
    /// # Errors
    /// Store failures (delivery failures are recorded on the messages, not returned).
    ///
    /// A transient failure is retried after the backoff of [`DeliverySettings`](crate::DeliverySettings):
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{DeliverySettings, DispatchReport, MailError, ManualClock};
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new())
    ///     .mailer(mailer.clone())
    ///     .clock(clock.clone())
    ///     .delivery(DeliverySettings { inline: false, ..DeliverySettings::default() })
    ///     .build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    ///
    /// mailer.fail_next(MailError::Transient("421 try again later".into()));
    /// assert_eq!(app.dispatch(tenant).await?.retrying, 1);
    /// assert_eq!(app.dispatch(tenant).await?, DispatchReport::default()); // not due yet
    /// clock.advance(time::Duration::seconds(30)); // the first backoff
    /// assert_eq!(app.dispatch(tenant).await?.sent, 1);
    /// assert_eq!(mailer.sent().len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn dispatch(&self, tenant: TenantId) -> Result<DispatchReport, Error> {
        let span = tracing::info_span!(
            target: "tenantry",
            "dispatch",
            tenant = %tenant,
            outcome = tracing::field::Empty,
            rule = tracing::field::Empty,
        );
        crate::service::traced(span, self.dispatch_tenant(tenant)).await
    }

    async fn dispatch_tenant(&self, tenant: TenantId) -> Result<DispatchReport, Error> {
        let mut report = DispatchReport::default();
        loop {
            let now = self.now();
            let lease = now.saturating_add(self.inner.settings.delivery.lease);
            let claimed = self
                .inner
                .store
                .claim_due_mail(tenant, now, lease, CLAIM)
                .await?;
            if claimed.is_empty() {
                return Ok(report);
            }
            for record in claimed {
                report.add(self.deliver(tenant, &record, None).await?);
            }
        }
    }

    /// Sends one claimed message and records the result. With `limit`, the send is given
    /// at most that long ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)): a send cut off is recorded as a transient failure (retried
    /// by the dispatcher after the backoff). The recording itself is never cut off: a
    /// message the server took is always marked sent, so it is never sent twice ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)).
    pub(crate) async fn deliver(
        &self,
        tenant: TenantId,
        record: &OutboxRecord,
        limit: Option<std::time::Duration>,
    ) -> Result<DispatchReport, Error> {
        // The Date header comes from the service's clock, not the transport's.
        let mut message = record.message.clone();
        message.date = Some(self.now());
        let send = self.inner.mailer.send(&message);
        let result = match limit {
            None => send.await,
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(r) => r,
                Err(_) => Err(tenantry_mail::MailError::Transient(format!(
                    "inline delivery stopped waiting after {} ms; left to the dispatcher",
                    limit.as_millis()
                ))),
            },
        };
        let now = self.now();
        let attempts = record.attempts.saturating_add(1);
        match &result {
            Ok(()) => {
                tracing::debug!(target: "tenantry", message = %record.message.id, attempts, "message delivered")
            }
            Err(e) => tracing::info!(
                target: "tenantry",
                message = %record.message.id,
                attempts,
                transient = e.is_transient(),
                reason = e.reason(),
                "delivery attempt failed"
            ),
        }
        let (update, report) = match result {
            Ok(()) => (
                DeliveryUpdate::Sent { at: now },
                DispatchReport {
                    sent: 1,
                    ..DispatchReport::default()
                },
            ),
            Err(e) if e.is_transient() && attempts < self.inner.settings.delivery.max_attempts => (
                DeliveryUpdate::Retry {
                    reason: e.reason().to_owned(),
                    retry_at: now.saturating_add(self.backoff_after(record.attempts)),
                },
                DispatchReport {
                    retrying: 1,
                    ..DispatchReport::default()
                },
            ),
            Err(e) => (
                DeliveryUpdate::Failed {
                    reason: e.reason().to_owned(),
                    at: now,
                },
                DispatchReport {
                    failed: 1,
                    ..DispatchReport::default()
                },
            ),
        };
        self.inner
            .store
            .record_delivery(tenant, record.message.id, &update)
            .await?;
        Ok(report)
    }

    /// Delivers due messages of every tenant (for a background task). A tenant whose store
    /// calls fail does not hold up the others: it is logged, counted in
    /// [`DispatchReport::tenants_failed`], and its messages stay pending for the next pass.
    ///
    /// # Errors
    /// Store failures listing the tenants with due mail.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::DeliverySettings;
    ///
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new())
    ///     .mailer(mailer.clone())
    ///     .delivery(DeliverySettings { inline: false, ..DeliverySettings::default() })
    ///     .build()?;
    /// for name in ["acme", "globex"] {
    ///     let admin_email = Email::parse(&format!("admin@{name}.test"))?;
    ///     let (tenant, admin) = app.create_tenant(name, None, admin_email).await?;
    ///     app.invite(tenant, admin, &InviteRequest {
    ///         email: Email::parse(&format!("bob@{name}.test"))?, role: Role::User, template_id: None,
    ///         crm_access: false, grants: Permissions::empty(),
    ///     }).await?;
    /// }
    /// // What a background task runs every few seconds:
    /// let report = app.dispatch_all().await?;
    /// assert_eq!((report.sent, report.tenants_failed), (2, 0));
    /// assert_eq!(mailer.sent().len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn dispatch_all(&self) -> Result<DispatchReport, Error> {
        let mut report = DispatchReport::default();
        let tenants = self
            .inner
            .store
            .tenants_with_due_mail(self.now(), 1000)
            .await?;
        for t in tenants {
            match self.dispatch(t).await {
                Ok(r) => report.add(r),
                Err(e) => {
                    tracing::warn!(target: "tenantry", tenant = %t, error = %e, "dispatch failed; the tenant's messages stay pending");
                    report.tenants_failed = report.tenants_failed.saturating_add(1);
                }
            }
        }
        Ok(report)
    }

    /// The tenant's outbox, newest first ([mail delivery (D17)](tenantry_core::Rule::MailDelivery): delivery state visible to the host). The
    /// messages come without their bodies, which hold live accept links ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)): the link is
    /// handed out once, in the result of the invite or resend.
    ///
    /// # Errors
    /// Store failures.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::DeliveryState;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?; // inline delivery
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let all = app.outbox(tenant, false, 50).await?;
    /// assert_eq!(all[0].message.id, invited.message_id);
    /// assert!(matches!(all[0].state, DeliveryState::Sent { .. }));
    /// assert!(all[0].message.text.is_empty()); // never the body with its link
    /// assert!(app.outbox(tenant, true, 50).await?.is_empty()); // nothing pending
    /// # Ok(()) }
    /// ```
    pub async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, Error> {
        let mut records = self.inner.store.outbox(tenant, pending_only, limit).await?;
        records.iter_mut().for_each(without_bodies);
        Ok(records)
    }

    /// One outbox message with its delivery state, without its bodies ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    ///
    /// # Errors
    /// Store failures.
    ///
    /// A host shows why an invitation did not arrive:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{DeliveryState, MailError};
    ///
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new()).mailer(mailer.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// mailer.fail_next(MailError::Permanent("550 no such mailbox".into()));
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let record = app.outbox_message(tenant, invited.message_id).await?.expect("queued by the invite");
    /// match record.state {
    ///     DeliveryState::Failed { reason, .. } => assert_eq!(reason, "550 no such mailbox"),
    ///     other => panic!("expected a failure, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, Error> {
        let mut record = self.inner.store.outbox_message(tenant, id).await?;
        record.iter_mut().for_each(without_bodies);
        Ok(record)
    }
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): what the service lists of a message never holds its live link.
fn without_bodies(record: &mut OutboxRecord) {
    record.message.text.clear();
    record.message.html.clear();
}
