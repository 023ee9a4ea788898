//! # tenantry-sqlite
//!
//! The embedded default storage of tenantry: SQLite through sqlx, bundled (no system
//! library), with runtime queries (no database needed to build), embedded migrations applied
//! on open, WAL journal, writes in `BEGIN IMMEDIATE` transactions, a busy timeout, and
//! foreign keys on.
//!
//! The schema enforces the invariants a second time: unique (tenant, email key), unique
//! (tenant, template name key), unique token hash, counters kept by triggers and checked
//! against what the change computed, the seat limit on insert, at least one active admin,
//! ids never reused, and an append-only audit log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenantry_sqlite::SqliteStore;
//! let store = SqliteStore::open("tenantry.db").await?;
//! let app = tenantry::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```

mod rows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, Subject, TemplateId,
    TenantId, TenantState, TokenHash, Tombstone, User, UserId, Write,
};
use tenantry_mail::Message;
use tenantry_store::{
    Constraint, Cursor, DeliveryUpdate, OutboxRecord, Page, SortBy, Store, StoreError, UserQuery,
};
use time::OffsetDateTime;

use rows::{
    BACKEND, backend, id_text, invitation_from_row, nanos, outbox_from_row, perms_text,
    template_from_row, tenant_from_row, tombstone_from_row, user_from_row,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened or created.
    #[error("cannot open the SQLite database: {0}")]
    Connect(#[source] sqlx::Error),
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
    #[error("cannot migrate the SQLite database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// A tenantry store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, and applies pending
    /// migrations.
    ///
    /// # Errors
    /// [`OpenError`]; a database from a newer version is refused untouched.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_with(options, 8).await
    }

    /// An in-memory database (one connection; gone when dropped). For tests and demos.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn in_memory() -> Result<Self, OpenError> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(OpenError::Connect)?;
        Self::open_with(options, 1).await
    }

    /// Opens with explicit connection options and pool size. WAL, `synchronous=NORMAL`,
    /// foreign keys and a 10 s busy timeout are always set.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_with(
        options: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<Self, OpenError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => {
                OpenError::NewerSchema { version }
            }
            other => OpenError::Migrate(other),
        })?;
        Ok(Self { pool })
    }

    /// The connection pool (for host queries and tests).
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

/// Maps a sqlx error into the shared error: constraint names into [`Constraint`], lock
/// time-outs into [`StoreError::Busy`], anything else into [`StoreError::Backend`].
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let msg = db.message();
        let code = db.code().unwrap_or_default();
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let primary = code.parse::<i64>().map(|c| c & 0xff).unwrap_or(0);
        if primary == 5 || primary == 6 {
            return StoreError::Busy {
                backend: BACKEND,
                reason: msg.to_owned(),
            };
        }
        let constraint = if msg.contains("users.tenant_id, users.email_key") {
            Some(Constraint::UserEmail)
        } else if msg.contains("users.tenant_id, users.id") || msg.contains("user id reused") {
            Some(Constraint::UserId)
        } else if msg.contains("role_templates.tenant_id, role_templates.name_key") {
            Some(Constraint::TemplateName)
        } else if msg.contains("role_templates.tenant_id, role_templates.id") {
            Some(Constraint::TemplateId)
        } else if msg.contains("invitations.token_hash") {
            Some(Constraint::TokenHash)
        } else if msg.contains("tenants.id") {
            Some(Constraint::TenantId)
        } else if msg.contains("seat limit") {
            Some(Constraint::SeatLimit)
        } else if msg.contains("FOREIGN KEY") {
            Some(Constraint::MissingRow)
        } else if msg.contains("CHECK constraint failed") && msg.contains("active_admins") {
            Some(Constraint::LastAdmin)
        } else if msg.contains("constraint failed") || msg.contains("tenantry:") {
            Some(Constraint::Schema)
        } else {
            None
        };
        if let Some(constraint) = constraint {
            return StoreError::Conflict { constraint };
        }
    }
    backend(e)
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

const USER_COLUMNS: &str = "tenant_id, id, email, role, status, template_id, crm_access, grants, created_at, last_login, invite_expires_at";

