//! Invitations through the real `Tenantry` service and `SmtpMailer` to a real SMTP server
//! (aiosmtpd on loopback), D10 and D17: what the invited person receives, and every
//! failure the issue names — server down at invite time, a 4xx answer, a 5xx answer, and
//! that a message already sent is never sent again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use support::{BASE_URL, ServerTls, SmtpServer, part, service};
use tenantry_service::prelude::*;
use tenantry_service::{DeliveryState, OutboxRecord, TenantId, UserId};

fn request(email: &str) -> InviteRequest {
    InviteRequest {
        email: Email::parse(email).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::CONVERSATIONS_VIEW,
    }
}

async fn tenant(app: &Tenantry) -> (TenantId, UserId) {
    app.create_tenant(
        "Acme Rockets & Co",
        None,
        Email::parse("ada@acme.test").unwrap(),
    )
    .await
    .unwrap()
}

async fn record(app: &Tenantry, tenant: TenantId, id: tenantry_core::MessageId) -> OutboxRecord {
    app.outbox_message(tenant, id).await.unwrap().unwrap()
}

/// D10, D17: the invited person receives one multipart mail at the stored address, with the
/// tenant and inviter named, and an accept link whose token works exactly once.
#[tokio::test]
async fn the_invitation_reaches_the_server_and_its_link_works() {
    let server = SmtpServer::start_tls(ServerTls::StartTls);
    let (app, _clock) = service(server.mailer());
    let (t, admin) = tenant(&app).await;
    let invited = app
        .invite(t, admin, &request("  Bob.Smith@Example.test "))
        .await
        .unwrap();
    let stored = invited.user.email.to_string();
    assert_eq!(
        stored, "Bob.Smith@Example.test",
        "stored trimmed, as typed (D3)"
    );

    let got = server.messages();
    assert_eq!(got.len(), 1, "delivered inline after commit");
    let r = &got[0];
    assert_eq!(r["rcpt_tos"], serde_json::json!([stored]));
    assert_eq!(r["to"], stored);
    assert_eq!(r["subject"], "You are invited to join Acme Rockets & Co");
    let out = record(&app, t, invited.message_id).await;
    assert_eq!(r["message_id"], out.message.message_id_header());
    assert_eq!(r["content_type"], "multipart/alternative");

    let text = part(r, "text/plain");
    let html = part(r, "text/html");
    assert!(
        text.contains("ada@acme.test invited you to join Acme Rockets & Co"),
        "{text}"
    );
    assert!(html.contains("ada@acme.test invited you"), "{html}");
    assert!(
        html.contains("<strong>Acme Rockets &amp; Co</strong>"),
        "{html}"
    );
    assert!(text.contains(&format!("{BASE_URL}?token=")), "{text}");
    assert!(
        html.contains(&format!("href=\"{BASE_URL}?token=")),
        "{html}"
    );

    let token = tenantry_service::token_from_link(&text).unwrap();
    assert_eq!(
        tenantry_service::token_from_link(&html).as_deref(),
        Some(token.as_str())
    );
    assert!(token.len() >= 43, "at least 256 bits, URL-safe (D10)");
    // D26: the link handed to the caller is the one that was mailed.
    assert!(
        text.contains(invited.accept_link.expose()),
        "the mailed link is the returned one: {text}"
    );
    assert_eq!(invited.accept_link.token().as_deref(), Some(token.as_str()));

    assert!(matches!(out.state, DeliveryState::Sent { .. }));
    assert_eq!(out.attempts, 1);
    assert!(
        out.message.text.is_empty() && out.message.html.is_empty(),
        "the service never lists bodies (D26)"
    );
    let stored = app
        .store()
        .outbox_message(t, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.message.text.is_empty() && stored.message.html.is_empty(),
        "bodies (with the link) cleared in the store once sent"
    );

    let bob = app
        .accept_invitation(&token, "bob.smith@example.test")
        .await
        .unwrap();
    assert_eq!(bob.id, invited.user.id);
    assert_eq!(bob.status, Status::Active);
    assert!(
        app.accept_invitation(&token, "bob.smith@example.test")
            .await
            .is_err(),
        "single use"
    );
}

