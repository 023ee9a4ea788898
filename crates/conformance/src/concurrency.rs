//! [concurrency (D16)](tenantry_core::Rule::Concurrency) under load: many concurrent callers on one tenant, on a multi-thread runtime.
//!
//! Each scenario spawns its calls with `tokio::spawn`, counts the outcomes (printing them)
//! and asserts the rule held exactly. A call that gives up with [`Error::Contention`] counts
//! as not succeeding; the final state must be consistent either way.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;

use tenantry_core::{AuditAction, Error as E};
use tenantry_service::{
    BulkInvite, BulkOutcome, Error, Permissions, Role, Status, Store, TemplateEdit, TemplateName,
    UserEdit, UserId,
};

use crate::support::{Env, Options, Tally, request};

/// Runs every future on its own task and returns the results in order.
async fn spawn_all<T, F>(futures: Vec<F>) -> Vec<Result<T, Error>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a spawned call panicked"));
    }
    out
}

fn tally<T>(results: &[Result<T, Error>]) -> Tally {
    let mut t = Tally::default();
    for r in results {
        t.add(r);
    }
    t
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[seat limit (D9)](tenantry_core::Rule::SeatLimit): 64 concurrent invites with 10 seats free: exactly 10 succeed (fewer only if
/// some gave up with contention); seats used equals the rows; every invited user got
/// exactly one message, delivered once.
pub async fn d16_concurrent_invites_at_limit(store: Arc<dyn Store>) {
    // The first admin holds one seat; 10 remain.
    let env = Env::with(
        store,
        Options {
            user_limit: Some(11),
            ..Options::default()
        },
    )
    .await;
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let (app, t, a) = (env.app.clone(), env.tenant, env.admin);
            async move {
                app.invite(t, a, &request(&format!("seat{i:02}@acme.test"), Role::User))
                    .await
            }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    let users = env.assert_consistent(env.tenant).await;
    let counters = env.counters(env.tenant).await;
    println!(
        "d16_concurrent_invites_at_limit: 64 invites, 10 seats free: {} succeeded, {} refused at the limit, {} contention, other {:?}; seats used {}, rows {}, invited rows {}",
        t.ok,
        t.refused("SeatLimitReached"),
        t.contention,
        t.refused,
        counters.seats_used,
        users.len(),
        users.iter().filter(|u| u.status == Status::Invited).count()
    );
    assert_eq!(t.total(), 64);
    assert_eq!(
        t.ok + t.refused("SeatLimitReached") + t.contention,
        64,
        "only seat refusals and contention: {:?}",
        t.refused
    );
    assert!(t.ok <= 10, "D9: never more invites than seats");
    if t.contention == 0 {
        assert_eq!(t.ok, 10, "D16: every free seat is used");
    }
    assert_eq!(
        users.len(),
        1 + t.ok,
        "D9: rows = admin + successful invites"
    );
    assert_eq!(counters.seats_used as usize, users.len());
    for r in &results {
        if let Err(Error::Rule(E::SeatLimitReached { limit, .. })) = r {
            assert_eq!(*limit, 11);
        }
    }
    // D17: one message per invited user, each delivered exactly once.
    env.app.dispatch(env.tenant).await.unwrap();
    let sent = env.mailer.sent();
    let ids: HashSet<_> = sent.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), sent.len(), "D17: no message delivered twice");
    assert_eq!(sent.len(), t.ok, "D17: one message per invite");
    assert_eq!(
        env.app.outbox(env.tenant, false, 500).await.unwrap().len(),
        t.ok
    );
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[unique email (D3)](tenantry_core::Rule::UniqueEmail): 100 concurrent invites of case and white-space variants of one address:
/// exactly one user is created.
pub async fn d16_concurrent_invites_of_one_address(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let variants = [
        "Same@Acme.test",
        "same@acme.test",
        " SAME@ACME.TEST",
        "sAmE@aCmE.tEsT\t",
        "same@ACME.test  ",
        "\nSame@acme.TEST",
    ];
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let (app, t, a) = (env.app.clone(), env.tenant, env.admin);
            let address = variants[i % variants.len()];
            async move { app.invite(t, a, &request(address, Role::User)).await }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    let users = env.assert_consistent(env.tenant).await;
    println!(
        "d16_concurrent_invites_of_one_address: 100 invites: {} succeeded, {} refused as taken, {} contention, other {:?}; rows {}",
        t.ok,
        t.refused("EmailTaken"),
        t.contention,
        t.refused,
        users.len()
    );
    assert_eq!(t.ok, 1, "D3/D16: exactly one invite of one address");
    assert_eq!(t.ok + t.refused("EmailTaken") + t.contention, 100);
    assert_eq!(users.len(), 2);
    assert_eq!(
        users
            .iter()
            .filter(|u| u.email.key() == "same@acme.test")
            .count(),
        1
    );
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[bulk invite (D19)](tenantry_core::Rule::BulkInvite): 8 concurrent bulk invites of 10 new addresses each with 20 seats free: exactly
/// 20 addresses are invited in total.
pub async fn d16_concurrent_bulk_invites_at_limit(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(21),
            ..Options::default()
        },
    )
    .await;
    let calls: Vec<_> = (0..8)
        .map(|batch| {
            let (app, t, a) = (env.app.clone(), env.tenant, env.admin);
            async move {
                let emails = (0..10).map(|i| format!("b{batch}-{i}@acme.test")).collect();
                app.invite_many(
                    t,
                    a,
                    &BulkInvite {
                        emails,
                        ..BulkInvite::default()
                    },
                )
                .await
            }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    let (mut invited, mut limited) = (0usize, 0usize);
    for items in results.iter().flatten() {
        for item in items {
            match item.outcome {
                BulkOutcome::Invited { .. } => invited += 1,
                BulkOutcome::LimitReached { .. } => limited += 1,
                ref other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
    let users = env.assert_consistent(env.tenant).await;
    println!(
        "d16_concurrent_bulk_invites_at_limit: 8 bulk calls x 10 addresses, 20 seats free: {} calls succeeded ({} contention), {invited} invited, {limited} limit reached; rows {}",
        t.ok,
        t.contention,
        users.len()
    );
    assert_eq!(t.ok + t.contention, 8, "{:?}", t.refused);
    assert!(invited <= 20, "D9/D19: never more than the free seats");
    if t.contention == 0 {
        assert_eq!(invited, 20, "D19: the limit holds exactly");
    }
    assert_eq!(users.len(), 1 + invited);
}

/// Demotes (kind 0), suspends (kind 1) or deletes (kind 2) `target` as `actor`.
async fn remove_admin(
    app: &tenantry_service::Tenantry,
    tenant: tenantry_service::TenantId,
    actor: UserId,
    target: UserId,
    kind: usize,
) -> Result<(), Error> {
    let edit = |role, status| UserEdit {
        role,
        status,
        ..UserEdit::default()
    };
    match kind {
        0 => app
            .edit_user(tenant, actor, target, &edit(Some(Role::User), None))
            .await
            .map(|_| ()),
        1 => app
            .edit_user(tenant, actor, target, &edit(None, Some(Status::Suspended)))
            .await
            .map(|_| ()),
        _ => app.delete_user(tenant, actor, target).await.map(|_| ()),
    }
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[last admin (D8)](tenantry_core::Rule::LastAdmin): over several rounds, every admin concurrently demotes, suspends or deletes
/// another admin and itself; after every round at least one active admin remains and the counters
/// agree with the rows.
pub async fn d16_admins_demote_suspend_and_delete_each_other(store: Arc<dyn Store>) {
    const ADMINS: usize = 8;
    const ROUNDS: usize = 8;
    let env = Env::new(store).await;
    let mut admins: Vec<UserId> = vec![env.admin];
    for i in 1..ADMINS {
        admins.push(env.active_admin(&format!("admin{i}@acme.test")).await.id);
    }
    let mut total = Tally::default();
    let mut fresh = 0usize;
    for round in 0..ROUNDS {
        // Each admin acts twice at once: on another admin (a different one per round) and
        // on itself; without D16 guards, two admins removing each other (or everyone
        // removing itself) would leave none.
        let calls: Vec<_> = (0..2 * ADMINS)
            .map(|n| {
                let (app, t) = (env.app.clone(), env.tenant);
                let i = n % ADMINS;
                let actor = admins[i];
                let target = if n < ADMINS {
                    admins[(i + 1 + round % (ADMINS - 1)) % ADMINS]
                } else {
                    actor
                };
                let kind = (n + round) % 3;
                async move { remove_admin(&app, t, actor, target, kind).await }
            })
            .collect();
        let results = spawn_all(calls).await;
        let t = tally(&results);
        let users = env.assert_consistent(env.tenant).await;
        let active_admins = users.iter().filter(|u| u.is_active_admin()).count();
        println!(
            "d16_admins_demote_suspend_and_delete_each_other: round {round}: {} succeeded, {} last-admin refusals, {} contention, other {:?}; active admins left {active_admins}",
            t.ok,
            t.refused("LastAdmin"),
            t.contention,
            t.refused
        );
        assert!(active_admins >= 1, "D8: round {round} left no active admin");
        total.ok += t.ok;
        total.contention += t.contention;
        for (k, v) in t.refused {
            *total.refused.entry(k).or_default() += v;
        }

        // Restore: a surviving active admin reactivates, promotes or replaces the others.
        let keeper = users
            .iter()
            .find(|u| u.is_active_admin())
            .map(|u| u.id)
            .unwrap();
        for slot in admins.iter_mut() {
            match users.iter().find(|u| u.id == *slot) {
                Some(u) if u.is_active_admin() => {}
                Some(u) => {
                    env.app
                        .edit_user(
                            env.tenant,
                            keeper,
                            u.id,
                            &UserEdit {
                                role: Some(Role::Admin),
                                status: Some(Status::Active),
                                ..UserEdit::default()
                            },
                        )
                        .await
                        .unwrap();
                }
                None => {
                    fresh += 1;
                    let invited = env
                        .app
                        .invite(
                            env.tenant,
                            keeper,
                            &request(&format!("fresh{fresh}@acme.test"), Role::Admin),
                        )
                        .await
                        .unwrap();
                    *slot = env.accept(env.tenant, &invited).await.id;
                }
            }
        }
        let users = env.assert_consistent(env.tenant).await;
        assert_eq!(
            users.iter().filter(|u| u.is_active_admin()).count(),
            ADMINS,
            "restored"
        );
    }
    println!(
        "d16_admins_demote_suspend_and_delete_each_other: {ROUNDS} rounds of {ADMINS}: {} succeeded, {} contention, refusals {:?}",
        total.ok, total.contention, total.refused
    );
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[invitations (D10)](tenantry_core::Rule::Invitations): 100 concurrent accepts of one token: exactly one succeeds.
pub async fn d16_concurrent_accepts_of_one_token(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("once@acme.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let app = env.app.clone();
            let token = token.clone();
            let address = if i % 2 == 0 {
                "once@acme.test"
            } else {
                "ONCE@acme.test"
            };
            async move { app.accept_invitation(&token, address).await }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    println!(
        "d16_concurrent_accepts_of_one_token: 100 accepts: {} succeeded, {} invalid, {} contention, other {:?}",
        t.ok,
        t.refused("InvalidInvitation"),
        t.contention,
        t.refused
    );
    assert_eq!(t.ok, 1, "D10: exactly one accept of one token");
    assert_eq!(t.ok + t.refused("InvalidInvitation") + t.contention, 100);
    let users = env.assert_consistent(env.tenant).await;
    let u = users.iter().find(|u| u.id == invited.user.id).unwrap();
    assert_eq!(u.status, Status::Active);
    let accepted = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::InvitationAccepted)
        .count();
    assert_eq!(accepted, 1, "D13: one acceptance recorded");
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[invitations (D10)](tenantry_core::Rule::Invitations): 20 concurrent resends to one user with the default limit (3 in 10 minutes):
/// exactly 3 succeed, and of all tokens issued only the newest accepts.
pub async fn d16_concurrent_resends_respect_rate_limit(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("often@acme.test").await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (app, t, a, u) = (env.app.clone(), env.tenant, env.admin, invited.user.id);
            async move { app.resend_invitation(t, a, u).await }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    println!(
        "d16_concurrent_resends_respect_rate_limit: 20 resends: {} succeeded, {} rate limited, {} contention, other {:?}",
        t.ok,
        t.refused("ResendRateLimited"),
        t.contention,
        t.refused
    );
    assert!(t.ok <= 3, "D10: at most 3 resends in the window");
    if t.contention == 0 {
        assert_eq!(t.ok, 3);
    }
    assert_eq!(t.ok + t.refused("ResendRateLimited") + t.contention, 20);
    let mut tokens = vec![env.token(env.tenant, invited.message_id).await];
    for resent in results.iter().flatten() {
        env.remember(resent.message_id, &resent.accept_link);
        tokens.push(env.token(env.tenant, resent.message_id).await);
    }
    let mut accepted = 0;
    for token in &tokens {
        if env
            .app
            .accept_invitation(token, "often@acme.test")
            .await
            .is_ok()
        {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "D10: only the newest token accepts");
    assert_eq!(env.assert_consistent(env.tenant).await.len(), 2);
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[role templates (D12)](tenantry_core::Rule::RoleTemplates): 20 templates concurrently renamed to case variants of one name: exactly one
/// rename succeeds.
pub async fn d16_concurrent_template_renames_to_one_name(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            env.app
                .create_template(
                    env.tenant,
                    env.admin,
                    &format!("Template {i:02}"),
                    Permissions::empty(),
                )
                .await
                .unwrap()
                .id,
        );
    }
    let variants = ["Shared name", "SHARED NAME", "shared name", " Shared Name "];
    let calls: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (app, t, a, id) = (env.app.clone(), env.tenant, env.admin, *id);
            let edit = TemplateEdit {
                name: Some(TemplateName::parse(variants[i % variants.len()]).unwrap()),
                permissions: None,
            };
            async move { app.edit_template(t, a, id, &edit).await }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    println!(
        "d16_concurrent_template_renames_to_one_name: 20 renames: {} succeeded, {} name taken, {} contention, other {:?}",
        t.ok,
        t.refused("TemplateNameTaken"),
        t.contention,
        t.refused
    );
    assert_eq!(t.ok, 1, "D12: exactly one template gets the name");
    assert_eq!(t.ok + t.refused("TemplateNameTaken") + t.contention, 20);
    let templates = env
        .app
        .templates(env.tenant, tenantry_service::ActorRef::System)
        .await
        .unwrap();
    assert_eq!(templates.len(), 20);
    let keys: BTreeSet<&str> = templates.iter().map(|t| t.name.key()).collect();
    assert_eq!(keys.len(), 20, "D12: names stay unique");
    assert!(keys.contains("shared name"));
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency)/[role templates (D12)](tenantry_core::Rule::RoleTemplates): 50 concurrent creates of case variants of one template name: exactly one.
pub async fn d16_concurrent_template_creates_with_one_name(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let variants = ["Agents", "AGENTS", " agents ", "aGeNtS"];
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let (app, t, a) = (env.app.clone(), env.tenant, env.admin);
            let name = variants[i % variants.len()];
            async move {
                app.create_template(t, a, name, Permissions::CONVERSATIONS_VIEW)
                    .await
            }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    println!(
        "d16_concurrent_template_creates_with_one_name: 50 creates: {} succeeded, {} name taken, {} contention, other {:?}",
        t.ok,
        t.refused("TemplateNameTaken"),
        t.contention,
        t.refused
    );
    assert_eq!(t.ok, 1, "D12: exactly one template of one name");
    assert_eq!(t.ok + t.refused("TemplateNameTaken") + t.contention, 50);
    let templates = env
        .app
        .templates(env.tenant, tenantry_service::ActorRef::System)
        .await
        .unwrap();
    assert_eq!(templates.len(), 1);
}

/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)/[concurrency (D16)](tenantry_core::Rule::Concurrency): 20 concurrent sign-ups with wrong addresses on one token: exactly 5 are counted
/// (answered with 4, 3, 2, 1 and 0 attempts left, each once, each with its audit event)
/// and the rest find the token dead; then the right address is refused too, and a resend
/// gives a working token. Then 10 wrong and 1 right concurrently on the fresh token: the
/// right one wins only while the token lives (at most 4 counted before it), else all 5
/// were counted first.
pub async fn d24_concurrent_wrong_addresses_count_exactly_five(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("target@acme.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    let audit = env.audit(env.tenant).await.len();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let app = env.app.clone();
            let token = token.clone();
            async move {
                app.accept_invitation(&token, &format!("wrong{i}@evil.test"))
                    .await
            }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    let mut left: Vec<u32> = results
        .iter()
        .filter_map(|r| match r {
            Err(Error::Rule(E::InvitationEmailMismatch { attempts_left })) => Some(*attempts_left),
            _ => None,
        })
        .collect();
    left.sort_unstable();
    let failed_events = env.audit(env.tenant).await[audit..]
        .iter()
        .filter(|r| r.event.action == AuditAction::AcceptAttemptFailed)
        .count();
    let stored = env
        .app
        .store()
        .invitations_of(env.tenant, invited.user.id)
        .await
        .unwrap();
    println!(
        "d24_concurrent_wrong_addresses_count_exactly_five: 20 wrong sign-ups: {} counted (attempts left {left:?}), {} invalid, {} contention, other {:?}; {failed_events} events; stored count {}",
        t.refused("InvitationEmailMismatch"),
        t.refused("InvalidInvitation"),
        t.contention,
        t.refused,
        stored[0].failed_attempts
    );
    assert_eq!(
        t.refused("InvitationEmailMismatch") + t.refused("InvalidInvitation") + t.contention,
        20,
        "{:?}",
        t.refused
    );
    assert_eq!(
        failed_events,
        left.len(),
        "D24/D13: one event per counted attempt"
    );
    assert_eq!(
        stored[0].failed_attempts as usize,
        left.len(),
        "D24: the stored count is the counted attempts"
    );
    if t.refused("InvalidInvitation") > 0 || t.contention == 0 {
        assert_eq!(
            left,
            vec![0, 1, 2, 3, 4],
            "D24: exactly five counted, each once"
        );
        assert_eq!(stored[0].state, tenantry_core::InvitationState::Revoked);
    }
    let e = env
        .app
        .accept_invitation(&token, "target@acme.test")
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Rule(E::InvalidInvitation)),
        "D24: the token is dead: {e:?}"
    );
    let users = env.assert_consistent(env.tenant).await;
    assert_eq!(
        users
            .iter()
            .find(|u| u.id == invited.user.id)
            .unwrap()
            .status,
        Status::Invited
    );

    // Wrong and right addresses racing on a fresh token.
    let resent = env
        .app
        .resend_invitation(env.tenant, env.admin, invited.user.id)
        .await
        .unwrap();
    let fresh = resent.accept_link.token().unwrap();
    let audit = env.audit(env.tenant).await.len();
    let calls: Vec<_> = (0..11)
        .map(|i| {
            let app = env.app.clone();
            let token = fresh.clone();
            let address = if i == 5 {
                "target@acme.test".to_owned()
            } else {
                format!("wrong{i}@evil.test")
            };
            async move { app.accept_invitation(&token, &address).await.map(|_| ()) }
        })
        .collect();
    let results = spawn_all(calls).await;
    let t = tally(&results);
    let counted = t.refused("InvitationEmailMismatch");
    let events = env.audit(env.tenant).await[audit..]
        .iter()
        .filter(|r| r.event.action == AuditAction::AcceptAttemptFailed)
        .count();
    println!(
        "d24_concurrent_wrong_addresses_count_exactly_five: 10 wrong + 1 right: right {:?}, {counted} counted, {} invalid, {} contention, other {:?}",
        results[5].as_ref().map_err(ToString::to_string),
        t.refused("InvalidInvitation"),
        t.contention,
        t.refused
    );
    assert_eq!(events, counted, "D24/D13: one event per counted attempt");
    let user = env.user(env.tenant, invited.user.id).await;
    match &results[5] {
        Ok(()) => {
            assert!(counted <= 4, "D24: the right address won on a live token");
            assert_eq!(user.status, Status::Active);
        }
        Err(Error::Rule(E::InvalidInvitation)) => {
            assert_eq!(
                counted, 5,
                "D24: the right address lost only to a dead token"
            );
            assert_eq!(user.status, Status::Invited);
        }
        Err(Error::Contention { .. }) => {}
        Err(e) => panic!("D24: the right address: {e:?}"),
    }
    assert!(counted <= 5);
    env.assert_consistent(env.tenant).await;
}

/// [sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange): 1,000 sign-ins of 50 users, spawned in 100 waves,
/// interleave with 100 admin edits made one after another (edit k races the sign-ins of wave k) on the same tenant (CRM toggles,
/// 10 suspensions and 2 deletions of signing-in users). No call gives up with contention and
/// none fails in the store; the tenant's version advances by the admin edits alone; every
/// sign-in that succeeded is in the audit log, exactly once; and no sign-in of a suspended or
/// deleted user lands after that suspension or deletion in the log (refused ones are
/// `SignInRefused` or `UserNotFound`, and only for those users).
pub async fn d27_sign_ins_never_contend_with_admin_edits(store: Arc<dyn Store>) {
    const USERS: usize = 50;
    const SIGN_INS: usize = 1_000;
    const EDITS: usize = 100;
    let env = Env::new(store).await;
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        users.push(env.active_user(&format!("member{i:02}@acme.test")).await.id);
    }
    // Users 0..10 are suspended and 10..12 deleted along the way; the rest get CRM toggles.
    let removed: HashSet<UserId> = users.iter().take(12).copied().collect();
    let version_before = env.counters(env.tenant).await.version;
    // Edit k waits for wave k of sign-ins to be spawned, so the two really interleave.
    // Wave w + 1 is spawned only once edit w - 1 is done: in lockstep, each edit races the
    // sign-ins of its wave.
    let waves = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let admin_task = {
        let (app, t, a, users) = (env.app.clone(), env.tenant, env.admin, users.clone());
        let (waves, done) = (Arc::clone(&waves), Arc::clone(&done));
        tokio::spawn(async move {
            let mut results = Vec::with_capacity(EDITS);
            let mut crm = std::collections::HashMap::new();
            for k in 0..EDITS {
                while waves.load(std::sync::atomic::Ordering::Acquire) <= k {
                    tokio::task::yield_now().await;
                }
                let result = if k % 10 == 5 {
                    let target = users.get(k / 10).copied().expect("a user to suspend");
                    let edit = UserEdit {
                        status: Some(Status::Suspended),
                        ..UserEdit::default()
                    };
                    app.edit_user(t, a, target, &edit).await.map(|_| ())
                } else if k == 33 || k == 66 {
                    let target = users.get(10 + k / 66).copied().expect("a user to delete");
                    app.delete_user(t, a, target).await.map(|_| ())
                } else {
                    let target = users.get(12 + k % (USERS - 12)).copied().expect("a user");
                    // Each edit of a user flips its CRM access: never a no-op.
                    let crm = crm.entry(target).or_insert(false);
                    *crm = !*crm;
                    let edit = UserEdit {
                        crm_access: Some(*crm),
                        ..UserEdit::default()
                    };
                    app.edit_user(t, a, target, &edit).await.map(|_| ())
                };
                results.push(result);
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            results
        })
    };
    let mut handles = Vec::with_capacity(SIGN_INS);
    for wave in 0..(SIGN_INS / 10) {
        for j in 0..10 {
            let user = users.get((wave * 10 + j) % USERS).copied().expect("a user");
            let (app, t) = (env.app.clone(), env.tenant);
            handles.push((
                user,
                tokio::spawn(async move { app.record_sign_in(t, user).await }),
            ));
        }
        waves.fetch_add(1, std::sync::atomic::Ordering::Release);
        while done.load(std::sync::atomic::Ordering::Acquire) + 1 < wave {
            tokio::task::yield_now().await;
        }
    }
    let mut sign_ins = Vec::with_capacity(SIGN_INS);
    for (user, h) in handles {
        sign_ins.push((user, h.await.expect("a sign-in panicked")));
    }
    let edits = admin_task.await.expect("the admin task panicked");
    let mut signed = Tally::default();
    for (_, r) in &sign_ins {
        signed.add(r);
    }
    let edited = tally(&edits);
    let version_after = env.counters(env.tenant).await.version;
    println!(
        "d27_sign_ins_never_contend_with_admin_edits: {SIGN_INS} sign-ins: {} recorded, {} contention, other {:?}; {EDITS} edits: {} done, {} contention, other {:?}; version {version_before} -> {version_after}",
        signed.ok, signed.contention, signed.refused, edited.ok, edited.contention, edited.refused
    );
    assert_eq!(
        signed.contention, 0,
        "D27: no sign-in gave up with contention"
    );
    assert_eq!(
        edited.contention, 0,
        "D27: no admin edit gave up with contention"
    );
    assert_eq!(
        edited.ok, EDITS,
        "every admin edit succeeded: {:?}",
        edited.refused
    );
    assert_eq!(
        version_after,
        version_before + EDITS as u64,
        "D27: sign-ins take no part in the tenant's version"
    );
    for (user, result) in &sign_ins {
        match result {
            Ok(u) => {
                assert_eq!(u.id, *user);
                assert!(u.last_login.is_some(), "a recorded sign-in sets last login");
            }
            Err(Error::Rule(E::SignInRefused {
                status: Status::Suspended,
            }))
            | Err(Error::Rule(E::UserNotFound)) => assert!(
                removed.contains(user),
                "only a suspended or deleted user is refused: {result:?}"
            ),
            Err(e) => panic!("D27: a sign-in failed: {e:?}"),
        }
    }
    env.assert_consistent(env.tenant).await;
    let audit = env.audit(env.tenant).await;
    let mut recorded: std::collections::HashMap<UserId, usize> = std::collections::HashMap::new();
    let mut gone: HashSet<UserId> = HashSet::new();
    for r in &audit {
        let tenantry_core::AuditTarget::User(target) = r.event.target else {
            continue;
        };
        match r.event.action {
            AuditAction::SignedIn => {
                assert!(
                    !gone.contains(&target),
                    "D27: a sign-in (seq {}) landed after its user was suspended or deleted",
                    r.seq
                );
                *recorded.entry(target).or_default() += 1;
            }
            AuditAction::UserDeleted => {
                gone.insert(target);
            }
            AuditAction::UserEdited
                if r.event.changes.iter().any(|c| {
                    c.field == tenantry_core::Field::Status
                        && c.after == tenantry_core::Value::Status(Status::Suspended)
                }) =>
            {
                gone.insert(target);
            }
            _ => {}
        }
    }
    for user in &users {
        let ok = sign_ins
            .iter()
            .filter(|(u, r)| u == user && r.is_ok())
            .count();
        assert_eq!(
            recorded.get(user).copied().unwrap_or(0),
            ok,
            "D13/D27: every recorded sign-in is in the audit log exactly once"
        );
    }
    assert_eq!(gone.len(), removed.len());
}
