//! # tenantry-store
//!
//! The storage side of tenantry: the [`Store`] trait every backend implements, the shared
//! [`StoreError`], the listing types ([`UserQuery`], [`Page`], [`Cursor`]), the outbox
//! records ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)) and [`InMemoryStore`], the zero-setup default and the reference the other
//! backends are tested against.
//!
//! A backend needs few methods: the reads the use cases need and one atomic
//! [`Store::commit`] of a [`Change`] guarded by the tenant's version ([concurrency (D16)](tenantry_core::Rule::Concurrency)). Every method
//! takes a [`TenantId`]; nothing reads or writes across tenants ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)). The one exception,
//! [`Store::tenants_with_due_mail`] for the background dispatcher, returns tenant ids only.
//!
//! ```
//! # fn block_on<F>(f: F) -> F::Output
//! # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
//! #     // The in-memory store never waits: polling with a no-op waker finishes each call.
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop {
//! #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
//! #             return out;
//! #         }
//! #     }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
//! use std::sync::Arc;
//! use tenantry_core::TenantId;
//! use tenantry_store::{InMemoryStore, Store};
//!
//! // Hosts hold a backend as `Arc<dyn Store>`, whichever it is.
//! let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
//! let unknown = TenantId::from_parts(1_767_225_600_000, [9; 10]);
//! assert!(store.tenant(unknown).await?.is_none());
//! # Ok(()) }) }
//! ```

mod memory;
mod query;
mod snapshot;
pub mod sql;
mod subjects;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Decision, IdentityId, Invitation, MessageId, Request,
    RoleTemplate, Status, Subject, TemplateId, TenantId, TenantState, TokenHash, Tombstone, User,
    UserId,
};
use tenantry_mail::Message;
use time::OffsetDateTime;

pub use memory::{HeldCheck, InMemoryStore};
pub use query::{
    Cursor, CursorError, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Membership, Page, Person, SortBy,
    TenantCursor, UserQuery,
};
pub use snapshot::{Snapshot, SnapshotRequest, read_snapshot};
pub use subjects::{SubjectCache, TenantSubjects};

/// Which uniqueness rule a write broke (the backend's second line of defence, [concurrency (D16)](tenantry_core::Rule::Concurrency)).
///
/// ```
/// # fn block_on<F>(f: F) -> F::Output
/// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
/// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
/// #             return out;
/// #         }
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
/// use tenantry_core::{decide, Email, Tenant, TenantId, UserId};
/// use tenantry_store::{Constraint, InMemoryStore, Store, StoreError};
///
/// let store = InMemoryStore::new();
/// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// let change = decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?;
/// store.commit(&change, &[]).await?;
/// // The same tenant id again: the store refuses it and writes nothing.
/// let again = store.commit(&change, &[]).await;
/// assert!(matches!(again, Err(StoreError::Conflict { constraint: Constraint::TenantId })));
/// # Ok(()) }) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Constraint {
    /// A tenant with this id exists.
    TenantId,
    /// A user of the tenant has this email key ([unique email (D3)](tenantry_core::Rule::UniqueEmail)).
    UserEmail,
    /// A user with this id exists (ids are never reused, [permanent delete (D11)](tenantry_core::Rule::PermanentDelete)).
    UserId,
    /// A template of the tenant has this name key ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).
    TemplateName,
    /// A template with this id exists.
    TemplateId,
    /// An invitation with this token hash exists.
    TokenHash,
    /// A row the change refers to is missing (a user, template, invitation or message).
    MissingRow,
    /// A user of the tenant holds this identity id ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)).
    UserIdentity,
    /// A template that users still reference ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).
    TemplateReferenced,
    /// The seat limit ([seat limit (D9)](tenantry_core::Rule::SeatLimit)), enforced by the schema as a second line.
    SeatLimit,
    /// The last active admin ([last admin (D8)](tenantry_core::Rule::LastAdmin)), enforced by the schema as a second line.
    LastAdmin,
    /// The counters the change computed differ from what the rows say.
    Counters,
    /// A rule of the schema not listed above (a CHECK or trigger).
    Schema,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Constraint::TenantId => "tenant id",
            Constraint::UserEmail => "user email per tenant",
            Constraint::UserId => "user id",
            Constraint::TemplateName => "template name per tenant",
            Constraint::TemplateId => "template id",
            Constraint::TokenHash => "invitation token hash",
            Constraint::MissingRow => "referenced row exists",
            Constraint::UserIdentity => "user identity id per tenant",
            Constraint::TemplateReferenced => "template not referenced",
            Constraint::SeatLimit => "seat limit",
            Constraint::LastAdmin => "last active admin",
            Constraint::Counters => "counters match rows",
            Constraint::Schema => "schema check",
        };
        f.write_str(s)
    }
}

