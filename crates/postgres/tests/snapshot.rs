//! `Store::snapshot` on PostgreSQL (one statement) answers exactly what the single reads
//! answer (`tenantry_store::read_snapshot`), for every combination of rows asked for,
//! present or missing, with and without templates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;

use tenantry_service::prelude::*;
use tenantry_service::{TenantId, UserEdit};
use tenantry_store::{SnapshotRequest, Store as _, read_snapshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d16_one_statement_snapshot_equals_the_single_reads() {
    let (store, _guard) = common::fresh(4).await;
    let store = Arc::new(store);
    let app = Tenantry::builder(Arc::clone(&store)).build().unwrap();
    let (tenant, admin) = app
        .create_tenant("Acme", Some(10), Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let (other, other_admin) = app
        .create_tenant("Other", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let sales = app
        .create_template(tenant, admin, "Sales", Permissions::CONVERSATIONS_VIEW)
        .await
        .unwrap();
    let unused = app
        .create_template(tenant, admin, "Unused", Permissions::USERS_VIEW)
        .await
        .unwrap();
    let bob = app
        .invite(
            tenant,
            admin,
            &InviteRequest {
                email: Email::parse("Bob@acme.test").unwrap(),
                role: Role::User,
                template_id: Some(sales.id),
                crm_access: true,
                grants: Permissions::USERS_VIEW,
            },
        )
        .await
        .unwrap()
        .user;
    // Bob (on a template) is among the actors, so an actor's template is read too.
    app.edit_user(
        tenant,
        admin,
        bob.id,
        &UserEdit {
            grants: Some(Permissions::USERS_VIEW | Permissions::CONVERSATIONS_VIEW),
            ..UserEdit::default()
        },
    )
    .await
    .unwrap();

    let users = [None, Some(admin), Some(bob.id), Some(other_admin)];
    let templates = [None, Some(sales.id), Some(unused.id)];
    let keys = [
        None,
        Some("bob@acme.test"),
        Some("Bob@acme.test"),
        Some("ada@acme.test"),
    ];
    let mut compared = 0;
    for t in [tenant, other, TenantId::from_parts(1, [9; 10])] {
        for actor in users {
            for target in users {
                for template in templates {
                    for key in keys {
                        let mut req = SnapshotRequest::default().template(template);
                        if let Some(a) = actor {
                            req = req.actor(a);
                        }
                        if let Some(g) = target {
                            req = req.target(g);
                        }
                        if let Some(k) = key {
                            req = req.email_key(k);
                        }
                        let one = store.snapshot(t, &req).await.unwrap();
                        let many = read_snapshot(&*store, t, &req).await.unwrap();
                        assert_eq!(one, many, "tenant {t}, {req:?}");
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 4 * 3 * 4);
    // And what it read is what is there.
    let req = SnapshotRequest::default()
        .actor(admin)
        .target(bob.id)
        .template(Some(unused.id))
        .email_key("bob@acme.test");
    let snap = store.snapshot(tenant, &req).await.unwrap();
    assert_eq!(snap.state.unwrap().tenant.name, "Acme");
    assert_eq!(snap.actor.unwrap().id, admin);
    assert!(snap.actor_template.is_none());
    assert_eq!(snap.target.as_ref().unwrap().id, bob.id);
    assert_eq!(snap.target_template.unwrap().id, sales.id);
    assert_eq!(snap.template.unwrap().id, unused.id);
    assert_eq!(snap.email_user.unwrap().id, bob.id);
    let missing = store
        .snapshot(TenantId::from_parts(1, [9; 10]), &req)
        .await
        .unwrap();
    assert!(missing.state.is_none() && missing.actor.is_none() && missing.email_user.is_none());
}
