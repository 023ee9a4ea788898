//! Mail never holds a request (D25), at the service: the inline deadline's setting, and a
//! mailer that never answers, on tokio's paused clock (the deadline passes without waiting).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tenantry_service::{
    DeliverySettings, DeliveryState, Email, InMemoryStore, InviteRequest, MailError, Mailer,
    Message, Permissions, Role, SettingsError, Store, Tenantry,
};

/// Takes every message and never answers.
#[derive(Debug, Default)]
struct Silent {
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Mailer for Silent {
    async fn send(&self, _message: &Message) -> Result<(), MailError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

fn request(address: &str) -> InviteRequest {
    InviteRequest {
        email: Email::parse(address).unwrap(),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::empty(),
    }
}

#[test]
fn d25_the_inline_deadline_defaults_to_five_seconds_and_must_be_positive() {
    assert_eq!(
        DeliverySettings::default().inline_deadline,
        time::Duration::seconds(5)
    );
    for bad in [time::Duration::ZERO, time::Duration::seconds(-1)] {
        let err = Tenantry::builder(InMemoryStore::new())
            .delivery(DeliverySettings {
                inline_deadline: bad,
                ..DeliverySettings::default()
            })
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            SettingsError::NotPositive {
                name: "delivery.inline_deadline"
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn d25_a_mailer_that_never_answers_holds_an_invite_for_the_deadline_only() {
    let store = Arc::new(InMemoryStore::new());
    let mailer = Arc::new(Silent::default());
    let app = Tenantry::builder(Arc::clone(&store))
        .mailer(Arc::clone(&mailer))
        .delivery(DeliverySettings {
            inline_deadline: time::Duration::milliseconds(1500),
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let invited = app
        .invite(t, admin, &request("bob@acme.test"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(2),
        "the invite waited {took:?}"
    );
    assert_eq!(mailer.calls.load(Ordering::SeqCst), 1);
    // The cut-off send is a recorded transient failure; the message stays pending.
    let record = store
        .outbox_message(t, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, DeliveryState::Pending);
    assert_eq!(record.attempts, 1);
    assert!(
        record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("inline delivery stopped waiting")),
        "{record:?}"
    );
    // Three invites in one bulk call share one deadline.
    let started = tokio::time::Instant::now();
    let bulk = app
        .invite_many(
            t,
            admin,
            &tenantry_service::BulkInvite {
                emails: vec![
                    "c@acme.test".into(),
                    "d@acme.test".into(),
                    "e@acme.test".into(),
                ],
                ..tenantry_service::BulkInvite::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(bulk.len(), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(
        mailer.calls.load(Ordering::SeqCst),
        2,
        "one send tried, two left"
    );
}
