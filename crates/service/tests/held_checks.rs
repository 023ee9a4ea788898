#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Held checks (issue 15) give what `authorize` gives, on current state (D6), also once the
//! tenant's table has grown under them, and through every change of the user.

use tenantry_service::prelude::*;
use tenantry_service::{TenantId, UserId};

async fn agree(app: &Tenantry, held: &tenantry_service::HeldCheck, t: TenantId, u: UserId) {
    for p in Permission::all() {
        let by_ids = app.authorize(t, u, p.into()).await.unwrap();
        let held_now = app
            .authorize_held_now(held, p.into())
            .expect("answered from memory")
            .unwrap();
        assert_eq!(held_now, by_ids, "{p:?}");
    }
    let crm = app.authorize(t, u, Request::Crm).await.unwrap();
    assert_eq!(
        app.authorize_held_now(held, Request::Crm).unwrap().unwrap(),
        crm
    );
}

#[tokio::test]
async fn d6_a_held_check_answers_as_authorize_through_edits_growth_and_deletion() {
    let app = Tenantry::builder(InMemoryStore::new()).build().unwrap();
    let (t, admin) = app
        .create_tenant("Acme", None, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let support = app
        .create_template(t, admin, "Support", Permissions::CONVERSATIONS_VIEW)
        .await
        .unwrap();
    let invited = app
        .invite(
            t,
            admin,
            &InviteRequest {
                email: Email::parse("bob@acme.test").unwrap(),
                role: Role::User,
                template_id: Some(support.id),
                crm_access: false,
                grants: Permissions::ANALYTICS_VIEW,
            },
        )
        .await
        .unwrap();
    let bob = invited.user;
    let held = app.hold(t, bob.id).expect("held in memory");
    // Invited: nothing yet.
    agree(&app, &held, t, bob.id).await;
    let token = invited.accept_link.token().expect("a token in the link");
    app.accept_invitation(&token, "bob@acme.test")
        .await
        .unwrap();
    agree(&app, &held, t, bob.id).await;
    let view = Permission::new(Category::Conversations, Action::View);
    assert!(
        app.authorize_held_now(&held, view.into())
            .unwrap()
            .unwrap()
            .is_allowed()
    );
    // A template edit reaches the held check at once.
    app.edit_template(
        t,
        admin,
        support.id,
        &TemplateEdit {
            name: None,
            permissions: Some(Permissions::empty()),
        },
    )
    .await
    .unwrap();
    agree(&app, &held, t, bob.id).await;
    assert!(
        !app.authorize_held_now(&held, view.into())
            .unwrap()
            .unwrap()
            .is_allowed()
    );
    // The tenant's table grows past the place the check was held at: it still answers (by
    // ids), and a check held again answers at its new place.
    for i in 0..40 {
        app.invite(
            t,
            admin,
            &InviteRequest {
                email: Email::parse(&format!("u{i}@acme.test")).unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            },
        )
        .await
        .unwrap();
    }
    assert!(
        held.decide_now(Request::Crm).is_none(),
        "the table grew under the held place"
    );
    agree(&app, &held, t, bob.id).await;
    let again = app.hold(t, bob.id).expect("held again");
    assert!(again.decide_now(Request::Crm).is_some());
    agree(&app, &again, t, bob.id).await;
    // Deleted: the held checks answer as for an unknown user, and the user is not held anew.
    app.delete_user(t, admin, bob.id).await.unwrap();
    let gone = app
        .authorize_held_now(&again, view.into())
        .unwrap()
        .unwrap();
    assert_eq!(gone.reason(), Reason::UnknownUser);
    assert_eq!(
        app.authorize_held_now(&held, view.into())
            .unwrap()
            .unwrap()
            .reason(),
        Reason::UnknownUser
    );
    assert!(app.hold(t, bob.id).is_none());
}
