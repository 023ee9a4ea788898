//! The SQL endpoint stores (sqlx), one per backend, made by one macro: the same statements
//! (`$n` placeholders) on SQLite and PostgreSQL.
//!
//! Migrations are the crate's own, under `migrations/<backend>/`, applied in order at
//! `open` and recorded in the table
//! `tenantry_webhooks_migrations` (never sqlx's `_sqlx_migrations`).

use tenantry_core::AuditAction;
use time::OffsetDateTime;

use crate::{EndpointStoreError, Secret, event_kind};

/// The migrations of a backend: (version, description, SQL).
pub(crate) type Migrations = &'static [(i64, &'static str, &'static str)];

pub(crate) fn corrupt(backend: &'static str, what: &'static str) -> EndpointStoreError {
    EndpointStoreError::Corrupt { backend, what }
}

pub(crate) fn nanos(backend: &'static str, t: OffsetDateTime) -> Result<i64, EndpointStoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| corrupt(backend, "time out of range"))
}

pub(crate) fn time(backend: &'static str, n: i64) -> Result<OffsetDateTime, EndpointStoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|_| corrupt(backend, "time"))
}

pub(crate) fn opt_time(
    backend: &'static str,
    n: Option<i64>,
) -> Result<Option<OffsetDateTime>, EndpointStoreError> {
    n.map(|n| time(backend, n)).transpose()
}

pub(crate) fn opt_nanos(
    backend: &'static str,
    t: Option<OffsetDateTime>,
) -> Result<Option<i64>, EndpointStoreError> {
    t.map(|t| nanos(backend, t)).transpose()
}

pub(crate) fn events_column(events: &[AuditAction]) -> String {
    events
        .iter()
        .map(|a| event_kind(*a))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_events(
    backend: &'static str,
    text: &str,
) -> Result<Vec<AuditAction>, EndpointStoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|k| {
            serde_json::from_value(serde_json::Value::String(k.to_owned()))
                .map_err(|_| corrupt(backend, "events"))
        })
        .collect()
}

pub(crate) fn secret(backend: &'static str, text: &str) -> Result<Secret, EndpointStoreError> {
    Secret::parse(text).map_err(|_| corrupt(backend, "secret"))
}

