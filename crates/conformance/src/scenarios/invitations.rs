//! Scenarios of [invitations (D10)](tenantry_core::Rule::Invitations), [bulk invite (D19)](tenantry_core::Rule::BulkInvite), [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations) and [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::{AuditAction, AuditTarget, Error as E, Field, FieldChange, Outcome, Value};
use tenantry_service::{
    Action, ActorRef, Attribution, BulkInvite, BulkOutcome, Category, EmailError, Error,
    Permissions, Policy, Request, Role, Rule, Status, Store, UserEdit, UserId,
};
use time::Duration;

use crate::support::{
    BASE_URL, Env, Options, START, assert_rule, email, request, request_with, rule, with_status,
};

use super::helpers::{allowed, assert_new_events, expired_ids, perm, status_edit, users_perm};

// ----------------------------------------------------------------------------------- D10

/// [invitations (D10)](tenantry_core::Rule::Invitations): accepting with the invited address (any case) activates the user and sets its last
/// login to the time of acceptance; another address is refused and changes nothing.
pub async fn d10_accept_activates_with_matching_email_only(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "Carol@Acme.test",
                Permissions::CONVERSATIONS_VIEW,
                None,
                true,
            ),
        )
        .await;
    assert_eq!(invited.user.status, Status::Invited);
    assert_eq!(invited.user.last_login, None);
    assert_eq!(
        invited.user.invite_expires_at,
        Some(START + Duration::days(7)),
        "D10: default lifetime 7 days"
    );
    let token = env.token(env.tenant, invited.message_id).await;
    assert!(
        env.mailer.sent()[0]
            .text
            .contains(&format!("{BASE_URL}?token={token}")),
        "D10: the link is built from the configured base URL"
    );
    env.clock.advance(Duration::hours(1));
    let before = env.counters(env.tenant).await;
    assert_rule(
        env.app.accept_invitation(&token, "someone@else.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    // Since D24 a wrong address on a live token is a counted (committed) failed attempt:
    // the tenant's version moves, but no seat, admin or user row changes.
    let after = env.counters(env.tenant).await;
    assert_eq!(
        (after.seats_used, after.active_admins),
        (before.seats_used, before.active_admins)
    );
    assert_eq!(
        after.version,
        before.version + 1,
        "D24: the attempt is committed"
    );
    assert_eq!(env.user(env.tenant, invited.user.id).await, invited.user);

    let user = env
        .app
        .accept_invitation(&token, " carol@ACME.test ")
        .await
        .unwrap();
    let now = START + Duration::hours(1);
    assert_eq!(user.status, Status::Active);
    assert_eq!(
        user.last_login,
        Some(now),
        "D10: last login is the acceptance"
    );
    assert_eq!(user.invite_expires_at, None);
    assert_eq!(env.user(env.tenant, user.id).await, user, "D10: persisted");
    assert!(
        allowed(
            &env,
            user.id,
            perm(Category::Conversations, Action::View).into()
        )
        .await
    );
    assert!(allowed(&env, user.id, Request::Crm).await);

    // An accepted admin invitation adds an active admin.
    let admin = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("boss@acme.test", Role::Admin),
        )
        .await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 1);
    env.accept(env.tenant, &admin).await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 2);
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): a token works once.
pub async fn d10_token_is_single_use(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("dan@acme.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    let user = env
        .app
        .accept_invitation(&token, "dan@acme.test")
        .await
        .unwrap();
    env.clock.advance(Duration::minutes(5));
    let before = env.counters(env.tenant).await;
    for _ in 0..3 {
        assert_rule(
            env.app.accept_invitation(&token, "dan@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(env.counters(env.tenant).await, before);
    assert_eq!(
        env.user(env.tenant, user.id).await.last_login,
        Some(START),
        "D10: a second accept changes nothing"
    );
    // Suspending and reactivating does not revive the token.
    env.edit(user.id, &status_edit(Status::Suspended)).await;
    env.edit(user.id, &status_edit(Status::Active)).await;
    assert_rule(
        env.app.accept_invitation(&token, "dan@acme.test").await,
        &E::InvalidInvitation,
    );
    let accepted = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::InvitationAccepted)
        .count();
    assert_eq!(accepted, 1);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): a token expires after the configured lifetime (7 days by default): it works until
/// just before and is refused from the expiry on; the user keeps its row.
pub async fn d10_token_expires_after_ttl(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let early = env.invite("early@acme.test").await;
    let late = env.invite("late@acme.test").await;
    env.clock.advance(Duration::days(7) - Duration::seconds(1));
    env.accept(env.tenant, &early).await;
    env.clock.advance(Duration::seconds(1));
    let token = env.token(env.tenant, late.message_id).await;
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(
        env.user(env.tenant, late.user.id).await.status,
        Status::Invited
    );

    // A shorter configured lifetime is honoured by the store's expiry too.
    let short = Env::with(
        Arc::clone(env.app.store()),
        Options {
            policy: Policy {
                invite_ttl: Duration::hours(1),
                ..Policy::default()
            },
            admin_email: "admin@short.test",
            ..Options::default()
        },
    )
    .await;
    let a = short.invite("a@short.test").await;
    let b = short.invite("b@short.test").await;
    assert_eq!(a.user.invite_expires_at, Some(START + Duration::hours(1)));
    short.clock.advance(Duration::minutes(59));
    short.accept(short.tenant, &a).await;
    short.clock.advance(Duration::minutes(1));
    let token = short.token(short.tenant, b.message_id).await;
    assert_rule(
        short.app.accept_invitation(&token, "b@short.test").await,
        &E::InvalidInvitation,
    );
}

/// [invitations (D10)](tenantry_core::Rule::Invitations) with [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations), at the boundary: an invitation accepts until one nanosecond before its
/// expiry and is refused from the expiry on, exactly when hosts start to see it as expired
/// (never both, never neither). The clock stands at an instant with sub-microsecond digits,
/// so a backend that rounds stored times (to microseconds, say) moves the expiry and fails
/// here; an invitation resent after expiring follows the same boundary.
pub async fn d10_accept_at_exact_expiry_is_refused_one_nanosecond_before_accepted(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let ttl = Policy::default().invite_ttl;
    assert_eq!(ttl, Duration::days(7), "D10: 7 days by default");
    // Not a whole microsecond: 789 ns would be lost to a microsecond timestamp.
    let issued = START + Duration::nanoseconds(123_456_789);
    env.clock.set(issued);
    let early = env.invite("early@acme.test").await;
    let late = env.invite("late@acme.test").await;
    let expires = issued + ttl;
    for invited in [&early, &late] {
        assert_eq!(invited.user.invite_expires_at, Some(expires));
        assert_eq!(
            env.user(env.tenant, invited.user.id)
                .await
                .invite_expires_at,
            Some(expires),
            "D10: the expiry is stored to the nanosecond"
        );
    }

    // One nanosecond before the expiry: valid, and not listed as expired.
    env.clock.set(expires - Duration::nanoseconds(1));
    assert!(expired_ids(&env).await.is_empty(), "D20: not expired yet");
    assert!(
        env.app
            .purge_expired_invitations(env.tenant, env.admin)
            .await
            .unwrap()
            .is_empty()
    );
    let accepted = env.accept(env.tenant, &early).await;
    assert_eq!(accepted.status, Status::Active);
    assert_eq!(
        accepted.last_login,
        Some(expires - Duration::nanoseconds(1))
    );

    // Exactly at the expiry: refused, listed as expired, still invited and holding its seat.
    env.clock.set(expires);
    let token = env.token(env.tenant, late.message_id).await;
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(expired_ids(&env).await, BTreeSet::from([late.user.id]));
    let row = env.user(env.tenant, late.user.id).await;
    assert_eq!(row.status, Status::Invited);
    assert_eq!(row.invite_expires_at, Some(expires));
    assert_eq!(env.counters(env.tenant).await.seats_used, 3);

    // Resent at an odd instant, the new token follows the same boundary.
    let resent_at = expires + Duration::nanoseconds(1_001);
    env.clock.set(resent_at);
    let m = env.resend(late.user.id).await;
    let renewed = resent_at + ttl;
    assert_eq!(
        m.expires_at, renewed,
        "D26: the resend returns the new expiry"
    );
    assert_eq!(
        env.user(env.tenant, late.user.id).await.invite_expires_at,
        Some(renewed),
        "D10: a resend sets a new expiry, stored to the nanosecond"
    );
    assert!(
        expired_ids(&env).await.is_empty(),
        "D20: resent, not expired"
    );
    let token = env.token(env.tenant, m.message_id).await;
    env.clock.set(renewed);
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(expired_ids(&env).await, BTreeSet::from([late.user.id]));
    // Back one nanosecond (a refused accept changes nothing): the same token is valid.
    env.clock.set(renewed - Duration::nanoseconds(1));
    assert!(expired_ids(&env).await.is_empty());
    let accepted = env
        .app
        .accept_invitation(&token, "late@acme.test")
        .await
        .unwrap();
    assert_eq!(accepted.status, Status::Active);
    assert_eq!(accepted.invite_expires_at, None);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): resend issues a new token and invalidates every older one, never creating a second
/// user; an expired invitation can be resent; only invited users can be resent to.
pub async fn d10_resend_invalidates_older_tokens_and_expired_can_be_resent(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("erin@acme.test").await;
    let t0 = env.token(env.tenant, invited.message_id).await;
    env.clock.advance(Duration::days(8));
    assert_rule(
        env.app.accept_invitation(&t0, "erin@acme.test").await,
        &E::InvalidInvitation,
    );
    let m1 = env.resend(invited.user.id).await;
    let t1 = env.token(env.tenant, m1.message_id).await;
    assert_ne!(t0, t1);
    let row = env.user(env.tenant, invited.user.id).await;
    assert_eq!(row.status, Status::Invited);
    assert_eq!(
        row.invite_expires_at,
        Some(START + Duration::days(15)),
        "D10: a resend sets a new expiry"
    );
    env.clock.advance(Duration::minutes(1));
    let m2 = env.resend(invited.user.id).await;
    let t2 = env.token(env.tenant, m2.message_id).await;
    assert_eq!(
        env.users(env.tenant).await.len(),
        2,
        "D10: never a second user"
    );
    assert_eq!(env.counters(env.tenant).await.seats_used, 2);
    let sent: Vec<_> = env.mailer.sent();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|m| m.to == "erin@acme.test" && m.user_id == invited.user.id)
    );
    for old in [&t0, &t1] {
        assert_rule(
            env.app.accept_invitation(old, "erin@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    env.app
        .accept_invitation(&t2, "erin@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::NotInvited {
            status: Status::Active,
        },
    );
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): changing an invited user's address invalidates its tokens (with either address);
/// a resend then reaches the new address.
pub async fn d10_email_change_revokes_tokens(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("dave@acme.test").await;
    let t0 = env.token(env.tenant, invited.message_id).await;
    env.edit(
        invited.user.id,
        &UserEdit {
            email: Some(email("david@acme.test")),
            ..UserEdit::default()
        },
    )
    .await;
    for addr in ["david@acme.test", "dave@acme.test"] {
        assert_rule(
            env.app.accept_invitation(&t0, addr).await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited
    );
    let m = env.resend(invited.user.id).await;
    let msg = env
        .mailer
        .sent()
        .into_iter()
        .find(|x| x.id == m.message_id)
        .unwrap();
    assert_eq!(msg.to, "david@acme.test");
    let t1 = env.token(env.tenant, m.message_id).await;
    // The old address is a wrong one now: a counted attempt (D24), the first on this token.
    assert_rule(
        env.app.accept_invitation(&t1, "dave@acme.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    let user = env
        .app
        .accept_invitation(&t1, "David@acme.test")
        .await
        .unwrap();
    assert_eq!(user.email.as_str(), "david@acme.test");
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): at most 3 resends in 10 minutes by default; a refused resend says when the next is
/// allowed, sends nothing and leaves the current token valid.
pub async fn d10_resend_is_rate_limited(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("fay@acme.test").await;
    let mut last = invited.message_id;
    for _ in 0..3 {
        last = env.resend(invited.user.id).await.message_id;
        env.clock.advance(Duration::minutes(1));
    }
    let outbox = env.outbox_len(env.tenant).await;
    let mails = env.mailer.attempts();
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::ResendRateLimited {
            retry_at: START + Duration::minutes(10),
        },
    );
    assert_eq!(
        env.outbox_len(env.tenant).await,
        outbox,
        "D10: nothing queued"
    );
    assert_eq!(env.mailer.attempts(), mails, "D10: nothing sent");
    env.clock.set(START + Duration::minutes(10));
    let next = env
        .app
        .resend_invitation(env.tenant, env.admin, invited.user.id)
        .await
        .expect("D10: allowed again at retry_at");
    env.remember(next.message_id, &next.accept_link);
    let next = next.message_id;
    assert_ne!(next, last);
    // The window slides: the next is refused until the second resend leaves it.
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::ResendRateLimited {
            retry_at: START + Duration::minutes(11),
        },
    );
    let token = env.token(env.tenant, next).await;
    env.app
        .accept_invitation(&token, "fay@acme.test")
        .await
        .unwrap();
    // Per user: another user's resends are not limited by these.
    let other = env.invite("gus@acme.test").await;
    env.app
        .resend_invitation(env.tenant, env.admin, other.user.id)
        .await
        .unwrap();
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): expired, used, superseded, revoked-by-delete, unknown and malformed tokens are all
/// refused with one error kind and one message.
pub async fn d10_invalid_tokens_share_one_error_kind(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let expired = env.invite("expired@acme.test").await;
    env.clock.advance(Duration::days(8));
    let used = env.invite("used@acme.test").await;
    let superseded = env.invite("superseded@acme.test").await;
    let deleted = env.invite("deleted@acme.test").await;
    let t_expired = env.token(env.tenant, expired.message_id).await;
    let t_used = env.token(env.tenant, used.message_id).await;
    let t_superseded = env.token(env.tenant, superseded.message_id).await;
    let t_deleted = env.token(env.tenant, deleted.message_id).await;
    env.accept(env.tenant, &used).await;
    env.app
        .resend_invitation(env.tenant, env.admin, superseded.user.id)
        .await
        .unwrap();
    env.app
        .delete_user(env.tenant, env.admin, deleted.user.id)
        .await
        .unwrap();
    let prefix = env.tenant.as_uuid().simple().to_string();
    let unknown = format!("{prefix}.{}", "A".repeat(43));
    let unknown_tenant = format!("{}.{}", uuid::Uuid::now_v7().simple(), "B".repeat(43));
    let (_, secret) = t_superseded.split_once('.').unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", t_expired, "expired@acme.test"),
        ("used", t_used, "used@acme.test"),
        ("superseded", t_superseded.clone(), "superseded@acme.test"),
        ("deleted user", t_deleted, "deleted@acme.test"),
        ("unknown", unknown, "used@acme.test"),
        ("unknown tenant", unknown_tenant, "used@acme.test"),
        (
            "other tenant prefix",
            format!("{}.{secret}", uuid::Uuid::now_v7().simple()),
            "superseded@acme.test",
        ),
        ("garbage", "not-a-token".into(), "used@acme.test"),
        ("empty", String::new(), "used@acme.test"),
        (
            "truncated",
            t_superseded[..40].to_owned(),
            "superseded@acme.test",
        ),
    ];
    let before = env.counters(env.tenant).await;
    let mut messages = BTreeSet::new();
    for (what, token, addr) in &cases {
        let e = rule(env.app.accept_invitation(token, addr).await);
        assert_eq!(e, E::InvalidInvitation, "D10: {what}");
        messages.insert(e.to_string());
    }
    assert_eq!(messages.len(), 1, "D10: one message for all: {messages:?}");
    assert_eq!(env.counters(env.tenant).await, before);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations)/[concurrency (D16)](tenantry_core::Rule::Concurrency): two invitations can never share a token hash; the store refuses the second
/// and nothing of it is stored.
pub async fn d10_token_hash_collision_is_refused_by_the_store(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let secret = [42u8; 32];
    env.random.push(&secret);
    let first = env.invite("first@acme.test").await;
    let before = env.counters(env.tenant).await;
    let outbox = env.outbox_len(env.tenant).await;
    env.random.push(&secret);
    let second = env
        .app
        .invite(
            env.tenant,
            env.admin,
            &request("second@acme.test", Role::User),
        )
        .await;
    env.random.clear();
    assert!(
        matches!(second, Err(Error::Store(_))),
        "D10: a duplicate token hash must be refused: {second:?}"
    );
    assert_eq!(env.counters(env.tenant).await, before, "nothing stored");
    assert_eq!(env.outbox_len(env.tenant).await, outbox, "nothing queued");
    let users = env.assert_consistent(env.tenant).await;
    assert!(users.iter().all(|u| u.email.key() != "second@acme.test"));
    // The first invitation still works.
    env.accept(env.tenant, &first).await;
}

// ----------------------------------------------------------------------------------- D19

/// [bulk invite (D19)](tenantry_core::Rule::BulkInvite): a bulk invite gives each address its own outcome (invited, duplicate in the tenant
/// or in the call, invalid with the reason, limit reached) and the seat limit holds
/// exactly.
pub async fn d19_bulk_invite_outcomes_with_exact_seat_limit(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(6),
            ..Options::default()
        },
    )
    .await;
    env.invite("old@acme.test").await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let emails: Vec<String> = [
        "new1@acme.test",
        " NEW1@acme.test ",
        "OLD@acme.test",
        "not-an-address",
        "new2@acme.test",
        "",
        "new3@acme.test",
        "new4@acme.test",
        "new5@acme.test",
        "bad@@acme.test",
        "new1@acme.test",
        "new6@acme.test",
        // refused for the limit above: again the limit, not a duplicate
        " NEW5@acme.test ",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mails = env.mailer.sent().len();
    let items = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: emails.clone(),
                role: Some(Role::User),
                template_id: Some(t.id),
                crm_access: true,
                grants: Permissions::ANALYTICS_VIEW,
            },
        )
        .await
        .unwrap();
    assert_eq!(items.len(), emails.len(), "D19: one outcome per address");
    for (item, input) in items.iter().zip(&emails) {
        assert_eq!(&item.input, input, "D19: outcomes in input order");
    }
    let kinds: Vec<&str> = items
        .iter()
        .map(|i| match &i.outcome {
            BulkOutcome::Invited { .. } => "invited",
            BulkOutcome::Duplicate => "duplicate",
            BulkOutcome::Invalid { .. } => "invalid",
            BulkOutcome::LimitReached { used: 6, limit: 6 } => "limit",
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "invited",
            "duplicate",
            "duplicate",
            "invalid",
            "invited",
            "invalid",
            "invited",
            "invited",
            "limit",
            "invalid",
            "duplicate",
            "limit",
            "limit"
        ]
    );
    assert!(matches!(
        items[3].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::MissingAt
        }
    ));
    assert!(matches!(
        items[5].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::Empty
        }
    ));
    assert!(matches!(
        items[9].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::MultipleAt
        }
    ));
    let invited: Vec<UserId> = items
        .iter()
        .filter_map(|i| match i.outcome {
            BulkOutcome::Invited { user_id } => Some(user_id),
            _ => None,
        })
        .collect();
    let users = env.assert_consistent(env.tenant).await;
    assert_eq!(users.len(), 6, "D19: the limit holds exactly");
    for id in &invited {
        let u = env.user(env.tenant, *id).await;
        assert_eq!(
            (u.status, u.template_id, u.crm_access, u.grants),
            (
                Status::Invited,
                Some(t.id),
                true,
                Permissions::ANALYTICS_VIEW
            )
        );
    }
    let sent: Vec<_> = env.mailer.sent()[mails..].to_vec();
    assert_eq!(sent.len(), 4, "D19: one mail per invited address");
    assert_eq!(
        sent.iter().map(|m| m.user_id).collect::<BTreeSet<_>>(),
        invited.iter().copied().collect::<BTreeSet<_>>()
    );
    // Each invitation works.
    for m in &sent {
        let token = tenantry_service::token_from_link(&m.text).unwrap();
        env.app.accept_invitation(&token, &m.to).await.unwrap();
    }
    let invites = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::UserInvited && r.event.outcome == Outcome::Success
        })
        .count();
    assert_eq!(invites, 2 + 4, "D19/D13: one event per invited address");
    // At the limit, nothing more.
    let items = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: vec!["x@acme.test".into(), "y@acme.test".into()],
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    assert!(
        items
            .iter()
            .all(|i| matches!(i.outcome, BulkOutcome::LimitReached { used: 6, limit: 6 }))
    );
    assert_eq!(env.assert_consistent(env.tenant).await.len(), 6);
    assert_eq!(with_status(&env.users(env.tenant).await, Status::Active), 5);
}