/// The one error type of every backend. Backends map their private errors into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row the call names does not exist in this tenant.
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference rule of the store refused the write.
    #[error("storage constraint violated: {constraint}")]
    Conflict {
        /// Which rule.
        constraint: Constraint,
    },
    /// The tenant changed since the snapshot the change was decided on ([concurrency (D16)](tenantry_core::Rule::Concurrency)); retry.
    #[error("the tenant changed concurrently (expected version {expected})")]
    VersionMismatch {
        /// The version the change expected.
        expected: u64,
    },
    /// The backend was too busy (a lock wait timed out, a serialization failure or a
    /// deadlock); the whole use case may be retried.
    #[error("{backend} backend busy: {reason}")]
    Busy {
        /// Which backend.
        backend: &'static str,
        /// The backend's words.
        reason: String,
    },
    /// This store does not offer the operation (a custom store written before it existed).
    #[error("this store does not support {operation}")]
    Unsupported {
        /// The operation, by its `Store` method name.
        operation: &'static str,
    },
    /// The backend failed.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend (`"sqlite"`, `"postgres"`, `"memory"`).
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    /// Whether repeating the whole use case (reading a new snapshot) may succeed.
    ///
    /// Two changes decided on one snapshot: the first commits, the second finds the
    /// tenant's version moved on ([concurrency (D16)](tenantry_core::Rule::Concurrency)) and is worth deciding again.
    ///
    /// ```
    /// # fn block_on<F>(f: F) -> F::Output
    /// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
    /// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop {
    /// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
    /// #             return out;
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
    /// # use tenantry_core::{Email, Tenant, TenantId, UserId};
    /// # use tenantry_store::{InMemoryStore, Store};
    /// #
    /// # let store = InMemoryStore::new();
    /// # let now = time::macros::datetime!(2026-01-01 0:00 UTC);
    /// # let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
    /// # let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
    /// # let new = Tenant { id: tenant, name: "Acme".into(), user_limit: Some(5), created_at: now };
    /// # let change = tenantry_core::decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?;
    /// # store.commit(&change, &[]).await?;
    /// use tenantry_core::decide::{self, Ctx};
    /// use tenantry_core::{ActorRef, Policy};
    /// use tenantry_store::StoreError;
    ///
    /// // `store` holds a tenant with its admin, committed as in the `Store` example.
    /// let state = store.tenant(tenant).await?.ok_or("no tenant")?;
    /// let policy = Policy::default();
    /// let ctx = Ctx { state: &state, now, policy: &policy };
    /// let raise = decide::set_user_limit(ctx, ActorRef::System, Some(10));
    /// let lower = decide::set_user_limit(ctx, ActorRef::System, Some(3));
    /// store.commit(&raise, &[]).await?;
    /// let err = store.commit(&lower, &[]).await.unwrap_err();
    /// assert!(matches!(err, StoreError::VersionMismatch { expected: 1 }));
    /// assert!(err.is_retryable());
    /// assert!(!StoreError::NotFound.is_retryable());
    /// # Ok(()) }) }
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::VersionMismatch { .. } | StoreError::Busy { .. }
        )
    }
}

