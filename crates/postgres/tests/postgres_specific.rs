//! Tests of what only the PostgreSQL backend does: migrations, the typed refusal of a newer
//! database, schema-level invariants checked with raw SQL (the append-only audit table
//! among them), the mapping of database errors, and orders identical to the reference
//! store whatever the database's collation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tenantry_core::{Change, Counters, Write};
use tenantry_postgres::{OpenError, PgConnectOptions, PgPoolOptions, PostgresStore};
use tenantry_service::prelude::*;
use tenantry_service::{ManualClock, Random, Store, StoreError, TenantId, User, UserId};
use tenantry_store::Constraint;
use time::macros::datetime;

async fn app_on(store: PostgresStore, limit: Option<u32>) -> (Tenantry, TenantId, UserId) {
    let app = Tenantry::builder(store).build().unwrap();
    let (t, a) = app
        .create_tenant("Acme", limit, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    (app, t, a)
}

fn plain(address: &str) -> InviteRequest {
    InviteRequest {
        email: Email::parse(address).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::empty(),
    }
}

/// The versions of tenantry's migrations, from the crate's `migrations` directory.
fn migrations() -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.split('_').next().unwrap().parse().unwrap()
        })
        .collect();
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_no_migration_twice() {
    let (store, guard) = common::fresh(4).await;
    let (app, t, a) = app_on(store.clone(), Some(3)).await;
    app.invite(
        t,
        a,
        &InviteRequest {
            grants: Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW,
            ..plain("bob@acme.test")
        },
    )
    .await
    .unwrap();
    store.close().await;
    let again = PostgresStore::connect_in_schema(&common::url(), guard.name())
        .await
        .unwrap();
    let app = Tenantry::builder(again.clone()).build().unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    let page = app
        .list_users(t, ActorRef::User(a), &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(
        page.items[1].grants,
        Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW
    );
    // D4: permission sets are stored as sorted "category:action" strings, never bits.
    let grants: Vec<String> =
        sqlx::query_scalar("SELECT grants FROM users WHERE email_key = 'bob@acme.test'")
            .fetch_one(again.pool())
            .await
            .unwrap();
    assert_eq!(grants, ["analytics:view", "users:view"]);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenantry_migrations")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(migrations().len()).unwrap());
    // tenantry's bookkeeping is its own: no sqlx table in the schema.
    let sqlx_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert!(!sqlx_table);
    again.close().await;
}

#[tokio::test]
async fn connect_migrates_a_fresh_database_in_its_default_schema() {
    // A database of its own (connect() uses the default search_path, so not a schema).
    let name = format!("{}{}_db", common::PREFIX, std::process::id());
    let admin: PgConnectOptions = common::url().parse().unwrap();
    let server = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&server)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&server)
        .await
        .unwrap();
    // The same server and credentials, the new database.
    let base = common::url();
    let head = base.split('?').next().unwrap().rsplit_once('/').unwrap().0;
    let url = format!("{head}/{name}");
    let outcome = async move {
        let store = PostgresStore::connect(&url).await.unwrap();
        assert_eq!(store.schema(), None);
        let (app, t, a) = app_on(store.clone(), Some(5)).await;
        app.invite(t, a, &plain("bob@acme.test")).await.unwrap();
        assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
        let timeout: String = sqlx::query_scalar("SHOW lock_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(timeout, "10s");
        let schema: String = sqlx::query_scalar(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'users'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(schema, "public");
        // Connecting again applies nothing twice.
        store.close().await;
        let again = PostgresStore::connect(&url).await.unwrap();
        assert_eq!(
            Tenantry::builder(again.clone())
                .build()
                .unwrap()
                .seat_usage(t)
                .await
                .unwrap()
                .used,
            2
        );
        again.close().await;
    };
    let result = tokio::spawn(outcome).await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&server)
        .await
        .unwrap();
    server.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_untouched() {
    let (store, guard) = common::fresh(2).await;
    sqlx::query(
        "INSERT INTO tenantry_migrations (version, description, checksum) \
         VALUES (9999, 'from the future', '\\x00')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    match PostgresStore::connect_in_schema(&common::url(), guard.name()).await {
        Err(OpenError::NewerSchema { version }) => assert_eq!(version, 9999),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    // Untouched: the future migration is still recorded, nothing else was applied.
    let opts: PgConnectOptions = common::url().parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM \"{}\".tenantry_migrations ORDER BY version",
        guard.name()
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(versions, [migrations(), vec![9999]].concat());
    pool.close().await;
}

/// sqlx's migrator over the first `n` of this crate's migrations: what an older tenantry ran.
async fn old_migrator(n: usize) -> sqlx::migrate::Migrator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut m = sqlx::migrate::Migrator::new(dir).await.unwrap();
    m.migrations = std::borrow::Cow::Owned(m.migrations[..n].to_vec());
    m
}

/// A pool whose connections work in `schema` (for sqlx's migrator, which takes no schema).
async fn pool_in(schema: &str) -> sqlx::PgPool {
    let opts: PgConnectOptions = common::url().parse().unwrap();
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts.options([("search_path", schema)]))
        .await
        .unwrap()
}

#[tokio::test]
async fn opening_an_older_database_adopts_its_bookkeeping_and_runs_the_pending_migrations() {
    let (store, guard) = common::fresh(2).await;
    store.close().await;
    let schema = guard.name().to_owned();
    // The schema exactly as an older tenantry left it: migration 1 applied by sqlx's own
    // migrator (recorded in _sqlx_migrations), a tenant with an admin, a user and an
    // invitation written by hand.
    let pool = pool_in(&schema).await;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\""
    ))
    .execute(&pool)
    .await
    .unwrap();
    old_migrator(1).await.run(&pool).await.unwrap();
    let (t, admin, bob) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    sqlx::raw_sql(&format!(
        "INSERT INTO tenants (id, name, created_at, version) VALUES ('{t}', 'Acme', 0, 2); \
         INSERT INTO users (tenant_id, id, email, email_key, role, status, crm_access, grants, created_at, login_key) \
         VALUES ('{t}', '{admin}', 'ada@acme.test', 'ada@acme.test', 'admin', 'active', true, '{{}}', 0, -9223372036854775808), \
                ('{t}', '{bob}', 'bob@acme.test', 'bob@acme.test', 'user', 'invited', false, '{{}}', 1, -9223372036854775808); \
         INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at) \
         VALUES ('\\x{}', '{t}', '{bob}', 'initial', 'pending', 1, 9000000000000000000); \
         INSERT INTO audit_log (tenant_id, seq, at, action, event) VALUES ('{t}', 1, 0, '\"x\"', '{{}}'), ('{t}', 2, 1, '\"x\"', '{{}}')",
        "ab".repeat(32)
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap();
    store.migrate().await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM tenantry_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, migrations());
    // The old bookkeeping held only tenantry's migration: it is gone.
    let sqlx_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!sqlx_table);
    // D24: an invitation from before migration 2 has had no failed attempt.
    let (t, bob) = (TenantId::from_uuid(t), UserId::from_uuid(bob));
    let invitations = store.invitations_of(t, bob).await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].failed_attempts, 0);
    // The audit log goes on after its last record (migration 3 set the tenant's head).
    let app = Tenantry::builder(store.clone()).build().unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    app.invite(t, UserId::from_uuid(admin), &plain("carol@acme.test"))
        .await
        .unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_log ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2, 3]);
    store.close().await;
}

