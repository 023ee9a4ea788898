//! `SmtpMailer` against a real SMTP server (aiosmtpd on loopback): what goes on the wire,
//! TLS (STARTTLS and implicit, on a private CA), connection reuse, and how every kind of
//! failure is classified (transient: 4xx, refused connection, time-out, untrusted
//! certificate; permanent: 5xx with the server's words, no STARTTLS offered).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::time::Duration;

use support::{ServerTls, SmtpServer, part};
use tenantry_core::{MessageId, TenantId, UserId};
use tenantry_service::{MailError, Mailer, Message};
use tenantry_smtp::{SmtpConfig, SmtpMailer, TlsMode};

fn message(n: u8, to: &str) -> Message {
    Message {
        id: MessageId::from_parts(1_700_000_000_000 + u64::from(n), [n; 10]),
        tenant_id: TenantId::from_parts(1, [1; 10]),
        user_id: UserId::from_parts(1, [2; 10]),
        to: to.to_owned(),
        subject: format!("You are invited to join Acme ({n}) — café"),
        text: format!("Plain body {n}: https://app.test/accept?token=abc{n}\n"),
        html: format!(
            "<p>HTML body {n}: <a href=\"https://app.test/accept?token=abc{n}\">accept</a></p>"
        ),
        date: None,
    }
}

#[tokio::test]
async fn delivers_multipart_alternative_with_the_message_id() {
    let server = SmtpServer::start_plain();
    let mailer = server.mailer();
    let m = message(1, "Bob.Smith@Acme.test");
    mailer.send(&m).await.unwrap();

    let got = server.messages();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r["mail_from"], "invites@acme.test");
    assert_eq!(r["rcpt_tos"], serde_json::json!(["Bob.Smith@Acme.test"]));
    assert_eq!(r["to"], "Bob.Smith@Acme.test");
    assert_eq!(r["from"], "Acme Invitations <invites@acme.test>");
    assert_eq!(
        r["subject"], m.subject,
        "non-ASCII subject survives encoding"
    );
    assert_eq!(r["message_id"], m.message_id_header());
    assert_ne!(r["date"], "None", "a Date header is set");
    assert_eq!(r["content_type"], "multipart/alternative");
    let types: Vec<&str> = r["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["text/plain", "text/html"],
        "plain first, HTML preferred last"
    );
    assert_eq!(part(r, "text/plain").replace("\r\n", "\n"), m.text);
    assert_eq!(part(r, "text/html").trim_end(), m.html);
}

#[tokio::test]
async fn reuses_pooled_connections_and_survives_a_server_restart() {
    let mut server = SmtpServer::start_plain();
    let mailer = server.mailer();
    for n in 0..5 {
        mailer.send(&message(n, "a@acme.test")).await.unwrap();
    }
    server.stop();
    let down = mailer.send(&message(9, "a@acme.test")).await.unwrap_err();
    assert!(down.is_transient(), "{down:?}");
    server.start();
    // The pooled connection died with the old server; the pool notices (NOOP) and
    // reconnects instead of failing the next message.
    mailer.send(&message(10, "a@acme.test")).await.unwrap();
    assert_eq!(server.messages().len(), 6);
    mailer.check_connection().await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = support::free_port();
    let mailer = SmtpMailer::new(
        SmtpConfig::new("127.0.0.1", "invites@acme.test")
            .with_tls(TlsMode::None)
            .with_port(port),
    )
    .unwrap();
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.reason().contains(&format!("127.0.0.1:{port}")), "{e:?}");
    assert!(mailer.check_connection().await.unwrap_err().is_transient());
}