/// Where an outbox message is in its delivery ([mail delivery (D17)](tenantry_core::Rule::MailDelivery)). A message starts
/// [`Pending`](DeliveryState::Pending); [`Store::record_delivery`] moves it on.
///
/// ```
/// # fn block_on<F>(f: F) -> F::Output
/// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
/// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
/// #             return out;
/// #         }
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
/// use tenantry_core::{decide, Email, MessageId, Tenant, TenantId, UserId};
/// use tenantry_mail::Message;
/// use tenantry_store::{DeliveryState, DeliveryUpdate, InMemoryStore, Store};
///
/// # let store = InMemoryStore::new();
/// # let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// # let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// # let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// # let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
/// # let change = decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?;
/// let id = MessageId::from_parts(1_767_225_600_000, [3; 10]);
/// let message = Message {
///     id, tenant_id: tenant, user_id: ada, to: "ada@acme.test".into(),
///     subject: "Welcome".into(), text: "Hello".into(), html: "<p>Hello</p>".into(), date: None,
/// };
/// store.commit(&change, &[message]).await?; // queued with the change
/// let claimed = store.claim_due_mail(tenant, now, now + time::Duration::minutes(2), 10).await?;
/// assert_eq!(claimed[0].state, DeliveryState::Pending);
///
/// store.record_delivery(tenant, id, &DeliveryUpdate::Sent { at: now }).await?;
/// let record = store.outbox_message(tenant, id).await?.ok_or("no message")?;
/// assert_eq!(record.state, DeliveryState::Sent { at: now });
/// assert!(record.message.text.is_empty()); // the body is gone once sent
/// assert_eq!(serde_json::to_value(&record.state)?["state"], "sent");
/// # Ok(()) }) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DeliveryState {
    /// Waiting to be delivered (first try or retry).
    Pending,
    /// Delivered.
    Sent {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Given up on.
    Failed {
        /// The transport's reason.
        reason: String,
        /// When it was given up.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// A message in the outbox with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The message. Once sent or failed for good, its bodies (which hold the accept link)
    /// are cleared ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    pub message: Message,
    /// Its delivery state.
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it may be tried (again); a claim pushes it forward as a lease.
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// The reason of the last failed attempt.
    pub last_error: Option<String>,
    /// When it was queued (the commit of its invite).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The result of one delivery attempt, recorded by [`Store::record_delivery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum DeliveryUpdate {
    /// Delivered: mark sent and clear the bodies.
    Sent {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Failed, will be retried at `retry_at`.
    Retry {
        /// The reason.
        reason: String,
        /// When to try again.
        #[serde(with = "time::serde::rfc3339")]
        retry_at: OffsetDateTime,
    },
    /// Failed for good.
    Failed {
        /// The reason.
        reason: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// Storage of one or many tenants. Dyn-compatible: hosts hold `Arc<dyn Store>`.
///
/// Every read returns rows of the named tenant only ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)). [`Store::commit`] applies a
/// whole [`Change`] atomically, only if the tenant's version still equals
/// [`Change::expected_version`], and appends the change's audit events and outbox messages
/// in the same step ([audit log (D13)](tenantry_core::Rule::AuditLog), [concurrency (D16)](tenantry_core::Rule::Concurrency), [mail delivery (D17)](tenantry_core::Rule::MailDelivery)).
///
/// The service decides every change with [`tenantry_core::decide`] and commits it here.
/// Done by hand, with [`InMemoryStore`], and read back:
///
/// ```
/// # fn block_on<F>(f: F) -> F::Output
/// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
/// #     // The in-memory store never waits: polling with a no-op waker finishes each call.
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
/// #             return out;
/// #         }
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
/// use tenantry_core::{decide, Email, Tenant, TenantId, UserId};
/// use tenantry_store::{InMemoryStore, Store};
///
/// let store = InMemoryStore::new();
/// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
/// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
/// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
/// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: Some(5), created_at: now };
/// store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
/// use tenantry_core::Role;
/// use tenantry_store::UserQuery;
///
/// let state = store.tenant(tenant).await?.ok_or("no tenant")?;
/// assert_eq!(state.tenant.name, "Acme");
/// assert_eq!((state.counters.version, state.seat_usage().used), (1, 1));
///
/// let admins = UserQuery { role: Some(Role::Admin), ..UserQuery::default() };
/// let page = store.list_users(tenant, &admins).await?;
/// assert_eq!(page.items[0].id, ada);
/// assert!(page.next.is_none());
///
/// // Nothing is read across tenants (tenant isolation, D15).
/// let other = TenantId::from_parts(1_767_225_600_000, [9; 10]);
/// assert!(store.user(other, ada).await?.is_none());
/// # Ok(()) }) }
/// ```
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The tenant with its counters and version.
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError>;

    /// A user by id.
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError>;

    /// The rows a use case decides on ([`SnapshotRequest`]), read at once. The default reads
    /// them one by one ([`read_snapshot`]); a store whose reads cross a network overrides it
    /// to read them in one round trip. Whatever it does, it answers what those single reads
    /// would.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the storage failed.
    async fn snapshot(
        &self,
        tenant: TenantId,
        request: &SnapshotRequest,
    ) -> Result<Snapshot, StoreError> {
        read_snapshot(self, tenant, request).await
    }

    /// The facts an authorization check needs about a user, read together ([current access (D6)](tenantry_core::Rule::CurrentAccess)): the user's
    /// row and its template's current permissions. Backends override this to read both in
    /// one round trip without allocating; the default reads the user, then the template.
    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        let Some(user) = self.user(tenant, id).await? else {
            return Ok(None);
        };
        let template = match user.template_id {
            Some(t) => self.template(tenant, t).await?,
            None => None,
        };
        Ok(Some(Subject::of(&user, template.as_ref())))
    }

    /// [`Store::subject`] answered at once from memory, without waiting, or `None` when this
    /// store cannot answer so now (then call [`Store::subject`]). A store that answers must
    /// give what [`Store::subject`] gives at the same moment: never a stale row
    /// ([current access (D6)](tenantry_core::Rule::CurrentAccess)). The default never answers.
    ///
    /// [`InMemoryStore`] answers from a lock-free check index (an owning SQLite store from its
    /// cache), which is what makes a check cost nanoseconds rather than a future's trip:
    ///
    /// ```
    /// # fn block_on<F>(f: F) -> F::Output
    /// # where F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>> {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop {
    /// #         if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
    /// #             return out;
    /// #         }
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> { block_on(async {
    /// use tenantry_core::{decide, Email, Status, Tenant, TenantId, UserId};
    /// use tenantry_store::{InMemoryStore, Store};
    ///
    /// let store = InMemoryStore::new();
    /// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
    /// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
    /// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
    /// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
    /// store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
    ///
    /// let subject = store.subject_now(tenant, ada).ok_or("answered")??.ok_or("a user")?;
    /// assert_eq!(subject.status, Status::Active);
    /// assert_eq!(Some(subject), store.subject(tenant, ada).await?);
    /// let nobody = UserId::from_parts(1_767_225_600_000, [3; 10]);
    /// assert!(store.subject_now(tenant, nobody).ok_or("answered")??.is_none());
    /// # Ok(()) }) }
    /// ```
    fn subject_now(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Option<Result<Option<Subject>, StoreError>> {
        let _ = (tenant, id);
        None
    }

    /// A check decided at once from memory: what [`tenantry_core::authorize_subject`]
    /// decides on [`Store::subject_now`]'s answer (an unknown user is
    /// [`Decision::unknown_user`]), or `None` when [`Store::subject_now`] does not answer.
    /// A store that overrides it must decide the same
    /// ([current access (D6)](tenantry_core::Rule::CurrentAccess)). The in-memory store
    /// overrides it to decide where it reads its check index, so the subject is never
    /// written out and read back (callgrind, `CHECK_IR` in the check bench: 346 instructions
    /// per check instead of 357); the owning SQLite store keeps this default.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let f = async {
    /// use tenantry_core::{decide, Email, Reason, Request, Tenant, TenantId, UserId};
    /// use tenantry_store::{InMemoryStore, Store};
    ///
    /// let store = InMemoryStore::new();
    /// let now = time::macros::datetime!(2026-01-01 0:00 UTC);
    /// let tenant = TenantId::from_parts(1_767_225_600_000, [1; 10]);
    /// let ada = UserId::from_parts(1_767_225_600_000, [2; 10]);
    /// let new = Tenant { id: tenant, name: "Acme".into(), user_limit: None, created_at: now };
    /// store.commit(&decide::create_tenant(new, ada, Email::parse("ada@acme.test")?)?, &[]).await?;
    ///
    /// let decision = store.decide_now(tenant, ada, Request::Crm).ok_or("answered")??;
    /// assert_eq!(decision.reason(), Reason::Admin);
    /// let nobody = UserId::from_parts(1_767_225_600_000, [3; 10]);
    /// let unknown = store.decide_now(tenant, nobody, Request::Crm).ok_or("answered")??;
    /// assert_eq!(unknown.reason(), Reason::UnknownUser);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) };
    /// # let mut f = std::pin::pin!(f);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # loop { if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) { return out; } }
    /// # }
    /// ```
    #[inline]
    fn decide_now(
        &self,
        tenant: TenantId,
        id: UserId,
        request: Request,
    ) -> Option<Result<Decision, StoreError>> {
        Some(self.subject_now(tenant, id)?.map(|subject| match subject {
            Some(s) => tenantry_core::authorize_subject(&s, request),
            None => Decision::unknown_user(),
        }))
    }

    /// Takes hold of one user's checks, for a host that checks the same user many times (a
    /// session): the returned [`HeldCheck`] decides from memory without finding the tenant
    /// and the user again ([`HeldCheck::decide_now`]), and gives the same answers as
    /// [`Store::decide_now`] ([current access (D6)](tenantry_core::Rule::CurrentAccess):
    /// it reads the same words at every check). `None` when the store cannot answer from
    /// memory or does not hold the user now. The default is `None`; the in-memory store
    /// overrides it, and so can any store that keeps its subjects in a [`SubjectCache`].
    fn hold_now(&self, tenant: TenantId, id: UserId) -> Option<HeldCheck> {
        let _ = (tenant, id);
        None
    }

    /// A user by canonical email key ([unique email (D3)](tenantry_core::Rule::UniqueEmail)).
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError>;

    /// A role template by id.
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError>;

    /// A role template by lower-cased name key ([role templates (D12)](tenantry_core::Rule::RoleTemplates)).
    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError>;

    /// Every template of the tenant, by name key.
    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError>;

    /// How many users reference the template.
    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError>;

    /// An invitation by its token hash.
    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError>;

    /// Every invitation ever issued to the user, oldest first.
    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError>;

    /// One page of the user table ([listing (D18)](tenantry_core::Rule::Listing)).
    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError>;

    /// What remains of a deleted user ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)).
    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError>;

    /// Audit records with `seq > after`, oldest first, at most `limit` ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Applies the change atomically if the version is unchanged, with its audit events and
    /// the outbox messages to deliver after commit.
    ///
    /// # Errors
    /// [`StoreError::VersionMismatch`] when the tenant changed (nothing was written);
    /// [`StoreError::Conflict`] when a constraint refused a write (nothing was written).
    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError>;

    /// Appends one audit event outside any change (a refused attempt, [audit log (D13)](tenantry_core::Rule::AuditLog)). Returns its seq.
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError>;

    /// Tenants in order of name, then id, strictly after `after`, at most `limit` (clamped
    /// into 1..=501: one more than the largest page, so a caller asking for a page of 500
    /// learns whether another follows): the operators' listing. It is the one read that is not scoped to a
    /// tenant, and it returns tenant rows and counters only, never a user.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] from a store that does not implement it (the default);
    /// [`StoreError::Backend`] when the storage failed.
    async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        let _ = (after, limit);
        Err(StoreError::Unsupported {
            operation: "tenants",
        })
    }

    /// The user of `tenant` that holds this identity id, if any
    /// ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)).
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] from a store that does not implement it (the default);
    /// [`StoreError::Backend`] when the storage failed.
    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        let _ = (tenant, identity);
        Err(StoreError::Unsupported {
            operation: "user_by_identity",
        })
    }

    /// Every tenant where `person` is a user
    /// ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)),
    /// sorted by tenant name (byte order), then tenant id, starting after `after`, at most
    /// `limit` rows (callers ask for one more than a page, as with [`Store::tenants`]). The
    /// second read across tenants: it returns that person's own rows only, found through an
    /// index on the address key or the identity id (never a scan of tenants). Deleted users
    /// are gone from it.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] from a store that does not implement it (the default);
    /// [`StoreError::Backend`] when the storage failed.
    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        let _ = (person, after, limit);
        Err(StoreError::Unsupported {
            operation: "memberships",
        })
    }

    /// Records a sign-in outside the tenant's version
    /// ([sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange)): in one
    /// atomic step, and only while the user exists in `tenant` and is active, sets its last
    /// login to `at` (or keeps a later one already recorded) and appends `event`, the audit
    /// record of the sign-in. The tenant's version and counters are not touched, so a sign-in
    /// never conflicts with a change and no change conflicts because of it; a sign-in racing
    /// a suspension or deletion of the same user lands wholly before it or is refused.
    ///
    /// The default answers [`SignInOutcome::Unsupported`]: the service then records the
    /// sign-in as an ordinary change through [`Store::commit`], so a store written before
    /// this method existed keeps working (with sign-ins taking part in the version).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the storage failed (nothing was written).
    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        let _ = (tenant, user, at, event);
        Ok(SignInOutcome::Unsupported)
    }

    /// Outbox messages, newest first, at most `limit`, optionally only pending ones.
    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError>;

    /// One outbox message.
    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError>;

    /// Claims up to `limit` pending messages due at `now` for delivery: each claimed message
    /// gets `next_attempt_at = lease_until` so no other dispatcher takes it meanwhile.
    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Claims one message for delivery, as [`Store::claim_due_mail`] does, if it is pending
    /// and due at `now`; `None` otherwise (already sent, failed, or leased by another
    /// dispatcher). Inline delivery ([mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest)) claims only the messages its own call queued.
    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError>;

    /// Records the result of a delivery attempt (and counts the attempt). A message that is
    /// sent or has failed for good loses its bodies, which hold the live accept link ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError>;

    /// Tenants that have pending mail due at `now` (ids only), at most `limit`.
    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError>;
}

/// What [`Store::record_sign_in`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInOutcome {
    /// Recorded: the user as it is now, last login set.
    Recorded(User),
    /// The user exists but is not active (invited or suspended); nothing was written.
    NotActive(Status),
    /// No such user in the tenant; nothing was written.
    NotFound,
    /// This store does not record sign-ins on their own (the trait's default); nothing was
    /// written, and the caller records the sign-in through [`Store::commit`].
    Unsupported,
}

