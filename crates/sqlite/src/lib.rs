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
//! let app = tenantry_service::Tenantry::builder(store).build()?;
//! # let _ = app; Ok(()) }
//! ```

mod batch;
mod cache;
mod conn;
mod rows;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Invitation, MessageId, RoleTemplate, Subject, TemplateId,
    TenantId, TenantState, TokenHash, Tombstone, User, UserId, Write,
};
use tenantry_mail::Message;
use tenantry_store::{
    Constraint, Cursor, DeliveryUpdate, OutboxRecord, Page, SortBy, Store, StoreError, UserQuery,
};
use time::OffsetDateTime;

use batch::{Batch, Expect};
use cache::{Cache, Lookup};
use conn::Connections;
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
    /// Another store (in this process or another) holds the database: an owning store
    /// ([`SqliteStore::open`]) excludes every other, shared ones
    /// ([`SqliteStore::open_shared`]) exclude owning ones.
    #[error(
        "the SQLite database {path} is in use by another tenantry store (lock file {path}.lock)"
    )]
    InUse {
        /// The database file.
        path: String,
    },
    /// The lock file next to the database could not be created or locked.
    #[error("cannot lock the SQLite database: {0}")]
    Lock(#[source] std::io::Error),
    /// A migration failed.
    #[error("cannot migrate the SQLite database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// A tenantry store in one SQLite database file.
///
/// It holds its own connections: one writer (SQLite admits one writer at a time; every
/// change goes to it as one multi-statement round trip in a `BEGIN IMMEDIATE` transaction)
/// and a few readers (WAL lets them read while the writer writes). Cloning shares them.
///
/// # One owner, and a cache that is never stale
/// [`SqliteStore::open`] claims the database for this store: it locks `<file>.lock` next to
/// it, so a second store on the same file (in this process or another) is refused with
/// [`OpenError::InUse`] until this one is closed or dropped. Owning every write lets the
/// store keep the rows each check reads (tenant state, users, templates, subjects) in
/// memory without ever serving a stale one: a change to a tenant empties that tenant's cache
/// before it is sent and again once it has ended, and nothing is cached while it is in
/// flight. `authorize` then costs no database round trip when the user was read before.
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
    /// The claim on the database (the lock file, open and locked), released on drop.
    lock: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

/// Whether a store owns its database (lock and cache) or shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    Owned,
    Shared,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with four readers, claims it
    /// (see [the type's docs](SqliteStore)), and applies pending migrations.
    ///
    /// # Errors
    /// [`OpenError`]: [`OpenError::InUse`] when another store holds it; a database from a
    /// newer version is refused untouched.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(Self::file_options(path), 4).await
    }

    /// Opens the database file at `path` for hosts that write one file from several
    /// processes: no cache (every read is a round trip), and a shared lock on
    /// `<file>.lock`, so shared stores coexist but none opens while an owning store
    /// ([`SqliteStore::open`]) holds the file, nor an owning one while shared ones do.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_shared(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_inner(Self::file_options(path), 4, Sharing::Shared).await
    }

    fn file_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
    }

    /// A private in-memory database, gone when the last clone is dropped. For tests and
    /// demos. It has no readers of its own: every call goes through its one connection.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn in_memory() -> Result<Self, OpenError> {
        // sqlx names each `sqlite::memory:` options a shared-cache database of its own, so
        // the host pool below reaches the same database.
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(OpenError::Connect)?;
        Self::open_inner(options, 0, Sharing::Owned).await
    }

    /// Opens and claims with explicit connection options and `readers` reader connections
    /// besides the writer (0: reads go through the writer). WAL, `synchronous=NORMAL`,
    /// foreign keys and a 10 s busy timeout are always set.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_with(options: SqliteConnectOptions, readers: u32) -> Result<Self, OpenError> {
        Self::open_inner(options, readers, Sharing::Owned).await
    }

    async fn open_inner(
        options: SqliteConnectOptions,
        readers: u32,
        sharing: Sharing,
    ) -> Result<Self, OpenError> {
        let in_memory = options
            .get_filename()
            .to_string_lossy()
            .contains("sqlx-in-memory");
        let lock = if in_memory {
            None
        } else {
            Some(claim(options.get_filename(), sharing)?)
        };
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 16 MiB of page cache per connection (SQLite's default is 2 MiB): an invite
            // touches a page in each of about twenty B-trees.
            .pragma("cache_size", "-16384");
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(OpenError::Connect)?;
        MIGRATOR
            .run_direct(&mut writer)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::VersionMissing(version) => {
                    OpenError::NewerSchema { version }
                }
                other => OpenError::Migrate(other),
            })?;
        let mut conns = Vec::new();
        for _ in 0..readers {
            conns.push(
                SqliteConnection::connect_with(&options)
                    .await
                    .map_err(OpenError::Connect)?,
            );
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with(options);
        let cache = (sharing == Sharing::Owned).then(|| Arc::new(Cache::default()));
        Ok(Self {
            conns: Arc::new(Connections::new(writer, conns, cache.clone())),
            pool,
            cache,
            lock: Arc::new(std::sync::Mutex::new(lock)),
        })
    }

    /// A pool on the same database for the host's own queries (connections open on first
    /// use). Writes through it bypass the store's checks; the schema's constraints and
    /// triggers still apply.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection and gives up the claim on the file; later calls fail with
    /// [`StoreError::Backend`].
    pub async fn close(&self) {
        self.pool.close().await;
        self.conns.close().await;
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(lock);
    }

    /// A row of the tenant through the cache: `pick` finds it there; on a miss `read` reads
    /// it and `put` stores it (unless the tenant changed meanwhile). A shared store reads.
    async fn cached<T: Clone>(
        &self,
        tenant: TenantId,
        pick: impl FnOnce(&cache::Entry) -> Option<&T>,
        put: impl FnOnce(&mut cache::Entry, T),
        read: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        let Some(cache) = &self.cache else {
            return read.await;
        };
        let ticket = match cache.get(tenant, pick) {
            Lookup::Hit(v) => return Ok(Some(v)),
            Lookup::Miss(ticket) => ticket,
        };
        let value = read.await?;
        if let Some(v) = &value {
            cache.put(tenant, ticket, |e| put(e, v.clone()));
        }
        Ok(value)
    }
}

