//! SQLite backend benches: one page of 50 at 1k and 100k users for each filter and sort
//! (D18: the cost must stay flat in the tenant's size), invites per second on one
//! connection, and `authorize`; and, in group `sqlite/floor`, each of tenantry's figures
//! beside its floor, the bare engine (plain rusqlite on a held connection, same statements,
//! rows and indexes) doing the same work in the same run: an invite's transaction, a point
//! read of a user beside `authorize` on a shared store, a page of 50 after a cursor.
//!
//! `cargo bench -p tenantry-sqlite --bench sqlite`
//! (floors only: `cargo bench -p tenantry-sqlite --bench sqlite -- sqlite/floor`)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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
    store: SqliteStore,
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
    seeded_in(n, readers, shared, "").await
}

async fn seeded_in(n: u32, readers: u32, shared: bool, tag: &str) -> Seeded {
    let dir = std::env::temp_dir().join(format!(
        "tenantry-bench-{}-{n}-{}{tag}",
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
    let store = store.unwrap();
    let app = app_on(store.clone());
    Seeded {
        app,
        store,
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

/// The rows of one real invite (user, invitation, audit events, outbox message), to make
/// more of the same.
struct InviteRows {
    user: tenantry_service::User,
    invitation: tenantry_core::Invitation,
    events: Vec<tenantry_core::AuditEvent>,
    message: tenantry_service::Message,
}

async fn invite_rows(s: &Seeded) -> InviteRows {
    use tenantry_store::Store;
    let seq = s.store.audit(s.tenant, 0, 10_000).await.unwrap().len();
    let inv = s
        .app
        .invite(
            s.tenant,
            s.admin,
            &InviteRequest {
                email: Email::parse("model@bench.test").unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            },
        )
        .await
        .unwrap();
    let events = s.store.audit(s.tenant, 0, 10_000).await.unwrap()[seq..]
        .iter()
        .map(|r| r.event.clone())
        .collect();
    InviteRows {
        invitation: s.store.invitations_of(s.tenant, inv.user.id).await.unwrap()[0].clone(),
        message: s
            .store
            .outbox_message(s.tenant, inv.message_id)
            .await
            .unwrap()
            .unwrap()
            .message,
        user: inv.user,
        events,
    }
}

/// The `i`-th new invite of the model's shape: a fresh user id, address, token and message.
fn nth_invite(
    m: &InviteRows,
    i: u64,
) -> (
    tenantry_service::User,
    tenantry_core::Invitation,
    tenantry_service::Message,
) {
    let id = UserId::from_uuid(uuid::Uuid::now_v7());
    let user = tenantry_service::User {
        id,
        email: Email::parse(&format!("c{i}@bench.test")).unwrap(),
        ..m.user.clone()
    };
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(id.as_uuid().as_bytes());
    hash[16..24].copy_from_slice(&i.to_le_bytes());
    let invitation = tenantry_core::Invitation {
        token_hash: tenantry_core::TokenHash(hash),
        user_id: id,
        ..m.invitation.clone()
    };
    let message = tenantry_service::Message {
        id: tenantry_service::MessageId::from_uuid(uuid::Uuid::now_v7()),
        user_id: id,
        to: user.email.as_str().to_owned(),
        ..m.message.clone()
    };
    (user, invitation, message)
}

/// A plain rusqlite connection to the bench database, as the store configures its own.
fn raw(s: &Seeded) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(s._dir.join("bench.db")).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384;",
    )
    .unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.set_prepared_statement_cache_capacity(128);
    c
}

/// The floor of an invite's transaction: the statements `Store::commit` runs for it, in
/// plain rusqlite on a held connection, values bound as the store binds them (the JSON of
/// the events serialised per invite, as the store does).
fn floor_invite(
    c: &mut rusqlite::Connection,
    tenant: &str,
    m: &InviteRows,
    i: u64,
    version: &mut i64,
    seats: &mut i64,
    admins: i64,
) {
    use rusqlite::params;
    let (u, inv, msg) = nth_invite(m, i);
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let n = tx
        .prepare_cached("UPDATE tenants SET version = ?1 WHERE id = ?2 AND version = ?3")
        .unwrap()
        .execute(params![*version + 1, tenant, *version])
        .unwrap();
    assert_eq!(n, 1);
    let uid = u.id.as_uuid().hyphenated().to_string();
    let nanos = |t: time::OffsetDateTime| i64::try_from(t.unix_timestamp_nanos()).unwrap();
    tx.prepare_cached(
        "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .unwrap()
    .execute(params![
        tenant,
        uid,
        u.email.as_str(),
        u.email.key(),
        u.role.as_str(),
        u.status.as_str(),
        Option::<String>::None,
        u.crm_access,
        serde_json::to_string(&u.grants).unwrap(),
        nanos(u.created_at),
        Option::<i64>::None,
        i64::MIN,
        u.invite_expires_at.map(nanos),
    ])
    .unwrap();
    let n = tx
        .prepare_cached(
            "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = ?2 AND id = ?3)",
        )
        .unwrap()
        .execute(params![
            &inv.token_hash.0[..],
            tenant,
            uid,
            "initial",
            "pending",
            nanos(inv.created_at),
            nanos(inv.expires_at),
            0i64,
        ])
        .unwrap();
    assert_eq!(n, 1);
    let events = i64::try_from(m.events.len()).unwrap();
    let last: i64 = tx
        .prepare_cached(
            "UPDATE tenants SET audit_seq = audit_seq + ?1 WHERE id = ?2 AND seats_used = ?3 AND active_admins = ?4 RETURNING audit_seq",
        )
        .unwrap()
        .query_row(params![events, tenant, *seats + 1, admins], |r| r.get(0))
        .unwrap();
    for (k, e) in (1..).zip(&m.events) {
        tx.prepare_cached(
            "INSERT INTO audit_log (tenant_id, seq, at, action, event) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .unwrap()
        .execute(params![
            tenant,
            last - events + k,
            nanos(e.at),
            serde_json::to_string(&e.action).unwrap(),
            serde_json::to_string(e).unwrap(),
        ])
        .unwrap();
    }
    tx.prepare_cached(
        "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
    )
    .unwrap()
    .execute(params![
        tenant,
        msg.id.as_uuid().hyphenated().to_string(),
        uid,
        msg.to,
        msg.subject,
        msg.text,
        msg.html,
        nanos(m.events[0].at),
    ])
    .unwrap();
    tx.commit().unwrap();
    *version += 1;
    *seats += 1;
}

const SUBJECT_SQL: &str = "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions AS template_permissions \
     FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
     WHERE u.tenant_id = ?1 AND u.id = ?2";

type SubjectRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
);

/// The floor of a check without a cache: the subject's JOIN on a held connection, its
/// columns copied out (no parsing).
fn floor_point_read(c: &rusqlite::Connection, tenant: &str, user: &str) -> SubjectRow {
    c.prepare_cached(SUBJECT_SQL)
        .unwrap()
        .query_row(rusqlite::params![tenant, user], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
}

type UserRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

/// The floor of a page: 51 rows after an email cursor on a held connection, every column
/// copied out (no parsing).
fn floor_page(c: &rusqlite::Connection, tenant: &str, key: &str, id: &str) -> Vec<UserRow> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {} FROM users WHERE tenant_id = ?1 AND (email_key, id) > (?2, ?3) ORDER BY email_key ASC, id ASC LIMIT 51",
            tenantry_store::sql::USER_COLUMNS
        ))
        .unwrap();
    stmt.query_map(rusqlite::params![tenant, key, id], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
        ))
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// A thread owning a reader connection: what a read costs when it hops to a reader thread
/// and back (a std channel there, a tokio oneshot back), beside the same read inline.
type ReadJob = Box<dyn FnOnce(&rusqlite::Connection) + Send>;

fn reader_thread(conn: rusqlite::Connection) -> std::sync::mpsc::Sender<ReadJob> {
    let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
    std::thread::spawn(move || {
        while let Ok(job) = rx.recv() {
            job(&conn);
        }
    });
    tx
}

/// Each figure beside its floor once more, interleaved: `pairs` rounds of a batch of the
/// floor then a batch of tenantry's, so both run under the same machine load (a shared VM
/// whose load drifts between criterion's benchmarks, which run one after the other).
/// Prints the median of the per-round ratios (tenantry / floor) with its quartiles and the
/// median time per operation of each side.
fn paired(name: &str, batch: u32, pairs: u32, mut floor: impl FnMut(), mut tenantry: impl FnMut()) {
    let mut ratios = Vec::new();
    let mut f_each = Vec::new();
    let mut t_each = Vec::new();
    for _ in 0..pairs {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            floor();
        }
        let f = start.elapsed();
        let start = std::time::Instant::now();
        for _ in 0..batch {
            tenantry();
        }
        let t = start.elapsed();
        ratios.push(t.as_secs_f64() / f.as_secs_f64());
        f_each.push(f / batch);
        t_each.push(t / batch);
    }
    ratios.sort_by(f64::total_cmp);
    f_each.sort();
    t_each.sort();
    let q = |v: &[f64], k: usize| v[(v.len() - 1) * k / 4];
    println!(
        "paired {name}: ratio {:.2} (quartiles {:.2}-{:.2}); floor {:.1?}, tenantry {:.1?} per op (medians of {pairs} rounds of {batch})",
        q(&ratios, 2),
        q(&ratios, 1),
        q(&ratios, 3),
        f_each[f_each.len() / 2],
        t_each[t_each.len() / 2],
    );
}

