//! Several processes on one database file: the test re-runs its own binary as 4 child
//! processes (`--child <role> …`), each with `SqliteStore::open_shared` on the same file, and
//! races them, round after round: invites at a seat limit, accepts of one token, and mutual
//! demotions of admins. Every rule must hold exactly, every round: no seat over the limit and
//! every seat taken by a reported invite, one accept of a token, at least one active admin,
//! counters equal to rows, and a sound file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenantry_service::prelude::*;
use tenantry_service::{Rule, TenantId, UserId};
use tenantry_sqlite::SqliteStore;

const CHILDREN: usize = 4;
const ROUNDS: usize = 3;
/// Invites each child tries per round, against this many free seats.
const TRIES: usize = 4;
const FREE: usize = 6;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let role = args.get(i + 1).cloned().unwrap_or_default();
        let rest = args[i + 2..].to_vec();
        rt().block_on(child(&role, &rest));
        return;
    }
    // `cargo test` passes harness arguments (filters, `--list`…): there is one test here.
    if args.iter().any(|a| a == "--list") {
        println!("processes: test");
        return;
    }
    let started = std::time::Instant::now();
    rt().block_on(parent());
    println!(
        "processes: {ROUNDS} rounds of {CHILDREN} processes, every rule held ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// Milliseconds since the epoch, for the children's common start.
fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Waits until `at` (ms since the epoch), so the children start their race together.
async fn start_at(at: &str) {
    let at: u128 = at.parse().unwrap();
    let now = now_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(u64::try_from(at - now).unwrap())).await;
    }
}

async fn child(role: &str, args: &[String]) {
    let db = PathBuf::from(&args[0]);
    let store = SqliteStore::open_shared(&db).await.unwrap();
    let app = Tenantry::builder(store.clone()).build().unwrap();
    start_at(&args[1]).await;
    match role {
        // args: db, start, tenant, admin, tag
        "invite" => {
            let tenant: TenantId = args[2].parse().unwrap();
            let admin: UserId = args[3].parse().unwrap();
            let (mut ok, mut full, mut busy) = (0, 0, 0);
            for n in 0..TRIES {
                let req = InviteRequest {
                    email: Email::parse(&format!("{}-{n}@race.test", args[4])).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants: Permissions::empty(),
                };
                match app.invite(tenant, admin, &req).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.rule() == Some(Rule::SeatLimit) => full += 1,
                    Err(tenantry_service::Error::Contention { .. }) => busy += 1,
                    Err(e) => panic!("invite: unexpected {e}"),
                }
            }
            println!("invite {ok} {full} {busy}");
        }
        // args: db, start, email (the token comes in the environment)
        "accept" => {
            let token = std::env::var("TENANTRY_RACE_TOKEN").unwrap();
            let r = app.accept_invitation(&token, &args[2]).await;
            println!("accept {}", u8::from(r.is_ok()));
        }
        // args: db, start, tenant, actor, target
        "demote" => {
            let tenant: TenantId = args[2].parse().unwrap();
            let actor: UserId = args[3].parse().unwrap();
            let target: UserId = args[4].parse().unwrap();
            let edit = UserEdit {
                role: Some(Role::User),
                ..UserEdit::default()
            };
            let r = app.edit_user(tenant, actor, target, &edit).await;
            println!("demote {}", u8::from(r.is_ok()));
        }
        other => panic!("unknown role {other}"),
    }
    store.close().await;
}

