//! Scenarios of [mail delivery (D17)](tenantry_core::Rule::MailDelivery), [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest) and [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::Error as E;
use tenantry_service::{
    BulkInvite, BulkOutcome, DeliveryState, MailError, Permissions, Role, Status, Store, UserId,
};
use time::Duration;

use crate::support::{BASE_URL, Env, Options, START, assert_rule, request, request_with};

// ----------------------------------------------------------------------------------- D17

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): the invitation message is recorded with the invite (pending, with the accept
/// link), delivered only after commit by dispatch, then marked sent with its body cleared,
/// and never sent again.
pub async fn d17_message_queued_in_invite_commit_and_delivered_after(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            user_limit: Some(3),
            ..Options::default()
        },
    )
    .await;
    let invited = env.invite("Hal@Acme.test").await;
    assert!(
        env.mailer.sent().is_empty(),
        "D17: not delivered inside the commit"
    );
    let record = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .expect("D17: queued with the invite");
    assert_eq!(record.state, DeliveryState::Pending);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.created_at, START);
    assert_eq!(record.message.to, "Hal@Acme.test");
    assert_eq!(record.message.user_id, invited.user.id);
    assert_eq!(record.message.tenant_id, env.tenant);
    // D26: the service never shows a body holding a live link, not even while pending; the
    // store keeps it (the dispatcher sends it) until it is sent.
    assert!(
        record.message.text.is_empty() && record.message.html.is_empty(),
        "D26: the outbox read shows no body"
    );
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .expect("D17: stored with the invite");
    assert!(
        stored.message.text.contains(&format!("{BASE_URL}?token=")),
        "D10/D17: link in the queued body"
    );
    assert!(!stored.message.html.is_empty());
    let pending = env.app.outbox(env.tenant, true, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        vec![invited.message_id]
    );
    let token = env.token(env.tenant, invited.message_id).await;

    env.clock.advance(Duration::seconds(5));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!((report.sent, report.retrying, report.failed), (1, 0, 0));
    let sent = env.mailer.sent();
    assert_eq!(sent.len(), 1);
    let mut expected = stored.message.clone();
    expected.date = Some(env.clock_now());
    assert_eq!(
        sent[0], expected,
        "D17: the recorded message is what is sent, dated by the service's clock"
    );
    let record = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.state,
        DeliveryState::Sent {
            at: START + Duration::seconds(5)
        }
    );
    assert_eq!(record.attempts, 1);
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.message.text.is_empty() && stored.message.html.is_empty(),
        "D17/D26: the store cleared the sent body"
    );
    assert!(
        env.app
            .outbox(env.tenant, true, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Never re-sent, whatever time passes.
    for _ in 0..3 {
        env.clock.advance(Duration::hours(2));
        let report = env.app.dispatch(env.tenant).await.unwrap();
        assert_eq!(report.sent, 0);
        assert_eq!(env.app.dispatch_all().await.unwrap().sent, 0);
    }
    assert_eq!(
        env.mailer.attempts(),
        1,
        "D17: a sent message is not re-sent"
    );
    // The delivered link works.
    env.app
        .accept_invitation(&token, "hal@acme.test")
        .await
        .unwrap();
    // A refused invite queues nothing.
    env.invite("ivy@acme.test").await;
    let before = env.outbox_len(env.tenant).await;
    assert!(
        env.app
            .invite(env.tenant, env.admin, &request("jon@acme.test", Role::User))
            .await
            .is_err()
    );
    assert_eq!(env.outbox_len(env.tenant).await, before);
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 1);
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a transient failure never loses or rolls back the invite: the message stays
/// pending with the reason, is retried after the backoff, and is delivered exactly once;
/// transient failures up to the attempt limit end as failed.
pub async fn d17_transient_failure_is_retried_after_backoff(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    env.mailer
        .fail_next(MailError::Transient("421 try later".into()));
    let invited = env.invite("kim@acme.test").await;
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited,
        "D17: the invite stays"
    );
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.state, DeliveryState::Pending);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_error.as_deref(), Some("421 try later"));
    assert_eq!(
        r.next_attempt_at,
        START + Duration::seconds(30),
        "D17: retried after the backoff"
    );
    // The store keeps the body for the retry (D17); the service's read never shows it (D26).
    assert!(r.message.text.is_empty(), "D26: no body in the outbox read");
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.message.text.is_empty(),
        "D17: the body is kept for the retry"
    );
    assert!(env.mailer.sent().is_empty());

    env.clock.advance(Duration::seconds(29));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: not before the backoff"
    );
    assert_eq!(env.mailer.attempts(), 1);
    env.clock.advance(Duration::seconds(1));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(report.sent, 1);
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Sent {
            at: START + Duration::seconds(30)
        }
    );
    assert_eq!(r.attempts, 2);
    assert_eq!(env.mailer.sent().len(), 1);
    env.clock.advance(Duration::hours(1));
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    assert_eq!(env.mailer.sent().len(), 1, "D17: delivered exactly once");
    env.accept(env.tenant, &invited).await;

    // Transient failures until the attempt limit (5 by default): then failed.
    env.mailer
        .fail_all(MailError::Transient("451 greylisted".into()));
    let doomed = env.invite("lee@acme.test").await;
    for _ in 0..10 {
        env.clock.advance(Duration::hours(2));
        env.app.dispatch(env.tenant).await.unwrap();
    }
    let r = env
        .app
        .outbox_message(env.tenant, doomed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&r.state, DeliveryState::Failed { reason, .. } if reason == "451 greylisted"),
        "{r:?}"
    );
    assert_eq!(r.attempts, 5);
    env.mailer.recover();
    env.clock.advance(Duration::hours(2));
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    assert_eq!(
        env.user(env.tenant, doomed.user.id).await.status,
        Status::Invited,
        "D17: never rolled back"
    );
    // The host can resend; the new message is delivered.
    let again = env.resend(doomed.user.id).await;
    assert!(env.mailer.sent().iter().any(|m| m.id == again.message_id));
    env.assert_consistent(env.tenant).await;
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a permanent failure marks the message failed with the transport's reason at once;
/// the user stays invited and nothing is retried.
pub async fn d17_permanent_failure_is_marked_failed_with_reason(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    env.clock.advance(Duration::minutes(3));
    env.mailer
        .fail_next(MailError::Permanent("550 no such mailbox".into()));
    let invited = env.invite("max@acme.test").await;
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Failed {
            reason: "550 no such mailbox".into(),
            at: START + Duration::minutes(3)
        }
    );
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_error.as_deref(), Some("550 no such mailbox"));
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited
    );
    assert!(
        env.app
            .outbox(env.tenant, true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for _ in 0..3 {
        env.clock.advance(Duration::hours(2));
        assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    }
    assert_eq!(
        env.mailer.attempts(),
        1,
        "D17: a failed message is not retried"
    );
    assert!(env.mailer.sent().is_empty());
    let failed = env.app.outbox(env.tenant, false, 10).await.unwrap();
    assert_eq!(failed.len(), 1, "D17: the failure stays visible");
    env.assert_consistent(env.tenant).await;
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a message claimed by one dispatcher (which then vanished) is not taken by another
/// until the lease expires; it is then delivered once.
pub async fn d17_claimed_message_is_leased_until_the_lease_expires(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let invited = env.invite("ned@acme.test").await;
    let now = env.clock_now();
    let claimed = env
        .app
        .store()
        .claim_due_mail(env.tenant, now, now + Duration::minutes(2), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        vec![invited.message_id]
    );
    assert!(
        env.app
            .store()
            .claim_due_mail(env.tenant, now, now + Duration::minutes(2), 10)
            .await
            .unwrap()
            .is_empty(),
        "D17: claimed once"
    );
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: leased"
    );
    env.clock.advance(Duration::seconds(119));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: still leased"
    );
    env.clock.advance(Duration::seconds(1));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        1,
        "D17: lease expired"
    );
    assert_eq!(env.mailer.sent().len(), 1);
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now() + Duration::days(1), 10)
        .await
        .unwrap();
    assert!(!due.contains(&env.tenant));
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): the background dispatcher finds and delivers the due mail of every tenant.
pub async fn d17_dispatch_all_delivers_every_tenant(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let (b, b_admin) = env.other_tenant("Beta", "admin@beta.test").await;
    env.invite("one@acme.test").await;
    env.invite("two@acme.test").await;
    env.invite_as(b, b_admin, &request("three@beta.test", Role::User))
        .await;
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now(), 10)
        .await
        .unwrap();
    assert_eq!(
        due.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([env.tenant, b])
    );
    let report = env.app.dispatch_all().await.unwrap();
    assert_eq!(report.sent, 3);
    let mut to: Vec<String> = env.mailer.sent().into_iter().map(|m| m.to).collect();
    to.sort();
    assert_eq!(
        to,
        vec!["one@acme.test", "three@beta.test", "two@acme.test"]
    );
    assert!(
        env.app
            .store()
            .tenants_with_due_mail(env.clock_now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.app.dispatch_all().await.unwrap().sent, 0);
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a delivery result that arrives after the message left `pending` (a dispatcher
/// whose lease ran out reporting late) changes nothing: sent stays sent, failed stays failed.
pub async fn d17_late_delivery_result_does_not_overwrite_a_final_state(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let sent = env.invite("late1@acme.test").await;
    let failed = env.invite("late2@acme.test").await;
    let s = env.app.store();
    let now = env.clock_now();
    s.record_delivery(
        env.tenant,
        sent.message_id,
        &tenantry_store::DeliveryUpdate::Sent { at: now },
    )
    .await
    .unwrap();
    s.record_delivery(
        env.tenant,
        failed.message_id,
        &tenantry_store::DeliveryUpdate::Failed {
            reason: "550 no".into(),
            at: now,
        },
    )
    .await
    .unwrap();
    for id in [sent.message_id, failed.message_id] {
        s.record_delivery(
            env.tenant,
            id,
            &tenantry_store::DeliveryUpdate::Retry {
                reason: "421 late".into(),
                retry_at: now,
            },
        )
        .await
        .unwrap();
    }
    let r = s
        .outbox_message(env.tenant, sent.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        tenantry_store::DeliveryState::Sent { at: now },
        "D17: sent stays sent"
    );
    assert_eq!(r.attempts, 1);
    let r = s
        .outbox_message(env.tenant, failed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r.state, tenantry_store::DeliveryState::Failed { .. }),
        "D17: failed stays failed"
    );
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: nothing is sent again"
    );
}

