//! # tenantry-service
//!
//! Tenant user management as a library: the Settings → Users page of a multi-tenant
//! product. Tenants; users with email, role, status, role template, CRM access and last
//! login; fine-grained permissions; invitations with expiring single-use links; resend;
//! edit; permanent delete with audit retention; role templates whose edits reach every
//! referencing user at the next check; seat limits; an audit log; and a policy evaluator
//! that explains every decision.
//!
//! [`Tenantry`] is the service. It decides every change with the pure rules of
//! [`tenantry_core`] on a snapshot read from a [`Store`], and commits the change only if the
//! tenant did not change meanwhile ([concurrency (D16)](tenantry_core::Rule::Concurrency)), retrying a bounded number of times. Invitation
//! mail goes through a durable outbox and a [`Mailer`] ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)).
//!
//! ```
//! # use tenantry_service as tenantry;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tenantry::Error> {
//! use tenantry::prelude::*;
//!
//! let mailer = InMemoryMailer::new();
//! let app = Tenantry::builder(InMemoryStore::new())
//!     .mailer(mailer.clone())
//!     .base_url("https://app.example.com/accept")
//!     .build()?;
//! let (tenant, admin) = app.create_tenant("Acme", Some(5), Email::parse("ada@acme.test")?).await?;
//!
//! // Invite a user; the invitation mail is delivered after commit.
//! let invited = app.invite(tenant, admin, &InviteRequest {
//!     email: Email::parse("bob@acme.test")?,
//!     role: Role::User,
//!     template_id: None,
//!     crm_access: true,
//!     grants: Permissions::CONVERSATIONS_VIEW,
//! }).await?;
//! assert_eq!(invited.user.status, Status::Invited);
//! assert_eq!(app.seat_usage(tenant).await?.used, 2);
//!
//! // Bob follows the link in the mail.
//! let token = tenantry::token_from_link(&mailer.sent()[0].text).unwrap();
//! let bob = app.accept_invitation(&token, "Bob@acme.test").await?;
//! assert_eq!(bob.status, Status::Active);
//!
//! let view = Permission::new(Category::Conversations, Action::View);
//! assert!(app.authorize(tenant, bob.id, view.into()).await?.is_allowed());
//! # Ok(()) }
//! ```

mod env;
mod error;
mod outbox;
mod service;
mod token;

use std::sync::Arc;

pub use env::{Clock, ManualClock, OsRandom, Random, SystemClock};
pub use error::{Error, QueryError, SettingsError};
pub use outbox::DispatchReport;
pub use service::{AcceptLink, Attribution, BulkResult, Invited, Resent};
/// A product rule's refusal ([`Error::Rule`] holds one): match on it in one step, e.g.
/// `Err(Error::Rule(RuleError::LastAdmin))`.
pub use tenantry_core::Error as RuleError;
pub use tenantry_core::decide::{
    BulkInvite, BulkItem, BulkOutcome, InviteRequest, TemplateDeletion, TemplateEdit, UserEdit,
};
pub use tenantry_core::{
    Action, ActorRef, AuditAction, AuditEvent, AuditRecord, AuditTarget, Category, Decision, Email,
    EmailError, ErrorKind, Field, FieldChange, IdError, InvitationState, KeywordError,
    MAX_ACCEPT_ATTEMPTS, MessageId, NameError, Outcome, Permission, PermissionParseError,
    Permissions, Policy, Reason, Request, Role, RoleTemplate, Rule, SeatUsage, Status, TemplateId,
    TemplateName, TemplateNameError, Tenant, TenantId, TenantName, TenantState, Tombstone, User,
    UserId, Value,
};
pub use tenantry_mail::{DefaultRenderer, InMemoryMailer, MailError, Mailer, Message, Renderer};
pub use tenantry_store::{
    Cursor, DeliveryState, InMemoryStore, OutboxRecord, Page, SortBy, Store, StoreError, UserQuery,
};
use time::Duration;

/// The names most hosts need, for `use tenantry::prelude::*`.
pub mod prelude {
    pub use crate::{
        Action, ActorRef, BulkInvite, BulkOutcome, Category, Decision, Email, InMemoryMailer,
        InMemoryStore, InviteRequest, Permission, Permissions, Reason, Request, Role, SortBy,
        Status, TemplateDeletion, TemplateEdit, Tenantry, UserEdit, UserQuery,
    };
}