macro_rules! sql_endpoint_store {
    (
        $(#[$doc:meta])*
        $name:ident, $db:ty, $pool:ty, $backend:literal, $migrations:expr, $lock:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
        }

        fn backend_error(e: sqlx::Error) -> $crate::EndpointStoreError {
            $crate::EndpointStoreError::Backend { backend: $backend, source: Box::new(e) }
        }

        impl $name {
            /// The store on `pool`, its tables created or brought up to date first.
            ///
            /// # Errors
            /// When a migration fails.
            pub async fn open(pool: $pool) -> Result<Self, $crate::EndpointStoreError> {
                let mut conn = pool.acquire().await.map_err(backend_error)?;
                sqlx::raw_sql($lock).execute(&mut *conn).await.map_err(backend_error)?;
                let result = Self::migrate(&mut conn).await;
                let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
                let ended = sqlx::raw_sql(end).execute(&mut *conn).await.map_err(backend_error);
                result?;
                ended?;
                Ok(Self { pool })
            }

            async fn migrate(
                conn: &mut sqlx::pool::PoolConnection<$db>,
            ) -> Result<(), $crate::EndpointStoreError> {
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS tenantry_webhooks_migrations (
                        version BIGINT PRIMARY KEY NOT NULL,
                        description TEXT NOT NULL,
                        applied_at BIGINT NOT NULL)",
                )
                .execute(&mut **conn)
                .await
                .map_err(backend_error)?;
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(version) FROM tenantry_webhooks_migrations")
                        .fetch_one(&mut **conn)
                        .await
                        .map_err(backend_error)?;
                let done = done.unwrap_or(0);
                let migrations: $crate::sql::Migrations = $migrations;
                for (version, description, sql) in migrations {
                    if *version <= done {
                        continue;
                    }
                    sqlx::raw_sql(sql).execute(&mut **conn).await.map_err(backend_error)?;
                    let now = $crate::sql::nanos($backend, time::OffsetDateTime::now_utc())?;
                    sqlx::query(
                        "INSERT INTO tenantry_webhooks_migrations (version, description, applied_at)
                         VALUES ($1, $2, $3)",
                    )
                    .bind(*version)
                    .bind(*description)
                    .bind(now)
                    .execute(&mut **conn)
                    .await
                    .map_err(backend_error)?;
                }
                Ok(())
            }

            /// The pool.
            #[must_use]
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            fn row(
                r: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::StoredEndpoint, $crate::EndpointStoreError> {
                use sqlx::Row as _;
                use $crate::sql::{corrupt, opt_time, parse_events, secret, time};
                let get_err = |_| corrupt($backend, "column");
                let id: String = r.try_get("id").map_err(get_err)?;
                let tenant: String = r.try_get("tenant_id").map_err(get_err)?;
                let events: String = r.try_get("events").map_err(get_err)?;
                let current: String = r.try_get("secret").map_err(get_err)?;
                let previous: Option<String> = r.try_get("previous_secret").map_err(get_err)?;
                let until: Option<i64> = r.try_get("previous_until").map_err(get_err)?;
                let seq: i64 = r.try_get("delivered_seq").map_err(get_err)?;
                let attempts: i64 = r.try_get("attempts").map_err(get_err)?;
                let previous = match (previous, until) {
                    (Some(s), Some(u)) => Some((secret($backend, &s)?, time($backend, u)?)),
                    _ => None,
                };
                Ok($crate::StoredEndpoint {
                    endpoint: $crate::Endpoint {
                        id: id.parse().map_err(|_| corrupt($backend, "id"))?,
                        tenant_id: tenant.parse().map_err(|_| corrupt($backend, "tenant_id"))?,
                        url: r.try_get("url").map_err(get_err)?,
                        events: parse_events($backend, &events)?,
                        enabled: r.try_get("enabled").map_err(get_err)?,
                        created_at: time($backend, r.try_get("created_at").map_err(get_err)?)?,
                    },
                    secrets: $crate::Secrets { current: secret($backend, &current)?, previous },
                    status: $crate::DeliveryStatus {
                        delivered_seq: u64::try_from(seq)
                            .map_err(|_| corrupt($backend, "delivered_seq"))?,
                        attempts: u32::try_from(attempts)
                            .map_err(|_| corrupt($backend, "attempts"))?,
                        last_error: r.try_get("last_error").map_err(get_err)?,
                        next_attempt_at: opt_time(
                            $backend,
                            r.try_get("next_attempt_at").map_err(get_err)?,
                        )?,
                        failing_since: opt_time(
                            $backend,
                            r.try_get("failing_since").map_err(get_err)?,
                        )?,
                        disabled_at: opt_time($backend, r.try_get("disabled_at").map_err(get_err)?)?,
                    },
                })
            }

            fn status_binds(
                status: &$crate::DeliveryStatus,
            ) -> Result<
                (i64, i64, Option<i64>, Option<i64>, Option<i64>),
                $crate::EndpointStoreError,
            > {
                use $crate::sql::{corrupt, opt_nanos};
                Ok((
                    i64::try_from(status.delivered_seq)
                        .map_err(|_| corrupt($backend, "delivered_seq"))?,
                    i64::from(status.attempts),
                    opt_nanos($backend, status.next_attempt_at)?,
                    opt_nanos($backend, status.failing_since)?,
                    opt_nanos($backend, status.disabled_at)?,
                ))
            }
        }

        #[async_trait::async_trait]
        impl $crate::EndpointStore for $name {
            async fn insert(
                &self,
                ep: &$crate::StoredEndpoint,
            ) -> Result<(), $crate::EndpointStoreError> {
                use $crate::sql::{events_column, nanos, opt_nanos};
                let e = &ep.endpoint;
                let (seq, attempts, next, since, disabled) = Self::status_binds(&ep.status)?;
                let (prev, until) = match &ep.secrets.previous {
                    Some((s, u)) => (Some(s.expose().to_owned()), Some(*u)),
                    None => (None, None),
                };
                let done = sqlx::query(
                    "INSERT INTO tenantry_webhook_endpoints (id, tenant_id, url, events, enabled,
                        created_at, secret, previous_secret, previous_until, delivered_seq,
                        attempts, last_error, next_attempt_at, failing_since, disabled_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(e.id.to_string())
                .bind(e.tenant_id.to_string())
                .bind(&e.url)
                .bind(events_column(&e.events))
                .bind(e.enabled)
                .bind(nanos($backend, e.created_at)?)
                .bind(ep.secrets.current.expose())
                .bind(prev)
                .bind(opt_nanos($backend, until)?)
                .bind(seq)
                .bind(attempts)
                .bind(ep.status.last_error.as_deref())
                .bind(next)
                .bind(since)
                .bind(disabled)
                .execute(&self.pool)
                .await;
                match done {
                    Ok(_) => Ok(()),
                    Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                        Err($crate::EndpointStoreError::Duplicate)
                    }
                    Err(e) => Err(backend_error(e)),
                }
            }

            async fn get(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
            ) -> Result<Option<$crate::StoredEndpoint>, $crate::EndpointStoreError> {
                let row = sqlx::query(
                    "SELECT * FROM tenantry_webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend_error)?;
                row.as_ref().map(Self::row).transpose()
            }

            async fn list(
                &self,
                tenant: tenantry_core::TenantId,
            ) -> Result<Vec<$crate::StoredEndpoint>, $crate::EndpointStoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM tenantry_webhook_endpoints WHERE tenant_id = $1
                     ORDER BY created_at, id",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(backend_error)?;
                rows.iter().map(Self::row).collect()
            }

            async fn all(
                &self,
            ) -> Result<Vec<$crate::StoredEndpoint>, $crate::EndpointStoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM tenantry_webhook_endpoints WHERE enabled ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(backend_error)?;
                rows.iter().map(Self::row).collect()
            }

            async fn update(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
                url: &str,
                events: &[tenantry_core::AuditAction],
                enabled: bool,
            ) -> Result<bool, $crate::EndpointStoreError> {
                let done = sqlx::query(
                    "UPDATE tenantry_webhook_endpoints SET url = $3, events = $4, enabled = $5
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(url)
                .bind($crate::sql::events_column(events))
                .bind(enabled)
                .execute(&self.pool)
                .await
                .map_err(backend_error)?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_secrets(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
                secrets: &$crate::Secrets,
            ) -> Result<bool, $crate::EndpointStoreError> {
                let (prev, until) = match &secrets.previous {
                    Some((s, u)) => (Some(s.expose().to_owned()), Some(*u)),
                    None => (None, None),
                };
                let done = sqlx::query(
                    "UPDATE tenantry_webhook_endpoints
                     SET secret = $3, previous_secret = $4, previous_until = $5
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(secrets.current.expose())
                .bind(prev)
                .bind($crate::sql::opt_nanos($backend, until)?)
                .execute(&self.pool)
                .await
                .map_err(backend_error)?;
                Ok(done.rows_affected() > 0)
            }

            async fn save_status(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
                status: &$crate::DeliveryStatus,
            ) -> Result<bool, $crate::EndpointStoreError> {
                let (seq, attempts, next, since, disabled) = Self::status_binds(status)?;
                let done = sqlx::query(
                    "UPDATE tenantry_webhook_endpoints
                     SET delivered_seq = $3, attempts = $4, last_error = $5,
                         next_attempt_at = $6, failing_since = $7, disabled_at = $8
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(seq)
                .bind(attempts)
                .bind(status.last_error.as_deref())
                .bind(next)
                .bind(since)
                .bind(disabled)
                .execute(&self.pool)
                .await
                .map_err(backend_error)?;
                Ok(done.rows_affected() > 0)
            }

            async fn disable(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
                at: time::OffsetDateTime,
            ) -> Result<bool, $crate::EndpointStoreError> {
                let done = sqlx::query(
                    "UPDATE tenantry_webhook_endpoints SET enabled = FALSE, disabled_at = $3
                     WHERE tenant_id = $1 AND id = $2 AND enabled",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind($crate::sql::nanos($backend, at)?)
                .execute(&self.pool)
                .await
                .map_err(backend_error)?;
                Ok(done.rows_affected() > 0)
            }

            async fn remove(
                &self,
                tenant: tenantry_core::TenantId,
                id: $crate::EndpointId,
            ) -> Result<bool, $crate::EndpointStoreError> {
                let done = sqlx::query(
                    "DELETE FROM tenantry_webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .execute(&self.pool)
                .await
                .map_err(backend_error)?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use sql_endpoint_store;