async fn apply(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: TenantId,
    w: &Write,
) -> Result<(), StoreError> {
    let t = id_text(tenant.as_uuid());
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            if tn.id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query("UPDATE tenants SET name = $1, user_limit = $2 WHERE id = $3")
                .bind(&tn.name)
                .bind(tn.user_limit.map(i64::from))
                .bind(&t)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
        }
        Write::InsertUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&t)
            .bind(id_text(u.id.as_uuid()))
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(nanos(u.created_at)?)
            .bind(u.last_login.map(nanos).transpose()?)
            .bind(u.last_login.map(nanos).transpose()?.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::UpdateUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query(
                "UPDATE users SET email = $1, email_key = $2, role = $3, status = $4, template_id = $5, crm_access = $6, grants = $7, \
                 last_login = $8, login_key = $9, invite_expires_at = $10 WHERE tenant_id = $11 AND id = $12",
            )
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(u.last_login.map(nanos).transpose()?)
            .bind(u.last_login.map(nanos).transpose()?.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .bind(&t)
            .bind(id_text(u.id.as_uuid()))
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
        }
        Write::DeleteUser(tomb) => {
            let r = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
                .bind(&t)
                .bind(id_text(tomb.user_id.as_uuid()))
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query("INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) VALUES ($1, $2, $3, $4, $5)")
                .bind(&t)
                .bind(id_text(tomb.user_id.as_uuid()))
                .bind(tomb.email.as_str())
                .bind(nanos(tomb.deleted_at)?)
                .bind(serde_json::to_string(&tomb.deleted_by).map_err(backend)?)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        Write::InsertTemplate(tp) => {
            if tp.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query(
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t)
            .bind(id_text(tp.id.as_uuid()))
            .bind(tp.name.as_str())
            .bind(tp.name.key())
            .bind(perms_text(tp.permissions))
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
            .bind(perms_text(tp.permissions))
            .bind(nanos(tp.updated_at)?)
            .bind(&t)
            .bind(id_text(tp.id.as_uuid()))
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
        }
        Write::DeleteTemplate(id) => {
            let r = sqlx::query("DELETE FROM role_templates WHERE tenant_id = $1 AND id = $2")
                .bind(&t)
                .bind(id_text(id.as_uuid()))
                .execute(&mut **tx)
                .await
                .map_err(|e| match map_err(e) {
                    StoreError::Conflict {
                        constraint: Constraint::MissingRow,
                    } => conflict(Constraint::TemplateReferenced),
                    other => other,
                })?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
        }
        Write::MoveTemplateUsers { from, to } => {
            sqlx::query(
                "UPDATE users SET template_id = $1 WHERE tenant_id = $2 AND template_id = $3",
            )
            .bind(to.map(|x| id_text(x.as_uuid())))
            .bind(&t)
            .bind(id_text(from.as_uuid()))
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::InsertInvitation(inv) => {
            if inv.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query(
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = $2 AND id = $3)",
            )
            .bind(inv.token_hash.0.to_vec())
            .bind(&t)
            .bind(id_text(inv.user_id.as_uuid()))
            .bind(rows::kind_text(inv.kind))
            .bind(rows::state_text(inv.state))
            .bind(nanos(inv.created_at)?)
            .bind(nanos(inv.expires_at)?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)
            .and_then(|r| if r.rows_affected() == 1 { Ok(()) } else { Err(conflict(Constraint::MissingRow)) })?;
        }
        Write::RevokeInvitations(user) => {
            sqlx::query("UPDATE invitations SET state = 'revoked' WHERE tenant_id = $1 AND user_id = $2 AND state = 'pending'")
                .bind(&t)
                .bind(id_text(user.as_uuid()))
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        Write::UseInvitation(hash) => {
            let r = sqlx::query(
                "UPDATE invitations SET state = 'used' WHERE tenant_id = $1 AND token_hash = $2",
            )
            .bind(&t)
            .bind(hash.0.to_vec())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            if r.rows_affected() != 1 {
                return Err(conflict(Constraint::MissingRow));
            }
        }
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

async fn append_events(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: TenantId,
    events: &[AuditEvent],
    base: i64,
) -> Result<u64, StoreError> {
    let t = id_text(tenant.as_uuid());
    let mut seq = base;
    for e in events {
        seq = seq.saturating_add(1);
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, at, action, event) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t)
        .bind(seq)
        .bind(nanos(e.at)?)
        .bind(serde_json::to_string(&e.action).map_err(backend)?)
        .bind(serde_json::to_string(e).map_err(backend)?)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    }
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Reserves `n` audit sequence numbers and reads the counters the triggers kept, in one
/// statement. Returns (seats used, active admins, the last seq before the reserved ones).
async fn reserve_seq(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &str,
    n: usize,
) -> Result<(i64, i64, i64), StoreError> {
    let n = i64::try_from(n).map_err(backend)?;
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "UPDATE tenants SET audit_seq = audit_seq + $1 WHERE id = $2 \
         RETURNING seats_used, active_admins, audit_seq - $1",
    )
    .bind(n)
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?;
    row.ok_or(StoreError::NotFound)
}

async fn queue_mail(
    tx: &mut Transaction<'static, Sqlite>,
    outbox: &[Message],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for m in outbox {
        sqlx::query(
            "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8)",
        )
        .bind(id_text(m.tenant_id.as_uuid()))
        .bind(id_text(m.id.as_uuid()))
        .bind(id_text(m.user_id.as_uuid()))
        .bind(&m.to)
        .bind(&m.subject)
        .bind(&m.text)
        .bind(&m.html)
        .bind(nanos(now)?)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

impl SqliteStore {
    async fn commit_inner(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        let tenant = change.tenant_id;
        let t = id_text(tenant.as_uuid());
        let mut tx = self.write_tx().await?;
        let mut writes = change.writes.iter().peekable();
        if let Some(Write::InsertTenant(tn)) = writes.peek() {
            if tn.id != tenant || change.expected_version != 0 {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query("INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES ($1, $2, $3, $4, $5)")
                .bind(&t)
                .bind(&tn.name)
                .bind(tn.user_limit.map(i64::from))
                .bind(nanos(tn.created_at)?)
                .bind(i64::try_from(change.counters.version).map_err(backend)?)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            writes.next();
        } else {
            // D16: the compare-and-set of the version comes first, so a stale change is
            // reported as such (and retried) before any of its writes could collide.
            let r = sqlx::query("UPDATE tenants SET version = $1 WHERE id = $2 AND version = $3")
                .bind(i64::try_from(change.counters.version).map_err(backend)?)
                .bind(&t)
                .bind(i64::try_from(change.expected_version).map_err(backend)?)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            if r.rows_affected() != 1 {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(&t)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                return Err(match exists {
                    None => StoreError::NotFound,
                    Some(_) => StoreError::VersionMismatch {
                        expected: change.expected_version,
                    },
                });
            }
        }
        for w in writes {
            apply(&mut tx, tenant, w).await?;
        }
        let (seats, admins, base) = reserve_seq(&mut tx, &t, change.events.len()).await?;
        if i64::from(change.counters.seats_used) != seats
            || i64::from(change.counters.active_admins) != admins
        {
            return Err(conflict(Constraint::Counters));
        }
        append_events(&mut tx, tenant, &change.events, base).await?;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        queue_mail(&mut tx, outbox, now).await?;
        tx.commit().await.map_err(map_err)
    }
}

fn opt_user(row: Option<SqliteRow>) -> Result<Option<User>, StoreError> {
    row.as_ref().map(user_from_row).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        let row = sqlx::query("SELECT id, name, user_limit, created_at, version, seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(id_text(tenant.as_uuid()))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        opt_user(row)
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        let row = sqlx::query(
            "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions AS template_permissions \
             FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
             WHERE u.tenant_id = $1 AND u.id = $2",
        )
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(rows::subject_from_row).transpose()
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email_key = $2"
        ))
        .bind(id_text(tenant.as_uuid()))
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
        let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
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
        let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND name_key = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 ORDER BY name_key, id")
            .bind(id_text(tenant.as_uuid()))
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
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(template.as_uuid()))
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
        let row = sqlx::query("SELECT token_hash, tenant_id, user_id, kind, state, created_at, expires_at FROM invitations WHERE token_hash = $1 AND tenant_id = $2")
            .bind(hash.0.to_vec())
            .bind(id_text(tenant.as_uuid()))
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
        let rows = sqlx::query("SELECT token_hash, tenant_id, user_id, kind, state, created_at, expires_at FROM invitations WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token_hash")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(user.as_uuid()))
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
        let mut binds: Vec<rows::Param> = vec![rows::Param::Text(id_text(tenant.as_uuid()))];
        let mut push = |sql: &mut String, clause: &str, values: Vec<rows::Param>| {
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
                vec![rows::Param::Text(s.as_str().to_owned())],
            );
        }
        if let Some(r) = query.role {
            push(
                &mut sql,
                "role = ?",
                vec![rows::Param::Text(r.as_str().to_owned())],
            );
        }
        if let Some(t) = query.template_id {
            push(
                &mut sql,
                "template_id = ?",
                vec![rows::Param::Text(id_text(t.as_uuid()))],
            );
        }
        if let Some(c) = query.crm_access {
            push(
                &mut sql,
                "crm_access = ?",
                vec![rows::Param::Int(i64::from(c))],
            );
        }
        if let Some(needle) = &query.email_contains {
            push(
                &mut sql,
                "instr(email_key, ?) > 0",
                vec![rows::Param::Text(needle.to_ascii_lowercase())],
            );
        }
        if let Some(since) = query.inactive_since {
            push(
                &mut sql,
                "login_key < ?",
                vec![rows::Param::Int(rows::nanos_clamped(since))],
            );
        }
        if let Some(at) = query.invitation_expired_at {
            push(
                &mut sql,
                "status = 'invited' AND invite_expires_at IS NOT NULL AND invite_expires_at <= ?",
                vec![rows::Param::Int(rows::nanos_clamped(at))],
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
        match query.after.as_ref().filter(|c| c.sort() == query.sort) {
            Some(Cursor::Email(k, id)) => push(
                &mut sql,
                &format!("(email_key, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Text(k.clone()),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            Some(Cursor::CreatedAt(t, id)) => push(
                &mut sql,
                &format!("(created_at, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Int(rows::clamp_i128(*t)),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            Some(Cursor::LastLogin(t, id)) => push(
                &mut sql,
                &format!("(login_key, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Int(t.map_or(i64::MIN, rows::clamp_i128)),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            None => {}
        }
        sql.push_str(&format!(
            " ORDER BY {column} {dir}, id {dir} LIMIT {}",
            u64::from(limit) + 1
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = match b {
                rows::Param::Text(s) => q.bind(s.as_str()),
                rows::Param::Int(i) => q.bind(*i),
            };
        }
        let fetched = q.fetch_all(&self.pool).await.map_err(map_err)?;
        let mut items = fetched
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
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
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(user.as_uuid()))
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
            .bind(id_text(tenant.as_uuid()))
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(backend)?;
                let event: String = r.try_get("event").map_err(backend)?;
                Ok(AuditRecord {
                    seq: u64::try_from(seq).map_err(backend)?,
                    event: serde_json::from_str(&event).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.commit_inner(change, outbox).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let (_, _, base) = reserve_seq(&mut tx, &id_text(event.tenant_id.as_uuid()), 1).await?;
        let seq =
            append_events(&mut tx, event.tenant_id, std::slice::from_ref(event), base).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(seq)
    }

    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = if pending_only {
            "SELECT * FROM outbox WHERE tenant_id = $1 AND state = 'pending' ORDER BY id DESC LIMIT $2"
        } else {
            "SELECT * FROM outbox WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
        };
        let rows = sqlx::query(sql)
            .bind(id_text(tenant.as_uuid()))
            .bind(i64::from(limit))
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
        let row = sqlx::query("SELECT * FROM outbox WHERE tenant_id = $1 AND id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
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
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1 WHERE tenant_id = $2 AND id IN \
             (SELECT id FROM outbox WHERE tenant_id = $2 AND state = 'pending' AND next_attempt_at <= $3 ORDER BY next_attempt_at, id LIMIT $4) \
             RETURNING *",
        )
        .bind(rows::nanos_clamped(lease_until))
        .bind(id_text(tenant.as_uuid()))
        .bind(rows::nanos_clamped(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let t = id_text(tenant.as_uuid());
        let m = id_text(id.as_uuid());
        let q = match update {
            DeliveryUpdate::Sent { at } => sqlx::query(
                "UPDATE outbox SET state = 'sent', state_at = $1, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?),
            DeliveryUpdate::Retry { retry_at, .. } => sqlx::query(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, last_error = $4, attempts = attempts + 1 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(rows::nanos_clamped(*retry_at)),
            DeliveryUpdate::Failed { at, .. } => sqlx::query(
                "UPDATE outbox SET state = 'failed', state_at = $1, failure = $4, last_error = $4, attempts = attempts + 1 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?),
        };
        let q = q.bind(&t).bind(&m);
        let q = match update {
            DeliveryUpdate::Sent { .. } => q,
            DeliveryUpdate::Retry { reason, .. } | DeliveryUpdate::Failed { reason, .. } => {
                q.bind(reason.as_str())
            }
        };
        let mut tx = self.write_tx().await?;
        let r = q.execute(&mut *tx).await.map_err(map_err)?;
        if r.rows_affected() != 1 {
            // Not pending any more (a late result changes nothing), or no such message.
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM outbox WHERE tenant_id = $1 AND id = $2")
                    .bind(&t)
                    .bind(&m)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT $2")
            .bind(rows::nanos_clamped(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|s| rows::parse_id(s).map(TenantId::from_uuid))
            .collect()
    }
}