/// D17: the SMTP server is down when the admin invites: the invite is stored, its message
/// stays pending (retry scheduled), and it is delivered once the server is up and the
/// backoff has passed.
#[tokio::test]
async fn server_down_at_invite_time_then_delivered_when_it_comes_up() {
    let mut server = SmtpServer::reserve(ServerTls::None);
    let (app, clock) = service(server.mailer());
    let (t, admin) = tenant(&app).await;

    let invited = app
        .invite(t, admin, &request("carol@acme.test"))
        .await
        .unwrap();
    assert_eq!(invited.user.status, Status::Invited);
    assert!(
        app.user(t, ActorRef::User(admin), invited.user.id)
            .await
            .is_ok(),
        "the invite is stored"
    );
    let out = record(&app, t, invited.message_id).await;
    assert_eq!(out.state, DeliveryState::Pending);
    assert_eq!(out.attempts, 1);
    let err = out.last_error.clone().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    assert_eq!(
        out.next_attempt_at,
        support::T0 + time::Duration::seconds(30)
    );
    assert_eq!(app.outbox(t, true, 10).await.unwrap().len(), 1);

    server.start();
    // Not due yet: nothing is sent before the backoff has passed.
    assert_eq!(app.dispatch(t).await.unwrap().sent, 0);
    assert!(server.messages().is_empty());

    clock.advance(time::Duration::seconds(31));
    let report = app.dispatch(t).await.unwrap();
    assert_eq!((report.sent, report.retrying, report.failed), (1, 0, 0));
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["carol@acme.test"]));
    let out = record(&app, t, invited.message_id).await;
    assert!(matches!(out.state, DeliveryState::Sent { .. }));
    assert_eq!(out.attempts, 2);
    assert_eq!(got[0]["message_id"], out.message.message_id_header());

    let token = tenantry_service::token_from_link(&part(&got[0], "text/plain")).unwrap();
    app.accept_invitation(&token, "carol@acme.test")
        .await
        .unwrap();
}

/// D17: a 4xx answer is retried with a doubling backoff; attempts are counted and the
/// server's words are kept as the last error; once the server accepts, it is sent.
#[tokio::test]
async fn answer_4xx_is_retried_with_backoff() {
    let server = SmtpServer::start_plain();
    let (app, clock) = service(server.mailer());
    let (t, admin) = tenant(&app).await;
    server.refuse("rcpt", "451 4.7.1 Greylisted, try again later");

    let invited = app
        .invite(t, admin, &request("dave@acme.test"))
        .await
        .unwrap();
    let out = record(&app, t, invited.message_id).await;
    assert_eq!(out.state, DeliveryState::Pending);
    assert_eq!(out.attempts, 1);
    assert_eq!(
        out.last_error.as_deref(),
        Some("451 4.7.1 Greylisted, try again later")
    );
    assert_eq!(
        out.next_attempt_at,
        support::T0 + time::Duration::seconds(30)
    );

    clock.advance(time::Duration::seconds(30));
    let report = app.dispatch(t).await.unwrap();
    assert_eq!(report.retrying, 1);
    let out = record(&app, t, invited.message_id).await;
    assert_eq!(out.attempts, 2);
    assert_eq!(
        out.next_attempt_at,
        support::T0 + time::Duration::seconds(30 + 60),
        "the second wait is twice the first"
    );
    assert_eq!(
        server.events().len(),
        2,
        "two RCPT attempts reached the server"
    );

    server.accept_all();
    clock.advance(time::Duration::seconds(59));
    assert_eq!(
        app.dispatch(t).await.unwrap().sent,
        0,
        "not before the backoff"
    );
    clock.advance(time::Duration::seconds(1));
    assert_eq!(app.dispatch(t).await.unwrap().sent, 1);
    let out = record(&app, t, invited.message_id).await;
    assert!(matches!(out.state, DeliveryState::Sent { .. }));
    assert_eq!(out.attempts, 3);
    assert_eq!(server.messages().len(), 1);
}