/// A shared store is a store: hosts can keep an `Arc` of a backend and hand clones of it to
/// the service, the console and their own code.
#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        (**self).tenant(tenant).await
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        (**self).user(tenant, id).await
    }

    async fn snapshot(
        &self,
        tenant: TenantId,
        request: &SnapshotRequest,
    ) -> Result<Snapshot, StoreError> {
        (**self).snapshot(tenant, request).await
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        (**self).subject(tenant, id).await
    }

    fn subject_now(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Option<Result<Option<Subject>, StoreError>> {
        (**self).subject_now(tenant, id)
    }

    #[inline]
    fn decide_now(
        &self,
        tenant: TenantId,
        id: UserId,
        request: Request,
    ) -> Option<Result<Decision, StoreError>> {
        (**self).decide_now(tenant, id, request)
    }

    fn hold_now(&self, tenant: TenantId, id: UserId) -> Option<HeldCheck> {
        (**self).hold_now(tenant, id)
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        (**self).user_by_email(tenant, key).await
    }

    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        (**self).template(tenant, id).await
    }

    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        (**self).template_by_name(tenant, key).await
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        (**self).templates(tenant).await
    }

    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        (**self).count_template_users(tenant, template).await
    }

    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        (**self).invitation(tenant, hash).await
    }

    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        (**self).invitations_of(tenant, user).await
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        (**self).list_users(tenant, query).await
    }

    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        (**self).tombstone(tenant, user).await
    }

    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        (**self).audit(tenant, after, limit).await
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        (**self).commit(change, outbox).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        (**self).append_audit(event).await
    }

    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        (**self).record_sign_in(tenant, user, at, event).await
    }

    async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        (**self).tenants(after, limit).await
    }

    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        (**self).user_by_identity(tenant, identity).await
    }

    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        (**self).memberships(person, after, limit).await
    }

    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        (**self).outbox(tenant, pending_only, limit).await
    }

    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        (**self).outbox_message(tenant, id).await
    }

    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        (**self)
            .claim_due_mail(tenant, now, lease_until, limit)
            .await
    }

    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        (**self).claim_message(tenant, id, now, lease_until).await
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        (**self).record_delivery(tenant, id, update).await
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        (**self).tenants_with_due_mail(now, limit).await
    }
}
