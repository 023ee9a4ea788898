//! Tests of what only the SQLite backend does: migrations, schema-level invariants, the
//! append-only audit table, and the typed refusal of a newer database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use tenantry::prelude::*;
use tenantry_sqlite::{OpenError, SqliteStore};

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantry-sqlite-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("t.db")
}

async fn app_on(store: SqliteStore) -> (Tenantry, tenantry::TenantId, tenantry::UserId) {
    let app = Tenantry::builder(store).build().unwrap();
    let (t, a) = app
        .create_tenant("Acme", Some(3), Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    (app, t, a)
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_no_migration_twice() {
    let path = temp_db("reopen");
    let (t, a) = {
        let (app, t, a) = app_on(SqliteStore::open(&path).await.unwrap()).await;
        app.invite(
            t,
            a,
            &InviteRequest {
                email: Email::parse("bob@acme.test").unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::USERS_VIEW,
            },
        )
        .await
        .unwrap();
        (t, a)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Tenantry::builder(store.clone()).build().unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    let page = app
        .list_users(t, ActorRef::User(a), &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[1].grants, Permissions::USERS_VIEW);
    // D4: permission sets are stored as sorted "category:action" strings, not bits.
    let grants: String =
        sqlx::query_scalar("SELECT grants FROM users WHERE email_key = 'bob@acme.test'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(grants, r#"["users:view"]"#);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, 2);
}

#[tokio::test]
async fn opening_an_older_database_runs_the_pending_migrations() {
    let path = temp_db("older");
    {
        // Make a database exactly as schema version 1 left it: undo migration 2.
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("DROP INDEX outbox_by_tenant_due")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2")
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2]);
    let index: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'outbox_by_tenant_due'",
    )
    .fetch_optional(store.pool())
    .await
    .unwrap();
    assert_eq!(index.as_deref(), Some("outbox_by_tenant_due"));
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_untouched() {
    let path = temp_db("newer");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        store.close().await;
    }
    match SqliteStore::open(&path).await {
        Err(OpenError::NewerSchema { version }) => assert_eq!(version, 9999),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[tokio::test]
async fn d13_audit_table_is_append_only_in_the_database() {
    let store = SqliteStore::open(temp_db("audit")).await.unwrap();
    let (app, t, _a) = app_on(store.clone()).await;
    let log = app.audit_log(t, ActorRef::System, 0, 10).await.unwrap();
    assert!(log.len() >= 2, "tenant creation is audited");
    let upd = sqlx::query("UPDATE audit_log SET action = 'x'")
        .execute(store.pool())
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(n).unwrap(),
        log.len(),
        "nothing was changed"
    );
}

#[tokio::test]
async fn d8_d9_schema_enforces_counters_seat_limit_and_last_admin() {
    let store = SqliteStore::open(temp_db("schema")).await.unwrap();
    let (app, t, a) = app_on(store.clone()).await;
    for i in 0..2 {
        app.invite(
            t,
            a,
            &InviteRequest {
                email: Email::parse(&format!("u{i}@acme.test")).unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            },
        )
        .await
        .unwrap();
    }
    let tid = t.to_string();
    // Counters equal rows.
    let (seats, admins): (i64, i64) =
        sqlx::query_as("SELECT seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(&tid)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((seats, admins), (3, 1));
    // D9: a raw insert over the limit is refused by the schema itself.
    let raw = sqlx::query(
        "INSERT INTO users (tenant_id, id, email, email_key, role, status, crm_access, grants, created_at, login_key) \
         VALUES ($1, 'x', 'z@acme.test', 'z@acme.test', 'user', 'invited', 0, '[]', 0, 0)",
    )
    .bind(&tid)
    .execute(store.pool())
    .await;
    assert!(raw.unwrap_err().to_string().contains("seat limit"));
    // D8: demoting the last active admin by hand is refused by the schema.
    let raw = sqlx::query("UPDATE users SET role = 'user' WHERE tenant_id = $1 AND role = 'admin'")
        .bind(&tid)
        .execute(store.pool())
        .await;
    assert!(raw.is_err(), "the schema must keep one active admin");
    // D5: an admin without CRM access is refused by the schema.
    let raw =
        sqlx::query("UPDATE users SET crm_access = 0 WHERE tenant_id = $1 AND role = 'admin'")
            .bind(&tid)
            .execute(store.pool())
            .await;
    assert!(raw.is_err());
    // D3: the unique index on (tenant, email key).
    let raw = sqlx::query("UPDATE users SET email_key = 'u0@acme.test' WHERE tenant_id = $1 AND email_key = 'u1@acme.test'")
        .bind(&tid)
        .execute(store.pool())
        .await;
    assert!(raw.unwrap_err().to_string().contains("UNIQUE"));
}
