//! Tests of what only the SQLite backend does: migrations, schema-level invariants, the
//! append-only audit table, and the typed refusal of a newer database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use tenantry_service::prelude::*;
use tenantry_service::{TemplateEdit, UserEdit};
use tenantry_sqlite::{OpenError, SqliteStore};

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantry-sqlite-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("t.db")
}

async fn app_on(
    store: SqliteStore,
) -> (
    Tenantry,
    tenantry_service::TenantId,
    tenantry_service::UserId,
) {
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
    assert_eq!(applied, 7);
}

#[tokio::test]
async fn opening_an_older_database_runs_the_pending_migrations() {
    let path = temp_db("older");
    let (t, bob) = {
        // Make a database exactly as schema version 1 left it, with an invitation in it:
        // undo migrations 2, 4, 5 (which dropped what 3 made), 6 and 7.
        let store = SqliteStore::open(&path).await.unwrap();
        let (app, t, a) = app_on(store.clone()).await;
        let bob = app
            .invite(t, a, &invite_req("bob@acme.test", Permissions::empty()))
            .await
            .unwrap()
            .user
            .id;
        drop(app);
        for undo in [
            "DROP INDEX outbox_by_tenant_due",
            "ALTER TABLE invitations DROP COLUMN failed_attempts",
            "DROP INDEX tenants_by_name",
            "DROP INDEX users_identity",
            "DROP INDEX users_by_email_key",
            "ALTER TABLE users DROP COLUMN identity",
            "DELETE FROM _sqlx_migrations WHERE version IN (2, 3, 4, 5, 6, 7)",
        ] {
            sqlx::query(undo).execute(store.pool()).await.unwrap();
        }
        store.close().await;
        (t, bob)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7]);
    // D24: an invitation from before migration 4 has had no failed attempt.
    let invitations = tenantry_store::Store::invitations_of(&store, t, bob)
        .await
        .unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].failed_attempts, 0);
    let index: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'outbox_by_tenant_due'",
    )
    .fetch_optional(store.pool())
    .await
    .unwrap();
    assert_eq!(index.as_deref(), Some("outbox_by_tenant_due"));
    let guard: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'batch_guard'",
    )
    .fetch_optional(store.pool())
    .await
    .unwrap();
    assert_eq!(
        guard, None,
        "migration 3 made the guard table, 5 dropped it"
    );
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

fn invite_req(email: &str, grants: Permissions) -> InviteRequest {
    InviteRequest {
        email: Email::parse(email).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants,
    }
}

#[tokio::test]
async fn an_owned_database_excludes_every_other_store_until_closed() {
    let path = temp_db("claim");
    let owner = SqliteStore::open(&path).await.unwrap();
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(OpenError::InUse { .. })
    ));
    assert!(matches!(
        SqliteStore::open_shared(&path).await,
        Err(OpenError::InUse { .. })
    ));
    owner.close().await;
    // Shared stores coexist, and keep an owner out.
    let a = SqliteStore::open_shared(&path).await.unwrap();
    let b = SqliteStore::open_shared(&path).await.unwrap();
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(OpenError::InUse { .. })
    ));
    drop(a);
    drop(b);
    // Dropping releases the claim as closing does.
    let again = SqliteStore::open(&path).await.unwrap();
    drop(again);
    SqliteStore::open(&path).await.unwrap();
}

/// An app on `store` whose mail is recorded, with a tenant, its admin and one active user
/// holding `grants` (invited and accepted through the link).
async fn with_active_user(
    store: SqliteStore,
    grants: Permissions,
) -> (
    Tenantry,
    tenantry_service::TenantId,
    tenantry_service::UserId,
    tenantry_service::UserId,
) {
    let mail = InMemoryMailer::new();
    let app = Tenantry::builder(store)
        .mailer(mail.clone())
        .build()
        .unwrap();
    let (t, a) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    app.invite(t, a, &invite_req("bob@acme.test", grants))
        .await
        .unwrap();
    app.dispatch(t).await.unwrap();
    let sent = mail.sent();
    let token = tenantry_service::token_from_link(&sent.last().unwrap().text).unwrap();
    let bob = app
        .accept_invitation(&token, "bob@acme.test")
        .await
        .unwrap();
    (app, t, a, bob.id)
}

fn grants(g: Permissions) -> UserEdit {
    UserEdit {
        grants: Some(g),
        ..UserEdit::default()
    }
}

#[tokio::test]
async fn d6_shared_stores_see_each_others_changes_at_the_next_check() {
    let path = temp_db("shared");
    let (one, t, a, bob) = with_active_user(
        SqliteStore::open_shared(&path).await.unwrap(),
        Permissions::empty(),
    )
    .await;
    let two = Tenantry::builder(SqliteStore::open_shared(&path).await.unwrap())
        .build()
        .unwrap();
    let view = Permission::new(Category::Users, Action::View).into();
    for round in 0..20 {
        let g = if round % 2 == 0 {
            Permissions::USERS_VIEW
        } else {
            Permissions::empty()
        };
        one.edit_user(t, a, bob, &grants(g)).await.unwrap();
        let seen = two.authorize(t, bob, view).await.unwrap();
        assert_eq!(seen.is_allowed(), round % 2 == 0, "round {round}: {seen:?}");
    }
}

