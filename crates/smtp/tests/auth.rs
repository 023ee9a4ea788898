//! Authenticated SMTP against a real server: aiosmtpd started through its Python API
//! (`support/tenantry_smtp_auth_server.py`) with an authenticator, TLS required before AUTH
//! and AUTH required before MAIL, offering one mechanism at a time.
//!
//! - PLAIN and LOGIN, over STARTTLS and over implicit TLS: correct credentials deliver.
//! - Wrong credentials: a permanent failure carrying the server's 535 text, visible in the
//!   message's delivery state, with the password nowhere in it.
//! - Credentials are never offered over a plain connection: refused by the configuration
//!   with a typed error, and a STARTTLS mailer facing a server without STARTTLS sends no AUTH.
//! - The `Date` header comes from the service's injected clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use support::{ServerAuth, ServerTls, SmtpServer, T0, invite_into_new_tenant, service};
use tenantry_mail::{MailError, Mailer, Message};
use tenantry_service::{DeliveryState, TenantId, UserId};
use tenantry_smtp::{Credentials, SmtpConfigError, SmtpMailer, TlsMode};

const USER: &str = "mailer@acme.test";
const PASSWORD: &str = "correct horse battery staple 9f3c";

fn auth(mechanism: &'static str) -> ServerAuth {
    ServerAuth {
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
        mechanism,
    }
}

fn mailer(server: &SmtpServer, password: &str) -> SmtpMailer {
    SmtpMailer::new(
        server
            .config()
            .with_credentials(Credentials::new(USER, password)),
    )
    .unwrap()
}

fn message(to: &str) -> Message {
    Message {
        id: tenantry_core::MessageId::from_parts(1_700_000_000_000, [3; 10]),
        tenant_id: TenantId::from_parts(1, [1; 10]),
        user_id: UserId::from_parts(1, [2; 10]),
        to: to.to_owned(),
        subject: "You are invited".to_owned(),
        text: "Accept: https://app.test/accept?token=t".to_owned(),
        html: "<p>Accept</p>".to_owned(),
        date: None,
    }
}

async fn delivers_with(tls: ServerTls, mechanism: &'static str) {
    let server = SmtpServer::start_auth(tls, auth(mechanism));
    let mailer = mailer(&server, PASSWORD);
    mailer.send(&message("bob@acme.test")).await.unwrap();
    let got = server.messages();
    assert_eq!(
        got.len(),
        1,
        "delivered after AUTH {mechanism} over {tls:?}"
    );
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["bob@acme.test"]));
    let events = server.events();
    assert_eq!(
        events.first().map(String::as_str),
        Some(format!("auth {mechanism} ok").as_str()),
        "the server saw AUTH {mechanism} before anything else: {events:?}"
    );
}

#[tokio::test]
async fn auth_plain_over_starttls_delivers() {
    delivers_with(ServerTls::StartTls, "PLAIN").await;
}

#[tokio::test]
async fn auth_login_over_starttls_delivers() {
    delivers_with(ServerTls::StartTls, "LOGIN").await;
}

#[tokio::test]
async fn auth_plain_over_implicit_tls_delivers() {
    delivers_with(ServerTls::Implicit, "PLAIN").await;
}

#[tokio::test]
async fn auth_login_over_implicit_tls_delivers() {
    delivers_with(ServerTls::Implicit, "LOGIN").await;
}

