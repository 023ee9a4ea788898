//! PostgreSQL backend benches, through the real `Tenantry` service on a `PostgresStore`,
//! each beside its floor (the bare engine doing the same work, in the same run):
//!
//! - `authorize`: one check of a user on a role template (one round trip: the user and its
//!   template's permissions in one statement, on one of the store's own connections); floor
//!   `pk_round_trip`, a primary-key read of the same user on a held connection (beside it,
//!   the same reads through the pool, and `Store::subject` with the pool only);
//! - `invite`: invites per second with 8 concurrent clients, into one tenant (they contend
//!   for its row lock and version, D16) and into 8 tenants (one each), on a store with one
//!   connection of its own per client (`with_hot_connections(8)`); floor
//!   `floor_one_tenant` / `floor_tenant_each`: plain SQL doing the same writes (lock the
//!   tenant row, insert the user, its invitation, its audit record and its mail, set the
//!   version; the same bytes as tenantry's rows: its real mail and event) in one transaction
//!   of one round trip, a held connection per client;
//! - `page50`: one page of 50 users at 1k and at 100k users (D18: keyset pagination on an
//!   index, so the ratio stays near 1), floor `floor_*`: the same statement, plain, on a
//!   held connection. The 100k users are seeded with one bulk SQL insert.
//!
//! Needs the PostgreSQL on this machine (`TENANTRY_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); works in a schema of its own, dropped at the end.
//!
//! `cargo bench -p tenantry-postgres --bench postgres -- --warm-up-time 1 --measurement-time 3`
//!
//! Before each invite group (the floors' and tenantry's alike) the bench does what autovacuum
//! does on a server with the default settings (this machine's runs with `autovacuum = off`):
//! `VACUUM (ANALYZE)` of its schema's tables. `TENANTRY_BENCH_MAINTAIN=0` leaves it out.
//! `TENANTRY_BENCH_INVITE_CPU=<rounds>` first runs rounds of the invite workloads
//! interleaved (2,000 invites each) and prints the CPU each invite cost this process and the
//! server beside the throughput (`TENANTRY_BENCH_INVITE_CPU_ONLY=a,b` picks workloads,
//! `TENANTRY_BENCH_COMMIT_AB=1` adds each tenantry workload on migration 6's commit
//! function); filter the criterion groups away (e.g. `-- --bench none`) to run only that.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tenantry_postgres::{PgConnectOptions, PgPoolOptions, PostgresStore};
use tenantry_service::prelude::*;
use tenantry_service::{Cursor, Store, TenantId, UserId};

fn url() -> String {
    std::env::var("TENANTRY_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn store(schema: &str) -> PostgresStore {
    let opts: PgConnectOptions = url().parse().unwrap();
    let unusable = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "PostgreSQL at {} is not usable ({e}). Start it with: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            url()
        )
    };
    // The host's pool (search_path = the schema, for the floors' plain SQL), then the store
    // on it, then its migrations.
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect_with(opts.options([("search_path", schema)]))
        .await
        .unwrap_or_else(|e| unusable(&e));
    let store = PostgresStore::new(pool)
        .with_schema(schema)
        .unwrap_or_else(|e| unusable(&e));
    store.migrate().await.unwrap_or_else(|e| unusable(&e));
    store
}

/// What one tenantry invite wrote into the rows the floor also writes, byte for byte: its
/// mail's subject and bodies and its audit record's action and event, so the floor stores as
/// many bytes per invite as tenantry does (same rows: tenantry's real mail, not a stub).
#[derive(Clone)]
struct InviteBytes {
    subject: String,
    text: String,
    html: String,
    action: String,
    event: String,
}

/// An invite of a plain user (no template, no CRM access, no grants) at `address`.
fn plain_invite(address: &str) -> InviteRequest {
    InviteRequest {
        email: Email::parse(address).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::empty(),
    }
}

