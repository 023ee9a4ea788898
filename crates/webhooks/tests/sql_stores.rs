#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Step 2: the endpoint stores behave alike — in memory, in a real SQLite file, in the real
//! PostgreSQL at 127.0.0.1:5432 (a schema of the test's own, dropped after) — and the SQL
//! stores keep their migrations in a table of their own, survive a reopen, and carry a
//! dispatcher's cursor across a restart.

mod support;

use tenantry_service::{AuditAction, TenantId};
use tenantry_webhooks::{
    DeliveryStatus, Endpoint, EndpointId, EndpointStore, EndpointStoreError, InMemoryEndpointStore,
    Secret, Secrets, StoredEndpoint,
};
use time::macros::datetime;

fn endpoint(tenant: TenantId, n: u8, events: Vec<AuditAction>) -> StoredEndpoint {
    StoredEndpoint {
        endpoint: Endpoint {
            id: EndpointId::new(),
            tenant_id: tenant,
            url: format!("https://h{n}.test/in?x=1"),
            events,
            enabled: true,
            // Nanoseconds survive the round trip.
            created_at: datetime!(2026-03-02 09:00:00.123456789 UTC)
                + time::Duration::seconds(n.into()),
        },
        secrets: Secrets {
            current: Secret::generate().unwrap(),
            previous: None,
        },
        status: DeliveryStatus {
            delivered_seq: u64::from(n),
            ..DeliveryStatus::default()
        },
    }
}

