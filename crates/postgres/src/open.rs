//! Opening a store: the host's pool ([`PostgresStore::new`]), the schema a store may live in
//! ([`PostgresStore::with_schema`]), tenantry's own migrations ([`PostgresStore::migrate`],
//! recorded in a bookkeeping table of tenantry's own), the connecting shortcuts, and closing
//! or dropping a store.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Executor as _, PgConnection};

use crate::{PgConnectOptions, PgPool, PgPoolOptions, PostgresStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The table in which tenantry records the migrations it applied, in the store's schema. It
/// is not sqlx's `_sqlx_migrations`, so a host's own sqlx migrations can live in the same
/// schema.
pub const MIGRATIONS_TABLE: &str = "tenantry_migrations";

/// The first key of the advisory lock [`PostgresStore::migrate`] holds while it migrates
/// (the second is a hash of the schema's name): ASCII "tnty".
const MIGRATION_LOCK_CLASS: i32 = 0x746e_7479;

/// The pool size [`PostgresStore::connect`] uses.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The `lock_timeout` [`PostgresStore::connect`] sets on its connections: a commit that
/// waits longer than this for a tenant's row is refused as
/// [`StoreError::Busy`](tenantry_store::StoreError::Busy) (and retried by the service)
/// instead of waiting forever.
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
    /// A migration recorded as applied differs from this build's migration of the same
    /// version; the database is left untouched.
    #[error("schema migration {version} was applied with different contents")]
    ChangedMigration {
        /// The migration.
        version: i64,
    },
    /// A migration failed (nothing of it was applied).
    #[error("cannot migrate the PostgreSQL database: {0}")]
    Migrate(#[source] sqlx::Error),
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
    /// A store on the host's own pool, in the connection's current schema (see
    /// [`PostgresStore::with_schema`] for another). Nothing is sent to the server: run
    /// [`PostgresStore::migrate`] (or check that the host's pipeline did) before use.
    ///
    /// The pool's options are the host's: set a `lock_timeout` on its connections (as
    /// [`PostgresStore::connect`] does, [`DEFAULT_LOCK_TIMEOUT`]) so a commit never waits
    /// forever for a tenant's row, and consider `test_before_acquire(false)`: sqlx's default
    /// pings the server before handing out a connection, one more round trip before each of
    /// the store's statements (most of them are one round trip).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry_postgres::{PgPoolOptions, PostgresStore};
    /// let pool = PgPoolOptions::new()
    ///     .max_connections(20)
    ///     .test_before_acquire(false)
    ///     .connect("postgres://app@db.internal/app")
    ///     .await?;
    /// // The host's own migrations, then tenantry's in a schema of its own.
    /// let store = PostgresStore::new(pool).with_schema("tenantry")?;
    /// store.migrate().await?;
    /// let app = tenantry_service::Tenantry::builder(store).build()?;
    /// # let _ = app; Ok(()) }
    /// ```
    ///
    /// The one-row reads (a check's subject, a user, a tenant, …), the snapshot a use case
    /// decides on and the commit of its change run on up to
    /// [`DEFAULT_HOT_CONNECTIONS`](crate::DEFAULT_HOT_CONNECTIONS) connections the store opens itself, from the pool's
    /// connect options and with the `search_path` of the pool's connections: taking a
    /// connection from sqlx's pool costs more than such a statement. They are opened at the
    /// first statements, count against the server's `max_connections` beside the pool's, and
    /// the pool serves the statements while they are all busy. See [`PostgresStore::with_hot_connections`].
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            hot: Arc::new(crate::hot::Hot::new(crate::DEFAULT_HOT_CONNECTIONS)),
            schema: None,
            prefix: Arc::from(""),
            snapshots: Arc::new(crate::snapshot::statements()),
        }
    }

    /// Opens at most `n` connections of the store's own for its hot statements (default
    /// [`DEFAULT_HOT_CONNECTIONS`](crate::DEFAULT_HOT_CONNECTIONS); 0: every statement goes through the pool). Call it
    /// before the store's first read and before cloning it: the set is the clone's own from
    /// here on, and the connections of the set it replaces close when their last holder goes.
    ///
    /// Each is opened at need from the pool's connect options (server, credentials, TLS and
    /// the `options` such as `search_path` and `lock_timeout`), then given the `search_path`
    /// a connection of the pool has (so one set by an `after_connect` hook holds too), and
    /// keeps its prepared statements. A statement finding them all busy goes through the
    /// pool; a connection that broke is dropped and a fresh one opened at a later statement.
    /// A read on it is sent again on the pool; a commit is not (the server may have run it),
    /// and returns its error. [`PostgresStore::close`] closes them with the pool.
    #[must_use]
    pub fn with_hot_connections(mut self, n: usize) -> Self {
        self.hot = Arc::new(crate::hot::Hot::new(n));
        self
    }

    /// How many connections of the store's own ([`PostgresStore::with_hot_connections`]) are
    /// open now, idle or in use.
    #[must_use]
    pub fn hot_connections(&self) -> usize {
        self.hot.open()
    }

    /// Keeps every table of the store in the schema `schema` of the pool's database: every
    /// statement names its tables with the schema, so the pool's `search_path` does not
    /// matter. [`PostgresStore::migrate`] creates the schema when missing. Several stores (a
    /// test each, or several apps) can so share one database, and one pool.
    ///
    /// # Errors
    /// [`OpenError::InvalidSchemaName`] unless the name is 1-63 characters of `a-z`, `0-9`
    /// and `_`, not starting with a digit.
    pub fn with_schema(mut self, schema: &str) -> Result<Self, OpenError> {
        if !valid_schema_name(schema) {
            return Err(OpenError::InvalidSchemaName {
                name: schema.to_owned(),
            });
        }
        self.prefix = Arc::from(format!("\"{schema}\"."));
        self.snapshots = Arc::new(crate::snapshot::statements());
        self.schema = Some(schema.to_owned());
        Ok(self)
    }

    /// Applies tenantry's pending migrations (creating the schema of
    /// [`PostgresStore::with_schema`] if missing), in one transaction: all of them or none.
    ///
    /// They are recorded in [`MIGRATIONS_TABLE`] in the store's schema, never in sqlx's
    /// `_sqlx_migrations`, so the host's own sqlx migrations may share the schema. Concurrent
    /// calls (several processes starting at once) are safe: each holds an advisory lock of
    /// the schema while it migrates, and the later ones find nothing to do. A database whose
    /// migrations were recorded by an older tenantry in `_sqlx_migrations` is adopted: its
    /// records move to [`MIGRATIONS_TABLE`] (and `_sqlx_migrations` is dropped when nothing
    /// else is left in it).
    ///
    /// # Errors
    /// [`OpenError::NewerSchema`] when the schema has a migration this build does not know,
    /// [`OpenError::ChangedMigration`] when an applied one differs from this build's (both
    /// leave the database untouched); [`OpenError::Migrate`] when a statement failed.
    pub async fn migrate(&self) -> Result<(), OpenError> {
        let mut tx = self.pool.begin().await.map_err(OpenError::Migrate)?;
        let result = migrate_in(&mut tx, self.schema.as_deref()).await;
        match result {
            Ok(()) => tx.commit().await.map_err(OpenError::Migrate),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Connects to the database at `url` (`postgres://user@host:port/db`) with a pool of
    /// [`DEFAULT_MAX_CONNECTIONS`] and a [`DEFAULT_LOCK_TIMEOUT`], and applies pending
    /// migrations to the connection's default schema.
    ///
    /// # Errors
    /// [`OpenError`]; a database from a newer version is refused untouched.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(default_pool(), default_options(url)?).await
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
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `url` and keeps every table in the schema `schema`
    /// ([`PostgresStore::with_schema`]), creating it if missing, and applies pending
    /// migrations. Drop it with [`PostgresStore::drop_schema`].
    ///
    /// # Errors
    /// [`OpenError`], including [`OpenError::InvalidSchemaName`].
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, OpenError> {
        Self::connect_in_schema_with(default_pool(), default_options(url)?, schema).await
    }

    /// [`PostgresStore::connect_in_schema`] with explicit pool and connection options.
    /// The connections' `search_path` is set to the schema too, for the host's own queries.
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
        let store = Self::new(pool).with_schema(schema)?;
        store.migrate().await?;
        Ok(store)
    }

    /// The schema of [`PostgresStore::with_schema`], if any.
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops the schema of [`PostgresStore::with_schema`] (with every row in it) and closes
    /// the pool. A store without a schema is only closed: nothing is dropped.
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
        self.hot.close().await;
        self.pool.close().await;
        result
    }

    /// The connection pool (for host queries and tests).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection: the pool's and the store's own.
    pub async fn close(&self) {
        self.hot.close().await;
        self.pool.close().await;
    }
}

