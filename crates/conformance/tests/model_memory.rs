//! The model-based test (D1–D26) on the in-memory store.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use tenantry_conformance::StoreFactory;
use tenantry_store::{InMemoryStore, Store};

fn memory() -> StoreFactory {
    Arc::new(|| Box::pin(async { Arc::new(InMemoryStore::new()) as Arc<dyn Store> }))
}

#[test]
fn model_based_in_memory() {
    tenantry_conformance::model::run(memory(), 256, 50);
}

/// A longer run for occasional use: `cargo test -p tenantry-conformance --test model_memory
/// -- --ignored`.
#[test]
#[ignore = "long: 2000 sequences of up to 150 steps"]
fn model_based_in_memory_long() {
    tenantry_conformance::model::run(memory(), 2000, 150);
}

/// D20 with D7: a non-admin's purge is not cut short by a first page (500 rows) made only
/// of admins' expired invitations, which it may not delete. Found while writing the model.
#[tokio::test]
async fn d20_purge_by_non_admin_skips_a_page_of_admin_invitations() {
    use tenantry_service::prelude::*;
    use tenantry_service::{ManualClock, token_from_link};

    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(InMemoryStore::new())
        .mailer(mailer.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let (tenant, admin) = app
        .create_tenant("Acme", None, Email::parse("root@acme.test").unwrap())
        .await
        .unwrap();
    let invite = |email: &str, role: Role, grants: Permissions| InviteRequest {
        email: Email::parse(email).unwrap(),
        role,
        template_id: None,
        crm_access: false,
        grants,
    };
    let manager = app
        .invite(
            tenant,
            admin,
            &invite("manager@acme.test", Role::User, Permissions::USERS_DELETE),
        )
        .await
        .unwrap()
        .user;
    let token = token_from_link(&mailer.sent()[0].text).unwrap();
    app.accept_invitation(&token, "manager@acme.test")
        .await
        .unwrap();
    for i in 0..500 {
        let email = format!("a{i:03}@acme.test");
        app.invite(
            tenant,
            admin,
            &invite(&email, Role::Admin, Permissions::empty()),
        )
        .await
        .unwrap();
    }
    let user = app
        .invite(
            tenant,
            admin,
            &invite("zed@acme.test", Role::User, Permissions::empty()),
        )
        .await
        .unwrap()
        .user;
    clock.advance(time::Duration::days(8));
    let purged = app
        .purge_expired_invitations(tenant, manager.id)
        .await
        .unwrap();
    assert_eq!(purged, vec![user.id]);
    assert_eq!(app.seat_usage(tenant).await.unwrap().used, 502);
}