/// How invitation mail is delivered ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Attempts before a message is marked failed (default 5).
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long (default 30 s).
    pub backoff: Duration,
    /// The longest wait between attempts (default 1 hour).
    pub max_backoff: Duration,
    /// How long a claimed message is reserved for one dispatcher (default 2 minutes).
    pub lease: Duration,
    /// Deliver right after the invite's commit, inside the call (default true). When false,
    /// only [`Tenantry::dispatch`] / [`Tenantry::dispatch_all`] deliver. Inline delivery
    /// sends only the messages the call itself queued ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)).
    pub inline: bool,
    /// The longest an invite or resend waits for its inline delivery (default 5 s, [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)).
    /// What is not delivered by then stays pending for the dispatcher; a slow or silent mail
    /// server never holds a request longer than this.
    pub inline_deadline: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Duration::seconds(30),
            max_backoff: Duration::hours(1),
            lease: Duration::minutes(2),
            inline: true,
            inline_deadline: Duration::seconds(5),
        }
    }
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Invitation lifetime and resend limits ([invitations (D10)](tenantry_core::Rule::Invitations)).
    pub policy: Policy,
    /// The accept page; links are `base_url?token=…` (never built from request data, [invitations (D10)](tenantry_core::Rule::Invitations)).
    pub base_url: String,
    /// How many times a decision is retaken when the tenant changed meanwhile ([concurrency (D16)](tenantry_core::Rule::Concurrency)).
    pub max_attempts: u32,
    /// Mail delivery.
    pub delivery: DeliverySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            base_url: "http://localhost:8080/accept".to_owned(),
            max_attempts: 64,
            delivery: DeliverySettings::default(),
        }
    }
}

/// Builds a [`Tenantry`]; see [`Tenantry::builder`].
#[derive(Debug)]
pub struct Builder {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    renderer: Arc<dyn Renderer>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    settings: Settings,
}

impl Builder {
    /// The mail transport (default: an [`InMemoryMailer`]); an `Arc` of one is a mailer too.
    #[must_use]
    pub fn mailer(mut self, mailer: impl Mailer) -> Self {
        self.mailer = Arc::new(mailer);
        self
    }

    /// The invitation renderer (default: [`DefaultRenderer`]).
    #[must_use]
    pub fn renderer(mut self, renderer: impl Renderer) -> Self {
        self.renderer = Arc::new(renderer);
        self
    }

    /// The clock (default: [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The randomness source (default: [`OsRandom`]).
    #[must_use]
    pub fn random(mut self, random: impl Random) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The accept page's URL.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.settings.base_url = url.into();
        self
    }

    /// Invitation lifetime and resend limits.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Mail delivery settings.
    #[must_use]
    pub fn delivery(mut self, delivery: DeliverySettings) -> Self {
        self.settings.delivery = delivery;
        self
    }

    /// Every setting at once.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Checks the settings and builds the service.
    ///
    /// # Errors
    /// [`SettingsError`] for a base URL that is not absolute http(s), or a non-positive
    /// duration or count.
    pub fn build(self) -> Result<Tenantry, SettingsError> {
        let s = &self.settings;
        let url = s.base_url.as_str();
        let scheme_ok = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !scheme_ok
            || url.contains('#')
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SettingsError::BaseUrl {
                url: url.to_owned(),
            });
        }
        let positive = [
            ("policy.invite_ttl", s.policy.invite_ttl.is_positive()),
            ("policy.resend_window", s.policy.resend_window.is_positive()),
            ("policy.resend_limit", s.policy.resend_limit > 0),
            ("max_attempts", s.max_attempts > 0),
            ("delivery.max_attempts", s.delivery.max_attempts > 0),
            ("delivery.backoff", s.delivery.backoff.is_positive()),
            ("delivery.lease", s.delivery.lease.is_positive()),
            (
                "delivery.inline_deadline",
                s.delivery.inline_deadline.is_positive(),
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(SettingsError::NotPositive { name });
        }
        Ok(Tenantry {
            inner: Arc::new(Inner {
                store: self.store,
                mailer: self.mailer,
                renderer: self.renderer,
                clock: self.clock,
                random: self.random,
                settings: self.settings,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    renderer: Arc<dyn Renderer>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    settings: Settings,
}

/// The tenantry service: every use case of the Users page. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Tenantry {
    inner: Arc<Inner>,
}

impl Tenantry {
    /// Starts building a service on `store`. A shared store (`Arc<S>` or `Arc<dyn Store>`) is
    /// a store too, so one backend can serve the service and the host's own code.
    pub fn builder(store: impl Store) -> Builder {
        Builder {
            store: Arc::new(store),
            mailer: Arc::new(InMemoryMailer::new()),
            renderer: Arc::new(DefaultRenderer),
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
            settings: Settings::default(),
        }
    }

    /// The store underneath.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The current time by the injected clock.
    #[must_use]
    pub fn now(&self) -> time::OffsetDateTime {
        self.inner.clock.now()
    }
}

/// Finds the invitation token in a text holding an accept link (`…token=<token>`).
///
/// ```
/// # use tenantry_service as tenantry;
/// let t = tenantry::token_from_link("open https://x.test/accept?token=abc.def now");
/// assert_eq!(t.as_deref(), Some("abc.def"));
/// ```
#[must_use]
pub fn token_from_link(text: &str) -> Option<String> {
    let start = text.find("token=")?.checked_add("token=".len())?;
    let rest = text.get(start..)?;
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!token.is_empty()).then_some(token)
}
