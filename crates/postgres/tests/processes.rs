//! Several OS processes of the service on one PostgreSQL schema (D8, D9, D10, D16): this
//! binary starts copies of itself (`--child <role>`), four at a time, that race invites at a
//! seat limit, accepts of one token and two admins demoting each other, and checks after
//! every race that the rule held exactly. Each child opens its own pool on the host's terms
//! (`PostgresStore::new(pool).with_schema(..)`) and migrates, all four at once.
//!
//! `harness = false`: `main` is the test. It fails (never skips) when PostgreSQL is
//! unreachable, as every test of this crate does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tenantry_postgres::{PgConnectOptions, PgPoolOptions, PostgresStore};
use tenantry_service::prelude::*;
use tenantry_service::{Error, RuleError, TenantId, UserId};

const PROCESSES: usize = 4;
const ROUNDS: usize = 3;
/// Free seats in each round's seat-limit race; each process tries this many invites.
const FREE_SEATS: usize = 5;

fn url() -> String {
    std::env::var("TENANTRY_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn options() -> PgConnectOptions {
    PgConnectOptions::from_str(&url()).expect("TENANTRY_PG_URL is a valid URL")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child without {name}"))
}

fn uuid_env(name: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(&env(name)).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store on a pool of this process's own, in `schema`, migrated (concurrently with the
/// other processes).
async fn open(schema: &str) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options().options([("lock_timeout", "10s")]))
        .await
        .unwrap_or_else(|e| unreachable(&e));
    let store = PostgresStore::new(pool).with_schema(schema).unwrap();
    store.migrate().await.unwrap();
    store
}

fn app_on(store: PostgresStore) -> Tenantry {
    Tenantry::builder(store)
        .delivery(tenantry_service::DeliverySettings {
            inline: false,
            ..Default::default()
        })
        .build()
        .unwrap()
}

fn unreachable(e: &dyn std::fmt::Display) -> ! {
    eprintln!(
        "PostgreSQL is not reachable at {} ({e}). Start it with: pg_ctlcluster \
         --skip-systemctl-redirect $(ls /etc/postgresql) main start (scripts/services.sh does \
         this), or point TENANTRY_PG_URL at another server.",
        url()
    );
    std::process::exit(1)
}

/// Repeats `call` while it gives up with contention (the rule is then still undecided).
async fn decided<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    for _ in 0..50 {
        match call().await {
            Err(Error::Contention { .. }) => continue,
            other => return other,
        }
    }
    panic!("still contended after 50 tries");
}

fn plain(address: &str, role: Role) -> InviteRequest {
    InviteRequest {
        email: Email::parse(address).unwrap(),
        role,
        template_id: None,
        crm_access: role == Role::Admin,
        grants: Permissions::empty(),
    }
}