// ----------------------------------------------------------------------------------- D20

/// [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations): expired invitations keep their seat until deleted; hosts list them and delete them
/// all in one call, which frees their seats and leaves tombstones.
pub async fn d20_expired_invitations_listed_and_purged_in_one_call(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(6),
            ..Options::default()
        },
    )
    .await;
    let u1 = env.invite("old1@acme.test").await;
    let u2 = env.invite("old2@acme.test").await;
    let old_admin = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("oldadmin@acme.test", Role::Admin),
        )
        .await;
    env.clock.advance(Duration::days(1));
    let u3 = env.invite("recent@acme.test").await;
    let u4 = env.invite("accepted@acme.test").await;
    env.accept(env.tenant, &u4).await;
    env.clock.advance(Duration::days(6));
    // START + 7d: the first three expire exactly now.
    let ids = expired_ids(&env).await;
    assert_eq!(
        ids,
        BTreeSet::from([u1.user.id, u2.user.id, old_admin.user.id]),
        "D20: listed"
    );
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        6,
        "D20: expired invitations keep their seat"
    );
    assert!(
        env.app
            .invite(
                env.tenant,
                env.admin,
                &request("blocked@acme.test", Role::User)
            )
            .await
            .is_err()
    );
    // A manager without users:delete may not purge.
    let viewers = env.new_template("Viewers", Permissions::USERS_VIEW).await;
    env.edit(
        u4.user.id,
        &UserEdit {
            template_id: Some(Some(viewers.id)),
            ..UserEdit::default()
        },
    )
    .await;
    assert_rule(
        env.app
            .purge_expired_invitations(env.tenant, u4.user.id)
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::Delete),
        },
    );
    env.clock.advance(Duration::minutes(1));
    let purged = env
        .app
        .purge_expired_invitations(env.tenant, env.admin)
        .await
        .unwrap();
    assert_eq!(
        purged.iter().copied().collect::<BTreeSet<_>>(),
        ids,
        "D20: deleted in one call"
    );
    assert_eq!(purged.len(), 3);
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        3,
        "D20: seats freed"
    );
    for id in &purged {
        match env.app.attribution(env.tenant, *id).await.unwrap() {
            Some(Attribution::Deleted(t)) => {
                assert_eq!(t.deleted_by, ActorRef::User(env.admin));
                assert_eq!(
                    t.deleted_at,
                    START + Duration::days(7) + Duration::minutes(1)
                );
            }
            other => panic!("D20/D11: tombstone expected, got {other:?}"),
        }
    }
    assert_eq!(
        env.user(env.tenant, u3.user.id).await.status,
        Status::Invited
    );
    assert!(expired_ids(&env).await.is_empty());
    assert!(
        env.app
            .purge_expired_invitations(env.tenant, env.admin)
            .await
            .unwrap()
            .is_empty()
    );
    // The freed seats can be used; the old addresses can be invited again.
    env.invite("old1@acme.test").await;
    let deletes = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::UserDeleted && r.event.outcome == Outcome::Success
        })
        .count();
    assert_eq!(deletes, 3, "D20/D13: one event per deleted invitation");
    env.assert_consistent(env.tenant).await;
}