/// The same behaviour from every store.
async fn exercise(store: &dyn EndpointStore) {
    let t1 = TenantId::from_parts(1_767_225_600_000, [1; 10]);
    let t2 = TenantId::from_parts(1_767_225_600_000, [2; 10]);
    let a = endpoint(t1, 1, vec![]);
    let b = endpoint(
        t1,
        2,
        vec![
            AuditAction::UserInvited,
            AuditAction::WebhookEndpointChanged,
        ],
    );
    let c = endpoint(t2, 3, vec![AuditAction::SignedIn]);
    for e in [&a, &b, &c] {
        store.insert(e).await.unwrap();
    }
    assert!(matches!(
        store.insert(&a).await,
        Err(EndpointStoreError::Duplicate)
    ));
    assert_eq!(store.get(t1, a.endpoint.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.get(t2, a.endpoint.id).await.unwrap(),
        None,
        "tenant isolation"
    );
    assert_eq!(store.list(t1).await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(store.list(t2).await.unwrap(), std::slice::from_ref(&c));
    assert_eq!(store.all().await.unwrap().len(), 3);

    let id = b.endpoint.id;
    assert!(
        store
            .update(t1, id, "http://new.test/", &[AuditAction::SignedIn], true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update(t2, id, "http://x.test/", &[], true)
            .await
            .unwrap()
    );
    let rotated = Secrets {
        current: Secret::generate().unwrap(),
        previous: Some((
            b.secrets.current.clone(),
            datetime!(2026-03-03 09:00:00.5 UTC),
        )),
    };
    assert!(store.set_secrets(t1, id, &rotated).await.unwrap());
    let status = DeliveryStatus {
        delivered_seq: 41,
        attempts: 3,
        last_error: Some("HTTP 500".into()),
        next_attempt_at: Some(datetime!(2026-03-02 10:00:00.000000001 UTC)),
        failing_since: Some(datetime!(2026-03-02 09:30 UTC)),
        disabled_at: None,
    };
    assert!(store.save_status(t1, id, &status).await.unwrap());
    let got = store.get(t1, id).await.unwrap().unwrap();
    assert_eq!(got.endpoint.url, "http://new.test/");
    assert_eq!(got.endpoint.events, [AuditAction::SignedIn]);
    assert_eq!(got.secrets, rotated);
    assert_eq!(got.status, status);

    let at = datetime!(2026-03-05 00:00 UTC);
    assert!(store.disable(t1, id, at).await.unwrap());
    assert!(
        !store.disable(t1, id, at).await.unwrap(),
        "disabled already"
    );
    let got = store.get(t1, id).await.unwrap().unwrap();
    assert!(!got.endpoint.enabled);
    assert_eq!(got.status.disabled_at, Some(at));
    assert_eq!(got.status.delivered_seq, 41, "disabling keeps the cursor");
    assert_eq!(
        store.all().await.unwrap().len(),
        2,
        "all() lists enabled endpoints"
    );

    assert!(!store.remove(t2, id).await.unwrap());
    assert!(store.remove(t1, id).await.unwrap());
    assert!(store.get(t1, id).await.unwrap().is_none());
    assert_eq!(store.list(t1).await.unwrap(), [a]);
}

#[tokio::test]
async fn the_in_memory_store() {
    exercise(&InMemoryEndpointStore::new()).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use sqlx::Row as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::sync::Arc;
    use tenantry_webhooks::SqliteEndpointStore;

    async fn pool(path: &std::path::Path) -> sqlx::SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_real_sqlite_file() {
        let dir =
            std::env::temp_dir().join(format!("tenantry-webhooks-sqlite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hooks.db");
        let store = SqliteEndpointStore::open(pool(&path).await).await.unwrap();
        exercise(&store).await;
        let kept = store.all().await.unwrap();
        store.pool().close().await;

        // Reopened: the rows are there, the migration is not applied twice.
        let store = SqliteEndpointStore::open(pool(&path).await).await.unwrap();
        assert_eq!(store.all().await.unwrap(), kept);
        let rows = sqlx::query("SELECT version FROM tenantry_webhooks_migrations")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.get::<i64, _>(0)).collect::<Vec<_>>(),
            [1]
        );
        let sqlx_table: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = '_sqlx_migrations'")
                .fetch_optional(store.pool())
                .await
                .unwrap();
        assert_eq!(sqlx_table, None);
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cursor_survives_a_restart_of_the_dispatcher() {
        use tenantry_service::ActorRef;
        use tenantry_webhooks::{Dispatcher, DispatcherSettings, Webhooks};
        let dir =
            std::env::temp_dir().join(format!("tenantry-webhooks-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hooks.db");
        let (app, clock, tenant, admin) = support::service(datetime!(2026-03-02 09:00 UTC)).await;
        let receiver = support::Receiver::ok().await;
        let store = Arc::new(SqliteEndpointStore::open(pool(&path).await).await.unwrap());
        let hooks = Webhooks::new(app.clone(), store.clone());
        let made = hooks
            .register(tenant, ActorRef::User(admin), &receiver.url("/in"), &[])
            .await
            .unwrap();
        let d = Dispatcher::with_clock(
            &app,
            store.clone(),
            DispatcherSettings::default(),
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(d.run_once().await.unwrap().delivered, 1);
        drop(d);
        store.pool().close().await;
        drop((hooks, store));

        hooks_event(&app, tenant).await;
        let store = Arc::new(SqliteEndpointStore::open(pool(&path).await).await.unwrap());
        let d = Dispatcher::with_clock(
            &app,
            store.clone(),
            DispatcherSettings::default(),
            Arc::new(clock),
        )
        .unwrap();
        assert_eq!(
            d.run_once().await.unwrap().delivered,
            1,
            "only the new event"
        );
        let seqs: Vec<u64> = receiver
            .arrivals()
            .iter()
            .map(support::Arrival::seq)
            .collect();
        assert_eq!(seqs.len(), 2);
        assert!(seqs[0] < seqs[1]);
        let stored = store.get(tenant, made.endpoint.id).await.unwrap().unwrap();
        assert_eq!(stored.status.delivered_seq, seqs[1]);
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn hooks_event(app: &tenantry_service::Tenantry, tenant: TenantId) {
        use tenantry_service::{ActorRef, AuditEvent, AuditTarget, Outcome};
        let event = AuditEvent {
            tenant_id: tenant,
            actor: ActorRef::System,
            action: AuditAction::SignedIn,
            target: AuditTarget::Tenant,
            at: app.now(),
            outcome: Outcome::Success,
            changes: vec![],
        };
        app.store().append_audit(&event).await.unwrap();
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use tenantry_webhooks::PgEndpointStore;

    fn url() -> String {
        std::env::var("TENANTRY_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    #[tokio::test]
    async fn the_real_postgresql() {
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .connect(&url())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let message = format!(
                    "PostgreSQL at {} is not reachable ({e}); run `bash scripts/services.sh`",
                    url()
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message}");
                }
                eprintln!("SKIPPED the_real_postgresql: {message}");
                return;
            }
        };
        let schema = format!("tenantry_webhooks_test_{}", std::process::id());
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .execute(&admin)
        .await
        .unwrap();
        let options: PgConnectOptions = url()
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .unwrap();
        // Two opens at once: the advisory lock lets one migrate, the other finds it done.
        let other = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let (s1, s2) = tokio::join!(
            PgEndpointStore::open(pool.clone()),
            PgEndpointStore::open(other.clone())
        );
        let store = s1.unwrap();
        s2.unwrap();
        exercise(&store).await;
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM tenantry_webhooks_migrations")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1]);
        let sqlx_table: Option<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name = '_sqlx_migrations'",
        )
        .bind(&schema)
        .fetch_optional(&pool)
        .await
        .unwrap();
        assert_eq!(sqlx_table, None);
        pool.close().await;
        other.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