#[tokio::test]
async fn d6_the_owned_stores_cache_never_answers_with_a_replaced_permission() {
    let (app, t, a, bob) = with_active_user(
        SqliteStore::open(temp_db("cache")).await.unwrap(),
        Permissions::empty(),
    )
    .await;
    let edit = Permission::new(Category::Conversations, Action::Edit).into();
    let tpl = app
        .create_template(t, a, "Agents", Permissions::empty())
        .await
        .unwrap();
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            template_id: Some(Some(tpl.id)),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    for round in 0..20 {
        // Each check runs twice: the second is served from the cache the first filled.
        let held = round % 2 == 1;
        for _ in 0..2 {
            let d = app.authorize(t, bob, edit).await.unwrap();
            assert_eq!(d.is_allowed(), held, "round {round}: {d:?}");
        }
        // A template edit reaches the user at the next check (D6).
        let next = if held {
            Permissions::empty()
        } else {
            Permissions::CONVERSATIONS_EDIT
        };
        app.edit_template(
            t,
            a,
            tpl.id,
            &TemplateEdit {
                permissions: Some(next),
                ..TemplateEdit::default()
            },
        )
        .await
        .unwrap();
    }
    // Suspension and deletion reach the next check too.
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            status: Some(Status::Suspended),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    assert!(!app.authorize(t, bob, edit).await.unwrap().is_allowed());
    app.delete_user(t, a, bob).await.unwrap();
    assert!(!app.authorize(t, bob, edit).await.unwrap().is_allowed());
}

#[tokio::test]
async fn cancelled_requests_leave_no_open_transaction_and_nothing_stale() {
    let path = temp_db("cancel");
    let store = SqliteStore::open(&path).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let view = Permission::new(Category::Users, Action::View).into();
    let mut cancelled = 0;
    for i in 0..300u64 {
        // Cut requests short at every point from before their first read to after commit.
        let g = if i % 2 == 0 {
            Permissions::USERS_VIEW
        } else {
            Permissions::empty()
        };
        let (e, r) = (grants(g), invite_req(&format!("c{i}@acme.test"), g));
        let edit = app.edit_user(t, a, bob, &e);
        let invite = app.invite(t, a, &r);
        let wait = std::time::Duration::from_micros(i * 7 % 900);
        cancelled += usize::from(tokio::time::timeout(wait, edit).await.is_err());
        cancelled += usize::from(tokio::time::timeout(wait, invite).await.is_err());
    }
    assert!(cancelled > 0, "some requests must have been cut short");
    // The writer works, and every check after a change sees it.
    for g in [
        Permissions::USERS_VIEW,
        Permissions::empty(),
        Permissions::USERS_VIEW,
    ] {
        app.edit_user(t, a, bob, &grants(g)).await.unwrap();
        let d = app.authorize(t, bob, view).await.unwrap();
        assert_eq!(d.is_allowed(), g.contains(Permissions::USERS_VIEW));
    }
    app.invite(t, a, &invite_req("after@acme.test", Permissions::empty()))
        .await
        .unwrap();
    // The file is sound and the counters equal the rows.
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(ok, "ok");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
        .bind(t.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(i64::from(app.seat_usage(t).await.unwrap().used), rows);
}

#[tokio::test]
async fn an_in_memory_store_serves_the_whole_flow() {
    let (app, t, a, bob) = with_active_user(
        SqliteStore::in_memory().await.unwrap(),
        Permissions::USERS_VIEW,
    )
    .await;
    let view = Permission::new(Category::Users, Action::View).into();
    assert!(app.authorize(t, bob, view).await.unwrap().is_allowed());
    let page = app
        .list_users(t, ActorRef::User(a), &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    // A second in-memory store is a database of its own.
    let other = Tenantry::builder(SqliteStore::in_memory().await.unwrap())
        .build()
        .unwrap();
    assert!(other.seat_usage(t).await.is_err());
}

#[tokio::test]
async fn d16_counters_that_disagree_with_the_rows_refuse_the_whole_change() {
    use tenantry_store::{Constraint, Store, StoreError};
    let store = SqliteStore::open(temp_db("counters")).await.unwrap();
    let (app, t, a) = app_on(store.clone()).await;
    let state = store.tenant(t).await.unwrap().unwrap();
    let log = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    let admin = store.user(t, a).await.unwrap().unwrap();
    // A change whose counters claim one seat more than its rows make.
    let mut counters = state.counters;
    counters.version += 1;
    counters.seats_used += 1;
    let forged = tenantry_core::decide::Change {
        tenant_id: t,
        expected_version: state.counters.version,
        counters,
        writes: vec![tenantry_core::decide::Write::UpdateUser(admin)],
        events: vec![log.last().unwrap().event.clone()],
    };
    let refused = store.commit(&forged, &[]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                constraint: Constraint::Counters
            })
        ),
        "{refused:?}"
    );
    assert_eq!(store.tenant(t).await.unwrap().unwrap(), state);
    assert_eq!(
        app.audit_log(t, ActorRef::System, 0, 100)
            .await
            .unwrap()
            .len(),
        log.len()
    );
    // The writer is usable right after (the refused batch was rolled back).
    app.invite(t, a, &invite_req("next@acme.test", Permissions::empty()))
        .await
        .unwrap();
}

