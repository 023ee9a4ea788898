//! `LettreMailer` over real lettre transports: the asynchronous SMTP transport against a real
//! SMTP server (aiosmtpd on loopback) and the file transport into a scratch directory. The
//! message is built as `SmtpMailer` builds it, and errors are classified the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use lettre::{AsyncFileTransport, AsyncSmtpTransport, Tokio1Executor};
use support::{Scratch, SmtpServer, T0, free_port, invite_into_new_tenant, part, service};
use tenantry_mail::{MailError, Mailer, Message};
use tenantry_service::{DeliveryState, TenantId, UserId};
use tenantry_smtp::{LettreMailer, TransportError};

fn smtp_transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(std::time::Duration::from_secs(5)))
        .build()
}

fn message(to: &str) -> Message {
    Message {
        id: tenantry_core::MessageId::from_parts(1_700_000_000_000, [5; 10]),
        tenant_id: TenantId::from_parts(1, [1; 10]),
        user_id: UserId::from_parts(1, [2; 10]),
        to: to.to_owned(),
        subject: "You are invited to join Acme".to_owned(),
        text: "Plain: https://app.test/accept?token=abc".to_owned(),
        html: "<p>HTML</p>".to_owned(),
        date: Some(T0),
    }
}

#[tokio::test]
async fn over_the_smtp_transport_the_message_is_built_as_the_smtp_mailer_builds_it() {
    let server = SmtpServer::start_plain();
    let mailer =
        LettreMailer::new(smtp_transport(server.port), "Acme <invites@acme.test>").unwrap();
    let m = message("bob@acme.test");
    mailer.send(&m).await.unwrap();
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r["message_id"], m.message_id_header());
    assert_eq!(r["content_type"], "multipart/alternative");
    assert_eq!(r["mail_from"], "invites@acme.test");
    assert_eq!(part(r, "text/plain").trim_end(), m.text);
    assert_eq!(part(r, "text/html").trim_end(), m.html);
    let date = time::OffsetDateTime::parse(
        r["date"].as_str().unwrap(),
        &time::format_description::well_known::Rfc2822,
    )
    .unwrap();
    assert_eq!(date, T0, "the message's date, not the system clock");
}

#[tokio::test]
async fn smtp_replies_are_classified_as_by_the_smtp_mailer() {
    let server = SmtpServer::start_plain();
    let mailer = LettreMailer::new(smtp_transport(server.port), "invites@acme.test").unwrap();
    server.refuse("rcpt", "451 4.3.0 Try again later");
    match mailer.send(&message("bob@acme.test")).await.unwrap_err() {
        MailError::Transient(reason) => assert!(reason.starts_with("451"), "{reason}"),
        other => panic!("4xx must be transient, got {other:?}"),
    }
    server.refuse("data", "554 5.7.1 Rejected by policy");
    match mailer.send(&message("bob@acme.test")).await.unwrap_err() {
        MailError::Permanent(reason) => {
            assert_eq!(reason, "554 5.7.1 Rejected by policy");
        }
        other => panic!("5xx must be permanent, got {other:?}"),
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_server_that_is_down_is_a_transient_failure() {
    let mailer = LettreMailer::new(smtp_transport(free_port()), "invites@acme.test").unwrap();
    let err = mailer.send(&message("bob@acme.test")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn through_the_service_an_invitation_is_delivered_and_recorded_sent() {
    let server = SmtpServer::start_plain();
    let mailer = LettreMailer::new(smtp_transport(server.port), "invites@acme.test").unwrap();
    let (app, clock) = service(mailer);
    let at = T0 + time::Duration::hours(30);
    clock.set(at);
    let (t, invited) = invite_into_new_tenant(&app, "erin@acme.test").await;
    let out = app
        .outbox_message(t, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.state, DeliveryState::Sent { at });
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert!(part(&got[0], "text/plain").contains(invited.accept_link.expose()));
}

#[tokio::test]
async fn over_the_file_transport_each_message_is_written_to_the_directory() {
    let dir = Scratch::new("file-transport");
    let mailer = LettreMailer::new(
        AsyncFileTransport::<Tokio1Executor>::new(&dir.0),
        "invites@acme.test",
    )
    .unwrap();
    let m = message("bob@acme.test");
    mailer.send(&m).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        eml.contains(&format!("Message-ID: {}", m.message_id_header())),
        "{eml}"
    );
    assert!(eml.contains("To: bob@acme.test"), "{eml}");

    // A directory that does not exist: transient (the host may create it).
    let missing = LettreMailer::new(
        AsyncFileTransport::<Tokio1Executor>::new(dir.0.join("missing")),
        "invites@acme.test",
    )
    .unwrap();
    let err = missing.send(&m).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_before_the_transport_is_asked() {
    let dir = Scratch::new("file-transport-bad");
    let mailer = LettreMailer::new(
        AsyncFileTransport::<Tokio1Executor>::new(&dir.0),
        "invites@acme.test",
    )
    .unwrap();
    let err = mailer.send(&message("not an address")).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn a_hosts_own_error_type_is_classified_by_its_impl() {
    struct Quota;
    impl TransportError for Quota {
        fn classify(&self) -> MailError {
            MailError::Transient("quota".to_owned())
        }
    }
    assert_eq!(Quota.classify(), MailError::Transient("quota".to_owned()));
}
