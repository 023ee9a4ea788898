//! Test support: a fresh schema per test in the PostgreSQL on this machine, dropped when the
//! test ends (also when it panics), and a sweep of schemas that dead test processes left.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Connection, PgConnection};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, Subject, TemplateId,
    TenantId, TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_postgres::{PgConnectOptions, PgPoolOptions, PostgresStore};
use tenantry_service::{Message, OutboxRecord, Page, Store, StoreError, UserQuery};
use tenantry_store::DeliveryUpdate;
use time::OffsetDateTime;

/// The server the tests use; `TENANTRY_PG_URL` overrides it.
pub fn url() -> String {
    std::env::var("TENANTRY_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Prefix of every schema the tests create.
pub const PREFIX: &str = "tenantry_test_";

const HOW_TO_START: &str = "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start \
     (scripts/services.sh does this), or point TENANTRY_PG_URL at another server.";

fn options() -> PgConnectOptions {
    PgConnectOptions::from_str(&url())
        .unwrap_or_else(|e| panic!("TENANTRY_PG_URL {:?} is not a valid URL: {e}", url()))
}

/// Fails the test (never skips it) when the server is down.
fn unreachable(e: &dyn std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL is not reachable at {} ({e}). {HOW_TO_START}",
        url()
    )
}

/// Fails at once, with the server's own error, when it cannot be reached (a pool would wait
/// for its acquire timeout and report only that).
async fn probe() {
    match PgConnection::connect_with(&options()).await {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(e) => unreachable(&e),
    }
}

/// Drops the schemas of test processes that are gone (they panicked past their guards or
/// were killed). Runs once per test process.
async fn sweep() {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let conn = match PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options())
        .await
    {
        Ok(c) => c,
        Err(e) => unreachable(&e),
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, 'tenantry_test_')",
    )
    .fetch_all(&conn)
    .await
    .expect("list test schemas");
    for name in names {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(&conn)
                .await;
        }
    }
    conn.close().await;
}

/// A schema name unique to this process and call.
fn schema_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{PREFIX}{}_{n}_{nanos}", std::process::id())
}

/// Drops its schema when dropped, from a thread of its own (Drop cannot await).
#[derive(Debug)]
pub struct SchemaGuard {
    schema: String,
}

impl SchemaGuard {
    pub fn name(&self) -> &str {
        &self.schema
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = std::mem::take(&mut self.schema);
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test schema");
            rt.block_on(async move {
                let opts = options().options([("lock_timeout", "10s")]);
                let Ok(mut conn) = PgConnection::connect_with(&opts).await else {
                    return;
                };
                for _ in 0..3 {
                    let r = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                    if r.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = conn.close().await;
            });
        });
        let _ = dropper.join();
    }
}

/// A store in a fresh schema with a pool of `max_connections`, and the guard that drops the
/// schema. Fails the test when the server is unreachable.
pub async fn fresh(max_connections: u32) -> (PostgresStore, SchemaGuard) {
    probe().await;
    sweep().await;
    let schema = schema_name();
    let guard = SchemaGuard {
        schema: schema.clone(),
    };
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(120));
    let opts = options().options([("lock_timeout", "10s")]);
    match PostgresStore::connect_in_schema_with(pool, opts, &schema).await {
        Ok(store) => (store, guard),
        Err(tenantry_postgres::OpenError::Connect(e)) => unreachable(&e),
        Err(e) => panic!("cannot open a test schema: {e}"),
    }
}

/// A [`PostgresStore`] that drops its schema when the last handle goes: what the
/// conformance factory hands out. It forwards every method, the provided ones too, so the
/// suite runs this backend's own implementations.
#[derive(Debug)]
pub struct GuardedStore {
    pub store: PostgresStore,
    _guard: SchemaGuard,
}

impl GuardedStore {
    pub async fn new(max_connections: u32) -> Self {
        let (store, guard) = fresh(max_connections).await;
        Self {
            store,
            _guard: guard,
        }
    }
}

#[async_trait]
impl Store for GuardedStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.store.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.store.user(tenant, id).await
    }

    async fn snapshot(
        &self,
        tenant: TenantId,
        request: &tenantry_store::SnapshotRequest,
    ) -> Result<tenantry_store::Snapshot, StoreError> {
        self.store.snapshot(tenant, request).await
    }
    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        self.store.subject(tenant, id).await
    }
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.store.user_by_email(tenant, key).await
    }
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.store.template(tenant, id).await
    }
    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.store.template_by_name(tenant, key).await
    }
    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        self.store.templates(tenant).await
    }
    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        self.store.count_template_users(tenant, template).await
    }
    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.store.invitation(tenant, hash).await
    }
    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.store.invitations_of(tenant, user).await
    }
    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        self.store.list_users(tenant, query).await
    }
    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.store.tombstone(tenant, user).await
    }
    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit(tenant, after, limit).await
    }
    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.store.commit(change, outbox).await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.store.append_audit(event).await
    }
    async fn tenants(
        &self,
        after: Option<&tenantry_store::TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        self.store.tenants(after, limit).await
    }
    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &tenantry_core::IdentityId,
    ) -> Result<Option<User>, StoreError> {
        self.store.user_by_identity(tenant, identity).await
    }
    async fn memberships(
        &self,
        person: &tenantry_store::Person,
        after: Option<&tenantry_store::TenantCursor>,
        limit: u32,
    ) -> Result<Vec<tenantry_store::Membership>, StoreError> {
        self.store.memberships(person, after, limit).await
    }
    async fn record_sign_in(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<tenantry_store::SignInOutcome, StoreError> {
        self.store.record_sign_in(tenant, user, at, event).await
    }
    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.store.outbox(tenant, pending_only, limit).await
    }
    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.store.outbox_message(tenant, id).await
    }
    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.store
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
        self.store.claim_message(tenant, id, now, lease_until).await
    }
    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.store.record_delivery(tenant, id, update).await
    }
    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.store.tenants_with_due_mail(now, limit).await
    }
}
