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
mod foreign;
mod gate;
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
    EmailError, ErrorKind, Field, FieldChange, IdError, IdentityError, IdentityId, InvitationState,
    KeywordError, MAX_ACCEPT_ATTEMPTS, MessageId, NameError, Outcome, Permission,
    PermissionParseError, Permissions, Policy, Reason, Request, Role, RoleTemplate, Rule,
    SeatUsage, Status, TemplateId, TemplateName, TemplateNameError, Tenant, TenantId, TenantName,
    TenantState, Tombstone, User, UserId, Value,
};
pub use tenantry_mail::{
    DefaultRenderer, InMemoryMailer, Invitation as InvitationMail, MailError, Mailer, Message,
    Rendered, Renderer, escape_html,
};
pub use tenantry_store::{
    Cursor, DeliveryState, HeldCheck, InMemoryStore, Membership, OutboxRecord, Page, Person,
    SortBy, Store, StoreError, TenantCursor, UserQuery,
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
///
/// Start from the defaults and change what differs. A host that runs a background
/// dispatcher turns inline delivery off; invites then only queue their mail:
///
/// ```
/// # use tenantry_service as tenantry;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tenantry::Error> {
/// use tenantry::DeliverySettings;
/// use tenantry::prelude::*;
///
/// let delivery = DeliverySettings { inline: false, max_attempts: 3, ..DeliverySettings::default() };
/// assert_eq!(delivery.backoff, time::Duration::seconds(30));
/// let mailer = InMemoryMailer::new();
/// let app = Tenantry::builder(InMemoryStore::new())
///     .mailer(mailer.clone())
///     .delivery(delivery)
///     .build()?;
/// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
/// app.invite(tenant, admin, &InviteRequest {
///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
///     crm_access: false, grants: Permissions::empty(),
/// }).await?;
/// assert!(mailer.sent().is_empty()); // queued, not sent
/// assert_eq!(app.dispatch(tenant).await?.sent, 1);
/// assert_eq!(mailer.sent().len(), 1);
/// # Ok(()) }
/// ```
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

/// The service's settings, all at once (see [`Builder::settings`]); the builder's other
/// methods set one part each.
///
/// ```
/// # use tenantry_service as tenantry;
/// # fn main() -> Result<(), tenantry::Error> {
/// use tenantry::{InMemoryStore, Policy, Settings, Tenantry};
///
/// let settings = Settings {
///     base_url: "https://app.example.com/accept".to_owned(),
///     policy: Policy { invite_ttl: time::Duration::days(3), ..Policy::default() },
///     ..Settings::default()
/// };
/// let app = Tenantry::builder(InMemoryStore::new()).settings(settings).build()?;
/// assert_eq!(app.settings().policy.invite_ttl, time::Duration::days(3));
/// assert_eq!(app.settings().policy.resend_limit, 3); // the default
/// assert_eq!(app.settings().max_attempts, 64);
/// # Ok(()) }
/// ```
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

/// Builds a [`Tenantry`]; see [`Tenantry::builder`]. Every part has a default, so
/// `Tenantry::builder(store).build()` is a working service; tests usually inject a
/// [`ManualClock`] and keep a clone of the [`InMemoryMailer`].
///
/// ```
/// # use tenantry_service as tenantry;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tenantry::Error> {
/// use tenantry::prelude::*;
/// use tenantry::{ManualClock, Policy};
///
/// let clock = ManualClock::new(time::macros::datetime!(2026-03-01 9:00 UTC));
/// let mailer = InMemoryMailer::new();
/// let app = Tenantry::builder(InMemoryStore::new())
///     .mailer(mailer.clone())
///     .clock(clock.clone())
///     .base_url("https://app.example.com/accept")
///     .policy(Policy { invite_ttl: time::Duration::days(2), ..Policy::default() })
///     .build()?;
/// assert_eq!(app.now(), time::macros::datetime!(2026-03-01 9:00 UTC));
/// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
/// let invited = app.invite(tenant, admin, &InviteRequest {
///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
///     crm_access: false, grants: Permissions::empty(),
/// }).await?;
/// assert_eq!(invited.user.invite_expires_at, Some(time::macros::datetime!(2026-03-03 9:00 UTC)));
/// assert!(mailer.sent()[0].text.contains("https://app.example.com/accept?token="));
/// # Ok(()) }
/// ```
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
    ///
    /// Keep a clone of an [`InMemoryMailer`] to see what was sent:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new()).mailer(mailer.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// let sent = mailer.sent();
    /// assert_eq!((sent.len(), sent[0].to.as_str()), (1, "bob@acme.test"));
    /// assert_eq!(sent[0].id, invited.message_id);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn mailer(mut self, mailer: impl Mailer) -> Self {
        self.mailer = Arc::new(mailer);
        self
    }

    /// The invitation renderer (default: [`DefaultRenderer`]).
    ///
    /// A host brands its mail by implementing [`Renderer`], here by changing the subject
    /// of the default rendering:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{DefaultRenderer, InvitationMail, Rendered, Renderer};
    ///
    /// #[derive(Debug)]
    /// struct Branded;
    /// impl Renderer for Branded {
    ///     fn render(&self, inv: &InvitationMail) -> Rendered {
    ///         let subject = format!("Join {} on Example Cloud", inv.tenant_name);
    ///         Rendered { subject, ..DefaultRenderer.render(inv) }
    ///     }
    /// }
    /// let mailer = InMemoryMailer::new();
    /// let app = Tenantry::builder(InMemoryStore::new())
    ///     .mailer(mailer.clone())
    ///     .renderer(Branded)
    ///     .build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// assert_eq!(mailer.sent()[0].subject, "Join Acme on Example Cloud");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn renderer(mut self, renderer: impl Renderer) -> Self {
        self.renderer = Arc::new(renderer);
        self
    }

    /// The clock (default: [`SystemClock`]). Nothing in the service reads the time any
    /// other way, so a [`ManualClock`] makes expiry and inactivity testable.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::ManualClock;
    /// use tenantry::prelude::*;
    ///
    /// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    /// let app = Tenantry::builder(InMemoryStore::new()).clock(clock.clone()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// clock.advance(time::Duration::hours(1));
    /// let ada = app.record_sign_in(tenant, admin).await?;
    /// assert_eq!(ada.last_login, Some(time::macros::datetime!(2026-01-01 1:00 UTC)));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The randomness source (default: [`OsRandom`]). Ids and invitation tokens are drawn
    /// from it; keep [`OsRandom`] in production (tokens are secrets). A seeded source makes
    /// test runs reproducible:
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use std::sync::atomic::{AtomicU8, Ordering};
    /// use tenantry::prelude::*;
    /// use tenantry::{ManualClock, Random};
    ///
    /// #[derive(Debug, Default)]
    /// struct Counting(AtomicU8);
    /// impl Random for Counting {
    ///     fn fill(&self, buf: &mut [u8]) -> Result<(), String> {
    ///         buf.fill(self.0.fetch_add(1, Ordering::Relaxed));
    ///         Ok(())
    ///     }
    /// }
    /// let clock = ManualClock::new(time::OffsetDateTime::UNIX_EPOCH);
    /// let run = || {
    ///     let builder = Tenantry::builder(InMemoryStore::new()).clock(clock.clone());
    ///     builder.random(Counting::default()).build()
    /// };
    /// let email = Email::parse("ada@acme.test")?;
    /// let first = run()?.create_tenant("Acme", None, email.clone()).await?;
    /// let again = run()?.create_tenant("Acme", None, email).await?;
    /// assert_eq!(first, again); // the same ids on every run
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn random(mut self, random: impl Random) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The accept page's URL; accept links are `base_url?token=…`, or `…&token=…` when the
    /// URL already has a query.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new())
    ///     .base_url("https://app.example.com/accept?src=mail")
    ///     .build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let invited = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?;
    /// assert!(invited.accept_link.expose().starts_with("https://app.example.com/accept?src=mail&token="));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.settings.base_url = url.into();
        self
    }

    /// Invitation lifetime and resend limits ([invitations (D10)](tenantry_core::Rule::Invitations)).
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    /// use tenantry::{Error, Policy, RuleError};
    ///
    /// // At most one resend per hour.
    /// let policy = Policy { resend_limit: 1, resend_window: time::Duration::hours(1), ..Policy::default() };
    /// let app = Tenantry::builder(InMemoryStore::new()).policy(policy).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let bob = app.invite(tenant, admin, &InviteRequest {
    ///     email: Email::parse("bob@acme.test")?, role: Role::User, template_id: None,
    ///     crm_access: false, grants: Permissions::empty(),
    /// }).await?.user;
    /// app.resend_invitation(tenant, admin, bob.id).await?;
    /// let again = app.resend_invitation(tenant, admin, bob.id).await;
    /// assert!(matches!(again, Err(Error::Rule(RuleError::ResendRateLimited { .. }))));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Mail delivery settings; see [`DeliverySettings`] for an example.
    #[must_use]
    pub fn delivery(mut self, delivery: DeliverySettings) -> Self {
        self.settings.delivery = delivery;
        self
    }

    /// Every setting at once; see [`Settings`] for an example.
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
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// use tenantry::{InMemoryStore, Policy, SettingsError, Tenantry};
    ///
    /// let relative = Tenantry::builder(InMemoryStore::new()).base_url("/accept").build();
    /// assert!(matches!(relative, Err(SettingsError::BaseUrl { .. })));
    ///
    /// let policy = Policy { resend_limit: 0, ..Policy::default() };
    /// let no_resends = Tenantry::builder(InMemoryStore::new()).policy(policy).build();
    /// assert_eq!(no_resends.unwrap_err(), SettingsError::NotPositive { name: "policy.resend_limit" });
    /// ```
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
                foreign: foreign::Sampler::default(),
                gates: gate::Gates::default(),
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
    foreign: foreign::Sampler,
    gates: gate::Gates,
}

