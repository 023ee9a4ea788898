//! # tenantry-postgres
//!
//! The PostgreSQL storage of tenantry, for hosts that outgrow one machine: sqlx with runtime
//! queries (no database needed to build), embedded migrations applied on connect, and a
//! connection pool.
//!
//! ## Concurrency ([concurrency (D16)](tenantry_core::Rule::Concurrency))
//!
//! Every commit runs at READ COMMITTED (PostgreSQL's default) and starts by locking the
//! tenant's row (`SELECT version … FOR UPDATE`) and comparing its version with the one the
//! decision was taken on. Concurrent commits of one tenant therefore serialize on that row;
//! a stale one is refused with [`StoreError::VersionMismatch`] and the service decides again
//! on a fresh snapshot. Commits of different tenants never wait for each other. Serialization
//! failures, deadlocks and lock time-outs become [`StoreError::Busy`], which the service also
//! retries (a bounded number of times, then `Error::Contention`).
//!
//! ## The schema enforces the invariants a second time
//!
//! Unique (tenant, email key), unique (tenant, template name key) and unique token hashes;
//! counters (`seats_used`, `active_admins`) kept by plpgsql triggers and checked against the
//! counters the change computed; a trigger refusing inserts at the seat limit ([seat limit (D9)](tenantry_core::Rule::SeatLimit)); a CHECK
//! keeping one active admin ([last admin (D8)](tenantry_core::Rule::LastAdmin)); admins always with CRM access ([CRM access (D5)](tenantry_core::Rule::CrmAccess)); ids never reused
//! ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)); permission lists only of known, sorted `"category:action"` strings ([permission set (D4)](tenantry_core::Rule::PermissionSet)); and an
//! append-only audit table whose triggers refuse UPDATE, DELETE and TRUNCATE ([audit log (D13)](tenantry_core::Rule::AuditLog)).
//! Unique violations become [`StoreError::Conflict`] naming the [`Constraint`], by the
//! database constraint's name.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry_postgres::PostgresStore;
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
//! let app = tenantry_service::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```

mod rows;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Transaction};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, Subject, TemplateId,
    TenantId, TenantState, TokenHash, Tombstone, User, UserId, Write,
};
use tenantry_mail::Message;
use tenantry_store::{
    Constraint, Cursor, DeliveryUpdate, OutboxRecord, Page, SortBy, Store, StoreError, UserQuery,
};
use time::OffsetDateTime;
use uuid::Uuid;

pub use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use rows::{
    BACKEND, INVITATION_COLUMNS, OUTBOX_COLUMNS, Param, TEMPLATE_COLUMNS, TENANT_COLUMNS,
    USER_COLUMNS, backend, invitation_from_row, login_key, nanos, nanos_clamped, outbox_from_row,
    perms_list, subject_from_row, template_from_row, tenant_from_row, tombstone_from_row,
    user_from_row,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The pool size [`PostgresStore::connect`] uses.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The `lock_timeout` [`PostgresStore::connect`] sets on its connections: a commit that
/// waits longer than this for a tenant's row is refused as [`StoreError::Busy`] (and retried
/// by the service) instead of waiting forever.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is invalid or the server could not be reached.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// The schema name is not a plain lower-case identifier of at most 63 characters.
    #[error(
        "invalid schema name {name:?}: use 1-63 characters of a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidSchemaName {
        /// The refused name.
        name: String,
    },
    /// The database was written by a newer tenantry (it has migration `version`, which this
    /// build does not know); it is left untouched.
    #[error(
        "the database was written by a newer version of tenantry (schema migration {version} is unknown to this build)"
    )]
    NewerSchema {
        /// The unknown migration.
        version: i64,
    },
    /// A migration failed.
    #[error("cannot migrate the PostgreSQL database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// A tenantry store in a PostgreSQL database (or in one schema of it).
///
/// Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
}

