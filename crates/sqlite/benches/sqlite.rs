//! SQLite backend benches: one page of 50 at 1k and 100k users for each filter and sort
//! (D18: the cost must stay flat in the tenant's size), invites per second on one
//! connection, and `authorize`.
//!
//! `cargo bench -p tenantry-sqlite --bench sqlite`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tenantry_service::prelude::*;
use tenantry_service::{TenantId, UserId};
use tenantry_sqlite::SqliteStore;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Seeded {
    app: Tenantry,
    tenant: TenantId,
    admin: UserId,
    agent: UserId,
    template: tenantry_service::TemplateId,
    _dir: std::path::PathBuf,
}

/// The service on `store`, mail delivery left to the outbox.
fn app_on(store: SqliteStore) -> Tenantry {
    Tenantry::builder(store)
        .delivery(tenantry_service::DeliverySettings {
            inline: false,
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// A tenant with `n` users, seeded with one bulk SQL statement (the triggers keep the
/// counters), plus one active user on a template to authorize. The raw SQL runs while no
/// store has the file open: an owning store caches what it reads and sees only its own
/// writes.
async fn seeded(n: u32, readers: u32, shared: bool) -> Seeded {
    let dir = std::env::temp_dir().join(format!(
        "tenantry-bench-{}-{n}-{}",
        std::process::id(),
        readers
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bench.db"))
        .create_if_missing(true);
    let store = SqliteStore::open_with(opts.clone(), readers).await.unwrap();
    let app = app_on(store.clone());
    let (tenant, admin) = app
        .create_tenant("Bench", None, Email::parse("admin@bench.test").unwrap())
        .await
        .unwrap();
    let template = app
        .create_template(tenant, admin, "Agents", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap();
    let inv = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("agent@bench.test").unwrap(),
                role: Role::User,
                template_id: Some(template.id),
                crm_access: true,
                grants: Permissions::USERS_VIEW,
            },
        )
        .await
        .unwrap();
    drop(app);
    store.close().await;
    drop(store);
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts.clone())
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $2) \
         INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
         SELECT $1, printf('00000000-0000-7000-8000-%012x', i), printf('user%07d@bench.test', i), printf('user%07d@bench.test', i), 'user', \
                CASE i % 3 WHEN 0 THEN 'invited' WHEN 1 THEN 'active' ELSE 'suspended' END, \
                CASE WHEN i % 10 = 0 THEN $3 END, i % 2, '[\"analytics:view\"]', 1700000000000000000 + i * 1000, \
                CASE WHEN i % 2 = 0 THEN 1700000000000000000 + ((i * 7919) % 100000) * 1000000 END, \
                CASE WHEN i % 2 = 0 THEN 1700000000000000000 + ((i * 7919) % 100000) * 1000000 ELSE -9223372036854775808 END, \
                NULL FROM seq",
    )
    .bind(tenant.to_string())
    .bind(i64::from(n))
    .bind(template.id.to_string())
    .execute(&raw)
    .await
    .unwrap();
    sqlx::query("UPDATE users SET status = 'active' WHERE id = $1")
        .bind(inv.user.id.to_string())
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(&raw).await.unwrap();
    raw.close().await;
    let store = if shared {
        SqliteStore::open_shared(dir.join("bench.db")).await
    } else {
        SqliteStore::open_with(opts, readers).await
    };
    let app = app_on(store.unwrap());
    Seeded {
        app,
        tenant,
        admin,
        agent: inv.user.id,
        template: template.id,
        _dir: dir,
    }
}

fn pages(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("sqlite/page_50");
    for n in [1_000u32, 100_000] {
        let s = rt.block_on(seeded(n, 4, false));
        let viewer = ActorRef::User(s.admin);
        let mut queries: Vec<(&str, UserQuery)> = vec![
            ("email_asc", UserQuery::default()),
            (
                "email_desc",
                UserQuery {
                    descending: true,
                    ..UserQuery::default()
                },
            ),
            (
                "created_asc",
                UserQuery {
                    sort: SortBy::CreatedAt,
                    ..UserQuery::default()
                },
            ),
            (
                "created_desc",
                UserQuery {
                    sort: SortBy::CreatedAt,
                    descending: true,
                    ..UserQuery::default()
                },
            ),
            (
                "login_asc",
                UserQuery {
                    sort: SortBy::LastLogin,
                    ..UserQuery::default()
                },
            ),
            (
                "login_desc",
                UserQuery {
                    sort: SortBy::LastLogin,
                    descending: true,
                    ..UserQuery::default()
                },
            ),
            (
                "status_active",
                UserQuery {
                    status: Some(Status::Active),
                    ..UserQuery::default()
                },
            ),
            (
                "role_user",
                UserQuery {
                    role: Some(Role::User),
                    ..UserQuery::default()
                },
            ),
            (
                "template",
                UserQuery {
                    template_id: Some(s.template),
                    ..UserQuery::default()
                },
            ),
            (
                "crm_on",
                UserQuery {
                    crm_access: Some(true),
                    ..UserQuery::default()
                },
            ),
            (
                "email_contains",
                UserQuery {
                    email_contains: Some("user0".into()),
                    ..UserQuery::default()
                },
            ),
        ];
        // Read from the middle: skip the first 200 rows with a cursor.
        for (_, q) in &mut queries {
            let skip = UserQuery {
                limit: 200,
                ..q.clone()
            };
            q.after = rt
                .block_on(s.app.list_users(s.tenant, viewer, &skip))
                .unwrap()
                .next;
        }
        for (name, q) in &queries {
            g.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.to_async(&rt).iter(|| async {
                    let page = s
                        .app
                        .list_users(s.tenant, viewer, black_box(q))
                        .await
                        .unwrap();
                    assert_eq!(page.items.len(), 50);
                    page
                })
            });
        }
    }
    g.finish();
}

fn authorize_and_invite(c: &mut Criterion) {
    let rt = rt();
    let p = Permission::new(Category::Conversations, Action::Edit).into();
    let authorize = |c: &mut Criterion, name: &str, s: &Seeded| {
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                s.app
                    .authorize(s.tenant, black_box(s.agent), p)
                    .await
                    .unwrap()
            })
        });
    };
    // Every check a round trip: a shared store has no cache.
    authorize(
        c,
        "sqlite/authorize_shared",
        &rt.block_on(seeded(10_000, 1, true)),
    );
    let s = rt.block_on(seeded(10_000, 1, false));
    authorize(c, "sqlite/authorize", &s);
    let mut g = c.benchmark_group("sqlite/invite_one_connection");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("invite", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let req = InviteRequest {
                email: Email::parse(&format!("new{i}@bench.test")).unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            };
            let app = s.app.clone();
            let (tenant, admin) = (s.tenant, s.admin);
            async move { app.invite(tenant, admin, &req).await.unwrap() }
        })
    });
    g.finish();
}

criterion_group!(sqlite, pages, authorize_and_invite);
criterion_main!(sqlite);