/// The pool of the `connect*` shortcuts: [`DEFAULT_MAX_CONNECTIONS`], and no ping before
/// each acquire (sqlx's default sends one, a whole round trip before every statement: it
/// doubled the cost of a check). A connection the server dropped fails its next statement
/// instead, which the pool then discards.
fn default_pool() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(DEFAULT_MAX_CONNECTIONS)
        .test_before_acquire(false)
}

fn default_options(url: &str) -> Result<PgConnectOptions, OpenError> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(OpenError::Connect)?
        .options([("lock_timeout", lock_timeout_text(DEFAULT_LOCK_TIMEOUT))]))
}

/// The body of [`PostgresStore::migrate`], inside its transaction.
async fn migrate_in(tx: &mut PgConnection, schema: Option<&str>) -> Result<(), OpenError> {
    let m = OpenError::Migrate;
    // One migrator per schema at a time; the lock goes with the transaction.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(COALESCE($2, current_schema())))")
        .bind(MIGRATION_LOCK_CLASS)
        .bind(schema.map(str::to_owned))
        .execute(&mut *tx)
        .await
        .map_err(m)?;
    if let Some(s) = schema {
        // The migrations create their objects in the schema, and the functions they create
        // pin it as their search_path.
        let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET LOCAL search_path TO \"{s}\"");
        (&mut *tx).execute(sql.as_str()).await.map_err(m)?;
    }
    let exists: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I.%I', current_schema(), $1::text)) IS NOT NULL",
    )
    .bind(MIGRATIONS_TABLE.to_owned())
    .fetch_one(&mut *tx)
    .await
    .map_err(m)?;
    if !exists {
        (&mut *tx)
            .execute(
                "CREATE TABLE tenantry_migrations (\
                 version bigint PRIMARY KEY, \
                 description text NOT NULL, \
                 checksum bytea NOT NULL, \
                 installed_on timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(m)?;
        adopt_legacy_bookkeeping(tx).await?;
    }
    let applied: HashMap<i64, Vec<u8>> =
        sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT version, checksum FROM tenantry_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(m)?
            .into_iter()
            .collect();
    let known: HashMap<i64, &[u8]> = MIGRATOR
        .iter()
        .map(|mig| (mig.version, mig.checksum.as_ref()))
        .collect();
    if let Some(&version) = applied.keys().filter(|v| !known.contains_key(v)).max() {
        return Err(OpenError::NewerSchema { version });
    }
    if let Some((&version, _)) = applied
        .iter()
        .find(|(v, sum)| known.get(v).is_some_and(|k| *k != sum.as_slice()))
    {
        return Err(OpenError::ChangedMigration { version });
    }
    let pending: Vec<&sqlx::migrate::Migration> = MIGRATOR
        .iter()
        .filter(|mig| !applied.contains_key(&mig.version))
        .collect();
    for mig in pending {
        (&mut *tx).execute(&*mig.sql).await.map_err(m)?;
        sqlx::query(
            "INSERT INTO tenantry_migrations (version, description, checksum) VALUES ($1, $2, $3)",
        )
        .bind(mig.version)
        .bind(mig.description.to_string())
        .bind(mig.checksum.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(m)?;
    }
    Ok(())
}

/// Moves the records of tenantry's migrations that an older tenantry kept in sqlx's
/// `_sqlx_migrations` (same version and checksum) to `tenantry_migrations`, and drops
/// `_sqlx_migrations` when nothing else is left in it. Rows that are not tenantry's (the
/// host's own) stay where they are.
async fn adopt_legacy_bookkeeping(tx: &mut PgConnection) -> Result<(), OpenError> {
    let m = OpenError::Migrate;
    let legacy: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I._sqlx_migrations', current_schema())) IS NOT NULL",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(m)?;
    if !legacy {
        return Ok(());
    }
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *tx)
            .await
            .map_err(m)?;
    for (version, checksum) in rows {
        let Some(mig) = MIGRATOR
            .iter()
            .find(|mig| mig.version == version && mig.checksum.as_ref() == checksum.as_slice())
        else {
            continue;
        };
        sqlx::query(
            "INSERT INTO tenantry_migrations (version, description, checksum) VALUES ($1, $2, $3)",
        )
        .bind(mig.version)
        .bind(mig.description.to_string())
        .bind(mig.checksum.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(m)?;
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(m)?;
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(m)?;
    if left == 0 {
        (&mut *tx)
            .execute("DROP TABLE _sqlx_migrations")
            .await
            .map_err(m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_schema_name;

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