#[tokio::test]
async fn host_sqlx_migrations_share_the_schema_with_tenantrys() {
    let (store, guard) = common::fresh(2).await;
    store.close().await;
    let schema = guard.name().to_owned();
    let pool = pool_in(&schema).await;
    // The host's own migrations, in a directory of their own: one before tenantry's, one
    // after.
    let dir = std::env::temp_dir().join(format!("{schema}_host"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("1_host_accounts.sql"),
        "CREATE TABLE host_accounts (id bigint PRIMARY KEY, tenant uuid)",
    )
    .unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap();
    store.migrate().await.unwrap();
    std::fs::write(
        dir.join("2_host_orders.sql"),
        "CREATE TABLE host_orders (id bigint PRIMARY KEY)",
    )
    .unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    // tenantry again (a restart): nothing to do, and the host's records are untouched.
    store.migrate().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let host: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(host, [1, 2]);
    let ours: Vec<i64> = sqlx::query_scalar("SELECT version FROM tenantry_migrations ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ours, migrations());
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         AND table_name IN ('host_accounts', 'host_orders', 'users', 'audit_heads') ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["audit_heads", "host_accounts", "host_orders", "users"]
    );
    // Both work.
    let (app, t, a) = app_on(store.clone(), None).await;
    app.invite(t, a, &plain("bob@acme.test")).await.unwrap();
    sqlx::query("INSERT INTO host_accounts (id, tenant) VALUES (1, $1)")
        .bind(t.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    pool.close().await;
}

#[tokio::test]
async fn a_host_pool_with_another_search_path_and_concurrent_migrations() {
    let (store, guard) = common::fresh(2).await;
    store.close().await;
    let schema = guard.name().to_owned();
    // The host's pool knows nothing of the schema: every statement names it.
    let opts: PgConnectOptions = common::url().parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap();
    // Four processes starting at once: each migrates, one applies, the others wait and find
    // nothing to do.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.migrate().await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let ours: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM \"{schema}\".tenantry_migrations"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ours, i64::try_from(migrations().len()).unwrap());
    let (app, t, a) = app_on(store.clone(), Some(5)).await;
    app.invite(t, a, &plain("bob@acme.test")).await.unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    let (search_path, in_schema): (String, i64) = sqlx::query_as(
        "SELECT current_setting('search_path'), \
                (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1)",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!search_path.contains(&schema), "{search_path}");
    assert!(in_schema >= 9, "{in_schema} tables in the schema");
    pool.close().await;
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    match PostgresStore::connect_in_schema(&common::url(), "bad\"name").await {
        Err(OpenError::InvalidSchemaName { name }) => assert_eq!(name, "bad\"name"),
        other => panic!("expected InvalidSchemaName, got {other:?}"),
    }
}

#[tokio::test]
async fn d13_audit_table_is_append_only_in_the_database() {
    let (store, _guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    app.invite(t, a, &plain("bob@acme.test")).await.unwrap();
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(before >= 3);
    for sql in [
        "UPDATE audit_log SET action = 'x'",
        "UPDATE audit_log SET seq = seq + 100 WHERE seq = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(before, after);
    // Appending still works, and the log reads back whole, in order.
    app.invite(t, a, &plain("carol@acme.test")).await.unwrap();
    let log = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    assert_eq!(log.len() as i64, after + 1);
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[tokio::test]
async fn d3_d4_d5_d8_d9_d11_the_schema_refuses_raw_writes() {
    let (store, _guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), Some(3)).await;
    for i in 0..2 {
        app.invite(t, a, &plain(&format!("u{i}@acme.test")))
            .await
            .unwrap();
    }
    let tid = t.as_uuid();
    let pool = store.pool();
    // Counters equal rows.
    let (seats, admins): (i64, i64) =
        sqlx::query_as("SELECT seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(tid)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((seats, admins), (3, 1));
    let insert = "INSERT INTO users (tenant_id, id, email, email_key, role, status, crm_access, grants, created_at, login_key) \
                  VALUES ($1, $2, $3, $3, 'user', 'invited', false, $4, 0, -9223372036854775808)";
    // D9: a raw insert at the limit is refused by the schema itself.
    let raw = sqlx::query(insert)
        .bind(tid)
        .bind(uuid::Uuid::now_v7())
        .bind("z@acme.test")
        .bind(Vec::<String>::new())
        .execute(pool)
        .await;
    assert!(raw.unwrap_err().to_string().contains("seat limit"));
    sqlx::query("UPDATE tenants SET user_limit = NULL WHERE id = $1")
        .bind(tid)
        .execute(pool)
        .await
        .unwrap();
    // D4: unknown, unsorted or repeated permission strings are refused.
    for grants in [
        vec!["users:fly"],
        vec!["users:view", "analytics:view"],
        vec!["users:view", "users:view"],
    ] {
        let raw = sqlx::query(insert)
            .bind(tid)
            .bind(uuid::Uuid::now_v7())
            .bind("p@acme.test")
            .bind(grants.clone())
            .execute(pool)
            .await;
        assert!(
            raw.unwrap_err().to_string().contains("users_grants_ok"),
            "{grants:?}"
        );
    }
    // D8: demoting the last active admin by hand is refused by the schema.
    let raw = sqlx::query("UPDATE users SET role = 'user' WHERE tenant_id = $1 AND role = 'admin'")
        .bind(tid)
        .execute(pool)
        .await;
    assert!(raw.unwrap_err().to_string().contains("tenants_last_admin"));
    // D5: an admin without CRM access is refused by the schema.
    let raw =
        sqlx::query("UPDATE users SET crm_access = false WHERE tenant_id = $1 AND role = 'admin'")
            .bind(tid)
            .execute(pool)
            .await;
    assert!(raw.unwrap_err().to_string().contains("users_admin_crm"));
    // D3: the unique constraint on (tenant, email key).
    let raw = sqlx::query(
        "UPDATE users SET email_key = 'u0@acme.test' WHERE tenant_id = $1 AND email_key = 'u1@acme.test'",
    )
    .bind(tid)
    .execute(pool)
    .await;
    assert!(raw.unwrap_err().to_string().contains("users_email_key"));
    // D11: a deleted user's id cannot come back.
    let u0 = app
        .list_users(
            t,
            ActorRef::System,
            &UserQuery {
                email_contains: Some("u0@".into()),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap()
        .items[0]
        .id;
    app.delete_user(t, a, u0).await.unwrap();
    let raw = sqlx::query(insert)
        .bind(tid)
        .bind(u0.as_uuid())
        .bind("again@acme.test")
        .bind(Vec::<String>::new())
        .execute(pool)
        .await;
    assert!(raw.unwrap_err().to_string().contains("user id reused"));
    // The counters followed every accepted raw change and none of the refused ones.
    let (seats, admins): (i64, i64) =
        sqlx::query_as("SELECT seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(tid)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((seats, admins), (2, 1));
}

/// A commit built by hand on the tenant's current state.
async fn change_on(store: &PostgresStore, t: TenantId, writes: Vec<Write>, seats: i32) -> Change {
    let state = store.tenant(t).await.unwrap().unwrap();
    Change {
        tenant_id: t,
        expected_version: state.counters.version,
        counters: Counters {
            version: state.counters.version + 1,
            seats_used: state.counters.seats_used.wrapping_add_signed(seats),
            active_admins: state.counters.active_admins,
        },
        writes,
        events: Vec::new(),
    }
}

fn conflict(r: Result<(), StoreError>) -> Constraint {
    match r {
        Err(StoreError::Conflict { constraint }) => constraint,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn d16_second_line_conflicts_name_their_constraint() {
    let (store, _guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), Some(2)).await;
    let bob = app
        .invite(t, a, &plain("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let admin = store.user(t, a).await.unwrap().unwrap();
    let fresh_user = |address: &str| User {
        id: UserId::from_uuid(uuid::Uuid::now_v7()),
        email: Email::parse(address).unwrap(),
        ..bob.clone()
    };
    // A stale version is refused before anything is written.
    let mut stale = change_on(&store, t, vec![], 0).await;
    stale.expected_version -= 1;
    assert!(matches!(
        store.commit(&stale, &[]).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    // D9 at the limit (2 of 2): the trigger refuses.
    let c = change_on(
        &store,
        t,
        vec![Write::InsertUser(fresh_user("c@acme.test"))],
        1,
    )
    .await;
    assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::SeatLimit);
    app.set_user_limit(t, None).await.unwrap();
    // D3: the same email key.
    let c = change_on(
        &store,
        t,
        vec![Write::InsertUser(fresh_user("BOB@acme.test"))],
        1,
    )
    .await;
    assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::UserEmail);
    // The same id.
    let c = change_on(
        &store,
        t,
        vec![Write::InsertUser(User {
            email: Email::parse("other@acme.test").unwrap(),
            ..bob.clone()
        })],
        1,
    )
    .await;
    assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::UserId);
    // D8: demoting the only active admin.
    let c = change_on(
        &store,
        t,
        vec![Write::UpdateUser(User {
            role: Role::User,
            ..admin.clone()
        })],
        0,
    )
    .await;
    assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::LastAdmin);
    // Counters that disagree with the rows.
    let c = change_on(
        &store,
        t,
        vec![Write::InsertUser(fresh_user("d@acme.test"))],
        0,
    )
    .await;
    assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::Counters);
    // A row that is not there.
    let c = change_on(
        &store,
        t,
        vec![Write::UpdateUser(fresh_user("ghost@acme.test"))],
        0,
    )
    .await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::MissingRow
    );
    // Nothing of the refused changes was written.
    let state = store.tenant(t).await.unwrap().unwrap();
    assert_eq!(state.counters.seats_used, 2);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn d16_a_commit_waiting_past_the_lock_timeout_is_busy() {
    let (store, guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    // A second store on the same schema whose commits give up after 100 ms of waiting.
    let opts: PgConnectOptions = common::url().parse().unwrap();
    let impatient = PostgresStore::connect_in_schema_with(
        PgPoolOptions::new().max_connections(2),
        opts.options([("lock_timeout", "100ms")]),
        guard.name(),
    )
    .await
    .unwrap();
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(t.as_uuid())
        .execute(&mut *holder)
        .await
        .unwrap();
    let c = change_on(&impatient, t, vec![], 0).await;
    match impatient.commit(&c, &[]).await {
        Err(e @ StoreError::Busy { .. }) => assert!(e.is_retryable()),
        other => panic!("expected Busy, got {other:?}"),
    }
    // Through the service: Busy is retried, then reported as contention (D16).
    let app2 = Tenantry::builder(impatient.clone())
        .settings(tenantry_service::Settings {
            max_attempts: 3,
            ..tenantry_service::Settings::default()
        })
        .build()
        .unwrap();
    match app2.invite(t, a, &plain("bob@acme.test")).await {
        Err(tenantry_service::Error::Contention { attempts }) => assert_eq!(attempts, 3),
        other => panic!("expected Contention, got {other:?}"),
    }
    holder.rollback().await.unwrap();
    app2.invite(t, a, &plain("bob@acme.test")).await.unwrap();
    assert_eq!(app.seat_usage(t).await.unwrap().used, 2);
    impatient.close().await;
}

/// Deterministic randomness, so two services draw the same ids.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Random for Counter {
    fn fill(&self, buf: &mut [u8]) -> Result<(), String> {
        let mut x = self.0.fetch_add(1, Ordering::SeqCst) ^ 0x9E37_79B9_7F4A_7C15;
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Ok(())
    }
}

#[tokio::test]
async fn d18_pages_follow_the_reference_order_whatever_the_collation() {
    let (pg, _guard) = common::fresh(4).await;
    let stores: [Arc<dyn Store>; 2] = [Arc::new(pg), Arc::new(InMemoryStore::new())];
    let mut listings = Vec::new();
    for store in stores {
        let clock = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
        let mailer = InMemoryMailer::new();
        let app = Tenantry::builder(store)
            .clock(clock.clone())
            .mailer(mailer.clone())
            .random(Counter::default())
            .build()
            .unwrap();
        let (t, a) = app
            .create_tenant("Acme", None, Email::parse("admin@acme.test").unwrap())
            .await
            .unwrap();
        // Addresses whose byte order differs from a linguistic collation's.
        let locals = [
            "a.b", "ab", "a-b", "a_b", "A1", "a0", "zz", "Z.a", "b", "b-", "b.c", "_x", "x_", "0",
            "9z", "a.c", "a.b.x", "ab-c", "abc", "ab.c",
        ];
        for (i, local) in locals.iter().enumerate() {
            app.invite(t, a, &plain(&format!("{local}@acme.test")))
                .await
                .unwrap();
            if i % 3 == 0 {
                clock.advance(time::Duration::seconds(1));
            }
        }
        // Some accept (in a shuffled order, at different times), some never sign in.
        for i in [7usize, 2, 15, 0, 11, 4, 19, 9] {
            clock.advance(time::Duration::seconds(if i % 2 == 0 { 1 } else { 0 }));
            let to = format!("{}@acme.test", locals[i]);
            let message = mailer
                .sent()
                .into_iter()
                .find(|m| m.to == to)
                .expect("the invitation mail");
            let token = tenantry_service::token_from_link(&message.text).unwrap();
            app.accept_invitation(&token, &to).await.unwrap();
        }
        let mut seen = Vec::new();
        for sort in [SortBy::Email, SortBy::CreatedAt, SortBy::LastLogin] {
            for descending in [false, true] {
                for status in [None, Some(Status::Invited)] {
                    let mut q = UserQuery {
                        sort,
                        descending,
                        status,
                        limit: 3,
                        ..UserQuery::default()
                    };
                    let mut order = Vec::new();
                    loop {
                        let page = app.list_users(t, ActorRef::System, &q).await.unwrap();
                        order.extend(page.items.iter().map(|u| u.id));
                        match page.next {
                            Some(c) => q.after = Some(c.to_string().parse().unwrap()),
                            None => break,
                        }
                    }
                    seen.push((sort, descending, status, order));
                }
            }
        }
        listings.push(seen);
    }
    assert_eq!(listings[0], listings[1]);
}

#[tokio::test]
async fn d6_subject_is_the_user_with_its_templates_current_permissions() {
    let (store, _guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    let template = app
        .create_template(t, a, "Agents", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap();
    let with = app
        .invite(
            t,
            a,
            &InviteRequest {
                template_id: Some(template.id),
                grants: Permissions::ANALYTICS_VIEW,
                ..plain("agent@acme.test")
            },
        )
        .await
        .unwrap()
        .user;
    let without = app
        .invite(t, a, &plain("bob@acme.test"))
        .await
        .unwrap()
        .user;
    for user in [&with, &without] {
        let template = match user.template_id {
            Some(id) => store.template(t, id).await.unwrap(),
            None => None,
        };
        assert_eq!(
            store.subject(t, user.id).await.unwrap(),
            Some(tenantry_core::Subject::of(user, template.as_ref()))
        );
    }
    // The template's current permissions, read at the check (D6).
    app.edit_template(
        t,
        a,
        template.id,
        &tenantry_service::TemplateEdit {
            permissions: Some(Permissions::SETTINGS_VIEW),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let subject = store.subject(t, with.id).await.unwrap().unwrap();
    assert_eq!(
        subject.template,
        Some((template.id, Permissions::SETTINGS_VIEW))
    );
    // D15: another tenant's id, or none, is no subject.
    let (other, _) = app
        .create_tenant("Other", None, Email::parse("x@other.test").unwrap())
        .await
        .unwrap();
    assert_eq!(store.subject(other, with.id).await.unwrap(), None);
    assert_eq!(
        store
            .subject(t, UserId::from_uuid(uuid::Uuid::now_v7()))
            .await
            .unwrap(),
        None
    );
}

// ------------------------------------------------------------------------ D24, D25, D26

/// A mailer that keeps every message it is handed, delivered or not, and refuses one
/// address for good (a 5xx answer).
#[derive(Debug, Clone, Default)]
struct RefusingMailer {
    handed: Arc<std::sync::Mutex<Vec<tenantry_service::Message>>>,
    refuse: String,
}

#[async_trait::async_trait]
impl tenantry_service::Mailer for RefusingMailer {
    async fn send(
        &self,
        message: &tenantry_service::Message,
    ) -> Result<(), tenantry_service::MailError> {
        self.handed.lock().unwrap().push(message.clone());
        if message.to == self.refuse {
            Err(tenantry_service::MailError::Permanent(
                "550 no such mailbox".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl RefusingMailer {
    /// The token of the last message handed over for `to`.
    fn token_for(&self, to: &str) -> String {
        let handed = self.handed.lock().unwrap();
        let m = handed
            .iter()
            .rev()
            .find(|m| m.to == to)
            .unwrap_or_else(|| panic!("no message was handed over for {to}"));
        tenantry_service::token_from_link(&m.text).unwrap()
    }
}

/// Every `table.column` of the store's schema (every table, every column, whatever its
/// type) with a value containing `needle`: bytea by its bytes, anything else by its text.
async fn columns_holding(store: &PostgresStore, needle: &str) -> Vec<String> {
    let pool = store.pool();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text \
         FROM information_schema.columns c \
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        columns
            .iter()
            .any(|(t, c, _)| t == "outbox" && c == "body_text")
    );
    let mut found = Vec::new();
    for (table, column, kind) in columns {
        let test = if kind == "bytea" {
            format!("position(convert_to($1, 'UTF8') in \"{column}\") > 0")
        } else {
            format!("strpos(\"{column}\"::text, $1) > 0")
        };
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{table}\" WHERE {test}"))
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap();
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

/// The token, and its random part alone (the tenant prefix is no secret).
fn secrets(token: &str) -> [String; 2] {
    let (_, random) = token.split_once('.').unwrap();
    [token.to_owned(), random.to_owned()]
}

fn no_inline() -> tenantry_service::DeliverySettings {
    tenantry_service::DeliverySettings {
        inline: false,
        ..tenantry_service::DeliverySettings::default()
    }
}

/// D26: once a message is sent, or has failed for good, no row of the database holds its
/// token (the accept link), in any table or column: through the dispatcher, and through
/// inline delivery.
#[tokio::test]
async fn d26_no_stored_row_holds_the_token_after_send_or_permanent_failure() {
    let (store, _guard) = common::fresh(4).await;
    let mailer = RefusingMailer {
        refuse: "carol@acme.test".into(),
        ..RefusingMailer::default()
    };
    // Through the dispatcher: the mail waits in the outbox first.
    let app = Tenantry::builder(store.clone())
        .mailer(mailer.clone())
        .delivery(no_inline())
        .build()
        .unwrap();
    let (t, a) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    for to in ["bob@acme.test", "carol@acme.test"] {
        app.invite(t, a, &plain(to)).await.unwrap();
    }
    // Before delivery the outbox rows hold each link (the store's rows: the service lists
    // messages without bodies): the scan finds a stored token.
    let queued = store.outbox(t, true, 10).await.unwrap();
    assert_eq!(queued.len(), 2);
    for record in &queued {
        let token = tenantry_service::token_from_link(&record.message.text).unwrap();
        for secret in secrets(&token) {
            let found = columns_holding(&store, &secret).await;
            assert!(found.contains(&"outbox.body_text".to_owned()), "{found:?}");
            assert!(found.contains(&"outbox.body_html".to_owned()), "{found:?}");
        }
    }
    let report = app.dispatch(t).await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 1), "{report:?}");
    let mut tokens = vec![
        mailer.token_for("bob@acme.test"),
        mailer.token_for("carol@acme.test"),
    ];
    for record in &queued {
        assert!(
            tokens.contains(&tenantry_service::token_from_link(&record.message.text).unwrap()),
            "the mailer was handed the queued links"
        );
    }
    // Through inline delivery (the default), in another tenant of the same database.
    let inline = Tenantry::builder(store.clone())
        .mailer(mailer.clone())
        .build()
        .unwrap();
    let (t2, a2) = inline
        .create_tenant("Beta", None, Email::parse("ada@beta.test").unwrap())
        .await
        .unwrap();
    for to in ["dan@beta.test", "carol@acme.test"] {
        inline.invite(t2, a2, &plain(to)).await.unwrap();
    }
    inline.dispatch(t2).await.unwrap();
    tokens.push(mailer.token_for("dan@beta.test"));
    tokens.push(mailer.token_for("carol@acme.test"));
    // Every message is sent or failed for good, and no column of any row holds a token.
    for tenant in [t, t2] {
        let records = store.outbox(tenant, false, 10).await.unwrap();
        assert_eq!(records.len(), 2);
        let mut states: Vec<&str> = records
            .iter()
            .map(|r| match r.state {
                tenantry_service::DeliveryState::Sent { .. } => "sent",
                tenantry_service::DeliveryState::Failed { .. } => "failed",
                tenantry_service::DeliveryState::Pending => "pending",
            })
            .collect();
        states.sort_unstable();
        assert_eq!(states, ["failed", "sent"], "{records:?}");
        for r in &records {
            assert!(
                r.message.text.is_empty() && r.message.html.is_empty(),
                "{r:?}"
            );
        }
    }
    assert_eq!(tokens.len(), 4);
    for token in &tokens {
        for secret in secrets(token) {
            let found = columns_holding(&store, &secret).await;
            assert!(found.is_empty(), "a stored row holds a token: {found:?}");
        }
    }
}

/// D24: the failed-attempt count and the revocation it ends in are stored (they survive a
/// reconnect), only on a pending invitation of the change's tenant, and a refused attempt
/// writes nothing of its change.
#[tokio::test]
async fn d24_failed_attempts_survive_reconnect() {
    use tenantry_core::{Invitation, InvitationState, TokenHash};
    let (store, guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    let bob = app
        .invite(t, a, &plain("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let (other, _) = app
        .create_tenant("Other", None, Email::parse("x@other.test").unwrap())
        .await
        .unwrap();
    drop(app);
    let invitation = store.invitations_of(t, bob.id).await.unwrap()[0].clone();
    assert_eq!(invitation.failed_attempts, 0);
    let hash = invitation.token_hash;
    let fail = |failed_attempts, revoke| Write::FailAcceptAttempt {
        token_hash: hash,
        failed_attempts,
        revoke,
    };
    let c = change_on(&store, t, vec![fail(1, false)], 0).await;
    store.commit(&c, &[]).await.unwrap();
    store.close().await;

    let url = common::url();
    let reconnect = || PostgresStore::connect_in_schema(&url, guard.name());
    let store = reconnect().await.unwrap();
    let after = store.invitation(t, &hash).await.unwrap().unwrap();
    assert_eq!(
        after,
        Invitation {
            failed_attempts: 1,
            ..invitation.clone()
        }
    );
    assert_eq!(after.state, InvitationState::Pending);
    // An unknown token fails the whole change: the user edit before it is not written.
    let state = store.tenant(t).await.unwrap().unwrap();
    let c = change_on(
        &store,
        t,
        vec![
            Write::UpdateUser(User {
                grants: Permissions::USERS_VIEW,
                ..bob.clone()
            }),
            Write::FailAcceptAttempt {
                token_hash: TokenHash([7; 32]),
                failed_attempts: 1,
                revoke: false,
            },
        ],
        0,
    )
    .await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::MissingRow
    );
    assert_eq!(store.tenant(t).await.unwrap().unwrap(), state);
    assert_eq!(store.user(t, bob.id).await.unwrap().unwrap(), bob);
    // Another tenant's change does not reach this tenant's invitation.
    let c = change_on(&store, other, vec![fail(2, false)], 0).await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::MissingRow
    );
    assert_eq!(
        store
            .invitation(t, &hash)
            .await
            .unwrap()
            .unwrap()
            .failed_attempts,
        1
    );
    // The last allowed attempt revokes the token.
    let c = change_on(&store, t, vec![fail(5, true)], 0).await;
    store.commit(&c, &[]).await.unwrap();
    store.close().await;

    let store = reconnect().await.unwrap();
    let after = store.invitation(t, &hash).await.unwrap().unwrap();
    assert_eq!(
        (after.failed_attempts, after.state),
        (5, InvitationState::Revoked)
    );
    // A revoked invitation counts no more attempts.
    let c = change_on(&store, t, vec![fail(6, false)], 0).await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::MissingRow
    );
    assert_eq!(store.invitation(t, &hash).await.unwrap().unwrap(), after);
    // The column as stored, and its CHECK.
    let (n, state): (i64, String) =
        sqlx::query_as("SELECT failed_attempts, state FROM invitations WHERE token_hash = $1")
            .bind(&hash.0[..])
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((n, state.as_str()), (5, "revoked"));
    let raw = sqlx::query("UPDATE invitations SET failed_attempts = -1")
        .execute(store.pool())
        .await;
    assert!(
        raw.unwrap_err()
            .to_string()
            .contains("invitations_failed_attempts_ok")
    );
    store.close().await;
}

/// D25: `claim_message` claims one pending, due message once (also when many claim it at
/// the same moment); while its lease holds, and once the message is sent or failed, it
/// claims nothing.
#[tokio::test]
async fn d25_claim_message_claims_a_due_message_once() {
    use tenantry_store::DeliveryUpdate;
    let (store, _guard) = common::fresh(8).await;
    let clock = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
    let app = Tenantry::builder(store.clone())
        .clock(clock.clone())
        .delivery(no_inline())
        .build()
        .unwrap();
    let (t, a) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let (other, _) = app
        .create_tenant("Other", None, Email::parse("x@other.test").unwrap())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for to in ["bob@acme.test", "carol@acme.test", "dan@acme.test"] {
        ids.push(app.invite(t, a, &plain(to)).await.unwrap().message_id);
    }
    let (bob, carol, dan) = (ids[0], ids[1], ids[2]);
    let now = app.now();
    let lease = now + time::Duration::minutes(2);
    let claimed = store
        .claim_message(t, bob, now, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.message.id, bob);
    assert_eq!(claimed.state, tenantry_service::DeliveryState::Pending);
    assert_eq!(claimed.next_attempt_at, lease);
    assert!(claimed.message.text.contains("token="));
    // The lease holds: no second claim, by this call or by the dispatcher's. And the
    // dispatcher's claim of one takes one, of the two due (it took both, before its due set
    // became a MATERIALIZED CTE).
    assert_eq!(store.claim_message(t, bob, now, lease).await.unwrap(), None);
    let due = store.claim_due_mail(t, now, lease, 1).await.unwrap();
    assert_eq!(due.len(), 1, "a claim of one takes one");
    // carol's and dan's ids come from the same millisecond: either may be the one taken.
    let taken = due[0].message.id;
    assert!(
        taken == carol || taken == dan,
        "{taken} is one of the two due"
    );
    let rest = if taken == carol { dan } else { carol };
    // Eight claims of the other message at once: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_message(t, rest, now, lease).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for r in join_all(racers).await {
        won += usize::from(r.is_some());
    }
    assert_eq!(won, 1);
    // Leased, another tenant's, or no such message: nothing.
    let unknown = tenantry_core::MessageId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(
        store.claim_message(t, taken, now, lease).await.unwrap(),
        None
    );
    assert_eq!(
        store.claim_message(other, bob, lease, lease).await.unwrap(),
        None
    );
    assert_eq!(
        store.claim_message(t, unknown, lease, lease).await.unwrap(),
        None
    );
    // Once the lease is over, it may be claimed again.
    let later = lease + time::Duration::minutes(2);
    assert!(
        store
            .claim_message(t, bob, lease, later)
            .await
            .unwrap()
            .is_some()
    );
    // Sent, or failed for good: never claimed again, and the bodies are gone (D26).
    store
        .record_delivery(t, bob, &DeliveryUpdate::Sent { at: lease })
        .await
        .unwrap();
    store
        .record_delivery(
            t,
            carol,
            &DeliveryUpdate::Failed {
                reason: "550 no such mailbox".into(),
                at: lease,
            },
        )
        .await
        .unwrap();
    let far = later + time::Duration::days(30);
    for id in [bob, carol] {
        assert_eq!(store.claim_message(t, id, far, far).await.unwrap(), None);
        let r = store.outbox_message(t, id).await.unwrap().unwrap();
        assert!(
            r.message.text.is_empty() && r.message.html.is_empty(),
            "{r:?}"
        );
    }
}

/// Awaits every (already running) task, in order.
async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn d27_a_sign_in_never_waits_for_a_commit_holding_the_tenant_row() {
    let (store, guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    let before = store.tenant(t).await.unwrap().unwrap();
    // A second store whose statements give up after 200 ms of waiting for a lock.
    let opts: PgConnectOptions = common::url().parse().unwrap();
    let impatient = PostgresStore::connect_in_schema_with(
        PgPoolOptions::new().max_connections(2),
        opts.options([("lock_timeout", "200ms")]),
        guard.name(),
    )
    .await
    .unwrap();
    let app2 = Tenantry::builder(impatient.clone()).build().unwrap();
    // A commit in flight: the tenant row locked as tenantry_commit locks it.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind(t.as_uuid())
        .execute(&mut *holder)
        .await
        .unwrap();
    let signed = app2.record_sign_in(t, a).await.unwrap();
    assert!(signed.last_login.is_some());
    holder.rollback().await.unwrap();
    // Outside the version and the counters (D27), and audited with the next seq (D13).
    let after = store.tenant(t).await.unwrap().unwrap();
    assert_eq!(after.counters, before.counters);
    let log = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // A suspended user's sign-in is refused and writes nothing.
    let bob = app
        .invite(t, a, &plain("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let refused = store
        .record_sign_in(t, bob.id, time::OffsetDateTime::now_utc(), &log[0].event)
        .await
        .unwrap();
    assert_eq!(
        refused,
        tenantry_store::SignInOutcome::NotActive(Status::Invited)
    );
    let nobody = UserId::from_uuid(uuid::Uuid::now_v7());
    let missing = store
        .record_sign_in(t, nobody, time::OffsetDateTime::now_utc(), &log[0].event)
        .await
        .unwrap();
    assert_eq!(missing, tenantry_store::SignInOutcome::NotFound);
    let log_after = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    assert_eq!(
        log_after.len(),
        log.len() + 1,
        "only bob's invite was added"
    );
    impatient.close().await;
}

#[tokio::test]
async fn d17_a_queued_message_keeps_its_text_and_html_as_sent() {
    let (store, _guard) = common::fresh(2).await;
    let app = Tenantry::builder(store.clone())
        .delivery(no_inline())
        .build()
        .unwrap();
    let (t, a) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let invited = app.invite(t, a, &plain("bob@acme.test")).await.unwrap();
    let record = store
        .outbox_message(t, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    let token = invited.accept_link.token().unwrap();
    assert_eq!(record.message.to, "bob@acme.test");
    assert!(!record.message.subject.is_empty());
    assert!(
        record.message.text.contains(&token),
        "{:?}",
        record.message.text.len()
    );
    assert!(record.message.html.contains(&token));
    assert_eq!(
        tenantry_service::token_from_link(&record.message.text).as_deref(),
        Some(token.as_str())
    );
}

/// A user `u` with this identity id (checked or not: the database checks it again).
fn with_identity(u: &User, identity: &str) -> User {
    User {
        identity: Some(tenantry_core::IdentityId::from_stored(identity)),
        ..u.clone()
    }
}

#[tokio::test]
async fn d28_an_identity_is_unique_per_tenant_and_shared_across_tenants() {
    let (store, _guard) = common::fresh(2).await;
    // "Zeta" sorts before "acme" in byte order (and after it in most collations).
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let ada = Email::parse("ada@acme.test").unwrap();
    let (t1, a1) = app.create_tenant("acme", None, ada.clone()).await.unwrap();
    let (t2, a2) = app.create_tenant("Zeta", None, ada.clone()).await.unwrap();
    let bob = app
        .invite(t1, a1, &plain("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let admin1 = store.user(t1, a1).await.unwrap().unwrap();
    let admin2 = store.user(t2, a2).await.unwrap().unwrap();
    assert_eq!(admin1.identity, None);
    let sub = "oidc|ada";
    let c = change_on(
        &store,
        t1,
        vec![Write::UpdateUser(with_identity(&admin1, sub))],
        0,
    )
    .await;
    store.commit(&c, &[]).await.unwrap();
    // A second holder in the same tenant: refused by the unique index, by update or insert.
    let c = change_on(
        &store,
        t1,
        vec![Write::UpdateUser(with_identity(&bob, sub))],
        0,
    )
    .await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::UserIdentity
    );
    let carol = User {
        id: UserId::from_uuid(uuid::Uuid::now_v7()),
        email: Email::parse("carol@acme.test").unwrap(),
        ..with_identity(&bob, sub)
    };
    let c = change_on(&store, t1, vec![Write::InsertUser(carol)], 1).await;
    assert_eq!(
        conflict(store.commit(&c, &[]).await),
        Constraint::UserIdentity
    );
    // The CHECK refuses an empty or overlong id even when the application would not.
    for bad in [String::new(), "x".repeat(256)] {
        let c = change_on(
            &store,
            t1,
            vec![Write::UpdateUser(with_identity(&bob, &bad))],
            0,
        )
        .await;
        assert_eq!(conflict(store.commit(&c, &[]).await), Constraint::Schema);
    }
    // 255 bytes is allowed, and ids compare byte for byte (case matters).
    let long = "é".repeat(127) + "x";
    assert_eq!(long.len(), 255);
    let c = change_on(
        &store,
        t1,
        vec![Write::UpdateUser(with_identity(&bob, &long))],
        0,
    )
    .await;
    store.commit(&c, &[]).await.unwrap();
    // The same id in another tenant is fine.
    let c = change_on(
        &store,
        t2,
        vec![Write::UpdateUser(with_identity(&admin2, sub))],
        0,
    )
    .await;
    store.commit(&c, &[]).await.unwrap();

    let id = tenantry_core::IdentityId::parse(sub).unwrap();
    let found1 = store.user_by_identity(t1, &id).await.unwrap().unwrap();
    assert_eq!((found1.id, found1.identity.clone()), (a1, Some(id.clone())));
    assert_eq!(
        store.user_by_identity(t2, &id).await.unwrap().unwrap().id,
        a2
    );
    let upper = tenantry_core::IdentityId::parse("OIDC|ADA").unwrap();
    assert_eq!(store.user_by_identity(t1, &upper).await.unwrap(), None);
    let long_id = tenantry_core::IdentityId::parse(&long).unwrap();
    assert_eq!(
        store
            .user_by_identity(t1, &long_id)
            .await
            .unwrap()
            .unwrap()
            .id,
        bob.id
    );

    // Memberships: by tenant name in byte order, then after the cursor.
    let person = tenantry_store::Person::Identity(id.clone());
    let all = store.memberships(&person, None, 10).await.unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|m| (m.tenant_name.as_str(), m.tenant_id, m.user_id))
        .collect();
    assert_eq!(seen, [("Zeta", t2, a2), ("acme", t1, a1)]);
    assert_eq!(all[1].identity, Some(id.clone()));
    assert_eq!(all[1].role, Role::Admin);
    assert_eq!(all[1].email, ada);
    let rest = store
        .memberships(&person, Some(&all[0].cursor()), 10)
        .await
        .unwrap();
    assert_eq!(rest, all[1..].to_vec());
    assert_eq!(store.memberships(&person, None, 1).await.unwrap(), all[..1]);
    let by_email = store
        .memberships(&tenantry_store::Person::Email(ada.clone()), None, 10)
        .await
        .unwrap();
    assert_eq!(by_email, all);
    let nobody = tenantry_store::Person::Identity(upper);
    assert!(
        store
            .memberships(&nobody, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn d28_a_database_at_migration_4_with_users_upgrades_with_no_identities() {
    let (store, guard) = common::fresh(2).await;
    store.close().await;
    let schema = guard.name().to_owned();
    let pool = pool_in(&schema).await;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\""
    ))
    .execute(&pool)
    .await
    .unwrap();
    old_migrator(4).await.run(&pool).await.unwrap();
    let (t1, t2, a1, a2) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    sqlx::raw_sql(&format!(
        "INSERT INTO tenants (id, name, created_at, version) VALUES ('{t1}', 'Acme', 0, 1), ('{t2}', 'Beta', 0, 1); \
         INSERT INTO users (tenant_id, id, email, email_key, role, status, crm_access, grants, created_at, login_key) \
         VALUES ('{t1}', '{a1}', 'Ada@acme.test', 'ada@acme.test', 'admin', 'active', true, '{{}}', 0, -9223372036854775808), \
                ('{t2}', '{a2}', 'ada@acme.test', 'ada@acme.test', 'admin', 'active', true, '{{}}', 0, -9223372036854775808)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap();
    store.migrate().await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM tenantry_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, migrations());
    let with_identity: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE identity IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(with_identity, 0);
    let (t1, a1) = (TenantId::from_uuid(t1), UserId::from_uuid(a1));
    let (t2, a2) = (TenantId::from_uuid(t2), UserId::from_uuid(a2));
    assert_eq!(store.user(t1, a1).await.unwrap().unwrap().identity, None);
    // The old users are found by address across tenants ...
    let ada = Email::parse("ada@acme.test").unwrap();
    let page = store
        .memberships(&tenantry_store::Person::Email(ada), None, 10)
        .await
        .unwrap();
    let seen: Vec<_> = page.iter().map(|m| (m.tenant_id, m.user_id)).collect();
    assert_eq!(seen, [(t1, a1), (t2, a2)]);
    // ... and take an identity through the service (an audited change, the new commit).
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let sub = tenantry_core::IdentityId::parse("oidc|ada").unwrap();
    let user = app
        .set_identity(t1, a1, a1, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(user.identity, Some(sub.clone()));
    assert_eq!(
        store.user_by_identity(t1, &sub).await.unwrap().unwrap().id,
        a1
    );
    assert_eq!(store.user_by_identity(t2, &sub).await.unwrap(), None);
    store.close().await;
}

/// The plan of `sql` (one line per node).
async fn plan(pool: &sqlx::PgPool, sql: &str) -> String {
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
        .fetch_all(pool)
        .await
        .unwrap();
    lines.join("\n")
}

#[tokio::test]
async fn d28_memberships_read_an_index_never_a_scan_of_tenants_or_users() {
    let (store, _guard) = common::fresh(2).await;
    let pool = store.pool().clone();
    // 3000 tenants with an admin each; one person is a user of three of them.
    sqlx::raw_sql(
        "INSERT INTO tenants (id, name, created_at) \
         SELECT gen_random_uuid(), 'T' || lpad(i::text, 5, '0'), 0 FROM generate_series(1, 3000) i; \
         INSERT INTO users (tenant_id, id, email, email_key, role, status, crm_access, grants, \
                            created_at, login_key, identity) \
         SELECT id, gen_random_uuid(), e, e, 'admin', 'active', true, '{}', 0, -9223372036854775808, \
                CASE WHEN n % 1000 = 0 THEN 'oidc|p' ELSE 'oidc|' || n END \
         FROM (SELECT id, n, CASE WHEN n % 1000 = 0 THEN 'p@x.test' ELSE 'u' || n || '@x.test' END AS e \
               FROM (SELECT id, row_number() OVER (ORDER BY name) AS n FROM tenants) r) s; \
         ANALYZE tenants; ANALYZE users",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The statements of `memberships` (crates/postgres/src/read.rs), with their values.
    let cols = tenantry_store::sql::USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    for (column, key, index) in [
        ("email_key", "p@x.test", "users_by_email_key"),
        ("identity", "oidc|p", "users_identity_key"),
    ] {
        let head = format!(
            "SELECT t.name AS tenant_name, {cols} FROM users u \
             JOIN tenants t ON t.id = u.tenant_id WHERE u.{column} = '{key}'"
        );
        for sql in [
            format!("{head} ORDER BY t.name COLLATE \"C\", t.id LIMIT 51"),
            format!(
                "{head} AND (t.name COLLATE \"C\", t.id) > ('T01000' COLLATE \"C\", \
                 '00000000-0000-0000-0000-000000000000'::uuid) \
                 ORDER BY t.name COLLATE \"C\", t.id LIMIT 51"
            ),
        ] {
            let p = plan(&pool, &sql).await;
            assert!(p.contains(index), "{column}: expected {index} in\n{p}");
            assert!(
                p.contains("tenants_pkey"),
                "{column}: expected tenants_pkey in\n{p}"
            );
            assert!(!p.contains("Seq Scan"), "{column}: a scan in\n{p}");
        }
        let person = if column == "email_key" {
            tenantry_store::Person::Email(Email::parse(key).unwrap())
        } else {
            tenantry_store::Person::Identity(tenantry_core::IdentityId::parse(key).unwrap())
        };
        let names: Vec<String> = store
            .memberships(&person, None, 51)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.tenant_name)
            .collect();
        assert_eq!(names, ["T01000", "T02000", "T03000"]);
    }
    // user_by_identity reads the same unique index.
    let p = plan(
        &pool,
        &format!(
            "SELECT {} FROM users WHERE identity = 'oidc|p' AND tenant_id = (SELECT id FROM tenants WHERE name = 'T01000')",
            tenantry_store::sql::USER_COLUMNS
        ),
    )
    .await;
    assert!(p.contains("users_identity_key"), "{p}");
}

/// A pool whose connections get `search_path` from an `after_connect` hook (not from the
/// connect options, which the store's own connections copy anyway).
async fn pool_with_hook(schema: &str, max: u32) -> sqlx::PgPool {
    let opts: PgConnectOptions = common::url().parse().unwrap();
    // Named after the schema: the connections of this test's pools (and the store's own,
    // which copy the pool's options) are told apart from those of other tests.
    let opts = opts.application_name(schema);
    let set = format!("SET search_path TO \"{schema}\"");
    PgPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _meta| {
            let set = set.clone();
            Box::pin(async move {
                sqlx::Executor::execute(conn, set.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .unwrap()
}

/// The server pids of the connections that started after `since` (server time) with the
/// same application name as this pool's and whose last statement contains `needle`.
async fn backends_running(pool: &sqlx::PgPool, since: f64, needle: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND datname = current_database() AND application_name = current_setting('application_name') \
         AND extract(epoch FROM backend_start) >= $1 AND strpos(query, $2) > 0 ORDER BY pid",
    )
    .bind(since)
    .bind(needle)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn issue14_a_commit_runs_on_a_store_owned_connection_and_is_never_sent_twice() {
    let (store, guard) = common::fresh(2).await;
    let (app, t, _a) = app_on(store.clone(), None).await;
    let schema = guard.name().to_owned();
    store.close().await;
    drop(app);
    let admin = pool_with_hook(&schema, 1).await;
    let since: f64 = sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(&admin)
        .await
        .unwrap();
    let version = |admin: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT version FROM tenants WHERE id = $1")
            .bind(t.as_uuid())
            .fetch_one(&admin)
            .await
            .unwrap()
    };
    let pool = pool_with_hook(&schema, 2).await;
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap()
        .with_hot_connections(1);

    // The commit runs on the connection the store opened for its read of the tenant.
    let first = change_on(&store, t, vec![], 0).await;
    store.commit(&first, &[]).await.unwrap();
    let ran = backends_running(&admin, since, "tenantry_commit(").await;
    assert_eq!(ran.len(), 1, "one backend ran the commit: {ran:?}");
    assert_eq!(store.hot_connections(), 1);
    let at = version(admin.clone()).await;
    assert_eq!(u64::try_from(at).unwrap(), first.counters.version);

    // The server ends that connection before the next commit: the commit fails, is not
    // sent again (on the pool or anywhere), writes nothing, and the connection is dropped.
    let second = change_on(&store, t, vec![], 0).await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(ran[0])
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    let err = store.commit(&second, &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert_eq!(version(admin.clone()).await, at, "nothing was written");
    assert_eq!(store.hot_connections(), 0, "the broken connection is gone");

    // The same change again: committed once, on a new connection of the store's own.
    store.commit(&second, &[]).await.unwrap();
    assert_eq!(version(admin.clone()).await, at + 1);
    assert_eq!(store.hot_connections(), 1);
    let now = backends_running(&admin, since, "tenantry_commit(").await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], ran[0]);
    admin.close().await;
    store.close().await;
}

#[tokio::test]
async fn issue14_store_owned_connections_keep_the_pools_search_path_and_reconnect() {
    let (store, guard) = common::fresh(2).await;
    let (app, t, a) = app_on(store.clone(), None).await;
    let schema = guard.name().to_owned();
    store.close().await;
    drop(app);

    // A store without a schema: its statements name no schema, so its own connections must
    // have the search_path the host's hook gives the pool's.
    let pool = pool_with_hook(&schema, 2).await;
    let plain = PostgresStore::new(pool.clone());
    assert_eq!(plain.hot_connections(), 0);
    assert_eq!(plain.user(t, a).await.unwrap().unwrap().id, a);
    assert_eq!(plain.hot_connections(), 1);
    assert!(plain.subject(t, a).await.unwrap().is_some());
    assert_eq!(plain.hot_connections(), 1, "the idle connection is reused");
    plain.close().await;
    assert_eq!(plain.hot_connections(), 0);

    // A store in the schema: all busy -> the pool serves the rest.
    let pool = pool_with_hook(&schema, 4).await;
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap()
        .with_hot_connections(1);
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.subject(t, a).await.unwrap() })
        })
        .collect();
    for r in join_all(reads).await {
        assert_eq!(r.unwrap().user_id, a);
    }
    assert_eq!(store.hot_connections(), 1);

    // The server ends the store's connection: the next read still answers (sent again on
    // the pool), the broken connection is dropped, and a later read opens a new one. (A
    // store whose pool never ran the subject read, so only its own connection is ended.)
    store.close().await;
    let admin = pool_with_hook(&schema, 1).await;
    let since: f64 = sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(&admin)
        .await
        .unwrap();
    let pool = pool_with_hook(&schema, 2).await;
    let store = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap()
        .with_hot_connections(1);
    assert_eq!(store.subject(t, a).await.unwrap().unwrap().user_id, a);
    let needle = format!("\"{schema}\".users u WHERE u.tenant_id");
    let before = backends_running(&admin, since, &needle).await;
    assert_eq!(
        before.len(),
        1,
        "the store's own connection ran the subject read"
    );
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(before[0])
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    assert_eq!(store.subject(t, a).await.unwrap().unwrap().user_id, a);
    assert_eq!(store.hot_connections(), 0, "the broken connection is gone");
    assert_eq!(store.subject(t, a).await.unwrap().unwrap().user_id, a);
    assert_eq!(store.hot_connections(), 1);
    let after = backends_running(&admin, since, &needle).await;
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "{before:?} vs {after:?}"
    );
    admin.close().await;

    // None of the store's own: everything through the pool.
    let none = PostgresStore::new(pool.clone())
        .with_schema(&schema)
        .unwrap()
        .with_hot_connections(0);
    assert_eq!(none.subject(t, a).await.unwrap().unwrap().user_id, a);
    assert_eq!(none.hot_connections(), 0);
    store.close().await;
}