/// A child: waits for the common start, plays its role once, prints how many of its calls
/// succeeded.
fn child(role: &str) -> ExitCode {
    let rt = runtime();
    let succeeded = rt.block_on(async {
        let store = open(&env("TP_SCHEMA")).await;
        let app = app_on(store.clone());
        let tenant = TenantId::from_uuid(uuid_env("TP_TENANT"));
        let start_at: u128 = env("TP_START_AT").parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        if let Some(wait) = start_at.checked_sub(now) {
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
        }
        let mut ok = 0usize;
        match role {
            "invite" => {
                let admin = UserId::from_uuid(uuid_env("TP_ACTOR"));
                let tag = env("TP_TAG");
                for i in 0..FREE_SEATS {
                    let address = format!("{tag}i{i}@acme.test");
                    let request = plain(&address, Role::User);
                    match decided(|| app.invite(tenant, admin, &request)).await {
                        Ok(_) => ok += 1,
                        Err(Error::Rule(RuleError::SeatLimitReached { .. })) => {}
                        Err(e) => panic!("invite {address}: {e:?}"),
                    }
                }
            }
            "accept" => {
                let token = env("TP_TOKEN");
                let email = env("TP_EMAIL");
                if decided(|| app.accept_invitation(&token, &email))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            "demote" => {
                let actor = UserId::from_uuid(uuid_env("TP_ACTOR"));
                let target = UserId::from_uuid(uuid_env("TP_TARGET"));
                let edit = UserEdit {
                    role: Some(Role::User),
                    ..UserEdit::default()
                };
                if decided(|| app.edit_user(tenant, actor, target, &edit))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            other => panic!("unknown role {other}"),
        }
        store.close().await;
        ok
    });
    println!("succeeded {succeeded}");
    ExitCode::SUCCESS
}

/// Runs `PROCESSES` children of `role` at once, each with its own variables; returns the
/// successes of each.
fn race(schema: &str, tenant: TenantId, role: &str, vars: &[Vec<(&str, String)>]) -> Vec<usize> {
    let me = std::env::current_exe().unwrap();
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 700;
    let children: Vec<_> = vars
        .iter()
        .map(|own| {
            let mut cmd = Command::new(&me);
            cmd.args(["--child", role])
                .env("TP_SCHEMA", schema)
                .env("TP_TENANT", tenant.as_uuid().to_string())
                .env("TP_START_AT", start_at.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (k, v) in own {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    let mut each = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a {role} process failed: {}",
            out.status
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let n: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("succeeded "))
            .unwrap_or_else(|| panic!("a {role} process printed no result: {text:?}"))
            .parse()
            .unwrap();
        each.push(n);
    }
    each
}

async fn rows(store: &PostgresStore, sql: &str, tenant: TenantId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(tenant.as_uuid())
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn parent() {
    let rt = runtime();
    let schema = format!("tenantry_test_{}_processes", std::process::id());
    let store = rt.block_on(async {
        let opts = options().options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .unwrap_or_else(|e| unreachable(&e));
        let store = PostgresStore::new(pool).with_schema(&schema).unwrap();
        store.migrate().await.unwrap();
        store
    });
    let app = app_on(store.clone());
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for round in 0..ROUNDS {
            // D9: 4 processes × 5 invites for 5 free seats: exactly 5 land.
            let (t, ada) = rt
                .block_on(app.create_tenant(
                    &format!("Seats {round}"),
                    Some(u32::try_from(FREE_SEATS + 1).unwrap()),
                    Email::parse("ada@acme.test").unwrap(),
                ))
                .unwrap();
            let vars: Vec<_> = (0..PROCESSES)
                .map(|k| {
                    vec![
                        ("TP_ACTOR", ada.as_uuid().to_string()),
                        ("TP_TAG", format!("r{round}p{k}")),
                    ]
                })
                .collect();
            let invited: usize = race(&schema, t, "invite", &vars).iter().sum();
            assert_eq!(
                invited, FREE_SEATS,
                "round {round}: D9, invites that landed"
            );
            let used = rt.block_on(app.seat_usage(t)).unwrap().used;
            assert_eq!(used as usize, FREE_SEATS + 1, "round {round}: seats used");
            let users = rt.block_on(rows(
                &store,
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1",
                t,
            ));
            assert_eq!(users as usize, FREE_SEATS + 1, "round {round}: user rows");

            // D10: 4 processes accept one token: exactly one does.
            let (t, ada) = rt
                .block_on(app.create_tenant(
                    &format!("Accepts {round}"),
                    None,
                    Email::parse("ada@acme.test").unwrap(),
                ))
                .unwrap();
            let bob = rt
                .block_on(app.invite(t, ada, &plain("bob@acme.test", Role::User)))
                .unwrap();
            let token = bob.accept_link.token().unwrap();
            let vars: Vec<_> = (0..PROCESSES)
                .map(|_| {
                    vec![
                        ("TP_TOKEN", token.clone()),
                        ("TP_EMAIL", "bob@acme.test".to_owned()),
                    ]
                })
                .collect();
            let accepted: usize = race(&schema, t, "accept", &vars).iter().sum();
            assert_eq!(accepted, 1, "round {round}: D10, accepts of one token");
            let bob_now = rt
                .block_on(app.user(t, ActorRef::User(ada), bob.user.id))
                .unwrap();
            assert_eq!(bob_now.status, Status::Active);

            // D8: two admins demote each other from 4 processes: exactly one demotion
            // lands, one active admin remains.
            let carol = rt
                .block_on(app.invite(t, ada, &plain("carol@acme.test", Role::Admin)))
                .unwrap();
            let carol_token = carol.accept_link.token().unwrap();
            rt.block_on(app.accept_invitation(&carol_token, "carol@acme.test"))
                .unwrap();
            let vars: Vec<_> = (0..PROCESSES)
                .map(|k| {
                    let (actor, target) = if k % 2 == 0 {
                        (ada, carol.user.id)
                    } else {
                        (carol.user.id, ada)
                    };
                    vec![
                        ("TP_ACTOR", actor.as_uuid().to_string()),
                        ("TP_TARGET", target.as_uuid().to_string()),
                    ]
                })
                .collect();
            // A process repeating the demotion that already landed changes nothing and
            // succeeds; the other direction must then be refused (its actor is no admin).
            let each = race(&schema, t, "demote", &vars);
            let ada_demoted_carol = each.iter().step_by(2).sum::<usize>() > 0;
            let carol_demoted_ada = each.iter().skip(1).step_by(2).sum::<usize>() > 0;
            assert!(
                ada_demoted_carol != carol_demoted_ada,
                "round {round}: D8, exactly one direction lands: {each:?}"
            );
            let demoted = usize::from(ada_demoted_carol) + usize::from(carol_demoted_ada);
            let admins = rt.block_on(rows(
                &store,
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND status = 'active'",
                t,
            ));
            assert_eq!(admins, 1, "round {round}: D8, active admins");
            let counted = rt.block_on(rows(
                &store,
                "SELECT active_admins FROM tenants WHERE id = $1",
                t,
            ));
            assert_eq!(counted, 1, "round {round}: the counter follows the rows");
            println!(
                "round {round}: {invited} of {} invites, {accepted} of {PROCESSES} accepts, \
                 {demoted} of 2 mutual demotions landed",
                PROCESSES * FREE_SEATS
            );
        }
    }));
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), store.drop_schema()).await;
    });
    match outcome {
        Ok(()) => println!(
            "processes: {ROUNDS} rounds of {PROCESSES} processes ok in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let role = args.get(i + 1).cloned().unwrap_or_default();
        return child(&role);
    }
    // `cargo test` passes harness flags (`--nocapture`, filters): there is one test here.
    parent();
    ExitCode::SUCCESS
}