#[tokio::test]
async fn d6_a_cancelled_change_that_commits_later_leaves_no_stale_check() {
    let store = SqliteStore::open(temp_db("late")).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let view = Permission::new(Category::Users, Action::View).into();
    let mut cut_short = 0;
    for i in 0..200u64 {
        let g = if i % 2 == 0 {
            Permissions::USERS_VIEW
        } else {
            Permissions::empty()
        };
        let e = grants(g);
        // The caller gives up while its batch may still be on the writer's worker thread,
        // which then commits it anyway.
        let wait = std::time::Duration::from_micros(i * 13 % 400);
        cut_short += usize::from(
            tokio::time::timeout(wait, app.edit_user(t, a, bob, &e))
                .await
                .is_err(),
        );
        // Checks right away (they may read the state before that commit and try to cache
        // it), then once it has landed: the answer must be what the row says. The job of a
        // cut-short edit still runs to its end on the writer thread, maybe after the sleep on
        // a loaded machine: a check counts only when the row is the same before and after it
        // (so no commit landed in between).
        for _ in 0..3 {
            app.authorize(t, bob, view).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let grants_row = || async {
            sqlx::query_scalar::<_, String>("SELECT grants FROM users WHERE id = $1")
                .bind(bob.to_string())
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        let (row, d) = loop {
            let before = grants_row().await;
            let d = app.authorize(t, bob, view).await.unwrap();
            if grants_row().await == before {
                break (before, d);
            }
        };
        assert_eq!(
            d.is_allowed(),
            row.contains("users:view"),
            "round {i}: {row} {d:?}"
        );
    }
    assert!(cut_short > 0, "some edits must have been cut short");
}

// ------------------------------------------------------------------------ D24, D25, D26

/// A mailer that keeps every message it is handed, delivered or not, and refuses one
/// address for good (a 5xx answer).
#[derive(Debug, Clone, Default)]
struct RefusingMailer {
    handed: std::sync::Arc<std::sync::Mutex<Vec<tenantry_service::Message>>>,
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

/// Every `table.column` of the database (every table, every column, whatever its type)
/// with a value whose bytes contain `needle`.
async fn columns_holding(store: &SqliteStore, needle: &str) -> Vec<String> {
    let pool = store.pool();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(tables.iter().any(|t| t == "outbox"), "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(pool)
                .await
                .unwrap();
        for column in columns {
            // Text and blobs alike, as bytes; integers as their decimal text.
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM \"{table}\" WHERE instr(CAST(\"{column}\" AS BLOB), CAST(? AS BLOB)) > 0"
            ))
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap();
            if n > 0 {
                found.push(format!("{table}.{column}"));
            }
        }
    }
    found
}

/// The token, and its random part alone (the tenant prefix is no secret).
fn secrets(token: &str) -> [String; 2] {
    let (_, random) = token.split_once('.').unwrap();
    [token.to_owned(), random.to_owned()]
}

/// D26: once a message is sent, or has failed for good, no row of the database holds its
/// token (the accept link), in any table or column: through the dispatcher, and through
/// inline delivery.
#[tokio::test]
async fn d26_no_stored_row_holds_the_token_after_send_or_permanent_failure() {
    use tenantry_store::Store;
    let store = SqliteStore::open(temp_db("d26")).await.unwrap();
    let mailer = RefusingMailer {
        refuse: "carol@acme.test".into(),
        ..RefusingMailer::default()
    };
    // Through the dispatcher: the mail waits in the outbox first.
    let app = Tenantry::builder(store.clone())
        .mailer(mailer.clone())
        .delivery(tenantry_service::DeliverySettings {
            inline: false,
            ..tenantry_service::DeliverySettings::default()
        })
        .build()
        .unwrap();
    let (t, a) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    for to in ["bob@acme.test", "carol@acme.test"] {
        app.invite(t, a, &invite_req(to, Permissions::empty()))
            .await
            .unwrap();
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
        inline
            .invite(t2, a2, &invite_req(to, Permissions::empty()))
            .await
            .unwrap();
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

/// A change of `writes` on the tenant's current state (its counters unchanged).
async fn change_on(
    store: &SqliteStore,
    t: tenantry_service::TenantId,
    writes: Vec<tenantry_core::decide::Write>,
) -> tenantry_core::decide::Change {
    use tenantry_store::Store;
    let state = store.tenant(t).await.unwrap().unwrap();
    tenantry_core::decide::Change {
        tenant_id: t,
        expected_version: state.counters.version,
        counters: tenantry_core::Counters {
            version: state.counters.version + 1,
            ..state.counters
        },
        writes,
        events: Vec::new(),
    }
}

/// D24: the failed-attempt count and the revocation it ends in are stored (they survive a
/// reopen), only on a pending invitation of the change's tenant, and a refused attempt
/// writes nothing of its change.
#[tokio::test]
async fn d24_failed_attempts_survive_reopen() {
    use tenantry_core::TokenHash;
    use tenantry_core::decide::Write;
    use tenantry_store::{Constraint, Store, StoreError};
    let path = temp_db("d24");
    let store = SqliteStore::open(&path).await.unwrap();
    let (app, t, a) = app_on(store.clone()).await;
    let bob = app
        .invite(t, a, &invite_req("bob@acme.test", Permissions::empty()))
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
    let missing_row = |r: Result<(), StoreError>| {
        assert!(
            matches!(
                r,
                Err(StoreError::Conflict {
                    constraint: Constraint::MissingRow
                })
            ),
            "{r:?}"
        );
    };
    let c = change_on(&store, t, vec![fail(1, false)]).await;
    store.commit(&c, &[]).await.unwrap();
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let after = store.invitation(t, &hash).await.unwrap().unwrap();
    assert_eq!(after.failed_attempts, 1);
    assert_eq!(after.state, tenantry_core::InvitationState::Pending);
    assert_eq!(
        after,
        tenantry_core::Invitation {
            failed_attempts: 1,
            ..invitation.clone()
        }
    );
    // An unknown token fails the whole change: the user edit before it is not written.
    let state = store.tenant(t).await.unwrap().unwrap();
    let edited = tenantry_service::User {
        grants: Permissions::USERS_VIEW,
        ..bob.clone()
    };
    let c = change_on(
        &store,
        t,
        vec![
            Write::UpdateUser(edited),
            Write::FailAcceptAttempt {
                token_hash: TokenHash([7; 32]),
                failed_attempts: 1,
                revoke: false,
            },
        ],
    )
    .await;
    missing_row(store.commit(&c, &[]).await);
    assert_eq!(store.tenant(t).await.unwrap().unwrap(), state);
    assert_eq!(store.user(t, bob.id).await.unwrap().unwrap(), bob);
    // Another tenant's change does not reach this tenant's invitation.
    let c = change_on(&store, other, vec![fail(2, false)]).await;
    missing_row(store.commit(&c, &[]).await);
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
    let c = change_on(&store, t, vec![fail(5, true)]).await;
    store.commit(&c, &[]).await.unwrap();
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let after = store.invitation(t, &hash).await.unwrap().unwrap();
    assert_eq!(
        (after.failed_attempts, after.state),
        (5, tenantry_core::InvitationState::Revoked)
    );
    // A revoked invitation counts no more attempts.
    let c = change_on(&store, t, vec![fail(6, false)]).await;
    missing_row(store.commit(&c, &[]).await);
    assert_eq!(store.invitation(t, &hash).await.unwrap().unwrap(), after);
    // The column as stored, and its CHECK.
    let (n, state): (i64, String) =
        sqlx::query_as("SELECT failed_attempts, state FROM invitations WHERE token_hash = $1")
            .bind(hash.0.to_vec())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((n, state.as_str()), (5, "revoked"));
    let raw = sqlx::query("UPDATE invitations SET failed_attempts = -1")
        .execute(store.pool())
        .await;
    assert!(raw.unwrap_err().to_string().contains("CHECK"));
}

/// D25: `claim_message` claims one pending, due message once; while its lease holds, and
/// once the message is sent or failed, it claims nothing.
#[tokio::test]
async fn d25_claim_message_claims_a_due_message_once() {
    use tenantry_store::{DeliveryUpdate, Store};
    let store = SqliteStore::open(temp_db("claim-one")).await.unwrap();
    let clock = tenantry_service::ManualClock::new(time::macros::datetime!(2026-01-05 09:00 UTC));
    let app = Tenantry::builder(store.clone())
        .clock(clock.clone())
        .delivery(tenantry_service::DeliverySettings {
            inline: false,
            ..tenantry_service::DeliverySettings::default()
        })
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
    for to in ["bob@acme.test", "carol@acme.test"] {
        ids.push(
            app.invite(t, a, &invite_req(to, Permissions::empty()))
                .await
                .unwrap()
                .message_id,
        );
    }
    let (bob, carol) = (ids[0], ids[1]);
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
    // The lease holds: no second claim, by this call or by the dispatcher's.
    assert_eq!(store.claim_message(t, bob, now, lease).await.unwrap(), None);
    let due = store.claim_due_mail(t, now, lease, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        [carol]
    );
    // Not due yet, another tenant's, or no such message: nothing.
    let unknown = tenantry_core::MessageId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(
        store.claim_message(t, carol, now, lease).await.unwrap(),
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

/// D27: a sign-in is one transaction outside the tenant's version: the version and counters
/// stay, the user's last login and the audit record land together, an inactive user writes
/// nothing, and the owning store's cached user row is current right after.
#[tokio::test]
async fn d27_a_sign_in_leaves_the_version_and_keeps_the_cached_user_current() {
    use tenantry_store::{SignInOutcome, Store};
    let store = SqliteStore::open(temp_db("d27")).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let before = store.tenant(t).await.unwrap().unwrap();
    // Cached now: the next read of Bob is served from memory.
    let first = store.user(t, bob).await.unwrap().unwrap();
    let log = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    let signed = app.record_sign_in(t, bob).await.unwrap();
    let at = signed.last_login.unwrap();
    assert!(first.last_login.is_none_or(|l| l <= at));
    assert_ne!(signed, first, "the sign-in changed the row");
    assert_eq!(
        store.tenant(t).await.unwrap().unwrap(),
        before,
        "version untouched"
    );
    assert_eq!(
        store.user(t, bob).await.unwrap().unwrap(),
        signed,
        "cache current"
    );
    let after = app.audit_log(t, ActorRef::System, 0, 100).await.unwrap();
    assert_eq!(after.len(), log.len() + 1);
    assert_eq!(after.last().unwrap().seq, log.last().unwrap().seq + 1);
    // An earlier sign-in does not move the last login back; the event is still recorded.
    let event = after.last().unwrap().event.clone();
    let earlier = at - time::Duration::hours(1);
    match store.record_sign_in(t, bob, earlier, &event).await.unwrap() {
        SignInOutcome::Recorded(u) => assert_eq!(u.last_login, Some(at)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.user(t, bob).await.unwrap().unwrap().last_login,
        Some(at)
    );
    // Suspended: refused, nothing written; no such user: refused.
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            status: Some(Status::Suspended),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    let state = store.tenant(t).await.unwrap().unwrap();
    let n = app
        .audit_log(t, ActorRef::System, 0, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(
        store.record_sign_in(t, bob, at, &event).await.unwrap(),
        SignInOutcome::NotActive(Status::Suspended)
    );
    let nobody = tenantry_service::UserId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(
        store.record_sign_in(t, nobody, at, &event).await.unwrap(),
        SignInOutcome::NotFound
    );
    assert_eq!(store.tenant(t).await.unwrap().unwrap(), state);
    assert_eq!(
        app.audit_log(t, ActorRef::System, 0, 100)
            .await
            .unwrap()
            .len(),
        n
    );
}

/// A template edit updates the cached subjects of its users in place: the very next check
/// is answered from memory (`subject_now`), with the new permissions, and equals the rows.
#[tokio::test]
async fn a_template_edit_updates_the_cached_subjects_in_place() {
    use tenantry_store::Store;
    let store = SqliteStore::open(temp_db("in-place")).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let tpl = app
        .create_template(t, a, "Agents", Permissions::empty())
        .await
        .unwrap();
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            template_id: Some(Some(tpl.id)),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    let edit = Permission::new(Category::Conversations, Action::Edit).into();
    assert!(!app.authorize(t, bob, edit).await.unwrap().is_allowed());
    for round in 0..6 {
        let next = if round % 2 == 0 {
            Permissions::CONVERSATIONS_EDIT
        } else {
            Permissions::empty()
        };
        app.edit_template(
            t,
            a,
            tpl.id,
            &TemplateEdit {
                permissions: Some(next),
                ..TemplateEdit::default()
            },
        )
        .await
        .unwrap();
        let now = store
            .subject_now(t, bob)
            .expect("answered from the cache right after the edit")
            .unwrap()
            .unwrap();
        assert_eq!(now.template, Some((tpl.id, next)), "round {round}");
        let decided = store
            .decide_now(t, bob, edit)
            .expect("decided from the cache");
        assert_eq!(
            decided.unwrap(),
            tenantry_core::authorize_subject(&now, edit),
            "round {round}"
        );
        let stored: String =
            sqlx::query_scalar("SELECT permissions FROM role_templates WHERE id = $1")
                .bind(tpl.id.to_string())
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(stored, serde_json::to_string(&next).unwrap());
        assert_eq!(
            app.authorize(t, bob, edit).await.unwrap().is_allowed(),
            round % 2 == 0
        );
    }
    // A user edit keeps the subject cached too, with the new grants.
    app.edit_user(t, a, bob, &grants(Permissions::USERS_VIEW))
        .await
        .unwrap();
    let now = store.subject_now(t, bob).unwrap().unwrap().unwrap();
    assert_eq!(now.grants, Permissions::USERS_VIEW);
    assert_eq!(Some(now), store.subject(t, bob).await.unwrap());
}

/// A user row's columns as the pool reads them.
type UserColumns = (
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
);
/// A subject's columns (its JOIN) as the pool reads them.
type SubjectColumns = (String, String, i64, String, Option<String>, Option<String>);

/// Every row the owning store's cache answers with equals the database's row, compared
/// column by column through the host pool (which the cache does not see).
async fn assert_cache_matches_rows(
    store: &SqliteStore,
    t: tenantry_service::TenantId,
    users: &[tenantry_service::UserId],
    templates: &[tenantry_service::TemplateId],
    step: &str,
) {
    use tenantry_store::Store;
    let nanos = |x: time::OffsetDateTime| i64::try_from(x.unix_timestamp_nanos()).unwrap();
    let state = store.tenant(t).await.unwrap().unwrap();
    let row: (String, Option<i64>, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT name, user_limit, created_at, version, seats_used, active_admins FROM tenants WHERE id = $1",
    )
    .bind(t.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (
            state.tenant.name.clone(),
            state.tenant.user_limit.map(i64::from),
            nanos(state.tenant.created_at),
            i64::try_from(state.counters.version).unwrap(),
            i64::from(state.counters.seats_used),
            i64::from(state.counters.active_admins),
        ),
        row,
        "{step}: tenant"
    );
    for &u in users {
        let row: Option<UserColumns> = sqlx::query_as(
                "SELECT email, role, status, template_id, crm_access, grants, created_at, last_login, identity FROM users WHERE tenant_id = $1 AND id = $2",
            )
            .bind(t.to_string())
            .bind(u.to_string())
            .fetch_optional(store.pool())
            .await
            .unwrap();
        let cached = store.user(t, u).await.unwrap();
        assert_eq!(
            cached.as_ref().map(|c| (
                c.email.as_str().to_owned(),
                c.role.as_str().to_owned(),
                c.status.as_str().to_owned(),
                c.template_id.map(|x| x.to_string()),
                i64::from(c.crm_access),
                serde_json::to_string(&c.grants).unwrap(),
                nanos(c.created_at),
                c.last_login.map(nanos),
                c.identity.as_ref().map(|i| i.as_str().to_owned()),
            )),
            row,
            "{step}: user {u}"
        );
        let joined: Option<SubjectColumns> = sqlx::query_as(
                "SELECT u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions \
                 FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
                 WHERE u.tenant_id = $1 AND u.id = $2",
            )
            .bind(t.to_string())
            .bind(u.to_string())
            .fetch_optional(store.pool())
            .await
            .unwrap();
        let subject = match store.subject_now(t, u) {
            Some(s) => s.unwrap(),
            None => store.subject(t, u).await.unwrap(),
        };
        assert_eq!(
            subject.map(|s| (
                s.role.as_str().to_owned(),
                s.status.as_str().to_owned(),
                i64::from(s.crm_access),
                serde_json::to_string(&s.grants).unwrap(),
                s.template.map(|(id, _)| id.to_string()),
                s.template.map(|(_, p)| serde_json::to_string(&p).unwrap()),
            )),
            joined,
            "{step}: subject {u}"
        );
    }
    for &id in templates {
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND id = $2",
        )
        .bind(t.to_string())
        .bind(id.to_string())
        .fetch_optional(store.pool())
        .await
        .unwrap();
        let cached = store.template(t, id).await.unwrap();
        assert_eq!(
            cached.map(|c| (
                c.name.as_str().to_owned(),
                serde_json::to_string(&c.permissions).unwrap(),
                nanos(c.created_at),
                nanos(c.updated_at),
            )),
            row,
            "{step}: template {id}"
        );
    }
}

/// D6: the owning store updates its cached rows in place after each kind of change (template
/// edits and renames, reassignment and detachment on delete, user edits, suspension,
/// deletion, the seat limit, a new template, sign-ins, an identity id set, replaced and
/// cleared (D28)) and every cached row still equals the database's after each one.
#[tokio::test]
async fn d6_the_cache_updated_in_place_equals_the_rows_after_every_kind_of_change() {
    let store = SqliteStore::open(temp_db("in-place-rows")).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let carol = app
        .invite(
            t,
            a,
            &invite_req("carol@acme.test", Permissions::USERS_VIEW),
        )
        .await
        .unwrap()
        .user
        .id;
    let one = app
        .create_template(t, a, "One", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap()
        .id;
    let two = app
        .create_template(t, a, "Two", Permissions::USERS_VIEW)
        .await
        .unwrap()
        .id;
    let users = [a, bob, carol];
    let mut templates = vec![one, two];
    let on = |id| UserEdit {
        template_id: Some(Some(id)),
        ..UserEdit::default()
    };
    app.edit_user(t, a, bob, &on(one)).await.unwrap();
    app.edit_user(t, a, carol, &on(one)).await.unwrap();
    // Fill the cache, then change and compare after each step.
    assert_cache_matches_rows(&store, t, &users, &templates, "filled").await;
    let tpl = |p: Option<Permissions>, name: Option<&str>| TemplateEdit {
        permissions: p,
        name: name.map(|n| tenantry_service::TemplateName::parse(n).unwrap()),
    };
    app.edit_template(t, a, one, &tpl(Some(Permissions::empty()), None))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "template edit").await;
    app.edit_template(t, a, two, &tpl(None, Some("Second")))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "template rename").await;
    app.edit_user(t, a, bob, &grants(Permissions::USERS_VIEW))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "grants").await;
    app.record_sign_in(t, bob).await.unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "sign-in").await;
    let identity = |s: &str| Some(tenantry_service::IdentityId::parse(s).unwrap());
    app.set_identity(t, a, bob, identity("oidc|bob"))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "identity set").await;
    app.set_identity(t, a, bob, identity("oidc|bob-2"))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "identity replaced").await;
    app.set_identity(t, a, carol, identity("oidc|carol"))
        .await
        .unwrap();
    app.set_identity(t, a, bob, None).await.unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "identity cleared").await;
    app.delete_template(t, a, one, TemplateDeletion::Reassign(two))
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "reassign").await;
    app.delete_template(t, a, two, TemplateDeletion::Detach)
        .await
        .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "detach").await;
    let three = app
        .create_template(t, a, "Three", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap()
        .id;
    templates.push(three);
    app.edit_user(t, a, bob, &on(three)).await.unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "new template").await;
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            role: Some(Role::Admin),
            crm_access: Some(true),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "promotion").await;
    app.edit_user(
        t,
        a,
        bob,
        &UserEdit {
            status: Some(Status::Suspended),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "suspension").await;
    app.set_user_limit(t, Some(10)).await.unwrap();
    app.rename_tenant(t, a, "Acme Two").await.unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "tenant").await;
    app.delete_user(t, a, carol).await.unwrap();
    assert_cache_matches_rows(&store, t, &users, &templates, "deletion").await;
}