/// Whether `name` is a schema name this crate will create and quote.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn lock_timeout_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) with a pool of
    /// [`DEFAULT_MAX_CONNECTIONS`] and a [`DEFAULT_LOCK_TIMEOUT`], and applies pending
    /// migrations to the connection's default schema.
    ///
    /// # Errors
    /// [`OpenError`]; a database from a newer version is refused untouched.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(OpenError::Connect)?
            .options([("lock_timeout", lock_timeout_text(DEFAULT_LOCK_TIMEOUT))]);
        Self::connect_with(
            PgPoolOptions::new().max_connections(DEFAULT_MAX_CONNECTIONS),
            options,
        )
        .await
    }

    /// Connects with explicit pool and connection options, and applies pending migrations.
    /// Nothing is added to the options.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn connect_with(
        pool: PgPoolOptions,
        options: PgConnectOptions,
    ) -> Result<Self, OpenError> {
        let pool = pool
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        migrate(&pool).await?;
        Ok(Self { pool, schema: None })
    }

    /// Connects to `url` and keeps every table in the schema `schema`, creating it if
    /// missing: each pooled connection gets `search_path = schema`. Several stores (a test
    /// each, or several apps) can so share one database. Drop it with
    /// [`PostgresStore::drop_schema`].
    ///
    /// # Errors
    /// [`OpenError`], including [`OpenError::InvalidSchemaName`].
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, OpenError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(OpenError::Connect)?
            .options([("lock_timeout", lock_timeout_text(DEFAULT_LOCK_TIMEOUT))]);
        Self::connect_in_schema_with(
            PgPoolOptions::new().max_connections(DEFAULT_MAX_CONNECTIONS),
            options,
            schema,
        )
        .await
    }

    /// [`PostgresStore::connect_in_schema`] with explicit pool and connection options.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn connect_in_schema_with(
        pool: PgPoolOptions,
        options: PgConnectOptions,
        schema: &str,
    ) -> Result<Self, OpenError> {
        if !valid_schema_name(schema) {
            return Err(OpenError::InvalidSchemaName {
                name: schema.to_owned(),
            });
        }
        // A search_path naming a schema that does not exist yet is allowed; the server
        // resolves it again once the schema is created.
        let options = options.options([("search_path", schema)]);
        let pool = pool
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&pool)
            .await
            .map_err(OpenError::Connect)?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            schema: Some(schema.to_owned()),
        })
    }

    /// The schema this store was opened in with [`PostgresStore::connect_in_schema`].
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops the schema the store was opened in (with every row in it) and closes the pool.
    /// A store opened without a schema is only closed: nothing is dropped.
    ///
    /// # Errors
    /// The server's error when the schema could not be dropped.
    pub async fn drop_schema(self) -> Result<(), sqlx::Error> {
        let result = match &self.schema {
            Some(schema) => sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&self.pool)
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        self.pool.close().await;
        result
    }

    /// The connection pool (for host queries and tests).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn migrate(pool: &PgPool) -> Result<(), OpenError> {
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => OpenError::NewerSchema { version },
        other => OpenError::Migrate(other),
    })
}

/// SQLSTATEs after which the whole use case may be retried: serialization_failure,
/// deadlock_detected, lock_not_available (a `lock_timeout`) and too_many_connections.
const BUSY_CODES: [&str; 4] = ["40001", "40P01", "55P03", "53300"];

/// Maps a sqlx error into the shared error: busy SQLSTATEs into [`StoreError::Busy`],
/// integrity violations into [`StoreError::Conflict`] by constraint name, anything else into
/// [`StoreError::Backend`].
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if let Some(mapped) = classify(&code, db.constraint(), db.message()) {
            return mapped;
        }
    }
    backend(e)
}

/// The shared error for a database error with SQLSTATE `code` naming `constraint`, when
/// it is one the service understands.
fn classify(code: &str, constraint: Option<&str>, message: &str) -> Option<StoreError> {
    if BUSY_CODES.contains(&code) {
        return Some(StoreError::Busy {
            backend: BACKEND,
            reason: message.to_owned(),
        });
    }
    if !code.starts_with("23") {
        return None;
    }
    let constraint = match constraint.unwrap_or_default() {
        "tenants_pkey" => Constraint::TenantId,
        "users_pkey" | "users_id_not_reused" | "tombstones_pkey" => Constraint::UserId,
        "users_email_key" => Constraint::UserEmail,
        "role_templates_pkey" => Constraint::TemplateId,
        "role_templates_name_key" => Constraint::TemplateName,
        "invitations_pkey" => Constraint::TokenHash,
        "users_seat_limit" => Constraint::SeatLimit,
        "tenants_last_admin" => Constraint::LastAdmin,
        _ if code == "23503" => Constraint::MissingRow,
        _ => Constraint::Schema,
    };
    Some(StoreError::Conflict { constraint })
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

fn affected_one(r: &sqlx::postgres::PgQueryResult) -> Result<(), StoreError> {
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(conflict(Constraint::MissingRow))
    }
}

