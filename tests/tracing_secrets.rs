//! D26 and the tracing contract: a whole invite → resend → wrong-address accept → accept →
//! dispatch run, with a permanently failing delivery among it, is captured at TRACE level
//! (every span, every field, every event, of every crate) and nothing in it is a token, an
//! accept link or a message body.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tenantry::prelude::*;
use tenantry::{DeliverySettings, MailError, Message};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Records every message handed to it (as the mail server would see it), failing some.
#[derive(Debug, Clone, Default)]
struct Recording {
    seen: Arc<Mutex<Vec<Message>>>,
    inner: InMemoryMailer,
}

#[async_trait::async_trait]
impl tenantry::Mailer for Recording {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(message.clone());
        }
        self.inner.send(message).await
    }
}

async fn run(app: &Tenantry, mailer: &Recording) -> Result<Vec<String>, tenantry::Error> {
    let (t, admin) = app
        .create_tenant("Acme", Some(10), Email::parse("ada@acme.test")?)
        .await?;
    let req = |email: &str| -> Result<InviteRequest, tenantry::Error> {
        Ok(InviteRequest {
            email: Email::parse(email)?,
            role: Role::User,
            template_id: None,
            crm_access: false,
            grants: Permissions::CONVERSATIONS_VIEW,
        })
    };
    let bob = app.invite(t, admin, &req("bob@acme.test")?).await?;
    let resent = app.resend_invitation(t, admin, bob.user.id).await?;
    let token = resent.accept_link.token().unwrap_or_default();
    // A wrong address (D24), then the right one.
    assert!(
        app.accept_invitation(&token, "eve@acme.test")
            .await
            .is_err()
    );
    app.accept_invitation(&token, "bob@acme.test").await?;
    // A permanently failing delivery (D26: its body is cleared too).
    mailer
        .inner
        .fail_next(MailError::Permanent("550 mailbox unavailable".into()));
    let carol = app.invite(t, admin, &req("carol@acme.test")?).await?;
    let bulk = app
        .invite_many(
            t,
            admin,
            &BulkInvite {
                emails: vec!["dan@acme.test".into(), "erin@acme.test".into()],
                ..BulkInvite::default()
            },
        )
        .await?;
    app.dispatch(t).await?;
    let mut secrets = vec![
        bob.accept_link.expose().to_owned(),
        resent.accept_link.expose().to_owned(),
        carol.accept_link.expose().to_owned(),
        token,
    ];
    for link in bulk.iter().filter_map(|b| b.accept_link.as_ref()) {
        secrets.push(link.expose().to_owned());
        secrets.extend(link.token());
    }
    for link in [&bob.accept_link, &carol.accept_link] {
        secrets.extend(link.token());
    }
    let seen = mailer.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(seen.len() >= 4, "the mailer saw {} messages", seen.len());
    for m in seen {
        secrets.push(m.text.clone());
        secrets.push(m.html.clone());
    }
    Ok(secrets)
}

async fn check(app: Tenantry, mailer: Recording) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .finish();
    let secrets = {
        let _guard = tracing::subscriber::set_default(subscriber);
        run(&app, &mailer).await.expect("the run succeeds")
    };
    let log = String::from_utf8(capture.0.lock().map(|b| b.clone()).unwrap_or_default())
        .expect("utf-8 log");
    let _ = std::io::stderr().write_all(b"");
    // The run was traced at all: every use case left its span with an outcome.
    for name in [
        "invite",
        "resend_invitation",
        "accept_invitation",
        "dispatch",
    ] {
        assert!(log.contains(name), "no {name} span in the log:\n{log}");
    }
    assert!(
        log.contains("outcome=\"ok\"") || log.contains("outcome=ok"),
        "{log}"
    );
    assert!(
        log.contains("rule=invitations") || log.contains("rule=\"invitations\""),
        "the refused accept names its rule:\n{log}"
    );
    for secret in secrets.iter().filter(|s| s.len() >= 16) {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the log: {}…",
            secret.chars().take(24).collect::<String>()
        );
    }
    // Token fragments too: any 20-character piece of a token.
    for token in secrets
        .iter()
        .filter(|s| s.contains('.') && !s.contains(' ') && !s.contains("://"))
    {
        let chars: Vec<char> = token.chars().collect();
        for w in chars.windows(20).step_by(10) {
            let piece: String = w.iter().collect();
            assert!(!log.contains(&piece), "a piece of a token reached the log");
        }
    }
}

fn service(store: impl tenantry::Store, mailer: &Recording) -> Tenantry {
    Tenantry::builder(store)
        .mailer(mailer.clone())
        .base_url("https://app.example.com/accept")
        .delivery(DeliverySettings::default())
        .build()
        .expect("settings")
}

#[tokio::test]
async fn d26_no_token_link_or_body_in_any_span_or_event_in_memory() {
    let mailer = Recording::default();
    check(service(InMemoryStore::new(), &mailer), mailer).await;
}

#[tokio::test]
async fn d26_no_token_link_or_body_in_any_span_or_event_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tenantry-trace-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("trace.db");
    let _ = std::fs::remove_file(&path);
    let store = tenantry::sqlite::SqliteStore::open(&path)
        .await
        .expect("open sqlite");
    let mailer = Recording::default();
    check(service(store, &mailer), mailer).await;
    let _ = std::fs::remove_dir_all(&dir);
}