#[tokio::test]
async fn a_silent_server_times_out_as_transient() {
    // Accepts the TCP connection and never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mailer = SmtpMailer::new(
        SmtpConfig::new("127.0.0.1", "invites@acme.test")
            .with_tls(TlsMode::None)
            .with_port(port)
            .with_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.reason().contains("timed out"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn answer_4xx_to_rcpt_is_transient_with_the_servers_words() {
    let server = SmtpServer::start_plain();
    let mailer = server.mailer();
    server.refuse("rcpt", "451 4.3.0 Mailbox temporarily unavailable");
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert_eq!(
        e,
        MailError::Transient("451 4.3.0 Mailbox temporarily unavailable".into())
    );
    server.accept_all();
    mailer.send(&message(1, "a@acme.test")).await.unwrap();
    assert_eq!(server.messages().len(), 1);
    assert_eq!(
        server.events(),
        [
            "rcpt 451 4.3.0 Mailbox temporarily unavailable",
            "rcpt 250",
            "data 250"
        ]
    );
}

#[tokio::test]
async fn answer_5xx_is_permanent_with_the_servers_reason() {
    let server = SmtpServer::start_plain();
    let mailer = server.mailer();
    server.refuse("data", "554 5.7.1 Message rejected by policy");
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert_eq!(
        e,
        MailError::Permanent("554 5.7.1 Message rejected by policy".into())
    );
    server.refuse("rcpt", "550 5.1.1 No such user here");
    let e = mailer
        .send(&message(2, "nobody@acme.test"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        MailError::Permanent("550 5.1.1 No such user here".into())
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_and_never_reaches_the_server() {
    let server = SmtpServer::start_plain();
    let mailer = server.mailer();
    let e = mailer.send(&message(1, "no-at-sign")).await.unwrap_err();
    assert!(e.is_permanent(), "{e:?}");
    assert!(server.events().is_empty());
}

#[tokio::test]
async fn starttls_delivers_on_a_private_ca() {
    let server = SmtpServer::start_tls(ServerTls::StartTls);
    let mailer = server.mailer();
    mailer.send(&message(1, "a@acme.test")).await.unwrap();
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["message_id"],
        message(1, "a@acme.test").message_id_header()
    );
}

#[tokio::test]
async fn implicit_tls_delivers_on_a_private_ca() {
    let server = SmtpServer::start_tls(ServerTls::Implicit);
    let mailer = server.mailer();
    mailer.send(&message(1, "a@acme.test")).await.unwrap();
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    let server = SmtpServer::start_tls(ServerTls::StartTls);
    let mut config = server.config();
    config.extra_root_certificates.clear();
    let mailer = SmtpMailer::new(config).unwrap();
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(server.messages().is_empty());
    assert!(
        server.events().is_empty(),
        "no RCPT over an untrusted channel"
    );
}

#[tokio::test]
async fn required_starttls_that_the_server_does_not_offer_is_permanent() {
    let server = SmtpServer::start_plain();
    let mut config = server.config();
    config.tls = TlsMode::StartTls;
    let mailer = SmtpMailer::new(config).unwrap();
    let e = mailer.send(&message(1, "a@acme.test")).await.unwrap_err();
    assert!(e.is_permanent(), "{e:?}");
    assert!(e.reason().contains("STARTTLS"), "{e:?}");
    assert!(server.events().is_empty(), "nothing sent in clear text");
}

#[tokio::test]
async fn concurrent_sends_share_the_mailer() {
    let server = SmtpServer::start_plain();
    let mailer = std::sync::Arc::new(server.mailer());
    let mut tasks = Vec::new();
    for n in 0..12u8 {
        let m = std::sync::Arc::clone(&mailer);
        tasks.push(tokio::spawn(async move {
            m.send(&message(n, "a@acme.test")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut ids: Vec<String> = server
        .messages()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

/// A send that times out, or whose future is dropped half-way (a cancelled request, a
/// crash), closes its connection: the next message never reads the earlier one's reply.
/// The slow message may still arrive — the server took it but the client left before the
/// `250` — which is the after-send case the outbox retries with the same Message-ID.
#[tokio::test]
async fn a_timed_out_or_cancelled_send_never_desynchronises_the_pool() {
    let server = SmtpServer::start_plain();
    let mailer = SmtpMailer::new(
        server
            .config()
            .with_pool_size(1)
            .with_timeout(Duration::from_millis(700)),
    )
    .unwrap();
    mailer.send(&message(1, "a@acme.test")).await.unwrap(); // leaves a pooled connection

    server.slow_data(1.5);
    let e = mailer.send(&message(2, "a@acme.test")).await.unwrap_err();
    assert!(
        e.is_transient() && e.reason().contains("timed out"),
        "{e:?}"
    );
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        mailer.send(&message(3, "a@acme.test")),
    )
    .await;
    assert!(cancelled.is_err(), "dropped half-way");

    server.accept_all();
    for n in 4..8 {
        mailer.send(&message(n, "a@acme.test")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let the slow ones land
    let ids: Vec<String> = server
        .messages()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect();
    for n in [1, 4, 5, 6, 7] {
        let id = message(n, "a@acme.test").message_id_header();
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{n}: {ids:?}");
    }
    assert!(ids.len() <= 7, "{ids:?}");
}
