//! # tenantry-postgres
//!
//! The PostgreSQL storage of tenantry, for hosts that outgrow one machine: sqlx with runtime
//! queries (no database needed to build), on the host's own pool, in a schema of its choice,
//! with embedded migrations the host applies as a step of its own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry_postgres::{PgPoolOptions, PostgresStore};
//! // The host's pool (a lock_timeout keeps a commit from waiting forever for a tenant row).
//! let pool = PgPoolOptions::new()
//!     .max_connections(20)
//!     .test_before_acquire(false) // no ping round trip before each statement
//!     .connect("postgres://app@127.0.0.1:5432/app?options=-c%20lock_timeout%3D10s")
//!     .await?;
//! let store = PostgresStore::new(pool).with_schema("tenantry")?;
//! // tenantry's migrations, recorded in `tenantry_migrations` (never in the host's
//! // `_sqlx_migrations`); safe to run from several processes at once.
//! store.migrate().await?;
//! let app = tenantry_service::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`PostgresStore::connect`] and [`PostgresStore::connect_in_schema`] do all three from a URL.
//!
//! ## Concurrency ([concurrency (D16)](tenantry_core::Rule::Concurrency))
//!
//! Every commit is one statement (one round trip): a call of the `tenantry_commit` function
//! the migrations create. It runs at READ COMMITTED (PostgreSQL's default) and starts by
//! locking the tenant's row (`SELECT version … FOR NO KEY UPDATE`) and comparing its version
//! with the one the decision was taken on. Concurrent commits of one tenant therefore
//! serialize on that row; a stale one is refused with [`StoreError::VersionMismatch`] and the
//! service decides again on a fresh snapshot. Commits of different tenants never wait for each
//! other. Serialization failures, deadlocks and lock time-outs become [`StoreError::Busy`],
//! which the service also retries (a bounded number of times, then `Error::Contention`).
//!
//! A sign-in ([`Store::record_sign_in`], [sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange))
//! is one statement too, and never takes the tenant's row: it sets the user's last login
//! while the user is active and appends its audit record with the next seq of the tenant's
//! audit head, the counter every audit append takes its seq from.
//!
//! ## The schema enforces the invariants a second time
//!
//! Unique (tenant, email key), unique (tenant, identity id) ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)),
//! unique (tenant, template name key) and unique token hashes;
//! counters (`seats_used`, `active_admins`) kept by plpgsql triggers and checked against the
//! counters the change computed; a trigger refusing inserts at the seat limit ([seat limit (D9)](tenantry_core::Rule::SeatLimit)); a CHECK
//! keeping one active admin ([last admin (D8)](tenantry_core::Rule::LastAdmin)); admins always with CRM access ([CRM access (D5)](tenantry_core::Rule::CrmAccess)); ids never reused
//! ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)); permission lists only of known, sorted `"category:action"` strings ([permission set (D4)](tenantry_core::Rule::PermissionSet)); and an
//! append-only audit table whose triggers refuse UPDATE, DELETE and TRUNCATE ([audit log (D13)](tenantry_core::Rule::AuditLog)).
//! Unique violations become [`StoreError::Conflict`] naming the
//! [`Constraint`](tenantry_store::Constraint), by the database constraint's name.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry_postgres::PostgresStore;
//! // The shortcut: its own pool, the connection's schema, migrated.
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
//! let app = tenantry_service::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```

mod hot;
mod open;
mod read;
mod rows;
mod snapshot;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use tenantry_core::{
    AuditEvent, AuditRecord, Change, IdentityId, Invitation, MessageId, RoleTemplate, Subject,
    TemplateId, TenantId, TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_mail::Message;
use tenantry_store::{
    DeliveryUpdate, Membership, OutboxRecord, Page, Person, SignInOutcome, Store, StoreError,
    TenantCursor, UserQuery,
};
use time::OffsetDateTime;

pub use hot::DEFAULT_HOT_CONNECTIONS;
pub use open::{DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_CONNECTIONS, MIGRATIONS_TABLE, OpenError};
pub use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// A tenantry store in a PostgreSQL database (or in one schema of it).
///
/// Cheap to clone: clones share the pool and the store's own connections
/// ([`PostgresStore::with_hot_connections`]).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The connections the store opens itself for its hot statements (reads and commits).
    hot: Arc<hot::Hot>,
    schema: Option<String>,
    /// `"schema".` when the store has a schema, else empty: put before every table and
    /// function name the statements use.
    prefix: Arc<str>,
    /// The snapshot's statements, one per request shape, with `prefix` in place.
    snapshots: Arc<snapshot::Statements>,
}

/// `sql` with each `#.` (the place of a schema) replaced by `prefix`.
pub(crate) fn q(prefix: &str, sql: &str) -> String {
    sql.replace("#.", prefix)
}

// Each method is the inherent `…_inner` of its name: the reads in `read.rs`, the write
// path (commit, audit append, outbox claims and delivery results) in `write.rs`.
#[async_trait]
impl Store for PostgresStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.tenant_inner(tenant).await
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.user_inner(tenant, id).await
    }

    async fn snapshot(
        &self,
        tenant: TenantId,
        request: &tenantry_store::SnapshotRequest,
    ) -> Result<tenantry_store::Snapshot, StoreError> {
        self.snapshot_inner(tenant, request).await
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        self.subject_inner(tenant, id).await
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

    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        self.record_sign_in_inner(tenant, user, at, event).await
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