// ----------------------------------------------------------------------------------- D25

/// [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest): inline delivery sends only the messages the call itself queued. An older message
/// that is pending and due — kept by a transient failure, or queued by a service without
/// inline delivery — is left to the dispatcher, whatever invite, resend or bulk invite runs
/// meanwhile; the dispatcher then delivers it once.
pub async fn d25_inline_delivery_sends_only_the_calls_own_messages(store: Arc<dyn Store>) {
    assert_eq!(
        tenantry_service::DeliverySettings::default().inline_deadline,
        Duration::seconds(5),
        "D25: 5 s by default"
    );
    let env = Env::new(store).await;
    env.mailer
        .fail_next(MailError::Transient("421 try later".into()));
    let old = env.invite("old@acme.test").await;
    let record = |id| {
        let env = env.clone();
        async move {
            env.app
                .store()
                .outbox_message(env.tenant, id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(record(old.message_id).await.state, DeliveryState::Pending);
    // Well past its backoff: the old message is due.
    env.clock.advance(Duration::minutes(5));
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now(), 10)
        .await
        .unwrap();
    assert!(due.contains(&env.tenant), "the old message is due");

    let new = env.invite("new@acme.test").await;
    let resent = env.resend(new.user.id).await;
    let bulk = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: vec!["b1@acme.test".into(), "b2@acme.test".into()],
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    let bulk_users: BTreeSet<UserId> = bulk
        .iter()
        .filter_map(|r| match r.outcome {
            BulkOutcome::Invited { user_id } => Some(user_id),
            _ => None,
        })
        .collect();
    assert_eq!(bulk_users.len(), 2);
    let sent = env.mailer.sent();
    assert_eq!(
        sent.iter().map(|m| m.id).collect::<Vec<_>>()[..2],
        [new.message_id, resent.message_id],
        "D25: each call delivers its own message"
    );
    assert_eq!(
        sent[2..].iter().map(|m| m.user_id).collect::<BTreeSet<_>>(),
        bulk_users
    );
    assert_eq!(sent.len(), 4, "D25: the older message is not among them");
    let r = record(old.message_id).await;
    assert_eq!(
        r.state,
        DeliveryState::Pending,
        "D25: left to the dispatcher"
    );
    assert_eq!(r.attempts, 1, "D25: not attempted again inline");

    // A message queued without inline delivery is not sent by a later inline call either.
    let quiet = env.with_delivery(false, Duration::seconds(5));
    let queued = quiet.invite("queued@acme.test").await;
    assert_eq!(record(queued.message_id).await.attempts, 0);
    let loud = env.invite("loud@acme.test").await;
    let sent = env.mailer.sent();
    assert_eq!(sent.last().unwrap().id, loud.message_id);
    assert!(
        sent.iter()
            .all(|m| m.id != queued.message_id && m.id != old.message_id)
    );
    assert_eq!(
        record(queued.message_id).await.state,
        DeliveryState::Pending
    );

    // The dispatcher delivers both, once.
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(report.sent, 2);
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    for id in [old.message_id, queued.message_id] {
        assert!(matches!(record(id).await.state, DeliveryState::Sent { .. }));
        assert_eq!(env.mailer.sent().iter().filter(|m| m.id == id).count(), 1);
    }
}

/// [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest): a silent mail server never holds an invite (or a resend) past the inline deadline:
/// the call returns in time with its user stored; the message, cut off, stays pending and
/// is not taken again at once (the cut-off send may have reached the server: it is retried
/// only after its lease or backoff, [mail delivery (D17)](tenantry_core::Rule::MailDelivery)), and the dispatcher then delivers it once.
pub async fn d25_inline_delivery_is_bounded_by_its_deadline(store: Arc<dyn Store>) {
    let deadline = std::time::Duration::from_millis(300);
    let env = Env::with(
        store,
        Options {
            inline_deadline: Duration::milliseconds(300),
            ..Options::default()
        },
    )
    .await;
    env.mail_delay.set(Some(std::time::Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let invited = env.invite("slow@acme.test").await;
    let took = started.elapsed();
    println!("d25_inline_delivery_is_bounded_by_its_deadline: the invite took {took:?}");
    assert!(
        took < deadline + std::time::Duration::from_secs(3),
        "D25: the invite waited {took:?} for a silent mail server (deadline {deadline:?})"
    );
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited,
        "D25/D17: the invite is not rolled back"
    );
    let r = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Pending,
        "D25: left to the dispatcher"
    );
    assert!(env.mailer.sent().is_empty());
    // A resend is bounded the same way.
    let started = std::time::Instant::now();
    let resent = env.resend(invited.user.id).await;
    assert!(started.elapsed() < deadline + std::time::Duration::from_secs(3));
    env.mail_delay.set(None);
    // Not taken again at once (the default lease is 2 minutes, the first backoff 30 s).
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: a cut-off send is not repeated at once"
    );
    env.clock.advance(Duration::minutes(2));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(
        report.sent, 2,
        "D25: the dispatcher delivers what was cut off"
    );
    let sent = env.mailer.sent();
    for id in [invited.message_id, resent.message_id] {
        assert_eq!(sent.iter().filter(|m| m.id == id).count(), 1);
    }
    // The resent link is the live one.
    let token = resent.accept_link.token().unwrap();
    env.app
        .accept_invitation(&token, "slow@acme.test")
        .await
        .unwrap();
}

// ----------------------------------------------------------------------------------- D26

/// The secret part of a token (what follows the tenant prefix).
fn secret_of(token: &str) -> String {
    token
        .split_once('.')
        .map(|(_, s)| s.to_owned())
        .expect("a token has a tenant prefix")
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): no outbox read, stored message no longer pending, audit record, user row or
/// listing, template listing, attribution or stored invitation shows a token's secret —
/// after the message was sent, after it failed for good at once or after its retries, and
/// while it is pending (the store alone keeps the body of a pending message, to send it).
/// The links the calls returned still work, each once.
pub async fn d26_live_links_are_never_readable_after_the_call(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let sent = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with("sent@acme.test", Permissions::empty(), Some(t.id), true),
        )
        .await;
    env.mailer
        .fail_next(MailError::Permanent("550 no such mailbox".into()));
    let failed = env.invite("failed@acme.test").await;
    env.mailer
        .fail_all(MailError::Transient("451 greylisted".into()));
    let retried = env.invite("retried@acme.test").await;
    for _ in 0..8 {
        env.clock.advance(Duration::hours(2));
        env.app.dispatch(env.tenant).await.unwrap();
    }
    env.mailer.recover();
    let quiet = env.with_delivery(false, Duration::seconds(5));
    let pending = quiet.invite("pending@acme.test").await;
    // A resend replaces one link; the old one is dead but must not show either.
    let first = env.invite("twice@acme.test").await;
    let second = env.resend(first.user.id).await;

    let store = env.app.store();
    let state = |id| {
        let env = env.clone();
        async move {
            env.app
                .store()
                .outbox_message(env.tenant, id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert!(matches!(
        state(sent.message_id).await.state,
        DeliveryState::Sent { .. }
    ));
    assert!(matches!(
        state(failed.message_id).await.state,
        DeliveryState::Failed { .. }
    ));
    let r = state(retried.message_id).await;
    assert!(matches!(r.state, DeliveryState::Failed { .. }), "{r:?}");
    assert_eq!(r.attempts, 5);
    for id in [
        sent.message_id,
        failed.message_id,
        retried.message_id,
        first.message_id,
        second.message_id,
    ] {
        let r = state(id).await;
        assert!(
            r.message.text.is_empty() && r.message.html.is_empty(),
            "D26: the store cleared the body of a message sent or failed for good: {r:?}"
        );
    }
    let p = state(pending.message_id).await;
    assert_eq!(p.state, DeliveryState::Pending);
    assert!(
        !p.message.text.is_empty(),
        "D17: the store keeps a pending body to send it"
    );
    let claimed = store
        .claim_due_mail(env.tenant, env.clock_now(), env.clock_now(), 10)
        .await
        .unwrap();
    assert!(claimed.iter().all(|r| r.message.id == pending.message_id));

    let tokens = [
        ("sent", env.token(env.tenant, sent.message_id).await),
        ("failed", failed.accept_link.token().unwrap()),
        ("retried", retried.accept_link.token().unwrap()),
        ("pending", pending.accept_link.token().unwrap()),
        ("superseded", first.accept_link.token().unwrap()),
        ("resent", second.accept_link.token().unwrap()),
    ];
    for (what, token) in &tokens {
        let found = env.secret_shown(env.tenant, &secret_of(token)).await;
        assert!(
            found.is_empty(),
            "D26: the {what} link is readable through {found:?}"
        );
    }
    // The links handed out still work once each (the superseded one not at all).
    for (invited, token) in [
        (&failed, &tokens[1].1),
        (&retried, &tokens[2].1),
        (&pending, &tokens[3].1),
    ] {
        let address = invited.user.email.as_str();
        env.app.accept_invitation(token, address).await.unwrap();
        assert_rule(
            env.app.accept_invitation(token, address).await,
            &E::InvalidInvitation,
        );
    }
    assert_rule(
        env.app
            .accept_invitation(&tokens[4].1, "twice@acme.test")
            .await,
        &E::InvalidInvitation,
    );
    // And, accepted, they still do not show anywhere.
    for (what, token) in &tokens {
        let found = env.secret_shown(env.tenant, &secret_of(token)).await;
        assert!(
            found.is_empty(),
            "D26: the {what} link shows through {found:?}"
        );
    }
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the link returned by an invite, a resend or a bulk invite is the one mailed, built
/// from the base URL, hidden from `Debug`, and works exactly once; a resend's link kills the
/// invite's; a bulk invite returns a link for each invited address and none for the others.
pub async fn d26_returned_links_work_exactly_once(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env
        .app
        .invite(env.tenant, env.admin, &request("ann@acme.test", Role::User))
        .await
        .unwrap();
    let token = invited.accept_link.token().unwrap();
    assert_eq!(
        invited.accept_link.expose(),
        format!("{BASE_URL}?token={token}"),
        "D10/D26: built from the base URL"
    );
    let mailed = env
        .mailer
        .sent()
        .into_iter()
        .find(|m| m.id == invited.message_id)
        .unwrap();
    assert_eq!(
        tenantry_service::token_from_link(&mailed.text),
        Some(token.clone())
    );
    assert!(
        !format!("{invited:?}").contains(&secret_of(&token)),
        "D26: Debug hides the link"
    );
    env.app
        .accept_invitation(&token, "ann@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app.accept_invitation(&token, "ann@acme.test").await,
        &E::InvalidInvitation,
    );

    // Resend: a new link, the old one dead.
    let ben = env
        .app
        .invite(env.tenant, env.admin, &request("ben@acme.test", Role::User))
        .await
        .unwrap();
    let old = ben.accept_link.token().unwrap();
    env.clock.advance(Duration::minutes(1));
    let resent = env
        .app
        .resend_invitation(env.tenant, env.admin, ben.user.id)
        .await
        .unwrap();
    let new = resent.accept_link.token().unwrap();
    assert_ne!(old, new);
    assert!(!format!("{resent:?}").contains(&secret_of(&new)));
    assert_eq!(
        Some(resent.expires_at),
        env.user(env.tenant, ben.user.id).await.invite_expires_at,
        "D10: the resend returns the new expiry"
    );
    assert_eq!(
        resent.expires_at,
        START + Duration::minutes(1) + Duration::days(7)
    );
    let mailed = env
        .mailer
        .sent()
        .into_iter()
        .find(|m| m.id == resent.message_id)
        .unwrap();
    assert_eq!(
        tenantry_service::token_from_link(&mailed.text),
        Some(new.clone())
    );
    assert_rule(
        env.app.accept_invitation(&old, "ben@acme.test").await,
        &E::InvalidInvitation,
    );
    env.app
        .accept_invitation(&new, "ben@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app.accept_invitation(&new, "ben@acme.test").await,
        &E::InvalidInvitation,
    );

    // Bulk invite: a link per invited address.
    let inputs = [
        "c1@acme.test",
        "ann@acme.test",
        "nope",
        "c2@acme.test",
        "C1@acme.test",
    ];
    let results = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: inputs.iter().map(|s| (*s).to_owned()).collect(),
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    let mut links = Vec::new();
    for r in &results {
        match (&r.outcome, &r.accept_link) {
            (BulkOutcome::Invited { user_id }, Some(link)) => {
                let token = link.token().unwrap();
                assert!(link.expose().starts_with(&format!("{BASE_URL}?token=")));
                let mailed = env
                    .mailer
                    .sent()
                    .into_iter()
                    .find(|m| m.user_id == *user_id)
                    .unwrap();
                assert_eq!(
                    tenantry_service::token_from_link(&mailed.text),
                    Some(token.clone())
                );
                links.push((r.input.clone(), token));
            }
            (BulkOutcome::Invited { .. }, None) => panic!("D26: no link for {r:?}"),
            (_, Some(_)) => panic!("D26: a link for {r:?}"),
            (_, None) => {}
        }
    }
    assert_eq!(
        links.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        vec!["c1@acme.test", "c2@acme.test"]
    );
    assert_ne!(links[0].1, links[1].1);
    for (address, token) in &links {
        env.app.accept_invitation(token, address).await.unwrap();
        assert_rule(
            env.app.accept_invitation(token, address).await,
            &E::InvalidInvitation,
        );
    }
    env.assert_consistent(env.tenant).await;
}
