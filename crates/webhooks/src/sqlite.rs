//! The SQLite endpoint store (feature `sqlite`).

crate::sql::sql_endpoint_store!(
    /// Endpoints in SQLite, through sqlx: the table `tenantry_webhook_endpoints`, created by
    /// the crate's own migrations (recorded in `tenantry_webhooks_migrations`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenantry_webhooks::{EndpointStore, SqliteEndpointStore};
    /// // One connection: each connection to `sqlite::memory:` is a database of its own.
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1)
    ///     .connect("sqlite::memory:").await?;
    /// let store = SqliteEndpointStore::open(pool).await?;
    /// assert!(store.all().await?.is_empty());
    /// # Ok(()) }
    /// ```
    SqliteEndpointStore,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    "sqlite",
    &[(1, "endpoints", include_str!("../migrations/sqlite/0001_endpoints.sql"))],
    "BEGIN IMMEDIATE"
);