fn floors(c: &mut Criterion) {
    use tenantry_store::Store;
    let rt = rt();
    let mut g = c.benchmark_group("sqlite/floor");

    // An invite's transaction: Store::commit of an invite change (user, invitation, audit,
    // outbox rows) on an owning store, beside the same statements in plain rusqlite on a
    // second database of the same shape.
    let s = rt.block_on(seeded_in(10_000, 1, false, "-commit"));
    let model = rt.block_on(invite_rows(&s));
    let state = rt.block_on(s.store.tenant(s.tenant)).unwrap().unwrap();
    let mut counters = state.counters;
    let mut i = 0u64;
    g.bench_function("invite_commit/tenantry", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let (user, invitation, message) = nth_invite(&model, i);
            let change = tenantry_core::decide::Change {
                tenant_id: s.tenant,
                expected_version: counters.version,
                counters: tenantry_core::Counters {
                    version: counters.version + 1,
                    seats_used: counters.seats_used + 1,
                    active_admins: counters.active_admins,
                },
                writes: vec![
                    tenantry_core::decide::Write::InsertUser(user),
                    tenantry_core::decide::Write::InsertInvitation(invitation),
                ],
                events: model.events.clone(),
            };
            counters = change.counters;
            let store = s.store.clone();
            async move { store.commit(&change, &[message]).await.unwrap() }
        })
    });
    let f = rt.block_on(seeded_in(10_000, 1, false, "-floor"));
    let fmodel = rt.block_on(invite_rows(&f));
    let fstate = rt.block_on(f.store.tenant(f.tenant)).unwrap().unwrap();
    rt.block_on(f.store.close());
    let mut conn = raw(&f);
    let ft = f.tenant.to_string();
    let mut version = i64::try_from(fstate.counters.version).unwrap();
    let mut seats = i64::from(fstate.counters.seats_used);
    let admins = i64::from(fstate.counters.active_admins);
    let mut j = 0u64;
    g.bench_function("invite_commit/floor", |b| {
        b.iter(|| {
            j += 1;
            floor_invite(&mut conn, &ft, &fmodel, j, &mut version, &mut seats, admins);
        })
    });
    paired(
        "invite_commit",
        10,
        150,
        || {
            j += 1;
            floor_invite(&mut conn, &ft, &fmodel, j, &mut version, &mut seats, admins);
        },
        || {
            i += 1;
            let (user, invitation, message) = nth_invite(&model, i);
            let change = tenantry_core::decide::Change {
                tenant_id: s.tenant,
                expected_version: counters.version,
                counters: tenantry_core::Counters {
                    version: counters.version + 1,
                    seats_used: counters.seats_used + 1,
                    active_admins: counters.active_admins,
                },
                writes: vec![
                    tenantry_core::decide::Write::InsertUser(user),
                    tenantry_core::decide::Write::InsertInvitation(invitation),
                ],
                events: model.events.clone(),
            };
            counters = change.counters;
            rt.block_on(s.store.commit(&change, &[message])).unwrap();
        },
    );
    drop(conn);
    drop(s);

    // A check without a cache (a shared store: one JOIN per check) beside the JOIN alone.
    let s = rt.block_on(seeded_in(10_000, 2, true, "-read"));
    let p = Permission::new(Category::Conversations, Action::Edit).into();
    g.bench_function("check_shared/tenantry_authorize", |b| {
        b.to_async(&rt).iter(|| async {
            s.app
                .authorize(s.tenant, black_box(s.agent), p)
                .await
                .unwrap()
        })
    });
    g.bench_function("check_shared/tenantry_subject", |b| {
        b.to_async(&rt).iter(|| async {
            s.store
                .subject(s.tenant, black_box(s.agent))
                .await
                .unwrap()
                .unwrap()
        })
    });
    let conn = raw(&s);
    let (t, agent) = (s.tenant.to_string(), s.agent.to_string());
    let row = floor_point_read(&conn, &t, &agent);
    assert_eq!(row.1, agent);
    g.bench_function("check_shared/floor_point_read", |b| {
        b.iter(|| floor_point_read(&conn, black_box(&t), black_box(&agent)))
    });
    // The same read on a reader thread, awaited: the hop a reader thread would add.
    let hop = reader_thread(raw(&s));
    g.bench_function("check_shared/floor_point_read_on_a_thread", |b| {
        b.to_async(&rt).iter(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (t, agent) = (t.clone(), agent.clone());
            hop.send(Box::new(move |c| {
                let _ = tx.send(floor_point_read(c, &t, &agent));
            }))
            .unwrap();
            async move { rx.await.unwrap() }
        })
    });
    paired(
        "check_shared (authorize)",
        50,
        150,
        || {
            black_box(floor_point_read(&conn, &t, &agent));
        },
        || {
            black_box(rt.block_on(s.app.authorize(s.tenant, s.agent, p)).unwrap());
        },
    );
    paired(
        "point read on a reader thread / inline",
        50,
        150,
        || {
            black_box(floor_point_read(&conn, &t, &agent));
        },
        || {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (t, agent) = (t.clone(), agent.clone());
            hop.send(Box::new(move |c| {
                let _ = tx.send(floor_point_read(c, &t, &agent));
            }))
            .unwrap();
            black_box(rt.block_on(rx).unwrap());
        },
    );

    // A page of 50 after a cursor (200 rows in, by email): Store::list_users beside the
    // same SELECT.
    let first = UserQuery {
        limit: 200,
        ..UserQuery::default()
    };
    let after = rt
        .block_on(s.store.list_users(s.tenant, &first))
        .unwrap()
        .next
        .unwrap();
    let tenantry_store::Cursor::Email(key, id) = after.clone() else {
        panic!("an email cursor");
    };
    let q = UserQuery {
        after: Some(after),
        ..UserQuery::default()
    };
    let id = id.to_string();
    let page = rt.block_on(s.store.list_users(s.tenant, &q)).unwrap();
    let rows = floor_page(&conn, &t, &key, &id);
    assert_eq!(page.items.len(), 50);
    assert_eq!(rows.len(), 51);
    assert_eq!(page.items[0].id.to_string(), rows[0].1, "the same page");
    g.bench_function("page_50/tenantry_list_users", |b| {
        b.to_async(&rt)
            .iter(|| async { s.store.list_users(s.tenant, black_box(&q)).await.unwrap() })
    });
    g.bench_function("page_50/floor", |b| {
        b.iter(|| floor_page(&conn, black_box(&t), black_box(&key), black_box(&id)))
    });
    paired(
        "page_50",
        20,
        150,
        || {
            black_box(floor_page(&conn, &t, &key, &id));
        },
        || {
            black_box(rt.block_on(s.store.list_users(s.tenant, &q)).unwrap());
        },
    );
    g.finish();
}

criterion_group!(sqlite, pages, authorize_and_invite, floors);
criterion_main!(sqlite);