/// Wrong credentials: permanent (retrying cannot help), with the server's 535 text, and the
/// message's delivery state says so; the password appears in no error, state or Debug.
#[tokio::test]
async fn wrong_credentials_are_a_permanent_failure_with_the_servers_535_text() {
    for (tls, mechanism) in [
        (ServerTls::StartTls, "PLAIN"),
        (ServerTls::Implicit, "LOGIN"),
    ] {
        let server = SmtpServer::start_auth(tls, auth(mechanism));
        let wrong = "not the password 77e1";
        let mailer = mailer(&server, wrong);
        let err = mailer.send(&message("bob@acme.test")).await.unwrap_err();
        match &err {
            MailError::Permanent(reason) => {
                assert!(reason.contains("535"), "{mechanism}: {reason}");
            }
            other => panic!("{mechanism}: expected a permanent failure, got {other:?}"),
        }
        for text in [err.to_string(), format!("{err:?}"), format!("{mailer:?}")] {
            assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
        }
        assert!(server.messages().is_empty());
        assert_eq!(server.events(), vec![format!("auth {mechanism} refused")]);

        // Through the service: the invitation's delivery state shows it, for the host.
        let (app, _clock) = service(mailer);
        let (t, invited) = invite_into_new_tenant(&app, "erin@acme.test").await;
        let out = app
            .outbox_message(t, invited.message_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.attempts, 1, "no retry of a permanent failure");
        match &out.state {
            DeliveryState::Failed { reason, .. } => {
                assert!(reason.starts_with("535"), "{reason}");
                assert!(!reason.contains(wrong), "{reason}");
            }
            other => panic!("expected failed, got {other:?}"),
        }
        assert!(!format!("{out:?}").contains(wrong));
    }
}

/// The configuration refuses credentials without TLS, with a typed error.
#[test]
fn credentials_over_a_plain_connection_are_refused_by_the_configuration() {
    let server = SmtpServer::reserve(ServerTls::None);
    let config = server
        .config()
        .with_tls(TlsMode::None)
        .with_credentials(Credentials::new(USER, PASSWORD));
    let err = SmtpMailer::new(config).unwrap_err();
    assert_eq!(err, SmtpConfigError::CredentialsWithoutTls);
    assert!(!err.to_string().contains(PASSWORD));
}

/// A STARTTLS mailer with credentials, facing a server that offers no STARTTLS, stops before
/// AUTH: the send fails and the server saw no command after EHLO that carries data.
#[tokio::test]
async fn a_server_without_starttls_is_never_sent_the_credentials() {
    let plain = SmtpServer::start_plain();
    let config = plain
        .config()
        .with_tls(TlsMode::StartTls)
        .with_credentials(Credentials::new(USER, PASSWORD));
    let mailer = SmtpMailer::new(config).unwrap();
    let err = mailer.send(&message("bob@acme.test")).await.unwrap_err();
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(plain.messages().is_empty());
    assert!(
        plain.events().is_empty(),
        "no RCPT or DATA reached the server: {:?}",
        plain.events()
    );
}

/// Without credentials, the authenticating server refuses the mail (530): nothing is sent.
#[tokio::test]
async fn without_credentials_the_relay_refuses_the_mail() {
    let server = SmtpServer::start_auth(ServerTls::StartTls, auth("PLAIN"));
    let mailer = server.mailer();
    let err = mailer.send(&message("bob@acme.test")).await.unwrap_err();
    assert!(err.to_string().contains("530"), "{err}");
    assert!(server.messages().is_empty());
}

/// The `Date` header is the service's clock at the time of sending, not the system's.
#[tokio::test]
async fn the_date_header_comes_from_the_injected_clock() {
    let server = SmtpServer::start_auth(ServerTls::StartTls, auth("PLAIN"));
    let (app, clock) = service(mailer(&server, PASSWORD));
    let sent_at = T0 + time::Duration::days(400) + time::Duration::seconds(3_727);
    clock.set(sent_at);
    invite_into_new_tenant(&app, "erin@acme.test").await;
    let got = server.messages();
    assert_eq!(got.len(), 1);
    let header = got[0]["date"].as_str().unwrap().to_owned();
    let parsed =
        time::OffsetDateTime::parse(&header, &time::format_description::well_known::Rfc2822)
            .unwrap_or_else(|e| panic!("Date {header:?}: {e}"));
    assert_eq!(parsed, sent_at, "Date {header:?}");
}