/// A commit whose future is dropped after its first poll (the job is on the writer thread
/// by then) still runs to its end, and the owning store's cache takes the change: the next
/// check is answered from memory with the new grants, as the row says.
#[tokio::test]
async fn a_dropped_commit_still_runs_to_its_end_and_updates_the_cache() {
    use tenantry_store::Store;
    let store = SqliteStore::open(temp_db("dropped")).await.unwrap();
    let (app, t, _a, bob) = with_active_user(store.clone(), Permissions::empty()).await;
    let view = Permission::new(Category::Users, Action::View).into();
    assert!(!app.authorize(t, bob, view).await.unwrap().is_allowed());
    let user = store.user(t, bob).await.unwrap().unwrap();
    let edited = tenantry_service::User {
        grants: Permissions::USERS_VIEW,
        ..user
    };
    let change = change_on(
        &store,
        t,
        vec![tenantry_core::decide::Write::UpdateUser(edited)],
    )
    .await;
    let mut pending = 0;
    {
        let mut fut = store.commit(&change, &[]);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if fut.as_mut().poll(&mut cx).is_pending() {
            pending += 1;
        }
        // Dropped here, answer unheard.
    }
    // A later write runs after it on the writer thread (nothing is due at the epoch).
    let none = store
        .claim_due_mail(
            t,
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::UNIX_EPOCH,
            1,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let row: String = sqlx::query_scalar("SELECT grants FROM users WHERE id = $1")
        .bind(bob.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row, r#"["users:view"]"#, "the dropped commit committed");
    assert_eq!(
        store.tenant(t).await.unwrap().unwrap().counters.version,
        change.counters.version
    );
    let now = store.subject_now(t, bob).unwrap().unwrap().unwrap();
    assert_eq!(now.grants, Permissions::USERS_VIEW, "the cache took it");
    assert!(app.authorize(t, bob, view).await.unwrap().is_allowed());
    println!(
        "the commit was still pending when dropped: {}",
        pending == 1
    );
}

/// D28: a database at migration 6 whose tenants have users gets, on open, migration 7: the
/// `identity` column, NULL for every existing user (each still reads, with no identity id),
/// and its two indexes; an identity id can then be set and found.
#[tokio::test]
async fn d28_migration_7_gives_every_existing_user_a_null_identity() {
    use tenantry_store::Store;
    let path = temp_db("d28-migrate");
    let (t, a, bob) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let (app, t, a) = app_on(store.clone()).await;
        let bob = app
            .invite(t, a, &invite_req("bob@acme.test", Permissions::empty()))
            .await
            .unwrap()
            .user
            .id;
        drop(app);
        for undo in [
            "DROP INDEX users_identity",
            "DROP INDEX users_by_email_key",
            "ALTER TABLE users DROP COLUMN identity",
            "DELETE FROM _sqlx_migrations WHERE version = 7",
        ] {
            sqlx::query(undo).execute(store.pool()).await.unwrap();
        }
        store.close().await;
        (t, a, bob)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(versions.last(), Some(&7));
    let (users, nulls): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE identity IS NULL) FROM users")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((users, nulls), (2, 2));
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('users_identity', 'users_by_email_key')",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    indexes.sort();
    assert_eq!(indexes, ["users_by_email_key", "users_identity"]);
    for u in [a, bob] {
        let user = store.user(t, u).await.unwrap().unwrap();
        assert_eq!(user.identity, None);
    }
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let id = tenantry_service::IdentityId::parse("oidc|bob").unwrap();
    app.set_identity(t, a, bob, Some(id.clone())).await.unwrap();
    let found = store.user_by_identity(t, &id).await.unwrap().unwrap();
    assert_eq!((found.id, found.identity), (bob, Some(id)));
}

/// D28: the identity id is unique per tenant in the schema itself. A direct commit that
/// gives a second user of a tenant an identity id another user of that tenant holds is
/// refused as [`Constraint::UserIdentity`](tenantry_store::Constraint::UserIdentity) and
/// writes nothing, also when both users get it in one change; the same id on a user of
/// another tenant is fine. The column refuses an id over 255 bytes.
#[tokio::test]
async fn d28_one_identity_per_tenant_is_enforced_by_the_unique_index() {
    use tenantry_core::decide::Write;
    use tenantry_store::{Constraint, Store, StoreError};
    let store = SqliteStore::open(temp_db("d28-unique")).await.unwrap();
    let (app, t, a) = app_on(store.clone()).await;
    let invite = |t, a, email: &'static str| {
        let app = app.clone();
        async move {
            app.invite(t, a, &invite_req(email, Permissions::empty()))
                .await
                .unwrap()
                .user
        }
    };
    let bob = invite(t, a, "bob@acme.test").await;
    let carol = invite(t, a, "carol@acme.test").await;
    let (other, x) = app
        .create_tenant("Other", None, Email::parse("x@other.test").unwrap())
        .await
        .unwrap();
    let dave = invite(other, x, "dave@other.test").await;
    let id = tenantry_service::IdentityId::parse("oidc|same-person").unwrap();
    let with = |u: &tenantry_service::User| {
        let mut u = u.clone();
        u.identity = Some(id.clone());
        Write::UpdateUser(u)
    };
    let version = |s: &SqliteStore| {
        let s = s.clone();
        async move { s.tenant(t).await.unwrap().unwrap().counters.version }
    };

    // Both users of one tenant in one change: refused whole.
    let before = version(&store).await;
    let both = change_on(&store, t, vec![with(&bob), with(&carol)]).await;
    let refused = store.commit(&both, &[]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                constraint: Constraint::UserIdentity
            })
        ),
        "{refused:?}"
    );
    assert_eq!(version(&store).await, before, "nothing written");
    assert_eq!(store.user(t, bob.id).await.unwrap().unwrap().identity, None);

    // One, then the other in a later change.
    store
        .commit(&change_on(&store, t, vec![with(&bob)]).await, &[])
        .await
        .unwrap();
    let second = store
        .commit(&change_on(&store, t, vec![with(&carol)]).await, &[])
        .await;
    assert!(
        matches!(
            second,
            Err(StoreError::Conflict {
                constraint: Constraint::UserIdentity
            })
        ),
        "{second:?}"
    );
    assert_eq!(
        store.user(t, carol.id).await.unwrap().unwrap().identity,
        None
    );
    let holder = store.user_by_identity(t, &id).await.unwrap().unwrap();
    assert_eq!(holder.id, bob.id);

    // The same id in another tenant.
    store
        .commit(&change_on(&store, other, vec![with(&dave)]).await, &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_identity(other, &id)
            .await
            .unwrap()
            .unwrap()
            .id,
        dave.id
    );
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE identity = $1")
        .bind(id.as_str())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 2);

    // A row the parser would refuse (over 255 bytes) fails the column's CHECK.
    let mut long = carol.clone();
    long.identity = Some(tenantry_service::IdentityId::from_stored(&"x".repeat(256)));
    let refused = store
        .commit(
            &change_on(&store, t, vec![Write::UpdateUser(long)]).await,
            &[],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                constraint: Constraint::Schema
            })
        ),
        "{refused:?}"
    );
}