/// Runs one child per argument list, all starting together; returns each one's last line.
fn race(db: &Path, role: &str, each: Vec<Vec<String>>, token: Option<&str>) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let at = (now_ms() + 400).to_string();
    let children: Vec<_> = each
        .into_iter()
        .map(|extra| {
            let mut c = Command::new(&exe);
            c.arg("--child")
                .arg(role)
                .arg(db)
                .arg(&at)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(t) = token {
                c.env("TENANTRY_RACE_TOKEN", t);
            }
            c.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a {role} child failed");
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The counters beside what the rows say, and the file's integrity.
async fn check_sound(store: &SqliteStore, tenant: TenantId, round: usize) -> (i64, i64) {
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(ok, "ok", "round {round}");
    let (seats, admins, rows, active): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT seats_used, active_admins, \
         (SELECT COUNT(*) FROM users WHERE tenant_id = t.id), \
         (SELECT COUNT(*) FROM users WHERE tenant_id = t.id AND role = 'admin' AND status = 'active') \
         FROM tenants t WHERE id = $1",
    )
    .bind(tenant.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (seats, admins),
        (rows, active),
        "round {round}: counters equal rows"
    );
    (rows, active)
}

async fn parent() {
    let dir = std::env::temp_dir().join(format!("tenantry-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("race.db");
    let store = SqliteStore::open_shared(&db).await.unwrap();
    let mail = InMemoryMailer::new();
    let app = Tenantry::builder(store.clone())
        .mailer(mail.clone())
        .build()
        .unwrap();
    for round in 0..ROUNDS {
        // Invites at a seat limit: FREE seats, CHILDREN × TRIES invites.
        let (t, a) = app
            .create_tenant(
                &format!("Seats {round}"),
                Some(u32::try_from(1 + FREE).unwrap()),
                Email::parse(&format!("admin{round}@race.test")).unwrap(),
            )
            .await
            .unwrap();
        let lines = race(
            &db,
            "invite",
            (0..CHILDREN)
                .map(|c| vec![t.to_string(), a.to_string(), format!("r{round}c{c}")])
                .collect(),
            None,
        );
        let mut invited = 0;
        let mut contended = 0;
        for l in &lines {
            let n: Vec<usize> = l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
            assert_eq!(n.len(), 3, "round {round}: {l}");
            assert_eq!(n.iter().sum::<usize>(), TRIES, "round {round}: {l}");
            invited += n[0];
            contended += n[2];
        }
        let (rows, _) = check_sound(&store, t, round).await;
        assert_eq!(
            usize::try_from(rows).unwrap(),
            1 + invited,
            "round {round}: every seat taken by a reported invite ({lines:?})"
        );
        assert!(invited <= FREE, "round {round}: over the limit ({lines:?})");
        if contended == 0 {
            assert_eq!(
                invited, FREE,
                "round {round}: every free seat taken ({lines:?})"
            );
        }
        println!("round {round}: invites (ok, full, gave up) per process {lines:?}");

        // Accepts of one token: exactly one wins.
        let email = format!("bob{round}@race.test");
        let (t, a) = app
            .create_tenant(
                &format!("Accept {round}"),
                None,
                Email::parse(&format!("boss{round}@race.test")).unwrap(),
            )
            .await
            .unwrap();
        let bob = app
            .invite(
                t,
                a,
                &InviteRequest {
                    email: Email::parse(&email).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants: Permissions::empty(),
                },
            )
            .await
            .unwrap()
            .user
            .id;
        app.dispatch(t).await.unwrap();
        let sent = mail.sent();
        let token = tenantry_service::token_from_link(&sent.last().unwrap().text).unwrap();
        let lines = race(
            &db,
            "accept",
            (0..CHILDREN).map(|_| vec![email.clone()]).collect(),
            Some(&token),
        );
        let won = lines.iter().filter(|l| l.as_str() == "accept 1").count();
        assert_eq!(won, 1, "round {round}: one accept of the token ({lines:?})");
        let status: String = sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
            .bind(bob.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(status, "active", "round {round}");
        check_sound(&store, t, round).await;

        // Mutual demotions: CHILDREN active admins, each demoting the next.
        let (t, first) = app
            .create_tenant(
                &format!("Admins {round}"),
                None,
                Email::parse(&format!("a0-{round}@race.test")).unwrap(),
            )
            .await
            .unwrap();
        let mut admins = vec![first];
        for k in 1..CHILDREN {
            let addr = format!("a{k}-{round}@race.test");
            app.invite(
                t,
                first,
                &InviteRequest {
                    email: Email::parse(&addr).unwrap(),
                    role: Role::Admin,
                    template_id: None,
                    crm_access: true,
                    grants: Permissions::empty(),
                },
            )
            .await
            .unwrap();
            app.dispatch(t).await.unwrap();
            let sent = mail.sent();
            let token = tenantry_service::token_from_link(&sent.last().unwrap().text).unwrap();
            admins.push(app.accept_invitation(&token, &addr).await.unwrap().id);
        }
        let (_, active) = check_sound(&store, t, round).await;
        assert_eq!(usize::try_from(active).unwrap(), CHILDREN);
        let lines = race(
            &db,
            "demote",
            (0..CHILDREN)
                .map(|k| {
                    vec![
                        t.to_string(),
                        admins[k].to_string(),
                        admins[(k + 1) % CHILDREN].to_string(),
                    ]
                })
                .collect(),
            None,
        );
        let demoted = lines.iter().filter(|l| l.as_str() == "demote 1").count();
        println!("round {round}: {demoted} of {CHILDREN} demotions went through");
        let (_, active) = check_sound(&store, t, round).await;
        assert!(
            active >= 1,
            "round {round}: an active admin remains ({lines:?})"
        );
        assert_eq!(
            usize::try_from(active).unwrap(),
            CHILDREN - demoted,
            "round {round}: every reported demotion, and only those ({lines:?})"
        );
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