/// The tenantry service: every use case of the Users page. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Tenantry {
    inner: Arc<Inner>,
}

impl Tenantry {
    /// Starts building a service on `store`. A shared store (`Arc<S>` or `Arc<dyn Store>`) is
    /// a store too, so one backend can serve the service and the host's own code.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use std::sync::Arc;
    /// use tenantry::prelude::*;
    /// use tenantry::Store;
    ///
    /// let store = Arc::new(InMemoryStore::new());
    /// let app = Tenantry::builder(store.clone()).build()?;
    /// let (tenant, _) = app.create_tenant("Acme", Some(5), Email::parse("ada@acme.test")?).await?;
    /// // The host reads the same backend directly.
    /// let state = store.tenant(tenant).await?.expect("just created");
    /// assert_eq!(state.tenant.name, "Acme");
    /// # Ok(()) }
    /// ```
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

    /// The store underneath, for reads the use cases do not offer. Reading the store
    /// directly bypasses the service's permission checks: it is the host's own access.
    ///
    /// ```
    /// # use tenantry_service as tenantry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenantry::Error> {
    /// use tenantry::prelude::*;
    ///
    /// let app = Tenantry::builder(InMemoryStore::new()).build()?;
    /// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
    /// let page = app.store().list_users(tenant, &UserQuery::default()).await?;
    /// assert_eq!(page.items.len(), 1);
    /// assert_eq!(page.items[0].id, admin);
    /// assert!(page.next.is_none());
    /// # Ok(()) }
    /// ```
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