/// The bytes of a real invite: one `Tenantry::invite` into a tenant of its own, read back.
async fn invite_bytes(app: &Tenantry, pool: &sqlx::PgPool) -> InviteBytes {
    let (t, a) = app
        .create_tenant(
            "Invite bytes",
            None,
            Email::parse("admin@bytes.test").unwrap(),
        )
        .await
        .unwrap();
    let invited = app
        .invite(t, a, &plain_invite("u0@bytes.test"))
        .await
        .unwrap();
    let (subject, text, html): (String, String, String) = sqlx::query_as(
        "SELECT subject, body_text, body_html FROM outbox WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(t.as_uuid())
    .bind(invited.user.id.as_uuid())
    .fetch_one(pool)
    .await
    .unwrap();
    let (action, event): (String, String) = sqlx::query_as(
        "SELECT action, event FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(t.as_uuid())
    .fetch_one(pool)
    .await
    .unwrap();
    let bytes = InviteBytes {
        subject,
        text,
        html,
        action,
        event,
    };
    for v in [
        &bytes.subject,
        &bytes.text,
        &bytes.html,
        &bytes.action,
        &bytes.event,
    ] {
        assert!(!v.contains("$b$"), "the floor quotes these with $b$");
    }
    bytes
}

/// One floor invite: the same writes as `Tenantry::invite`'s commit (the same rows, and the
/// same bytes in them: [`InviteBytes`]), in plain SQL, as one transaction sent in one round
/// trip (a simple-query string: the values are generated here or read back from tenantry's
/// own rows, never taken from outside).
fn floor_invite_sql(tenant: TenantId, n: u64, b: &InviteBytes) -> String {
    let t = tenant.as_uuid();
    let (user, msg) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let hash = format!(
        "{:064x}",
        u128::from(n as u32) << 64 | u128::from(user.as_u128() as u64)
    );
    let InviteBytes {
        subject,
        text,
        html,
        action,
        event,
    } = b;
    format!(
        "BEGIN; \
         SELECT version FROM tenants WHERE id = '{t}' FOR NO KEY UPDATE; \
         INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
           VALUES ('{t}', '{user}', 'f{n}@floor.test', 'f{n}@floor.test', 'user', 'invited', NULL, false, '{{}}', 1, NULL, -9223372036854775808, 2); \
         INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
           VALUES ('\\x{hash}', '{t}', '{user}', 'initial', 'pending', 1, 2, 0); \
         UPDATE tenants SET version = version + 1 WHERE id = '{t}'; \
         UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = '{t}'; \
         INSERT INTO audit_log (tenant_id, seq, at, action, event) \
           SELECT '{t}', seq, 1, $b${action}$b$, $b${event}$b$ FROM audit_heads WHERE tenant_id = '{t}'; \
         INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
           VALUES ('{t}', '{msg}', '{user}', 'f{n}@floor.test', $b${subject}$b$, $b${text}$b$, $b${html}$b$, 'pending', 0, 1, 1); \
         COMMIT"
    )
}

/// The floor of the first page: the same rows, order and limit as `list_users`' first page,
/// in plain SQL on a held connection.
const FLOOR_FIRST_PAGE: &str = "SELECT tenant_id, id, email, role, status, template_id, crm_access, grants, \
     created_at, last_login, invite_expires_at \
     FROM users WHERE tenant_id = $1 ORDER BY email_key ASC, id ASC LIMIT 51";

const CLIENTS: u64 = 8;

/// Runs `CLIENTS` clients at once, client `k` made by `client(k, share)`, where `share` is its
/// part of `iters` (the parts differ by at most one); the wall time until all of them ended.
async fn fan_out<F, Fut>(iters: u64, mut client: F) -> Duration
where
    F: FnMut(u64, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(client(k, iters / CLIENTS + u64::from(k < iters % CLIENTS))))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    started.elapsed()
}

/// `iters` floor invites from 8 clients, a held connection each, into one tenant (`shared`)
/// or one tenant each; the wall time they took.
async fn floor_invites(
    pool: sqlx::PgPool,
    tenants: Vec<(TenantId, UserId)>,
    shared: bool,
    iters: u64,
    next: Arc<AtomicU64>,
    bytes: InviteBytes,
) -> Duration {
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(pool.acquire().await.unwrap());
    }
    let mut conns = conns.into_iter();
    fan_out(iters, |k, share| {
        let mut conn = conns.next().unwrap();
        let next = Arc::clone(&next);
        let bytes = bytes.clone();
        let (t, _) = tenants[if shared { 0 } else { k as usize }];
        async move {
            for _ in 0..share {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let sql = floor_invite_sql(t, n, &bytes);
                sqlx::Executor::execute(&mut *conn, sql.as_str())
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

/// `iters` invites through `Tenantry::invite` from 8 clients, as [`floor_invites`].
async fn invites(
    app: Tenantry,
    tenants: Vec<(TenantId, UserId)>,
    shared: bool,
    iters: u64,
    next: Arc<AtomicU64>,
) -> Duration {
    fan_out(iters, |k, share| {
        let app = app.clone();
        let next = Arc::clone(&next);
        let (t, a) = tenants[if shared { 0 } else { k as usize }];
        async move {
            for _ in 0..share {
                let n = next.fetch_add(1, Ordering::Relaxed);
                app.invite(t, a, &plain_invite(&format!("u{n}@inv.test")))
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

/// `iters` snapshots as an invite reads them (the actor, the address), from 8 clients, one
/// tenant each: the read half of an invite.
async fn snapshots(
    store: PostgresStore,
    tenants: Vec<(TenantId, UserId)>,
    iters: u64,
    next: Arc<AtomicU64>,
) -> Duration {
    fan_out(iters, |k, share| {
        let store = store.clone();
        let next = Arc::clone(&next);
        let (t, a) = tenants[k as usize];
        async move {
            for _ in 0..share {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let read = tenantry_store::SnapshotRequest::default()
                    .actor(a)
                    .email_key(&format!("u{n}@inv.test"));
                let snap = store.snapshot(t, &read).await.unwrap();
                assert!(snap.actor.is_some());
            }
        }
    })
    .await
}

/// What autovacuum does on a server with the default settings, which this machine's does not
/// have (it runs with `autovacuum = off`): vacuum and analyze every table of the bench's
/// schema. Run before each invite group, the floors' and tenantry's alike, where autovacuum
/// would have run by then (it visits a database once a minute, and these tables pass its
/// thresholds within seconds). Without it: the tenant rows' dead versions are never removed
/// from `tenants_pkey` (every later lock of a tenant walks them), and without statistics the
/// plans that tenantry's connections prepared on near-empty tables keep walking a tenant's
/// whole range in `users_by_status` for a lookup by id or by address (measured: five index
/// entries per lookup of a tenant row, and a range walk per snapshot), where the floor's
/// plain SQL is planned again at every statement. Analyzing invalidates those plans, as
/// autovacuum's analyze does. `TENANTRY_BENCH_MAINTAIN=0` leaves it out.
async fn maintain(pool: &sqlx::PgPool) {
    if std::env::var("TENANTRY_BENCH_MAINTAIN").as_deref() == Ok("0") {
        return;
    }
    sqlx::raw_sql(
        "VACUUM (ANALYZE) tenants, users, role_templates, invitations, tombstones, audit_log, \
         audit_heads, outbox",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Replaces `tenantry_commit` in the bench's schema with the one migration `version` (5, 6
/// or 7) creates.
async fn commit_function(pool: &sqlx::PgPool, version: u32) {
    let file = match version {
        5 => include_str!("../migrations/0005_identity.sql"),
        6 => include_str!("../migrations/0006_leaner_commit.sql"),
        _ => include_str!("../migrations/0007_invite_without_lookup.sql"),
    };
    let start = file
        .find("CREATE OR REPLACE FUNCTION tenantry_commit(")
        .unwrap();
    sqlx::raw_sql(&file[start..]).execute(pool).await.unwrap();
}

/// CPU ticks (1/100 s) used so far: by this process, and by every `postgres` process (the
/// server's backends; other users of the machine do not run PostgreSQL here).
fn cpu_ticks() -> (u64, u64) {
    fn ticks(stat: &str) -> Option<(String, u64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of the line (11 and 12 after the comm).
        let u: u64 = fields.get(11)?.parse().ok()?;
        let s: u64 = fields.get(12)?.parse().ok()?;
        Some((comm, u + s))
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0, |(_, t)| t);
    let mut pg = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((comm, t)) = ticks(&stat)
            && comm.starts_with("postgres")
        {
            pg += t;
        }
    }
    (own, pg)
}

/// `TENANTRY_BENCH_INVITE_CPU=<rounds>`: rounds of the four invite workloads, interleaved,
/// each 2,000 invites, with the CPU each used per invite (this process, the server) beside
/// its throughput: on a machine the bench shares with PostgreSQL (2 cores), the CPU an
/// invite costs bounds the throughput, and is less moved by other load than wall time.
fn invite_cpu(
    rt: &tokio::runtime::Runtime,
    store: &PostgresStore,
    app: &Tenantry,
    pool: &sqlx::PgPool,
    (tenants, bytes): (&[(TenantId, UserId)], &InviteBytes),
    next: &Arc<AtomicU64>,
    rounds: u32,
) {
    const N: u64 = 2_000;
    let hz = 100.0;
    // `TENANTRY_BENCH_INVITE_CPU_ONLY=<name>`: that workload alone (for a profile of it).
    let only = std::env::var("TENANTRY_BENCH_INVITE_CPU_ONLY").ok();
    // The same service on a store with a connection of its own per client.
    let hot8 = app_on(&store.clone().with_hot_connections(8));
    // One line per workload and round: its throughput and CPU per invite since `before`.
    let report = |round: u32, name: &str, took: Duration, (own0, pg0): (u64, u64)| {
        let (own1, pg1) = cpu_ticks();
        let per = |t: u64| t as f64 / hz / N as f64 * 1e6;
        println!(
            "invite_cpu round {round} {name:18} {:7.0}/s  client {:6.1} µs  server {:6.1} µs  total {:6.1} µs per invite",
            N as f64 / took.as_secs_f64(),
            per(own1 - own0),
            per(pg1 - pg0),
            per(own1 - own0 + pg1 - pg0),
        );
    };
    for round in 0..rounds {
        rt.block_on(maintain(pool));
        for (name, shared, kind) in [
            ("floor_tenant_each", false, 0),
            ("tenant_each", false, 1),
            ("snapshot_each", false, 2),
            ("tenant_each_hot8", false, 3),
            ("floor_one_tenant", true, 0),
            ("one_tenant", true, 1),
        ] {
            if only
                .as_deref()
                .is_some_and(|o| !o.split(',').any(|o| o == name))
            {
                continue;
            }
            // `TENANTRY_BENCH_COMMIT_AB=1`: each tenantry workload twice, with migration 7's
            // commit function and again with migration 6's (put back for the run, then
            // replaced), for a paired comparison; migration 6's goes first in even rounds and
            // second in odd ones (each run grows the tables and the tenant rows' dead
            // versions, so the later run of a pair is the slower on equal work).
            let ab = kind == 1 && std::env::var("TENANTRY_BENCH_COMMIT_AB").as_deref() == Ok("1");
            let previous = || {
                let before = cpu_ticks();
                let took = rt.block_on(async {
                    commit_function(pool, 6).await;
                    let took =
                        invites(app.clone(), tenants.to_vec(), shared, N, Arc::clone(next)).await;
                    commit_function(pool, 7).await;
                    took
                });
                report(round, &format!("{name}_m6"), took, before);
            };
            if ab && round % 2 == 0 {
                previous();
            }
            let before = cpu_ticks();
            let took = rt.block_on(async {
                match kind {
                    0 => {
                        floor_invites(
                            pool.clone(),
                            tenants.to_vec(),
                            shared,
                            N,
                            Arc::clone(next),
                            bytes.clone(),
                        )
                        .await
                    }
                    1 => invites(app.clone(), tenants.to_vec(), shared, N, Arc::clone(next)).await,
                    2 => snapshots(store.clone(), tenants.to_vec(), N, Arc::clone(next)).await,
                    _ => invites(hot8.clone(), tenants.to_vec(), shared, N, Arc::clone(next)).await,
                }
            });
            report(round, name, took, before);
            if ab && round % 2 == 1 {
                previous();
            }
        }
    }
}

fn app_on(store: &PostgresStore) -> Tenantry {
    // Delivery is left to a dispatcher (not inline), so an invite costs its commit only.
    Tenantry::builder(store.clone())
        .delivery(tenantry_service::DeliverySettings {
            inline: false,
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// A tenant with `n` users seeded by one bulk insert (triggers off for the load, counters
/// set from the rows after), and the cursor of the user in the middle of the email order.
async fn seeded(store: &PostgresStore, app: &Tenantry, n: i64) -> (TenantId, Cursor) {
    let (tenant, _admin) = app
        .create_tenant(
            &format!("Bench {n}"),
            None,
            Email::parse(&format!("admin@bench{n}.test")).unwrap(),
        )
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
         SELECT $1, gen_random_uuid(), format('user%s@bench.test', lpad(i::text, 7, '0')), format('user%s@bench.test', lpad(i::text, 7, '0')), 'user', \
                CASE i % 3 WHEN 0 THEN 'invited' WHEN 1 THEN 'active' ELSE 'suspended' END, NULL, i % 2 = 0, '{analytics:view}', \
                1700000000000000000 + i * 1000, \
                CASE WHEN i % 2 = 0 THEN 1700000000000000000 + ((i * 7919) % 100000) * 1000000 END, \
                CASE WHEN i % 2 = 0 THEN 1700000000000000000 + ((i * 7919) % 100000) * 1000000 ELSE -9223372036854775808 END, \
                NULL \
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(tenant.as_uuid())
    .bind(n)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tenants SET seats_used = (SELECT COUNT(*) FROM users WHERE tenant_id = $1) WHERE id = $1",
    )
    .bind(tenant.as_uuid())
    .execute(&mut *conn)
    .await
    .unwrap();
    // VACUUM too: otherwise autovacuum wakes up for the 100k new rows in the middle of the
    // measurements and competes for the CPU.
    sqlx::raw_sql("VACUUM ANALYZE users")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let key = format!("user{:07}@bench.test", n / 2);
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND email_key = $2")
            .bind(tenant.as_uuid())
            .bind(&key)
            .fetch_one(store.pool())
            .await
            .unwrap();
    (tenant, Cursor::Email(key, UserId::from_uuid(id)))
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    // Named like the tests' schemas, so a test run sweeps it if this process dies.
    let schema = format!("tenantry_test_{}_bench", std::process::id());
    let store = rt.block_on(store(&schema));
    let app = app_on(&store);

    // --- authorize: a user on a template, one round trip.
    let (tenant, admin, agent) = rt.block_on(async {
        let (t, a) = app
            .create_tenant("Authz", None, Email::parse("admin@authz.test").unwrap())
            .await
            .unwrap();
        let template = app
            .create_template(t, a, "Agents", Permissions::CONVERSATIONS_EDIT)
            .await
            .unwrap();
        let invited = app
            .invite(
                t,
                a,
                &InviteRequest {
                    email: Email::parse("agent@authz.test").unwrap(),
                    role: Role::User,
                    template_id: Some(template.id),
                    crm_access: true,
                    grants: Permissions::ANALYTICS_VIEW,
                },
            )
            .await
            .unwrap();
        let token = invited.accept_link.token().unwrap();
        let agent = app
            .accept_invitation(&token, "agent@authz.test")
            .await
            .unwrap();
        (t, a, agent.id)
    });
    let _ = admin;
    let via_template: Request = Permission::new(Category::Conversations, Action::Edit).into();
    let mut g = c.benchmark_group("postgres/authorize");
    let pool = store.pool().clone();
    g.bench_function("pk_round_trip", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire().await.unwrap();
                let started = Instant::now();
                for _ in 0..iters {
                    let found: Option<uuid::Uuid> =
                        sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
                            .bind(black_box(tenant).as_uuid())
                            .bind(black_box(agent).as_uuid())
                            .fetch_optional(&mut *conn)
                            .await
                            .unwrap();
                    assert!(found.is_some());
                }
                started.elapsed()
            }
        });
    });
    // Where a check's time goes: the same primary-key read through the pool (an acquire
    // and a release per call), and the store's own statement (the user and its template's
    // permissions; a JOIN before session 9) on a held connection.
    g.bench_function("pk_on_pool", |b| {
        b.to_async(&rt).iter(|| async {
            let found: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(black_box(tenant).as_uuid())
                    .bind(black_box(agent).as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            assert!(found.is_some());
        });
    });
    g.bench_function("subject_join_held", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.acquire().await.unwrap();
                let started = Instant::now();
                for _ in 0..iters {
                    let row = sqlx::query(
                        "SELECT u.role, u.status, u.crm_access, u.grants, u.template_id, \
                                (SELECT t.permissions FROM role_templates t WHERE t.tenant_id = $1 AND t.id = u.template_id) \
                         FROM users u WHERE u.tenant_id = $1 AND u.id = $2",
                    )
                    .bind(black_box(tenant).as_uuid())
                    .bind(black_box(agent).as_uuid())
                    .fetch_optional(&mut *conn)
                    .await
                    .unwrap();
                    assert!(row.is_some());
                }
                started.elapsed()
            }
        });
    });
    // The store's statement itself (schema-qualified), through the pool, rows not decoded.
    let subject_sql = format!(
        "SELECT u.role, u.status, u.crm_access, u.grants, u.template_id, \
                (SELECT t.permissions FROM \"{schema}\".role_templates t \
                 WHERE t.tenant_id = $1 AND t.id = u.template_id) \
         FROM \"{schema}\".users u WHERE u.tenant_id = $1 AND u.id = $2"
    );
    g.bench_function("subject_sql_on_pool", |b| {
        b.to_async(&rt).iter(|| async {
            let row = sqlx::query(&subject_sql)
                .bind(black_box(tenant).as_uuid())
                .bind(black_box(agent).as_uuid())
                .fetch_optional(&pool)
                .await
                .unwrap();
            assert!(row.is_some());
        });
    });
    g.bench_function("store_subject", |b| {
        b.to_async(&rt).iter(|| async {
            let s = store
                .subject(black_box(tenant), black_box(agent))
                .await
                .unwrap();
            assert!(s.is_some());
            s
        });
    });
    // The same read with none of the store's own connections: every statement through the
    // pool (what `store_subject` cost before the store held connections of its own).
    let pool_only = store.clone().with_hot_connections(0);
    g.bench_function("store_subject_pool_only", |b| {
        b.to_async(&rt).iter(|| async {
            let s = pool_only
                .subject(black_box(tenant), black_box(agent))
                .await
                .unwrap();
            assert!(s.is_some());
            s
        });
    });
    g.bench_function("via_template", |b| {
        b.to_async(&rt).iter(|| async {
            let d = app
                .authorize(black_box(tenant), black_box(agent), via_template)
                .await
                .unwrap();
            assert!(d.is_allowed());
            d
        });
    });
    g.finish();
    // The same comparison interleaved (criterion's benchmarks run minutes apart, and a
    // shared machine's load moves in between): rounds of one floor read on a held
    // connection, one `Tenantry::authorize` and one `Store::subject` of a store with none of
    // its own connections (the pool only), each timed; medians and their ratios.
    // `TENANTRY_BENCH_INTERLEAVED=0` skips it.
    if std::env::var("TENANTRY_BENCH_INTERLEAVED").as_deref() != Ok("0") {
        let (floor, check, pooled) = rt.block_on(async {
            let mut conn = pool.acquire().await.unwrap();
            let (mut floor, mut check, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..6_000 {
                let started = Instant::now();
                let found: Option<uuid::Uuid> =
                    sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
                        .bind(black_box(tenant).as_uuid())
                        .bind(black_box(agent).as_uuid())
                        .fetch_optional(&mut *conn)
                        .await
                        .unwrap();
                let between = Instant::now();
                let d = app
                    .authorize(black_box(tenant), black_box(agent), via_template)
                    .await
                    .unwrap();
                let done = Instant::now();
                let s = pool_only
                    .subject(black_box(tenant), black_box(agent))
                    .await
                    .unwrap();
                let last = Instant::now();
                assert!(found.is_some() && d.is_allowed() && s.is_some());
                // The first 1000 rounds warm both up.
                if round >= 1_000 {
                    floor.push(between - started);
                    check.push(done - between);
                    pooled.push(last - done);
                }
            }
            (floor, check, pooled)
        });
        let median = |mut v: Vec<Duration>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let (f, c, p) = (median(floor), median(check), median(pooled));
        println!(
            "postgres/authorize interleaved (5000 rounds): pk_round_trip median {:.1} µs, \
             via_template median {:.1} µs ({:.2}x), store_subject_pool_only median {:.1} µs \
             ({:.2}x)",
            f.as_secs_f64() * 1e6,
            c.as_secs_f64() * 1e6,
            c.as_secs_f64() / f.as_secs_f64(),
            p.as_secs_f64() * 1e6,
            p.as_secs_f64() / f.as_secs_f64()
        );
    }

    // --- invites per second, 8 concurrent clients.
    let next = Arc::new(AtomicU64::new(0));
    let tenants: Vec<(TenantId, UserId)> = rt.block_on(async {
        let mut out = Vec::new();
        for k in 0..CLIENTS {
            out.push(
                app.create_tenant(
                    &format!("Invites {k}"),
                    None,
                    Email::parse(&format!("admin@inv{k}.test")).unwrap(),
                )
                .await
                .unwrap(),
            );
        }
        out
    });
    let bytes = rt.block_on(invite_bytes(&app, &pool));
    let mut g = c.benchmark_group("postgres/invite_8_clients");
    g.throughput(Throughput::Elements(1));
    if let Ok(rounds) = std::env::var("TENANTRY_BENCH_INVITE_CPU") {
        invite_cpu(
            &rt,
            &store,
            &app,
            &pool,
            (&tenants, &bytes),
            &next,
            rounds.parse().unwrap_or(3),
        );
    }
    for (name, shared) in [("floor_one_tenant", true), ("floor_tenant_each", false)] {
        rt.block_on(maintain(&pool));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                floor_invites(
                    pool.clone(),
                    tenants.clone(),
                    shared,
                    iters,
                    Arc::clone(&next),
                    bytes.clone(),
                )
            });
        });
    }
    // Tenantry on a store with one connection of its own per client (its snapshot and its
    // commit run there), as the floor holds one connection per client.
    let held = app_on(&store.clone().with_hot_connections(CLIENTS as usize));
    for (name, shared) in [("one_tenant", true), ("tenant_each", false)] {
        rt.block_on(maintain(&pool));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                invites(
                    held.clone(),
                    tenants.clone(),
                    shared,
                    iters,
                    Arc::clone(&next),
                )
            });
        });
    }
    g.finish();

    // --- one page of 50 at 1k and 100k users (D18).
    let mut g = c.benchmark_group("postgres/page50");
    for n in [1_000i64, 100_000] {
        let (t, middle) = rt.block_on(seeded(&store, &app, n));
        let first = UserQuery {
            limit: 50,
            ..UserQuery::default()
        };
        let after_middle = UserQuery {
            after: Some(middle),
            ..first.clone()
        };
        let active_by_login = UserQuery {
            status: Some(Status::Active),
            sort: SortBy::LastLogin,
            descending: true,
            ..first.clone()
        };
        // The floor: the first page's statement, plain, on a held connection.
        g.bench_function(BenchmarkId::new("floor_first_page", n), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                async move {
                    let mut conn = pool.acquire().await.unwrap();
                    let started = Instant::now();
                    for _ in 0..iters {
                        let rows = sqlx::query(FLOOR_FIRST_PAGE)
                            .bind(black_box(t).as_uuid())
                            .fetch_all(&mut *conn)
                            .await
                            .unwrap();
                        assert_eq!(rows.len(), 51);
                    }
                    started.elapsed()
                }
            });
        });
        // The first page beside its floor interleaved, as `authorize`'s (criterion's
        // benchmarks run seconds apart, and a shared machine's load moves in between): rounds
        // of one floor page on a held connection and one `list_users`, each timed; medians.
        if std::env::var("TENANTRY_BENCH_INTERLEAVED").as_deref() != Ok("0") {
            let (floor, page) = rt.block_on(async {
                let mut conn = pool.acquire().await.unwrap();
                let (mut floor, mut page) = (Vec::new(), Vec::new());
                for round in 0..2_200 {
                    let started = Instant::now();
                    let rows = sqlx::query(FLOOR_FIRST_PAGE)
                        .bind(black_box(t).as_uuid())
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                    let between = Instant::now();
                    let p = app
                        .list_users(black_box(t), ActorRef::System, black_box(&first))
                        .await
                        .unwrap();
                    let done = Instant::now();
                    assert!(rows.len() == 51 && p.items.len() == 50);
                    // The first 200 rounds warm both up.
                    if round >= 200 {
                        floor.push(between - started);
                        page.push(done - between);
                    }
                }
                (floor, page)
            });
            let median = |mut v: Vec<Duration>| {
                v.sort_unstable();
                v[v.len() / 2]
            };
            let (f, p) = (median(floor), median(page));
            println!(
                "postgres/page50 interleaved ({n} users, 2000 rounds): floor_first_page median \
                 {:.1} µs, first_page median {:.1} µs ({:.2}x)",
                f.as_secs_f64() * 1e6,
                p.as_secs_f64() * 1e6,
                p.as_secs_f64() / f.as_secs_f64()
            );
        }
        for (name, q) in [
            ("first_page", first),
            ("after_middle", after_middle),
            ("active_by_last_login_desc", active_by_login),
        ] {
            g.bench_with_input(BenchmarkId::new(name, n), &q, |b, q| {
                b.to_async(&rt).iter(|| async {
                    let page = app
                        .list_users(black_box(t), ActorRef::System, black_box(q))
                        .await
                        .unwrap();
                    assert_eq!(page.items.len(), 50);
                    page
                });
            });
        }
    }
    g.finish();

    rt.block_on(async {
        let deadline = Duration::from_secs(30);
        let _ = tokio::time::timeout(deadline, store.drop_schema()).await;
    });
}

criterion_group!(postgres, benches);
criterion_main!(postgres);