// ----------------------------------------------------------------------------------- D24

/// The stored invitations of a user, oldest first (token hashes only).
async fn invitations(env: &Env, user: UserId) -> Vec<tenantry_core::Invitation> {
    env.app
        .store()
        .invitations_of(env.tenant, user)
        .await
        .unwrap()
}

/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): each sign-up with a wrong address on a live token is a failed attempt, counted
/// down in the answer (4, 3, 2, 1, 0), committed (the invitation's count, an audit event by
/// the host refused under [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)) while the user stays invited; the fifth kills the token, so
/// that even the right address is then refused as an invalid invitation and nothing more
/// is counted; a resend issues a fresh token with its own five attempts.
pub async fn d24_wrong_addresses_count_down_and_the_fifth_kills_the_token(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("bob@acme.test").await;
    let bob = invited.user.id;
    let token = env.token(env.tenant, invited.message_id).await;
    let wrong = [
        "eve@acme.test",
        "mallory@evil.test",
        "bob@acme.test.evil",
        "bob2@acme.test",
        "b.o.b@acme.test",
    ];
    for (i, address) in wrong.iter().enumerate() {
        env.clock.advance(Duration::seconds(1));
        let before = env.counters(env.tenant).await;
        let audit = env.audit(env.tenant).await.len();
        let failed = u32::try_from(i).unwrap() + 1;
        assert_rule(
            env.app.accept_invitation(&token, address).await,
            &E::InvitationEmailMismatch {
                attempts_left: 5 - failed,
            },
        );
        let after = env.counters(env.tenant).await;
        assert_eq!(
            after.version,
            before.version + 1,
            "D24: the attempt is committed"
        );
        assert_eq!(
            (after.seats_used, after.active_admins),
            (before.seats_used, before.active_admins)
        );
        assert_eq!(
            env.user(env.tenant, bob).await,
            invited.user,
            "D24: the user stays invited, unchanged"
        );
        let stored = invitations(&env, bob).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].failed_attempts, failed,
            "D24: counted in the store"
        );
        let state = if failed < 5 {
            tenantry_core::InvitationState::Pending
        } else {
            tenantry_core::InvitationState::Revoked
        };
        assert_eq!(stored[0].state, state, "D24: the fifth revokes");
        let new = assert_new_events(
            &env,
            audit,
            &[(
                ActorRef::System,
                AuditAction::AcceptAttemptFailed,
                AuditTarget::User(bob),
                Some(Rule::AcceptAttempts),
            )],
        )
        .await;
        let event = &new[0].event;
        assert_eq!(event.at, START + Duration::seconds(i64::from(failed)));
        assert!(
            event.changes.contains(&FieldChange {
                field: Field::FailedAttempts,
                before: Value::Number(u64::from(failed - 1)),
                after: Value::Number(u64::from(failed)),
            }),
            "D24: the count is audited: {:?}",
            event.changes
        );
        assert_eq!(
            event
                .changes
                .iter()
                .any(|c| c.field == Field::InvitationState),
            failed == 5,
            "D24: the last attempt records the token's end: {:?}",
            event.changes
        );
    }
    // The token is dead: the right address too is refused, and nothing more is counted.
    let before = env.counters(env.tenant).await;
    let audit = env.audit(env.tenant).await.len();
    for address in ["bob@acme.test", " BOB@acme.test ", "eve@acme.test"] {
        assert_rule(
            env.app.accept_invitation(&token, address).await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D24: a dead token counts nothing"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    assert_eq!(invitations(&env, bob).await[0].failed_attempts, 5);
    let row = env.user(env.tenant, bob).await;
    assert_eq!(row.status, Status::Invited, "D24: the user stays invited");
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        2,
        "D9: its seat stays"
    );

    // A resend revives the invitation with a fresh count.
    env.clock.advance(Duration::minutes(1));
    let resent = env.resend(bob).await;
    let fresh = env.token(env.tenant, resent.message_id).await;
    assert_ne!(fresh, token);
    for left in [4, 3, 2, 1] {
        assert_rule(
            env.app.accept_invitation(&fresh, "eve@acme.test").await,
            &E::InvitationEmailMismatch {
                attempts_left: left,
            },
        );
    }
    assert_rule(
        env.app.accept_invitation(&token, "bob@acme.test").await,
        &E::InvalidInvitation,
    );
    // After four failures the right address (in any spelling) still works.
    let user = env
        .app
        .accept_invitation(&fresh, " Bob@ACME.test ")
        .await
        .expect("D24: the fifth attempt was not used");
    assert_eq!(user.status, Status::Active);
    env.assert_consistent(env.tenant).await;
}