/// D17, D10: a 5xx answer marks the message failed with the server's reason, visible to the
/// host through the outbox; the user stays invited, and a resend (new token) is delivered.
#[tokio::test]
async fn answer_5xx_marks_the_message_failed_and_resend_works() {
    let server = SmtpServer::start_plain();
    let (app, clock) = service(server.mailer());
    let (t, admin) = tenant(&app).await;
    server.refuse("data", "554 5.7.1 Recipient address rejected: policy");

    let invited = app
        .invite(t, admin, &request("erin@acme.test"))
        .await
        .unwrap();
    let out = record(&app, t, invited.message_id).await;
    assert_eq!(out.attempts, 1);
    match &out.state {
        DeliveryState::Failed { reason, .. } => {
            assert_eq!(reason, "554 5.7.1 Recipient address rejected: policy");
        }
        other => panic!("expected failed, got {other:?}"),
    }
    let stored = app
        .store()
        .outbox_message(t, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.message.text.is_empty() && stored.message.html.is_empty(),
        "a message failed for good loses its live link too (D26)"
    );
    let listed = app.outbox(t, false, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, out.state, "visible to the host");
    assert!(
        app.outbox(t, true, 10).await.unwrap().is_empty(),
        "not pending"
    );
    let user = app
        .user(t, ActorRef::User(admin), invited.user.id)
        .await
        .unwrap();
    assert_eq!(user.status, Status::Invited, "the invite is kept");

    // A later dispatch does not try a failed message again.
    clock.advance(time::Duration::hours(2));
    assert_eq!(
        app.dispatch(t).await.unwrap(),
        tenantry_service::DispatchReport::default()
    );

    server.accept_all();
    let resent = app
        .resend_invitation(t, admin, invited.user.id)
        .await
        .unwrap();
    assert_ne!(resent.message_id, invited.message_id);
    assert_ne!(
        resent.accept_link, invited.accept_link,
        "a fresh token (D10)"
    );
    assert!(resent.expires_at > app.now(), "{:?}", resent.expires_at);
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let new = record(&app, t, resent.message_id).await;
    assert!(matches!(new.state, DeliveryState::Sent { .. }));
    assert_eq!(got[0]["message_id"], new.message.message_id_header());
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["erin@acme.test"]));
    let token = tenantry_service::token_from_link(&part(&got[0], "text/plain")).unwrap();
    assert_eq!(
        resent.accept_link.token().as_deref(),
        Some(token.as_str()),
        "the returned link is the mailed one (D26)"
    );
    assert!(
        app.accept_invitation(&invited.accept_link.token().unwrap(), "erin@acme.test")
            .await
            .is_err(),
        "the first link died with the resend (D10)"
    );
    let erin = app
        .accept_invitation(&token, "erin@acme.test")
        .await
        .unwrap();
    assert_eq!(
        erin.id, invited.user.id,
        "the same user, never a second one"
    );
}

/// D17: once sent, a message is never sent again, however often dispatch runs and however
/// much time passes (past every backoff and lease).
#[tokio::test]
async fn a_message_already_sent_is_never_sent_again() {
    let server = SmtpServer::start_plain();
    let (app, clock) = service(server.mailer());
    let (t, admin) = tenant(&app).await;
    let a = app
        .invite(t, admin, &request("fay@acme.test"))
        .await
        .unwrap();
    let b = app
        .invite(t, admin, &request("gus@acme.test"))
        .await
        .unwrap();
    assert_eq!(server.messages().len(), 2);
    for _ in 0..5 {
        clock.advance(time::Duration::hours(3));
        let r = app.dispatch(t).await.unwrap();
        assert_eq!(r, tenantry_service::DispatchReport::default());
        let r = app.dispatch_all().await.unwrap();
        assert_eq!(r, tenantry_service::DispatchReport::default());
    }
    let got = server.messages();
    assert_eq!(got.len(), 2);
    for id in [a.message_id, b.message_id] {
        let out = record(&app, t, id).await;
        assert!(matches!(out.state, DeliveryState::Sent { .. }));
        assert_eq!(out.attempts, 1);
    }
    assert_eq!(
        server
            .events()
            .iter()
            .filter(|e| e.starts_with("data"))
            .count(),
        2
    );
}
