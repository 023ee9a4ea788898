//! Opening a store: connection and pool options, the schema a store may live in, and
//! migrations; and closing or dropping it.

use std::str::FromStr;
use std::time::Duration;

use crate::{PgConnectOptions, PgPool, PgPoolOptions, PostgresStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
    /// A migration failed.
    #[error("cannot migrate the PostgreSQL database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
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