/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): attempts count per invitation and only on live tokens: failures on one
/// invitation leave another's count alone; an invalid address ([unique email (D3)](tenantry_core::Rule::UniqueEmail)), an unknown, expired,
/// used or superseded token count nothing; an address change ([invitations (D10)](tenantry_core::Rule::Invitations)) kills the token and its
/// count with it.
pub async fn d24_failed_attempts_count_per_live_invitation_only(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let a = env.invite("ann@acme.test").await;
    let b = env.invite("ben@acme.test").await;
    let ta = env.token(env.tenant, a.message_id).await;
    let tb = env.token(env.tenant, b.message_id).await;
    for left in [4, 3, 2] {
        assert_rule(
            env.app.accept_invitation(&ta, "ben@acme.test").await,
            &E::InvitationEmailMismatch {
                attempts_left: left,
            },
        );
    }
    assert_eq!(invitations(&env, b.user.id).await[0].failed_attempts, 0);
    assert_rule(
        env.app.accept_invitation(&tb, "ann@acme.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    // Not counted: an address D3 refuses, and tokens that are not live.
    let before = env.counters(env.tenant).await;
    let audit = env.audit(env.tenant).await.len();
    assert!(matches!(
        rule(env.app.accept_invitation(&ta, "not an address").await),
        E::InvalidEmail(_)
    ));
    let prefix = env.tenant.as_uuid().simple().to_string();
    let unknown = format!("{prefix}.{}", "A".repeat(43));
    assert_rule(
        env.app.accept_invitation(&unknown, "eve@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D24: nothing counted"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    let used = env.invite("used@acme.test").await;
    let tu = env.token(env.tenant, used.message_id).await;
    env.accept(env.tenant, &used).await;
    let superseded = env.invite("old@acme.test").await;
    let ts = env.token(env.tenant, superseded.message_id).await;
    env.resend(superseded.user.id).await;
    let expired = env.invite("late@acme.test").await;
    let te = env.token(env.tenant, expired.message_id).await;
    let before_dead = env.counters(env.tenant).await;
    let audit_dead = env.audit(env.tenant).await.len();
    env.clock.advance(Duration::days(8));
    for t in [&tu, &ts, &te] {
        assert_rule(
            env.app.accept_invitation(t, "eve@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before_dead,
        "D24: nothing counted"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit_dead);
    for (user, count) in [
        (used.user.id, 0),
        (superseded.user.id, 0),
        (expired.user.id, 0),
    ] {
        assert!(
            invitations(&env, user)
                .await
                .iter()
                .all(|i| i.failed_attempts == count),
            "D24: no attempt counted on a dead token"
        );
    }
    assert_eq!(invitations(&env, a.user.id).await[0].failed_attempts, 3);
    env.assert_consistent(env.tenant).await;
}