/// D28: the memberships of an address and of an identity id, on an owning and a shared
/// store: every tenant where the person is a user, by tenant name in byte order (`Zeta`
/// before `alpha` before `Ärger`) then id, in pages that continue after the cursor; a
/// deleted user is gone from them; another person's rows never appear.
#[tokio::test]
async fn d28_memberships_by_address_and_identity_page_in_byte_order() {
    let path = temp_db("d28-memberships");
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let person = Email::parse("Pat@Example.test").unwrap();
    let id = tenantry_service::IdentityId::parse("oidc|pat").unwrap();
    let mut expected = Vec::new();
    for name in ["alpha", "Zeta", "Ärger", "alpha", "beta"] {
        let admin = Email::parse(&format!("admin@{}.test", expected.len())).unwrap();
        let (t, a) = app.create_tenant(name, None, admin).await.unwrap();
        let pat = app
            .invite(t, a, &invite_req("pat@example.test", Permissions::empty()))
            .await
            .unwrap()
            .user
            .id;
        app.set_identity(t, a, pat, Some(id.clone())).await.unwrap();
        expected.push((name.to_owned(), t, a, pat));
    }
    // The address is also the admin of a tenant of its own ("aaa"), without the identity id.
    let (aaa, _) = app
        .create_tenant("aaa", None, Email::parse("pat@example.test").unwrap())
        .await
        .unwrap();
    // The user of "beta" is deleted.
    let (_, bt, ba, bpat) = expected.pop().unwrap();
    app.delete_user(bt, ba, bpat).await.unwrap();
    expected.sort_by(|x, y| (x.0.as_bytes(), x.1).cmp(&(y.0.as_bytes(), y.1)));
    let names: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["Zeta", "alpha", "alpha", "Ärger"]);
    drop(app);
    store.close().await;

    for shared in [false, true] {
        let store = if shared {
            SqliteStore::open_shared(&path).await.unwrap()
        } else {
            SqliteStore::open(&path).await.unwrap()
        };
        let app = Tenantry::builder(store.clone()).build().unwrap();
        // By address, two a page: the admin of "aaa" too.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = app
                .memberships_by_email(&person, after.as_ref(), 2)
                .await
                .unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items);
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let got: Vec<(String, tenantry_service::TenantId)> = seen
            .iter()
            .map(|m| (m.tenant_name.clone(), m.tenant_id))
            .collect();
        let mut want: Vec<(String, tenantry_service::TenantId)> =
            expected.iter().map(|e| (e.0.clone(), e.1)).collect();
        want.insert(0, ("aaa".to_owned(), aaa));
        want.sort_by(|x, y| (x.0.as_bytes(), x.1).cmp(&(y.0.as_bytes(), y.1)));
        assert_eq!(got, want, "shared: {shared}");
        // By identity id: only the users it was attached to.
        let page = app.memberships_by_identity(&id, None, 10).await.unwrap();
        assert_eq!(page.next, None);
        let got: Vec<_> = page
            .items
            .iter()
            .map(|m| (m.tenant_name.clone(), m.tenant_id, m.user_id))
            .collect();
        let want: Vec<_> = expected.iter().map(|e| (e.0.clone(), e.1, e.3)).collect();
        assert_eq!(got, want, "shared: {shared}");
        for m in &page.items {
            assert_eq!(m.email.key(), "pat@example.test");
            assert_eq!(m.identity.as_ref(), Some(&id));
            assert_eq!((m.role, m.status), (Role::User, Status::Invited));
            assert_eq!(m.last_login, None);
        }
        let after = page.items[1].cursor();
        let rest = app
            .memberships_by_identity(&id, Some(&after), 10)
            .await
            .unwrap();
        assert_eq!(rest.items, page.items[2..]);
        let nobody = tenantry_service::IdentityId::parse("oidc|nobody").unwrap();
        assert!(
            app.memberships_by_identity(&nobody, None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        drop(app);
        store.close().await;
    }
}

