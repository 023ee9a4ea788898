//! The PostgreSQL endpoint store (feature `postgres`).

crate::sql::sql_endpoint_store!(
    /// Endpoints in PostgreSQL, through sqlx: the table `tenantry_webhook_endpoints` in the
    /// connection's schema (its `search_path`), created by the crate's own migrations
    /// (recorded in `tenantry_webhooks_migrations`; concurrent opens wait on an advisory lock).
    PgEndpointStore,
    sqlx::Postgres,
    sqlx::PgPool,
    "postgres",
    &[(1, "endpoints", include_str!("../migrations/postgres/0001_endpoints.sql"))],
    "BEGIN; SELECT pg_advisory_xact_lock(7305218440187)"
);