async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    w: &Write,
) -> Result<(), StoreError> {
    let t = tenant.as_uuid();
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            if tn.id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query("UPDATE tenants SET name = $1, user_limit = $2 WHERE id = $3")
                .bind(&tn.name)
                .bind(tn.user_limit.map(i64::from))
                .bind(t)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::InsertUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let last_login = u.last_login.map(nanos).transpose()?;
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(t)
            .bind(u.id.as_uuid())
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| x.as_uuid()))
            .bind(u.crm_access)
            .bind(perms_list(u.grants))
            .bind(nanos(u.created_at)?)
            .bind(last_login)
            .bind(login_key(last_login))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::UpdateUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let last_login = u.last_login.map(nanos).transpose()?;
            let r = sqlx::query(
                "UPDATE users SET email = $1, email_key = $2, role = $3, status = $4, template_id = $5, crm_access = $6, grants = $7, \
                 last_login = $8, login_key = $9, invite_expires_at = $10 WHERE tenant_id = $11 AND id = $12",
            )
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| x.as_uuid()))
            .bind(u.crm_access)
            .bind(perms_list(u.grants))
            .bind(last_login)
            .bind(login_key(last_login))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .bind(t)
            .bind(u.id.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::DeleteUser(tomb) => {
            // One statement: the row goes, its tombstone stays (D11).
            let r = sqlx::query(
                "WITH gone AS (DELETE FROM users WHERE tenant_id = $1 AND id = $2 RETURNING tenant_id, id) \
                 INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) \
                 SELECT tenant_id, id, $3, $4, $5 FROM gone",
            )
            .bind(t)
            .bind(tomb.user_id.as_uuid())
            .bind(tomb.email.as_str())
            .bind(nanos(tomb.deleted_at)?)
            .bind(serde_json::to_string(&tomb.deleted_by).map_err(backend)?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::InsertTemplate(tp) => {
            if tp.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query(
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(t)
            .bind(tp.id.as_uuid())
            .bind(tp.name.as_str())
            .bind(tp.name.key())
            .bind(perms_list(tp.permissions))
            .bind(nanos(tp.created_at)?)
            .bind(nanos(tp.updated_at)?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::UpdateTemplate(tp) => {
            if tp.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query(
                "UPDATE role_templates SET name = $1, name_key = $2, permissions = $3, updated_at = $4 WHERE tenant_id = $5 AND id = $6",
            )
            .bind(tp.name.as_str())
            .bind(tp.name.key())
            .bind(perms_list(tp.permissions))
            .bind(nanos(tp.updated_at)?)
            .bind(t)
            .bind(tp.id.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::DeleteTemplate(id) => {
            let r = sqlx::query("DELETE FROM role_templates WHERE tenant_id = $1 AND id = $2")
                .bind(t)
                .bind(id.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(|e| match map_err(e) {
                    // The users' foreign key refused: users still reference it (D12).
                    StoreError::Conflict {
                        constraint: Constraint::MissingRow,
                    } => conflict(Constraint::TemplateReferenced),
                    other => other,
                })?;
            affected_one(&r)?;
        }
        Write::MoveTemplateUsers { from, to } => {
            sqlx::query(
                "UPDATE users SET template_id = $1 WHERE tenant_id = $2 AND template_id = $3",
            )
            .bind(to.map(|x| x.as_uuid()))
            .bind(t)
            .bind(from.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::InsertInvitation(inv) => {
            if inv.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query(
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = $2 AND id = $3)",
            )
            .bind(&inv.token_hash.0[..])
            .bind(t)
            .bind(inv.user_id.as_uuid())
            .bind(rows::kind_text(inv.kind))
            .bind(rows::state_text(inv.state))
            .bind(nanos(inv.created_at)?)
            .bind(nanos(inv.expires_at)?)
            .bind(i64::from(inv.failed_attempts))
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::RevokeInvitations(user) => {
            sqlx::query("UPDATE invitations SET state = 'revoked' WHERE tenant_id = $1 AND user_id = $2 AND state = 'pending'")
                .bind(t)
                .bind(user.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        Write::UseInvitation(hash) => {
            let r = sqlx::query(
                "UPDATE invitations SET state = 'used' WHERE tenant_id = $1 AND token_hash = $2",
            )
            .bind(t)
            .bind(&hash.0[..])
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => {
            // D24: only a pending invitation of this tenant counts attempts; a missing or
            // no longer pending one fails the whole change.
            let r = sqlx::query(
                "UPDATE invitations SET failed_attempts = $1, state = CASE WHEN $2 THEN 'revoked' ELSE state END \
                 WHERE tenant_id = $3 AND token_hash = $4 AND state = 'pending'",
            )
            .bind(i64::from(*failed_attempts))
            .bind(*revoke)
            .bind(t)
            .bind(&token_hash.0[..])
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        // `Write` is non-exhaustive; refuse anything this build does not know.
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

/// Appends `events` after the tenant's last audit record; returns the last seq written.
/// The caller holds the tenant row's lock, so sequence numbers are handed out (and become
/// visible) in commit order: a feed reader never sees seq n+1 before seq n ([audit log (D13)](tenantry_core::Rule::AuditLog)).
async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut at = Vec::with_capacity(events.len());
    let mut action = Vec::with_capacity(events.len());
    let mut body = Vec::with_capacity(events.len());
    for e in events {
        at.push(nanos(e.at)?);
        action.push(serde_json::to_string(&e.action).map_err(backend)?);
        body.push(serde_json::to_string(e).map_err(backend)?);
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO audit_log (tenant_id, seq, at, action, event) \
         SELECT $1, b.base + e.ord, e.at, e.action, e.event \
         FROM (SELECT COALESCE(MAX(seq), 0) AS base FROM audit_log WHERE tenant_id = $1) AS b, \
              unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS e(at, action, event, ord) \
         RETURNING seq",
    )
    .bind(tenant.as_uuid())
    .bind(at)
    .bind(action)
    .bind(body)
    .fetch_all(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(seqs
        .into_iter()
        .max()
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0))
}

async fn queue_mail(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox: &[Message],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if outbox.is_empty() {
        return Ok(());
    }
    if outbox.iter().any(|m| m.tenant_id != tenant) {
        return Err(conflict(Constraint::MissingRow));
    }
    let ids: Vec<Uuid> = outbox.iter().map(|m| m.id.as_uuid()).collect();
    let users: Vec<Uuid> = outbox.iter().map(|m| m.user_id.as_uuid()).collect();
    let to: Vec<&str> = outbox.iter().map(|m| m.to.as_str()).collect();
    let subject: Vec<&str> = outbox.iter().map(|m| m.subject.as_str()).collect();
    let text: Vec<&str> = outbox.iter().map(|m| m.text.as_str()).collect();
    let html: Vec<&str> = outbox.iter().map(|m| m.html.as_str()).collect();
    sqlx::query(
        "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
         SELECT $1, m.id, m.user_id, m.recipient, m.subject, m.body_text, m.body_html, 'pending', 0, $8, $8 \
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) \
              AS m(id, user_id, recipient, subject, body_text, body_html)",
    )
    .bind(tenant.as_uuid())
    .bind(ids)
    .bind(users)
    .bind(to)
    .bind(subject)
    .bind(text)
    .bind(html)
    .bind(nanos(now)?)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Locks the tenant's row for the rest of the transaction; `None` when it does not exist.
async fn lock_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT version FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)
}

/// The body of one commit, inside `tx` ([concurrency (D16)](tenantry_core::Rule::Concurrency)): lock and compare the version, apply the
/// writes, check the trigger-kept counters, bump the version, append the audit events and
/// queue the mail.
async fn commit_in(
    tx: &mut Transaction<'static, Postgres>,
    change: &Change,
    outbox: &[Message],
) -> Result<(), StoreError> {
    let tenant = change.tenant_id;
    let t = tenant.as_uuid();
    let mut writes = change.writes.iter().peekable();
    if let Some(Write::InsertTenant(tn)) = writes.peek() {
        if tn.id != tenant || change.expected_version != 0 {
            return Err(conflict(Constraint::MissingRow));
        }
        sqlx::query(
            "INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(t)
        .bind(&tn.name)
        .bind(tn.user_limit.map(i64::from))
        .bind(nanos(tn.created_at)?)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        writes.next();
    } else {
        match lock_tenant(tx, tenant).await? {
            None => return Err(StoreError::NotFound),
            Some(v) if u64::try_from(v).ok() != Some(change.expected_version) => {
                return Err(StoreError::VersionMismatch {
                    expected: change.expected_version,
                });
            }
            Some(_) => {}
        }
    }
    for w in writes {
        apply(tx, tenant, w).await?;
    }
    let (seats, admins): (i64, i64) = sqlx::query_as(
        "UPDATE tenants SET version = $1 WHERE id = $2 RETURNING seats_used, active_admins",
    )
    .bind(i64::try_from(change.counters.version).map_err(backend)?)
    .bind(t)
    .fetch_one(&mut **tx)
    .await
    .map_err(map_err)?;
    if i64::from(change.counters.seats_used) != seats
        || i64::from(change.counters.active_admins) != admins
    {
        return Err(conflict(Constraint::Counters));
    }
    append_events(tx, tenant, &change.events).await?;
    let now = change
        .events
        .first()
        .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
    queue_mail(tx, tenant, outbox, now).await
}

/// Ends a transaction: committed when its body succeeded, rolled back at once (so the
/// tenant's row lock is released promptly) when it failed.
async fn finish<T>(
    tx: Transaction<'static, Postgres>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            tx.commit().await.map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            // A failed rollback leaves the connection to be discarded by the pool.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn append_one(
    tx: &mut Transaction<'static, Postgres>,
    event: &AuditEvent,
) -> Result<u64, StoreError> {
    // The tenant's lock orders this append with every commit's (D13).
    if lock_tenant(tx, event.tenant_id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    append_events(tx, event.tenant_id, std::slice::from_ref(event)).await
}

fn opt_user(row: Option<PgRow>) -> Result<Option<User>, StoreError> {
    row.as_ref().map(user_from_row).transpose()
}

fn limit_i64(limit: u32) -> i64 {
    i64::from(limit)
}

#[async_trait]
impl Store for PostgresStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(tenant.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        opt_user(row)
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        // One round trip: the user's facts and its template's current permissions (D6).
        let row = sqlx::query(
            "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, \
                    t.permissions AS template_permissions \
             FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
             WHERE u.tenant_id = $1 AND u.id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(subject_from_row).transpose()
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email_key = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        opt_user(row)
    }

    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = $1 AND name_key = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = $1 ORDER BY name_key, id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(template_from_row).collect()
    }

    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND template_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(template.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1 AND tenant_id = $2"
        ))
        .bind(&hash.0[..])
        .bind(tenant.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token_hash"
        ))
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(invitation_from_row).collect()
    }

    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        let limit = query.effective_limit();
        let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1");
        let mut binds: Vec<Param> = vec![Param::Uuid(tenant.as_uuid())];
        let mut push = |sql: &mut String, clause: &str, values: Vec<Param>| {
            let mut clause = clause.to_owned();
            for v in values {
                binds.push(v);
                clause = clause.replacen('?', &format!("${}", binds.len()), 1);
            }
            sql.push_str(" AND ");
            sql.push_str(&clause);
        };
        if let Some(s) = query.status {
            push(
                &mut sql,
                "status = ?",
                vec![Param::Text(s.as_str().to_owned())],
            );
        }
        if let Some(r) = query.role {
            push(
                &mut sql,
                "role = ?",
                vec![Param::Text(r.as_str().to_owned())],
            );
        }
        if let Some(t) = query.template_id {
            push(&mut sql, "template_id = ?", vec![Param::Uuid(t.as_uuid())]);
        }
        if let Some(c) = query.crm_access {
            push(&mut sql, "crm_access = ?", vec![Param::Bool(c)]);
        }
        if let Some(needle) = &query.email_contains {
            push(
                &mut sql,
                "strpos(email_key, ?) > 0",
                vec![Param::Text(needle.to_ascii_lowercase())],
            );
        }
        if let Some(since) = query.inactive_since {
            push(
                &mut sql,
                "login_key < ?",
                vec![Param::Int(nanos_clamped(since))],
            );
        }
        if let Some(at) = query.invitation_expired_at {
            push(
                &mut sql,
                "status = 'invited' AND invite_expires_at IS NOT NULL AND invite_expires_at <= ?",
                vec![Param::Int(nanos_clamped(at))],
            );
        }
        let (column, cmp, dir) = match (query.sort, query.descending) {
            (SortBy::Email, false) => ("email_key", ">", "ASC"),
            (SortBy::Email, true) => ("email_key", "<", "DESC"),
            (SortBy::CreatedAt, false) => ("created_at", ">", "ASC"),
            (SortBy::CreatedAt, true) => ("created_at", "<", "DESC"),
            (SortBy::LastLogin, false) => ("login_key", ">", "ASC"),
            (SortBy::LastLogin, true) => ("login_key", "<", "DESC"),
        };
        // Keyset pagination (D18): continue strictly after the cursor's (key, id), on the
        // index (tenant_id, key, id); never OFFSET.
        match query.after.as_ref().filter(|c| c.sort() == query.sort) {
            Some(Cursor::Email(k, id)) => push(
                &mut sql,
                &format!("(email_key, id) {cmp} (?, ?)"),
                vec![Param::Text(k.clone()), Param::Uuid(id.as_uuid())],
            ),
            Some(Cursor::CreatedAt(t, id)) => push(
                &mut sql,
                &format!("(created_at, id) {cmp} (?, ?)"),
                vec![Param::Int(rows::clamp_i128(*t)), Param::Uuid(id.as_uuid())],
            ),
            Some(Cursor::LastLogin(t, id)) => push(
                &mut sql,
                &format!("(login_key, id) {cmp} (?, ?)"),
                vec![
                    Param::Int(t.map_or(i64::MIN, rows::clamp_i128)),
                    Param::Uuid(id.as_uuid()),
                ],
            ),
            None => {}
        }
        binds.push(Param::Int(i64::from(limit) + 1));
        sql.push_str(&format!(
            " ORDER BY {column} {dir}, id {dir} LIMIT ${}",
            binds.len()
        ));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Param::Uuid(u) => q.bind(u),
                Param::Text(s) => q.bind(s),
                Param::Int(i) => q.bind(i),
                Param::Bool(v) => q.bind(v),
            };
        }
        let fetched = q.fetch_all(&self.pool).await.map_err(map_err)?;
        let mut items = fetched
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items.last().map(|u| query.cursor_of(u))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        let row = sqlx::query("SELECT tenant_id, user_id, email, deleted_at, deleted_by FROM tombstones WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tombstone_from_row).transpose()
    }

    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, event FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(tenant.as_uuid())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(rows::audit_from_row).collect()
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let result = commit_in(&mut tx, change, outbox).await;
        finish(tx, result).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let result = append_one(&mut tx, event).await;
        finish(tx, result).await
    }

    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let filter = if pending_only {
            " AND state = 'pending'"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1{filter} ORDER BY id DESC LIMIT $2"
        ))
        .bind(tenant.as_uuid())
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        // SKIP LOCKED: two dispatchers claiming at once take different messages. The due
        // set is a MATERIALIZED CTE, picked once: as an `IN (subquery)` the planner may run
        // the subquery again for each outer row (a nested loop without Materialize), and
        // each run then skips the rows already leased and picks the next ones, so a claim of
        // `LIMIT 1` leased every due message (seen on a small, unanalyzed outbox).
        let rows = sqlx::query(&format!(
            "WITH due AS MATERIALIZED \
             (SELECT id FROM outbox WHERE tenant_id = $2 AND state = 'pending' AND next_attempt_at <= $3 \
              ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET next_attempt_at = $1 WHERE tenant_id = $2 AND id IN (SELECT id FROM due) \
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(nanos_clamped(lease_until))
        .bind(tenant.as_uuid())
        .bind(nanos_clamped(now))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut claimed = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.message.id);
        Ok(claimed)
    }

    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        // At READ COMMITTED a concurrent claim of the same row waits for this one, then
        // re-checks the row it committed: the lease is in the future, so it claims nothing.
        let row = sqlx::query(&format!(
            "UPDATE outbox SET next_attempt_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND state = 'pending' AND next_attempt_at <= $4 \
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(nanos_clamped(lease_until))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(nanos_clamped(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let t = tenant.as_uuid();
        let m = id.as_uuid();
        let q = match update {
            DeliveryUpdate::Sent { at } => sqlx::query(
                "UPDATE outbox SET state = 'sent', state_at = $1, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?)
            .bind(t)
            .bind(m),
            DeliveryUpdate::Retry { reason, retry_at } => sqlx::query(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, last_error = $4, attempts = attempts + 1 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos_clamped(*retry_at))
            .bind(t)
            .bind(m)
            .bind(reason.as_str()),
            // D26: sent or failed for good, a message keeps no body (they hold the live
            // accept link).
            DeliveryUpdate::Failed { reason, at } => sqlx::query(
                "UPDATE outbox SET state = 'failed', state_at = $1, failure = $4, last_error = $4, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?)
            .bind(t)
            .bind(m)
            .bind(reason.as_str()),
        };
        let r = q.execute(&self.pool).await.map_err(map_err)?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        // Not pending any more (a late result changes nothing: sent stays sent, failed stays
        // failed), or no such message.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM outbox WHERE tenant_id = $1 AND id = $2")
                .bind(t)
                .bind(m)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        exists.map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT tenant_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT $2",
        )
        .bind(nanos_clamped(now))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(TenantId::from_uuid).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{Constraint, StoreError, classify, valid_schema_name};

    fn constraint_of(code: &str, name: Option<&str>) -> Option<Constraint> {
        match classify(code, name, "m") {
            Some(StoreError::Conflict { constraint }) => Some(constraint),
            _ => None,
        }
    }

    #[test]
    fn d16_busy_sqlstates_are_retryable() {
        for code in ["40001", "40P01", "55P03", "53300"] {
            let e = classify(code, None, "m");
            assert!(
                matches!(
                    e,
                    Some(StoreError::Busy {
                        backend: "postgres",
                        ..
                    })
                ),
                "{code}"
            );
            assert!(e.is_some_and(|e| e.is_retryable()));
        }
        assert!(classify("42P01", None, "m").is_none());
    }

    #[test]
    fn constraint_names_map_to_constraints() {
        let cases = [
            ("23505", "tenants_pkey", Constraint::TenantId),
            ("23505", "users_pkey", Constraint::UserId),
            ("23505", "users_id_not_reused", Constraint::UserId),
            ("23505", "users_email_key", Constraint::UserEmail),
            ("23505", "role_templates_pkey", Constraint::TemplateId),
            ("23505", "role_templates_name_key", Constraint::TemplateName),
            ("23505", "invitations_pkey", Constraint::TokenHash),
            ("23514", "users_seat_limit", Constraint::SeatLimit),
            ("23514", "tenants_last_admin", Constraint::LastAdmin),
            ("23503", "users_template_fk", Constraint::MissingRow),
            ("23514", "users_admin_crm", Constraint::Schema),
            ("23001", "audit_log_append_only", Constraint::Schema),
        ];
        for (code, name, want) in cases {
            assert_eq!(constraint_of(code, Some(name)), Some(want), "{name}");
        }
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("tenantry_test_1_2"));
        assert!(valid_schema_name("_x"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("a\"b"));
        assert!(!valid_schema_name("Upper"));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }
}
