//! # tenantry-sqlite
//!
//! The embedded default storage of tenantry: SQLite, bundled (no system library), through
//! rusqlite with cached prepared statements; embedded migrations applied on open (sqlx's
//! migrator), WAL journal, a busy timeout, and foreign keys on. Every write runs on one
//! writer thread, from its `BEGIN IMMEDIATE` to its `COMMIT`, whatever happens to the
//! caller's future; reads run on reader connections.
//!
//! The schema enforces the invariants a second time: unique (tenant, email key), unique
//! (tenant, identity id), unique (tenant, template name key), unique token hash, counters kept by triggers and checked
//! against what the change computed, the seat limit on insert, at least one active admin,
//! ids never reused, and an append-only audit log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry_sqlite::SqliteStore;
//! let store = SqliteStore::open("tenantry.db").await?;
//! let app = tenantry_service::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```

mod cache;
mod conn;
mod open;
mod read;
mod rows;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Decision, IdentityId, Invitation, MessageId, Request,
    RoleTemplate, Subject, TemplateId, TenantId, TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_mail::Message;
use tenantry_store::{
    DeliveryUpdate, HeldCheck, Membership, OutboxRecord, Page, Person, SignInOutcome, Store,
    StoreError, TenantCursor, UserQuery,
};
use time::OffsetDateTime;

use cache::Cache;
use conn::Connections;

pub use open::OpenError;

/// A tenantry store in one SQLite database file.
///
/// It holds its own connections: one writer, owned by a thread of its own (SQLite admits
/// one writer at a time; every change is sent to that thread whole and runs there from its
/// `BEGIN IMMEDIATE` to its `COMMIT`, so a cancelled caller can never leave a change half
/// done), and a few readers (WAL lets them read while the writer writes). Cloning shares
/// them.
///
/// # One owner, and a cache that is never stale
/// [`SqliteStore::open`] claims the database for this store: it locks `<file>.lock` next to
/// it, so a second store on the same file (in this process or another) is refused with
/// [`OpenError::InUse`] until this one is closed or dropped. Owning every write lets the
/// store keep the rows each check reads (tenant state, users, templates, subjects) in
/// memory without ever serving a stale one: while a change to a tenant runs, nothing of that
/// tenant is served from the cache, and once it has committed the writer thread applies it
/// to the cached rows (a template edit updates its users' cached subjects in place) before
/// the caller hears back. `authorize` then costs no database round trip when the user was
/// read before. The cached subjects sit in a [`tenantry_store::SubjectCache`] (the in-memory
/// store's lock-free check index), so such a check takes no lock either, and a host can
/// hold a cached user's checks ([`tenantry_store::Store::hold_now`]).
///
/// Hosts that must write one file from several processes open it with
/// [`SqliteStore::open_shared`] in each: no cache, every read goes to the database.
/// Writes to tenantry's tables through [`SqliteStore::pool`] are not seen by the cache;
/// make them through a shared store, or not at all.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conns: Arc<Connections>,
    pool: SqlitePool,
    cache: Option<Arc<Cache>>,
    /// The claim on the database (the lock file, open and locked), released by `close`, or
    /// by the writer thread once it has run its last job after the last clone is dropped.
    lock: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

// Each method is the inherent `…_inner` of its name: the reads in `read.rs`, the write
// path (commit, audit append, outbox claims and delivery results) in `write.rs`.
#[async_trait]
impl Store for SqliteStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.tenant_inner(tenant).await
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.user_inner(tenant, id).await
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        self.subject_inner(tenant, id).await
    }

    /// An owning store answers from its cache when it holds the subject (never stale: see
    /// the type's docs); a shared store never answers here.
    fn subject_now(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Option<Result<Option<Subject>, StoreError>> {
        self.cache
            .as_ref()?
            .subject(tenant, id)
            .map(|s| Ok(Some(s)))
    }

    /// Decided where the cache holds the subject, without a lock for the tenants in its
    /// lock-free index; the same answers as the default (D6).
    #[inline]
    fn decide_now(
        &self,
        tenant: TenantId,
        id: UserId,
        request: Request,
    ) -> Option<Result<Decision, StoreError>> {
        self.cache.as_ref()?.decide(tenant, id, request).map(Ok)
    }

    /// An owning store holds the checks of a user its cache holds (see
    /// [`tenantry_store::HeldCheck`]); a shared store never does.
    fn hold_now(&self, tenant: TenantId, id: UserId) -> Option<HeldCheck> {
        self.cache.as_ref()?.hold(tenant, id)
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.user_by_email_inner(tenant, key).await
    }

    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.template_inner(tenant, id).await
    }

    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.template_by_name_inner(tenant, key).await
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        self.templates_inner(tenant).await
    }

    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        self.count_template_users_inner(tenant, template).await
    }

    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.invitation_inner(tenant, hash).await
    }

    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.invitations_of_inner(tenant, user).await
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        self.list_users_inner(tenant, query).await
    }

    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.tombstone_inner(tenant, user).await
    }

    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_inner(tenant, after, limit).await
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.commit_inner(change, outbox).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.append_audit_inner(event).await
    }

    /// One transaction on the writer: the user's last login (only while it is active) and
    /// the audit event under the next seq; the tenant's version and counters are untouched.
    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        self.record_sign_in_inner(tenant, user, at, event).await
    }

    async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        self.tenants_inner(after, limit).await
    }

    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        self.user_by_identity_inner(tenant, identity).await
    }

    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        self.memberships_inner(person, after, limit).await
    }

    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.outbox_inner(tenant, pending_only, limit).await
    }

    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.outbox_message_inner(tenant, id).await
    }

    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.claim_due_mail_inner(tenant, now, lease_until, limit)
            .await
    }

    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.claim_message_inner(tenant, id, now, lease_until).await
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.record_delivery_inner(tenant, id, update).await
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.tenants_with_due_mail_inner(now, limit).await
    }
}
