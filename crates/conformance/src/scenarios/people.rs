//! One person, several tenants ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)).

use std::sync::Arc;

use tenantry_core::{AuditAction, AuditTarget, Error as E, Field, Value};
use tenantry_service::{
    ActorRef, IdentityId, Membership, Permissions, Role, Rule, Status, Store, TenantCursor,
    TenantId, UserEdit, UserId,
};

use crate::support::{Env, assert_rule, email, request, request_with};

use super::helpers::{assert_new_events, status_edit, users_perm};

fn identity(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

/// (tenant, user, role, status) of each membership, in the order listed.
fn rows(items: &[Membership]) -> Vec<(TenantId, UserId, Role, Status)> {
    items
        .iter()
        .map(|m| (m.tenant_id, m.user_id, m.role, m.status))
        .collect()
}

/// Every membership of an address, read one page of `per_page` at a time, the cursor
/// travelling as text.
async fn all_by_email(env: &Env, address: &str, per_page: u32) -> Vec<Membership> {
    let email = email(address);
    let mut out = Vec::new();
    let mut after: Option<TenantCursor> = None;
    for _ in 0..50 {
        let page = env
            .app
            .memberships_by_email(&email, after.as_ref(), per_page)
            .await
            .unwrap();
        assert!(page.items.len() <= per_page as usize);
        out.extend(page.items);
        after = page.next.map(|c| c.to_string().parse().unwrap());
        if after.is_none() {
            return out;
        }
    }
    panic!("D28: the memberships of {address} never ended");
}

async fn all_by_identity(env: &Env, id: &IdentityId) -> Vec<Membership> {
    let page = env
        .app
        .memberships_by_identity(id, None, 500)
        .await
        .unwrap();
    assert!(page.next.is_none());
    page.items
}

/// The memberships of an address list every tenant where it is a user, by tenant name
/// (bytes) then id, with the user, role, status and last login there, and nothing of anyone
/// else; each tenant keeps its own user (a change in one leaves the other alone); pages and
/// their cursors cover every membership exactly once; a rename moves the tenant at once.
pub async fn d28_memberships_list_every_tenant_of_an_address(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (beta, beta_admin) = env.other_tenant("Beta", "boss@beta.test").await;
    let (zulu, zulu_admin) = env.other_tenant("Zulu", "Pat@Example.test").await;
    env.other_tenant("Other", "someone@else.test").await;
    // Pat: active in Acme, invited in Beta, the first admin of Zulu.
    let in_acme = env.active_user("pat@example.test").await;
    let in_beta = env
        .invite_as(beta, beta_admin, &request("PAT@example.test", Role::Admin))
        .await
        .user;
    env.invite("someone@example.test").await;

    let expected = vec![
        (env.tenant, in_acme.id, Role::User, Status::Active),
        (beta, in_beta.id, Role::Admin, Status::Invited),
        (zulu, zulu_admin, Role::Admin, Status::Active),
    ];
    for per_page in [1, 2, 500] {
        let got = all_by_email(&env, "pat@EXAMPLE.test", per_page).await;
        assert_eq!(rows(&got), expected, "D28: pages of {per_page}");
        let names: Vec<&str> = got.iter().map(|m| m.tenant_name.as_str()).collect();
        assert_eq!(names, ["Acme", "Beta", "Zulu"]);
        assert_eq!(got[0].last_login, in_acme.last_login);
        assert!(got[0].last_login.is_some());
        assert_eq!(got[1].last_login, None);
        assert_eq!(
            got[1].email.as_str(),
            "PAT@example.test",
            "the address as stored there"
        );
    }
    assert!(
        all_by_email(&env, "nobody@example.test", 10)
            .await
            .is_empty()
    );

    // Two tenants, two users: suspending Pat in Acme leaves Zulu alone.
    env.edit(in_acme.id, &status_edit(Status::Suspended)).await;
    let got = all_by_email(&env, "pat@example.test", 500).await;
    assert_eq!(got[0].status, Status::Suspended);
    assert_eq!(got[2].status, Status::Active);
    assert_ne!(in_acme.id, zulu_admin, "D3 stays per tenant: one row each");

    // A sign-in shows as the last login of that membership only.
    env.clock.advance(time::Duration::hours(1));
    let signed = env.app.record_sign_in(zulu, zulu_admin).await.unwrap();
    let got = all_by_email(&env, "pat@example.test", 500).await;
    assert_eq!(got[2].last_login, signed.last_login);
    assert_eq!(got[0].last_login, in_acme.last_login);

    // A rename reorders at once.
    env.app
        .rename_tenant(zulu, zulu_admin, "Aardvark")
        .await
        .unwrap();
    let got = all_by_email(&env, "pat@example.test", 500).await;
    let names: Vec<&str> = got.iter().map(|m| m.tenant_name.as_str()).collect();
    assert_eq!(names, ["Aardvark", "Acme", "Beta"]);
}

/// Changing a user's address moves its email membership: the old address no longer finds
/// that tenant and the new one does; two tenants with the same address stay separate users.
pub async fn d28_an_address_change_moves_the_email_membership(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (beta, beta_admin) = env.other_tenant("Beta", "boss@beta.test").await;
    let in_acme = env.active_user("pat@example.test").await;
    let in_beta = env
        .invite_as(beta, beta_admin, &request("pat@example.test", Role::User))
        .await
        .user;
    assert_eq!(all_by_email(&env, "pat@example.test", 500).await.len(), 2);

    let changed = env
        .edit(
            in_acme.id,
            &UserEdit {
                email: Some(email("Pat@Acme.test")),
                ..UserEdit::default()
            },
        )
        .await;
    assert_eq!(changed.email.as_str(), "Pat@Acme.test");
    let old = all_by_email(&env, "pat@example.test", 500).await;
    assert_eq!(
        rows(&old),
        [(beta, in_beta.id, Role::User, Status::Invited)]
    );
    let new = all_by_email(&env, "pat@acme.test", 500).await;
    assert_eq!(
        rows(&new),
        [(env.tenant, in_acme.id, Role::User, Status::Active)]
    );
    assert_eq!(new[0].email.as_str(), "Pat@Acme.test");

    // And back: the address finds both tenants again.
    env.edit(
        in_acme.id,
        &UserEdit {
            email: Some(email("pat@example.test")),
            ..UserEdit::default()
        },
    )
    .await;
    assert_eq!(all_by_email(&env, "pat@example.test", 500).await.len(), 2);
    assert!(all_by_email(&env, "pat@acme.test", 500).await.is_empty());
}

/// A host attaches its identity id at accept or later; it is unique per tenant (a second
/// user of the tenant cannot take it, at accept or by an edit, and the refused accept changes
/// nothing), shared across tenants, set and cleared by admins only, and audited.
pub async fn d28_identity_ids_are_unique_per_tenant_and_set_by_admins(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (beta, beta_admin) = env.other_tenant("Beta", "boss@beta.test").await;
    let sub = identity("oidc|pat");

    // At accept.
    let invited = env.invite("pat@example.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    let before = env.audit(env.tenant).await.len();
    let pat = env
        .app
        .accept_invitation_as(&token, "pat@example.test", sub.clone())
        .await
        .unwrap();
    assert_eq!(
        (pat.status, pat.identity.clone()),
        (Status::Active, Some(sub.clone()))
    );
    let new = assert_new_events(
        &env,
        before,
        &[(
            ActorRef::User(pat.id),
            AuditAction::InvitationAccepted,
            AuditTarget::User(pat.id),
            None,
        )],
    )
    .await;
    assert!(
        new[0]
            .event
            .changes
            .iter()
            .any(|c| c.field == Field::Identity
                && c.before == Value::None
                && c.after == Value::Text("oidc|pat".into()))
    );
    assert_eq!(
        env.app
            .store()
            .user_by_identity(env.tenant, &sub)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(pat.id)
    );

    // A second user of the tenant cannot take it at accept: nothing changes.
    let other = env.invite("other@example.test").await;
    let token = env.token(env.tenant, other.message_id).await;
    let version = env.counters(env.tenant).await.version;
    assert_rule(
        env.app
            .accept_invitation_as(&token, "other@example.test", sub.clone())
            .await,
        &E::IdentityTaken,
    );
    assert_eq!(env.counters(env.tenant).await.version, version);
    assert_eq!(
        env.user(env.tenant, other.user.id).await.status,
        Status::Invited
    );
    // The token is still live.
    let other_user = env
        .app
        .accept_invitation_as(&token, "other@example.test", identity("oidc|other"))
        .await
        .unwrap();
    assert_eq!(other_user.identity, Some(identity("oidc|other")));

    // Nor by an edit.
    assert_rule(
        env.app
            .set_identity(env.tenant, env.admin, other_user.id, Some(sub.clone()))
            .await,
        &E::IdentityTaken,
    );
    assert_eq!(
        env.user(env.tenant, other_user.id).await.identity,
        Some(identity("oidc|other"))
    );

    // The same id in another tenant is another user of the same person.
    let in_beta = env
        .invite_as(beta, beta_admin, &request("pat@beta.test", Role::User))
        .await;
    let token = env.token(beta, in_beta.message_id).await;
    env.app
        .accept_invitation_as(&token, "pat@beta.test", sub.clone())
        .await
        .unwrap();
    let both = all_by_identity(&env, &sub).await;
    assert_eq!(
        rows(&both),
        [
            (env.tenant, pat.id, Role::User, Status::Active),
            (beta, in_beta.user.id, Role::User, Status::Active),
        ]
    );
    assert_eq!(both[1].email.as_str(), "pat@beta.test");
    assert!(
        all_by_identity(&env, &identity("OIDC|PAT"))
            .await
            .is_empty(),
        "identity ids compare byte for byte"
    );

    // Only an admin sets or clears it; a manager holding users:edit is refused, audited.
    let manager = env
        .active(&request_with(
            "manager@acme.test",
            Permissions::from(users_perm(tenantry_service::Action::Edit))
                | Permissions::from(users_perm(tenantry_service::Action::View)),
            None,
            false,
        ))
        .await;
    let before = env.audit(env.tenant).await.len();
    assert_rule(
        env.app
            .set_identity(env.tenant, manager.id, other_user.id, None)
            .await,
        &E::AdminOnly,
    );
    assert_new_events(
        &env,
        before,
        &[(
            ActorRef::User(manager.id),
            AuditAction::UserEdited,
            AuditTarget::User(other_user.id),
            Some(Rule::ManagementAuthority),
        )],
    )
    .await;
    assert_eq!(
        env.user(env.tenant, other_user.id).await.identity,
        Some(identity("oidc|other"))
    );

    // The admin clears it, audited; the lookup forgets it; the id is free again.
    let before = env.audit(env.tenant).await.len();
    let cleared = env
        .app
        .set_identity(env.tenant, env.admin, pat.id, None)
        .await
        .unwrap();
    assert_eq!(cleared.identity, None);
    let new = assert_new_events(
        &env,
        before,
        &[(
            ActorRef::User(env.admin),
            AuditAction::UserEdited,
            AuditTarget::User(pat.id),
            None,
        )],
    )
    .await;
    assert_eq!(new[0].event.changes.len(), 1);
    assert_eq!(new[0].event.changes[0].field, Field::Identity);
    assert_eq!(new[0].event.changes[0].after, Value::None);
    assert_eq!(
        rows(&all_by_identity(&env, &sub).await),
        [(beta, in_beta.user.id, Role::User, Status::Active)]
    );
    // The same value again changes nothing and is not audited.
    let version = env.counters(env.tenant).await.version;
    env.app
        .set_identity(env.tenant, env.admin, pat.id, None)
        .await
        .unwrap();
    assert_eq!(env.counters(env.tenant).await.version, version);
    // Now another user of the tenant may take it.
    let moved = env
        .app
        .set_identity(env.tenant, env.admin, other_user.id, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(moved.identity, Some(sub.clone()));
    assert_eq!(all_by_identity(&env, &sub).await.len(), 2);
    // An unknown user of the tenant.
    assert_rule(
        env.app
            .set_identity(env.tenant, env.admin, crate::support::unknown_user(), None)
            .await,
        &E::UserNotFound,
    );
}

/// A deleted user disappears from both lookups at once; the person's other tenants stay.
pub async fn d28_deleted_users_leave_both_lookups(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (beta, beta_admin) = env.other_tenant("Beta", "boss@beta.test").await;
    let sub = identity("oidc|pat");
    let in_acme = env.active_user("pat@example.test").await;
    let in_beta = env
        .invite_as(beta, beta_admin, &request("pat@example.test", Role::User))
        .await
        .user;
    env.app
        .set_identity(env.tenant, env.admin, in_acme.id, Some(sub.clone()))
        .await
        .unwrap();
    env.app
        .set_identity(beta, beta_admin, in_beta.id, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(all_by_identity(&env, &sub).await.len(), 2);
    assert_eq!(all_by_email(&env, "pat@example.test", 500).await.len(), 2);

    env.app
        .delete_user(env.tenant, env.admin, in_acme.id)
        .await
        .unwrap();
    let expected = [(beta, in_beta.id, Role::User, Status::Invited)];
    assert_eq!(rows(&all_by_identity(&env, &sub).await), expected);
    assert_eq!(
        rows(&all_by_email(&env, "pat@example.test", 500).await),
        expected
    );
    assert!(
        env.app
            .store()
            .user_by_identity(env.tenant, &sub)
            .await
            .unwrap()
            .is_none()
    );

    env.app
        .delete_user(beta, beta_admin, in_beta.id)
        .await
        .unwrap();
    assert!(all_by_identity(&env, &sub).await.is_empty());
    assert!(all_by_email(&env, "pat@example.test", 500).await.is_empty());
    // Invited again, the person is back with a new user id.
    let again = env.invite("pat@example.test").await.user;
    assert_ne!(again.id, in_acme.id);
    assert_eq!(
        rows(&all_by_email(&env, "pat@example.test", 500).await),
        [(env.tenant, again.id, Role::User, Status::Invited)]
    );
}

/// Eight admins' requests race to give one identity id to eight users of one tenant:
/// exactly one wins, every other is refused as taken, and the lookup names the winner.
pub async fn d28_concurrent_claims_of_one_identity_leave_one_holder(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let sub = identity("oidc|contested");
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(env.active_user(&format!("u{i}@acme.test")).await.id);
    }
    let mut tasks = Vec::new();
    for user in users.clone() {
        let (app, tenant, admin, sub) = (env.app.clone(), env.tenant, env.admin, sub.clone());
        tasks.push(tokio::spawn(async move {
            (user, app.set_identity(tenant, admin, user, Some(sub)).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (user, result) = t.await.unwrap();
        match result {
            Ok(u) => {
                assert_eq!(u.identity, Some(sub.clone()));
                winners.push(user);
            }
            Err(e) => assert!(
                matches!(e, tenantry_service::Error::Rule(E::IdentityTaken)),
                "D28: refused as taken, got {e:?}"
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one holder");
    let held = all_by_identity(&env, &sub).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].user_id, winners[0]);
    let holders = env
        .users(env.tenant)
        .await
        .into_iter()
        .filter(|u| u.identity.as_ref() == Some(&sub))
        .count();
    assert_eq!(holders, 1);
}