/// Claims the database at `path`: creates `<path>.lock` and locks it, exclusively for an
/// owning store, shared for a sharing one (so owners and sharers exclude each other, while
/// sharers coexist). The lock is held while the returned file is open.
fn claim(path: &Path, sharing: Sharing) -> Result<std::fs::File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(OpenError::Lock)?;
    let locked = match sharing {
        Sharing::Owned => file.try_lock(),
        Sharing::Shared => file.try_lock_shared(),
    };
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Lock(e)),
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
        let constraint = if msg.contains("guard_missing_row") {
            Some(Constraint::MissingRow)
        } else if msg.contains("guard_counters") {
            Some(Constraint::Counters)
        } else if msg.contains("guard_tenant") {
            return StoreError::NotFound;
        } else if msg.contains("users.tenant_id, users.email_key") {
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

use tenantry_store::sql::{INVITATION_COLUMNS, USER_COLUMNS};

/// Appends the statements of one write. Each statement says what its result must be: an
/// update or delete of a row that is gone is a [`Constraint::MissingRow`] conflict.
fn push_write(b: &mut Batch, tenant: TenantId, t: &str, w: &Write) -> Result<(), StoreError> {
    let missing = Expect::Row;
    let foreign = |id: TenantId| {
        if id == tenant {
            Ok(())
        } else {
            Err(conflict(Constraint::MissingRow))
        }
    };
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            foreign(tn.id)?;
            b.push(
                "UPDATE tenants SET name = ?, user_limit = ? WHERE id = ?",
                missing,
            )
            .bind(tn.name.clone())
            .bind(tn.user_limit.map(i64::from))
            .bind(t.to_owned());
        }
        Write::InsertUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            b.push(
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(u.id.as_uuid()))
            .bind(u.email.as_str().to_owned())
            .bind(u.email.key().to_owned())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(nanos(u.created_at)?)
            .bind(login)
            .bind(login.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?);
        }
        Write::UpdateUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            b.push(
                "UPDATE users SET email = ?, email_key = ?, role = ?, status = ?, template_id = ?, crm_access = ?, grants = ?, \
                 last_login = ?, login_key = ?, invite_expires_at = ? WHERE tenant_id = ? AND id = ?",
                missing,
            )
            .bind(u.email.as_str().to_owned())
            .bind(u.email.key().to_owned())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(login)
            .bind(login.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .bind(t.to_owned())
            .bind(id_text(u.id.as_uuid()));
        }
        Write::DeleteUser(tomb) => {
            b.push("DELETE FROM users WHERE tenant_id = ? AND id = ?", missing)
                .bind(t.to_owned())
                .bind(id_text(tomb.user_id.as_uuid()));
            b.push(
                "INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) VALUES (?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(tomb.user_id.as_uuid()))
            .bind(tomb.email.as_str().to_owned())
            .bind(nanos(tomb.deleted_at)?)
            .bind(serde_json::to_string(&tomb.deleted_by).map_err(backend)?);
        }
        Write::InsertTemplate(tp) => {
            foreign(tp.tenant_id)?;
            b.push(
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(tp.id.as_uuid()))
            .bind(tp.name.as_str().to_owned())
            .bind(tp.name.key().to_owned())
            .bind(perms_text(tp.permissions))
            .bind(nanos(tp.created_at)?)
            .bind(nanos(tp.updated_at)?);
        }
        Write::UpdateTemplate(tp) => {
            foreign(tp.tenant_id)?;
            b.push(
                "UPDATE role_templates SET name = ?, name_key = ?, permissions = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                missing,
            )
            .bind(tp.name.as_str().to_owned())
            .bind(tp.name.key().to_owned())
            .bind(perms_text(tp.permissions))
            .bind(nanos(tp.updated_at)?)
            .bind(t.to_owned())
            .bind(id_text(tp.id.as_uuid()));
        }
        Write::DeleteTemplate(id) => {
            // D12: users still referencing it fail the foreign key.
            b.push_remapped(
                "DELETE FROM role_templates WHERE tenant_id = ? AND id = ?",
                missing,
                Some(Constraint::TemplateReferenced),
            )
            .bind(t.to_owned())
            .bind(id_text(id.as_uuid()));
        }
        Write::MoveTemplateUsers { from, to } => {
            b.push(
                "UPDATE users SET template_id = ? WHERE tenant_id = ? AND template_id = ?",
                Expect::Any,
            )
            .bind(to.map(|x| id_text(x.as_uuid())))
            .bind(t.to_owned())
            .bind(id_text(from.as_uuid()));
        }
        Write::InsertInvitation(inv) => {
            foreign(inv.tenant_id)?;
            b.push(
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = ? AND id = ?)",
                missing,
            )
            .bind(inv.token_hash.0.to_vec())
            .bind(t.to_owned())
            .bind(id_text(inv.user_id.as_uuid()))
            .bind(rows::kind_text(inv.kind))
            .bind(rows::state_text(inv.state))
            .bind(nanos(inv.created_at)?)
            .bind(nanos(inv.expires_at)?)
            .bind(i64::from(inv.failed_attempts))
            .bind(t.to_owned())
            .bind(id_text(inv.user_id.as_uuid()));
        }
        Write::RevokeInvitations(user) => {
            b.push(
                "UPDATE invitations SET state = 'revoked' WHERE tenant_id = ? AND user_id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(user.as_uuid()));
        }
        Write::UseInvitation(hash) => {
            b.push(
                "UPDATE invitations SET state = 'used' WHERE tenant_id = ? AND token_hash = ?",
                missing,
            )
            .bind(t.to_owned())
            .bind(hash.0.to_vec());
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => {
            // D24: only a pending invitation of this tenant counts attempts; a missing or
            // no longer pending one fails the whole change (`missing`).
            b.push(
                "UPDATE invitations SET failed_attempts = ?, state = CASE WHEN ? THEN 'revoked' ELSE state END \
                 WHERE tenant_id = ? AND token_hash = ? AND state = 'pending'",
                missing,
            )
            .bind(i64::from(*failed_attempts))
            .bind(*revoke)
            .bind(t.to_owned())
            .bind(token_hash.0.to_vec());
        }
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

/// Appends the statements that reserve `events.len()` audit sequence numbers (returning the
/// last) and insert the events under them. With `counters`, the reservation also checks
/// that the counters the triggers kept equal the change's.
fn push_events(
    b: &mut Batch,
    t: &str,
    events: &[AuditEvent],
    counters: Option<tenantry_core::Counters>,
) -> Result<(), StoreError> {
    let n = i64::try_from(events.len()).map_err(backend)?;
    match counters {
        Some(c) => b
            .push(
                "UPDATE tenants SET audit_seq = audit_seq + ? WHERE id = ? AND seats_used = ? AND active_admins = ? RETURNING audit_seq",
                Expect::Counters,
            )
            .bind(n)
            .bind(t.to_owned())
            .bind(i64::from(c.seats_used))
            .bind(i64::from(c.active_admins)),
        None => b
            .push(
                "UPDATE tenants SET audit_seq = audit_seq + ? WHERE id = ? RETURNING audit_seq",
                Expect::Found,
            )
            .bind(n)
            .bind(t.to_owned()),
    };
    for (i, e) in (1..).zip(events) {
        b.push(
            "INSERT INTO audit_log (tenant_id, seq, at, action, event) \
             VALUES (?, (SELECT audit_seq FROM tenants WHERE id = ?) - ?, ?, ?, ?)",
            Expect::Any,
        )
        .bind(t.to_owned())
        .bind(t.to_owned())
        .bind(n - i)
        .bind(nanos(e.at)?)
        .bind(serde_json::to_string(&e.action).map_err(backend)?)
        .bind(serde_json::to_string(e).map_err(backend)?);
    }
    Ok(())
}

/// Appends the outbox rows of the change's messages ([mail delivery (D17)](tenantry_core::Rule::MailDelivery): queued in the same commit).
fn push_mail(b: &mut Batch, outbox: &[Message], now: OffsetDateTime) -> Result<(), StoreError> {
    for m in outbox {
        let at = nanos(now)?;
        b.push(
            "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            Expect::Any,
        )
        .bind(id_text(m.tenant_id.as_uuid()))
        .bind(id_text(m.id.as_uuid()))
        .bind(id_text(m.user_id.as_uuid()))
        .bind(m.to.clone())
        .bind(m.subject.clone())
        .bind(m.text.clone())
        .bind(m.html.clone())
        .bind(at)
        .bind(at);
    }
    Ok(())
}

/// The audit seq the reservation of `push_events` returned.
fn returned_seq(rows: &[SqliteRow]) -> Result<u64, StoreError> {
    let seq: i64 = rows
        .first()
        .ok_or(StoreError::NotFound)?
        .try_get(0)
        .map_err(backend)?;
    u64::try_from(seq).map_err(backend)
}

impl SqliteStore {
    /// Runs a batch that begins with `BEGIN IMMEDIATE` on the writer, through its
    /// `COMMIT`, in one round trip; when a statement fails the batch stops there and the
    /// transaction is rolled back. Returns the rows the statements returned.
    ///
    /// A change to `changes` (its id) keeps that tenant's cache bypassed and empty until the
    /// batch has finished on the connection.
    async fn write(
        &self,
        mut b: Batch,
        changes: Option<TenantId>,
        tenant: &str,
        expected_version: u64,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        b.push("COMMIT", Expect::Any);
        let mut w = self.conns.writer().await;
        let conn = w.begin(changes).await?;
        let failure = match b.run(conn).await {
            Ok(Ok(rows)) => {
                w.committed();
                return Ok(rows);
            }
            Ok(Err(failure)) => failure,
            Err(e) => {
                let _ = w.roll_back().await;
                return Err(e);
            }
        };
        // A failed rollback is retried by the next user of the writer.
        let _ = w.roll_back().await;
        let version_guard = matches!(&failure.error, sqlx::Error::Database(db) if db.message().contains("guard_version"));
        if version_guard {
            // D16: the tenant changed, or is gone.
            let conn = w.conn().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
            return Err(match exists {
                None => StoreError::NotFound,
                Some(_) => StoreError::VersionMismatch {
                    expected: expected_version,
                },
            });
        }
        Err(match (map_err(failure.error), failure.remap) {
            (
                StoreError::Conflict {
                    constraint: Constraint::MissingRow,
                },
                Some(c),
            ) => conflict(c),
            (other, _) => other,
        })
    }

    async fn commit_inner(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        let tenant = change.tenant_id;
        let t = id_text(tenant.as_uuid());
        let version = i64::try_from(change.counters.version).map_err(backend)?;
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        let mut writes = change.writes.iter().peekable();
        if let Some(Write::InsertTenant(tn)) = writes.peek() {
            if tn.id != tenant || change.expected_version != 0 {
                return Err(conflict(Constraint::MissingRow));
            }
            b.push(
                "INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES (?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.clone())
            .bind(tn.name.clone())
            .bind(tn.user_limit.map(i64::from))
            .bind(nanos(tn.created_at)?)
            .bind(version);
            writes.next();
        } else {
            // D16: the compare-and-set of the version comes first, so a stale change is
            // reported as such (and retried) before any of its writes could collide.
            b.push(
                "UPDATE tenants SET version = ? WHERE id = ? AND version = ?",
                Expect::Cas,
            )
            .bind(version)
            .bind(t.clone())
            .bind(i64::try_from(change.expected_version).map_err(backend)?);
        }
        for w in writes {
            push_write(&mut b, tenant, &t, w)?;
        }
        push_events(&mut b, &t, &change.events, Some(change.counters))?;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        push_mail(&mut b, outbox, now)?;
        self.write(b, Some(tenant), &t, change.expected_version)
            .await
            .map(|_| ())
    }
}

fn opt_user(row: Option<SqliteRow>) -> Result<Option<User>, StoreError> {
    row.as_ref().map(user_from_row).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        let read = async {
            let row = sqlx::query("SELECT id, name, user_limit, created_at, version, seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(id_text(tenant.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            row.as_ref().map(tenant_from_row).transpose()
        };
        self.cached(tenant, |e| e.state.as_ref(), |e, v| e.state = Some(v), read)
            .await
    }

    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        let read = async {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            opt_user(row)
        };
        self.cached(
            tenant,
            |e| e.users.get(&id),
            |e, v| {
                e.users.insert(id, v);
            },
            read,
        )
        .await
    }

    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        let read = async {
            let row = sqlx::query(
            "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions AS template_permissions \
             FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
             WHERE u.tenant_id = $1 AND u.id = $2",
        )
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
            row.as_ref().map(rows::subject_from_row).transpose()
        };
        self.cached(
            tenant,
            |e| e.subjects.get(&id),
            |e, v| {
                e.subjects.insert(id, v);
            },
            read,
        )
        .await
    }

    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email_key = $2"
        ))
        .bind(id_text(tenant.as_uuid()))
        .bind(key)
        .fetch_optional(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
        opt_user(row)
    }

    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let read = async {
            let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            row.as_ref().map(template_from_row).transpose()
        };
        self.cached(
            tenant,
            |e| e.templates.get(&id),
            |e, v| {
                e.templates.insert(id, v);
            },
            read,
        )
        .await
    }

    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND name_key = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(key)
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 ORDER BY name_key, id")
            .bind(id_text(tenant.as_uuid()))
            .fetch_all(&mut *self.conns.reader().await?)
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
        .fetch_one(&mut *self.conns.reader().await?)
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
        .bind(hash.0.to_vec())
        .bind(id_text(tenant.as_uuid()))
        .fetch_optional(&mut *self.conns.reader().await?)
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
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(user.as_uuid()))
        .fetch_all(&mut *self.conns.reader().await?)
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
        let fetched = q
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
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
            .fetch_optional(&mut *self.conns.reader().await?)
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
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter().map(rows::audit_from_row).collect()
    }

    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.commit_inner(change, outbox).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let t = id_text(event.tenant_id.as_uuid());
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        push_events(&mut b, &t, std::slice::from_ref(event), None)?;
        returned_seq(&self.write(b, None, &t, 0).await?)
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
            .fetch_all(&mut *self.conns.reader().await?)
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
            .fetch_optional(&mut *self.conns.reader().await?)
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
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        b.push(
            "UPDATE outbox SET next_attempt_at = ? WHERE tenant_id = ? AND id IN \
             (SELECT id FROM outbox WHERE tenant_id = ? AND state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?) \
             RETURNING *",
            Expect::Any,
        )
        .bind(rows::nanos_clamped(lease_until))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(tenant.as_uuid()))
        .bind(rows::nanos_clamped(now))
        .bind(i64::from(limit));
        let rows = self.write(b, None, "", 0).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        // One statement on the one writer: of two claims, the second finds the lease.
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        b.push(
            "UPDATE outbox SET next_attempt_at = ? \
             WHERE tenant_id = ? AND id = ? AND state = 'pending' AND next_attempt_at <= ? \
             RETURNING *",
            Expect::Any,
        )
        .bind(rows::nanos_clamped(lease_until))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .bind(rows::nanos_clamped(now));
        let rows = self.write(b, None, "", 0).await?;
        rows.first().map(outbox_from_row).transpose()
    }

    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let t = id_text(tenant.as_uuid());
        let m = id_text(id.as_uuid());
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        match update {
            DeliveryUpdate::Sent { at } => b.push(
                "UPDATE outbox SET state = 'sent', state_at = ?, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(nanos(*at)?),
            DeliveryUpdate::Retry { retry_at, reason } => b.push(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, last_error = ?, attempts = attempts + 1 WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(rows::nanos_clamped(*retry_at))
            .bind(reason.clone()),
            // D26: sent or failed for good, a message keeps no body (they hold the live
            // accept link).
            DeliveryUpdate::Failed { at, reason } => b.push(
                "UPDATE outbox SET state = 'failed', state_at = ?, failure = ?, last_error = ?, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(nanos(*at)?)
            .bind(reason.clone())
            .bind(reason.clone()),
        }
        .bind(t.clone())
        .bind(m.clone());
        // Not pending any more is fine (a late result changes nothing); no such message is
        // not.
        b.push(
            "SELECT 1 FROM outbox WHERE tenant_id = ? AND id = ?",
            Expect::Any,
        )
        .bind(t.clone())
        .bind(m);
        // Nothing was written when the message does not exist.
        if self.write(b, None, &t, 0).await?.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT $2")
            .bind(rows::nanos_clamped(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|s| rows::parse_id(s).map(TenantId::from_uuid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// A real SQLITE_BUSY (a second writer while the first holds the write lock, no busy
    /// wait) becomes the typed, retryable [`StoreError::Busy`].
    #[tokio::test]
    async fn d16_sqlite_busy_is_typed_and_retryable() {
        let dir = std::env::temp_dir().join(format!("tenantry-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("b.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let mut first = SqliteConnection::connect_with(&options).await.unwrap();
        let mut second = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap();
        let e = sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut second)
            .await
            .unwrap_err();
        let mapped = map_err(e);
        assert!(
            matches!(
                mapped,
                StoreError::Busy {
                    backend: "sqlite",
                    ..
                }
            ),
            "{mapped:?}"
        );
        assert!(mapped.is_retryable());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