/// Every check of `u` through `held` answers as `authorize` does (which reads the row when
/// the cache does not hold it), or not at all when `answers` is false.
async fn held_agrees(
    app: &Tenantry,
    held: &tenantry_service::HeldCheck,
    t: tenantry_service::TenantId,
    u: tenantry_service::UserId,
    answers: bool,
) {
    let mut all: Vec<Request> = Permission::all().map(Request::from).collect();
    all.push(Request::Crm);
    for r in all {
        let now = held.decide_now(r);
        assert_eq!(now.is_some(), answers, "{r:?}");
        if let Some(d) = now {
            assert_eq!(d, app.authorize(t, u, r).await.unwrap(), "{r:?}");
        }
    }
}

/// Held checks on an owning store (issue 15) are answered from its cache's lock-free index
/// as `authorize` answers, on current state (D6): through a template edit, a suspension and
/// a reactivation, a template deleted with its users detached, and the user's deletion.
/// Where the cache no longer holds the user they do not answer (the host asks `authorize`,
/// which reads the row and caches it again), and a shared store holds no checks.
#[tokio::test]
async fn d6_held_checks_on_an_owning_store_follow_every_change() {
    let store = SqliteStore::open(temp_db("held")).await.unwrap();
    let (app, t, a, bob) = with_active_user(store.clone(), Permissions::ANALYTICS_VIEW).await;
    let tpl = app
        .create_template(t, a, "Agents", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap();
    let edit_to = |template_id, status| UserEdit {
        template_id,
        status,
        ..UserEdit::default()
    };
    app.edit_user(t, a, bob, &edit_to(Some(Some(tpl.id)), None))
        .await
        .unwrap();
    let edit: Request = Permission::new(Category::Conversations, Action::Edit).into();
    assert!(app.authorize(t, bob, edit).await.unwrap().is_allowed());
    let held = app.hold(t, bob).expect("a cached user's checks are held");
    held_agrees(&app, &held, t, bob, true).await;

    app.edit_template(
        t,
        a,
        tpl.id,
        &TemplateEdit {
            permissions: Some(Permissions::empty()),
            ..TemplateEdit::default()
        },
    )
    .await
    .unwrap();
    assert!(
        !held.decide_now(edit).unwrap().is_allowed(),
        "the edit, at once"
    );
    held_agrees(&app, &held, t, bob, true).await;

    app.edit_user(t, a, bob, &edit_to(None, Some(Status::Suspended)))
        .await
        .unwrap();
    assert_eq!(held.decide_now(edit).unwrap().reason(), Reason::Suspended);
    held_agrees(&app, &held, t, bob, true).await;
    app.edit_user(t, a, bob, &edit_to(None, Some(Status::Active)))
        .await
        .unwrap();
    held_agrees(&app, &held, t, bob, true).await;

    // Deleted with its users detached: the cache reads them again, so the held check does
    // not answer until `authorize` has read the row once more.
    app.delete_template(t, a, tpl.id, TemplateDeletion::Detach)
        .await
        .unwrap();
    held_agrees(&app, &held, t, bob, false).await;
    let after = app.authorize(t, bob, edit).await.unwrap();
    assert_eq!(
        after.reason(),
        Reason::MissingPermission {
            permission: Permission::new(Category::Conversations, Action::Edit)
        }
    );
    held_agrees(&app, &held, t, bob, true).await;
    let analytics: Request = Permission::new(Category::Analytics, Action::View).into();
    assert_eq!(
        held.decide_now(analytics).unwrap().reason(),
        Reason::DirectGrant
    );

    app.delete_user(t, a, bob).await.unwrap();
    held_agrees(&app, &held, t, bob, false).await;
    assert_eq!(
        app.authorize(t, bob, edit).await.unwrap().reason(),
        Reason::UnknownUser
    );
    assert!(app.hold(t, bob).is_none(), "an unknown user is not held");
    assert!(app.hold(t, a).is_some(), "the admin still is");
    store.close().await;

    let shared = SqliteStore::open_shared(temp_db("held-shared"))
        .await
        .unwrap();
    let (app, t, _, bob) = with_active_user(shared, Permissions::ANALYTICS_VIEW).await;
    assert!(app.authorize(t, bob, edit).await.is_ok());
    assert!(app.hold(t, bob).is_none(), "a shared store holds no checks");
}
