//! Scenarios of [status transitions (D2)](tenantry_core::Rule::StatusTransitions), [unique email (D3)](tenantry_core::Rule::UniqueEmail), [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [last admin (D8)](tenantry_core::Rule::LastAdmin), [permanent delete (D11)](tenantry_core::Rule::PermanentDelete) and [sign-in (D14)](tenantry_core::Rule::SignIn).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::Error as E;
use tenantry_service::{
    Action, ActorRef, Attribution, Category, Error, Permissions, Reason, Role, SortBy, Status,
    Store, TemplateDeletion, UserEdit, UserId, UserQuery,
};
use time::Duration;

use crate::support::{
    Env, START, assert_rule, email, id_random_bytes, request, request_with, rule, unknown_template,
    unknown_user,
};

use super::helpers::{perm, rename, role_edit, set_permissions, status_edit, users_perm};

// ------------------------------------------------------------------------------------ D2

/// [status transitions (D2)](tenantry_core::Rule::StatusTransitions): active ↔ suspended edits persist; invited users cannot be activated or suspended by
/// an edit and nothing can move a user back to invited; refusals name from/to and change
/// nothing.
pub async fn d2_status_transitions_persist_and_refusals_change_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("invited@acme.test").await.user;
    let before = env.counters(env.tenant).await;
    for to in [Status::Active, Status::Suspended] {
        assert_rule(
            env.app
                .edit_user(env.tenant, env.admin, invited.id, &status_edit(to))
                .await,
            &E::InvalidTransition {
                from: Status::Invited,
                to,
            },
        );
    }
    assert_eq!(env.user(env.tenant, invited.id).await, invited);
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D2: refused edits change nothing"
    );

    let u = env.active_user("active@acme.test").await;
    let s = env.edit(u.id, &status_edit(Status::Suspended)).await;
    assert_eq!(s.status, Status::Suspended);
    assert_eq!(env.user(env.tenant, u.id).await.status, Status::Suspended);
    assert_rule(
        env.app
            .edit_user(env.tenant, env.admin, u.id, &status_edit(Status::Invited))
            .await,
        &E::InvalidTransition {
            from: Status::Suspended,
            to: Status::Invited,
        },
    );
    let a = env.edit(u.id, &status_edit(Status::Active)).await;
    assert_eq!(a.status, Status::Active);
    assert_eq!(
        env.user(env.tenant, u.id).await,
        a,
        "D2: the edit persisted"
    );
    assert_rule(
        env.app
            .edit_user(env.tenant, env.admin, u.id, &status_edit(Status::Invited))
            .await,
        &E::InvalidTransition {
            from: Status::Active,
            to: Status::Invited,
        },
    );
    // Staying put is allowed and stores no change.
    let v = env.counters(env.tenant).await.version;
    env.edit(u.id, &status_edit(Status::Active)).await;
    assert_eq!(env.counters(env.tenant).await.version, v, "no-op edit");
    env.assert_consistent(env.tenant).await;
}

// ------------------------------------------------------------------------------------ D3

/// [unique email (D3)](tenantry_core::Rule::UniqueEmail): addresses are unique per tenant by their trimmed, ASCII-lowercased key; the address
/// is stored trimmed, as typed; another tenant may hold the same address.
pub async fn d3_email_unique_by_canonical_key(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let bob = env.invite("  Bob.Smith@Acme.TEST\t").await.user;
    assert_eq!(
        bob.email.as_str(),
        "Bob.Smith@Acme.TEST",
        "D3: stored trimmed"
    );
    assert_eq!(
        env.user(env.tenant, bob.id).await.email.as_str(),
        "Bob.Smith@Acme.TEST",
        "D3: stored as typed"
    );
    let seats = env.counters(env.tenant).await;
    let mails = env.mailer.sent().len();
    for variant in [
        "bob.smith@acme.test",
        " BOB.SMITH@ACME.TEST ",
        "bOb.SmItH@aCmE.tEsT",
    ] {
        let e = rule(
            env.app
                .invite(env.tenant, env.admin, &request(variant, Role::User))
                .await,
        );
        assert!(
            matches!(e, E::EmailTaken { .. }),
            "D3: {variant:?} is taken: {e:?}"
        );
    }
    // The admin's own address, in another case.
    assert!(matches!(
        rule(
            env.app
                .invite(
                    env.tenant,
                    env.admin,
                    &request("admin@acme.test", Role::User)
                )
                .await
        ),
        E::EmailTaken { .. }
    ));
    assert_eq!(env.counters(env.tenant).await, seats, "D3: nothing stored");
    assert_eq!(env.mailer.sent().len(), mails, "D3: no mail for a refusal");
    let users = env.assert_consistent(env.tenant).await;
    assert_eq!(users.len(), 2);

    // Different addresses are different users.
    env.invite("bob.smith+1@acme.test").await;
    env.invite("bob.smith@acme.test.example").await;
    // The person may sign up with any variant of the address.
    let token = env.token(env.tenant, env.mailer.sent()[0].id).await;
    let accepted = env
        .app
        .accept_invitation(&token, "BOB.SMITH@acme.test")
        .await
        .unwrap();
    assert_eq!(accepted.email.as_str(), "Bob.Smith@Acme.TEST");

    // Per tenant only.
    let (other, other_admin) = env.other_tenant("Other", "admin@other.test").await;
    env.invite_as(
        other,
        other_admin,
        &request("bob.smith@acme.test", Role::User),
    )
    .await;
    env.assert_consistent(other).await;
    assert_eq!(env.assert_consistent(env.tenant).await.len(), 4);
}

/// [unique email (D3)](tenantry_core::Rule::UniqueEmail): changing an address to one another user holds (in any case or spacing) is refused;
/// a case-only change of one's own address is allowed; a freed address can be reused.
pub async fn d3_email_change_collisions(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let alice = env.active_user("alice@acme.test").await;
    let bob = env.active_user("bob@acme.test").await;
    let carol = env.invite("carol@acme.test").await.user;
    let before = env.counters(env.tenant).await;
    for (who, to) in [
        (alice.id, " BOB@Acme.Test "),
        (alice.id, "carol@ACME.test"),
        (carol.id, "Admin@acme.test"),
        (bob.id, "alice@acme.test"),
    ] {
        let e = rule(
            env.app
                .edit_user(
                    env.tenant,
                    env.admin,
                    who,
                    &UserEdit {
                        email: Some(email(to)),
                        ..UserEdit::default()
                    },
                )
                .await,
        );
        assert!(matches!(e, E::EmailTaken { .. }), "D3: {to:?}: {e:?}");
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D3: nothing changed"
    );
    assert_eq!(env.user(env.tenant, alice.id).await, alice);

    // Own address in another case: allowed, displayed as typed.
    let a = env
        .edit(
            alice.id,
            &UserEdit {
                email: Some(email("ALICE@acme.test")),
                ..UserEdit::default()
            },
        )
        .await;
    assert_eq!(a.email.as_str(), "ALICE@acme.test");
    assert_eq!(
        env.user(env.tenant, alice.id).await.email.as_str(),
        "ALICE@acme.test"
    );

    // Moving away frees the old address; the new one is taken.
    env.edit(
        alice.id,
        &UserEdit {
            email: Some(email("alice.new@acme.test")),
            ..UserEdit::default()
        },
    )
    .await;
    let reused = env.invite("Alice@Acme.test").await.user;
    assert_ne!(reused.id, alice.id);
    assert!(matches!(
        rule(
            env.app
                .invite(
                    env.tenant,
                    env.admin,
                    &request("ALICE.NEW@acme.test", Role::User)
                )
                .await
        ),
        E::EmailTaken { .. }
    ));
    // Listing by the old and new address finds the right rows.
    let found = env
        .collect(
            env.tenant,
            &UserQuery {
                email_contains: Some("ALICE".into()),
                ..UserQuery::default()
            },
        )
        .await;
    let ids: BTreeSet<UserId> = found.iter().map(|u| u.id).collect();
    assert_eq!(ids, BTreeSet::from([alice.id, reused.id]));
    env.assert_consistent(env.tenant).await;
}

// -------------------------------------------------------------------------------- D7, D8

/// [management authority (D7)](tenantry_core::Rule::ManagementAuthority): a non-admin manager's powers come from its current stored grants and template: it
/// may not escalate, invite admins or act without the permission, and a template edit
/// takes its powers away at once. Refusals store nothing.
pub async fn d7_manager_limits_follow_current_stored_state(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let managers = env
        .new_template(
            "Managers",
            Permissions::USERS_VIEW | Permissions::USERS_CREATE | Permissions::CONVERSATIONS_VIEW,
        )
        .await;
    let m = env
        .active(&request_with(
            "manager@acme.test",
            Permissions::empty(),
            Some(managers.id),
            false,
        ))
        .await;
    let ok = env
        .app
        .invite(
            env.tenant,
            m.id,
            &request_with(
                "agent@acme.test",
                Permissions::CONVERSATIONS_VIEW,
                None,
                false,
            ),
        )
        .await
        .unwrap();
    assert_eq!(ok.user.grants, Permissions::CONVERSATIONS_VIEW);
    let before = env.counters(env.tenant).await;
    assert_rule(
        env.app
            .invite(
                env.tenant,
                m.id,
                &request_with("x1@acme.test", Permissions::ANALYTICS_VIEW, None, false),
            )
            .await,
        &E::Escalation {
            missing: Permissions::ANALYTICS_VIEW,
            crm: false,
        },
    );
    assert_rule(
        env.app
            .invite(
                env.tenant,
                m.id,
                &request_with("x2@acme.test", Permissions::empty(), None, true),
            )
            .await,
        &E::Escalation {
            missing: Permissions::empty(),
            crm: true,
        },
    );
    assert_rule(
        env.app
            .invite(env.tenant, m.id, &request("x3@acme.test", Role::Admin))
            .await,
        &E::AdminOnly,
    );
    assert_rule(
        env.app
            .edit_user(
                env.tenant,
                m.id,
                ok.user.id,
                &status_edit(Status::Suspended),
            )
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::Edit),
        },
    );
    assert_rule(
        env.app
            .create_template(env.tenant, m.id, "Mine", Permissions::empty())
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::Manage),
        },
    );
    assert_eq!(env.counters(env.tenant).await, before, "D7: nothing stored");
    // Viewing works with users:view; a plain user may not view.
    env.app
        .list_users(env.tenant, ActorRef::User(m.id), &UserQuery::default())
        .await
        .unwrap();
    let plain = env.active_user("plain@acme.test").await;
    assert_rule(
        env.app
            .list_users(env.tenant, ActorRef::User(plain.id), &UserQuery::default())
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::View),
        },
    );
    // Taking users:create off the template takes the power away at the next call.
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            managers.id,
            &set_permissions(Permissions::USERS_VIEW),
        )
        .await
        .unwrap();
    assert_rule(
        env.app
            .invite(env.tenant, m.id, &request("x4@acme.test", Role::User))
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::Create),
        },
    );
    // Suspended managers lose everything.
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            managers.id,
            &set_permissions(Permissions::USERS_VIEW | Permissions::USERS_CREATE),
        )
        .await
        .unwrap();
    env.edit(m.id, &status_edit(Status::Suspended)).await;
    assert!(matches!(
        rule(
            env.app
                .invite(env.tenant, m.id, &request("x5@acme.test", Role::User))
                .await
        ),
        E::NotAllowed { .. }
    ));
    let users = env.assert_consistent(env.tenant).await;
    assert!(
        users.iter().all(|u| !u.email.key().starts_with('x')),
        "D7: no refused invite stored"
    );
}

/// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) before [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): an actor without the needed permission is told so whether or not the id
/// it names exists (another tenant's or none), so it learns nothing about the ids there are.
pub async fn d7_unauthorized_actor_learns_nothing_about_ids(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let plain = env.active_user("plain@acme.test").await;
    let real = env.active_user("real@acme.test").await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let (b, b_admin) = env.other_tenant("Beta", "admin@beta.test").await;
    let b_user = env
        .invite_as(b, b_admin, &request("b@beta.test", Role::User))
        .await
        .user
        .id;
    for target in [real.id, b_user, unknown_user()] {
        let needed = |a| tenantry_core::Error::NotAllowed {
            needed: users_perm(a),
        };
        assert_rule(
            env.app
                .resend_invitation(env.tenant, plain.id, target)
                .await,
            &needed(Action::Create),
        );
        assert_rule(
            env.app
                .edit_user(
                    env.tenant,
                    plain.id,
                    target,
                    &status_edit(Status::Suspended),
                )
                .await,
            &needed(Action::Edit),
        );
        assert_rule(
            env.app.delete_user(env.tenant, plain.id, target).await,
            &needed(Action::Delete),
        );
    }
    for template in [t.id, unknown_template()] {
        let needed = tenantry_core::Error::NotAllowed {
            needed: users_perm(Action::Manage),
        };
        assert_rule(
            env.app
                .edit_template(env.tenant, plain.id, template, &rename("X"))
                .await,
            &needed,
        );
        assert_rule(
            env.app
                .delete_template(env.tenant, plain.id, template, TemplateDeletion::Detach)
                .await,
            &needed,
        );
    }
    assert_rule(
        env.app
            .create_template(env.tenant, plain.id, "", Permissions::empty())
            .await,
        &tenantry_core::Error::NotAllowed {
            needed: users_perm(Action::Manage),
        },
    );
}

/// [last admin (D8)](tenantry_core::Rule::LastAdmin): the last active admin cannot be demoted, suspended or deleted (by itself or
/// anyone); an invited admin does not count; with two, one may go.
pub async fn d8_last_admin_cannot_be_demoted_suspended_or_deleted(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let check_last = |admin: UserId, actor: UserId| {
        let env = env.clone();
        async move {
            let before = env.counters(env.tenant).await;
            for edit in [role_edit(Role::User), status_edit(Status::Suspended)] {
                assert_rule(
                    env.app.edit_user(env.tenant, actor, admin, &edit).await,
                    &E::LastAdmin,
                );
            }
            assert_rule(
                env.app.delete_user(env.tenant, actor, admin).await,
                &E::LastAdmin,
            );
            assert_eq!(
                env.counters(env.tenant).await,
                before,
                "D8: nothing changed"
            );
            assert!(env.user(env.tenant, admin).await.is_active_admin());
        }
    };
    check_last(env.admin, env.admin).await;
    // An invited admin is not an active admin.
    let invited = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("next@acme.test", Role::Admin),
        )
        .await;
    check_last(env.admin, env.admin).await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 1);
    let second = env.accept(env.tenant, &invited).await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 2);
    // Now the first may be demoted; the second is then the last.
    env.app
        .edit_user(env.tenant, second.id, env.admin, &role_edit(Role::User))
        .await
        .unwrap();
    env.assert_consistent(env.tenant).await;
    check_last(second.id, second.id).await;
    // Promote back; suspend one, the other is last; delete one, the other is last.
    env.app
        .edit_user(env.tenant, second.id, env.admin, &role_edit(Role::Admin))
        .await
        .unwrap();
    env.app
        .edit_user(
            env.tenant,
            env.admin,
            second.id,
            &status_edit(Status::Suspended),
        )
        .await
        .unwrap();
    env.assert_consistent(env.tenant).await;
    check_last(env.admin, env.admin).await;
    env.app
        .edit_user(
            env.tenant,
            env.admin,
            second.id,
            &status_edit(Status::Active),
        )
        .await
        .unwrap();
    env.app
        .delete_user(env.tenant, second.id, env.admin)
        .await
        .unwrap();
    env.assert_consistent(env.tenant).await;
    check_last(second.id, second.id).await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 1);
}

// ----------------------------------------------------------------------------------- D11

/// [permanent delete (D11)](tenantry_core::Rule::PermanentDelete): delete is permanent: access ends at once, tokens die, the seat is freed, and a
/// tombstone (id, email, deleted at, deleted by) attributes the user's records.
pub async fn d11_delete_leaves_tombstone_and_attribution(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let u = env
        .active(&request_with(
            "Gone@Acme.test",
            Permissions::CONVERSATIONS_VIEW,
            None,
            true,
        ))
        .await;
    assert_eq!(
        env.app.attribution(env.tenant, u.id).await.unwrap(),
        Some(Attribution::User(u.clone()))
    );
    env.clock.advance(Duration::hours(3));
    let seats = env.counters(env.tenant).await.seats_used;
    let tomb = env
        .app
        .delete_user(env.tenant, env.admin, u.id)
        .await
        .unwrap();
    assert_eq!(tomb.user_id, u.id);
    assert_eq!(tomb.tenant_id, env.tenant);
    assert_eq!(tomb.email.as_str(), "Gone@Acme.test");
    assert_eq!(tomb.deleted_at, START + Duration::hours(3));
    assert_eq!(tomb.deleted_by, ActorRef::User(env.admin));
    assert_eq!(
        env.app.attribution(env.tenant, u.id).await.unwrap(),
        Some(Attribution::Deleted(tomb.clone())),
        "D11: the tombstone attributes"
    );
    assert_eq!(env.counters(env.tenant).await.seats_used, seats - 1);
    assert_rule(
        env.app.user(env.tenant, ActorRef::System, u.id).await,
        &E::UserNotFound,
    );
    let d = env
        .app
        .authorize(
            env.tenant,
            u.id,
            perm(Category::Conversations, Action::View).into(),
        )
        .await
        .unwrap();
    assert_eq!((d.is_allowed(), d.reason()), (false, Reason::UnknownUser));
    assert_rule(
        env.app.record_sign_in(env.tenant, u.id).await,
        &E::UserNotFound,
    );
    assert_rule(
        env.app.delete_user(env.tenant, env.admin, u.id).await,
        &E::UserNotFound,
    );
    assert!(env.users(env.tenant).await.iter().all(|x| x.id != u.id));

    // An invited user's token dies with it.
    let invited = env.invite("pending@acme.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    env.app
        .delete_user(env.tenant, env.admin, invited.user.id)
        .await
        .unwrap();
    assert_rule(
        env.app.accept_invitation(&token, "pending@acme.test").await,
        &E::InvalidInvitation,
    );
    env.assert_consistent(env.tenant).await;
    // Tombstones stay after further changes.
    env.invite("later@acme.test").await;
    assert_eq!(
        env.app.attribution(env.tenant, u.id).await.unwrap(),
        Some(Attribution::Deleted(tomb))
    );
}

/// [permanent delete (D11)](tenantry_core::Rule::PermanentDelete): ids are never reused (not even when the id generator collides with a deleted or a
/// live user's id); the same address may be invited again as a new user.
pub async fn d11_ids_never_reused_and_email_reinvitable(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let first = env.invite("erin@acme.test").await.user;
    env.app
        .delete_user(env.tenant, env.admin, first.id)
        .await
        .unwrap();
    let again = env.invite("ERIN@acme.test").await.user;
    assert_ne!(again.id, first.id, "D11: a new user");
    assert!(matches!(
        env.app.attribution(env.tenant, first.id).await.unwrap(),
        Some(Attribution::Deleted(_))
    ));
    assert!(matches!(
        env.app.attribution(env.tenant, again.id).await.unwrap(),
        Some(Attribution::User(_))
    ));

    // Force the id generator onto the deleted user's id (same millisecond, same bytes):
    // the store must not hand the id out again.
    for (what, id) in [("deleted", first.id), ("live", again.id)] {
        let before = env.counters(env.tenant).await;
        env.random.push(&id_random_bytes(id));
        let result = env
            .app
            .invite(
                env.tenant,
                env.admin,
                &request(&format!("collide-{what}@acme.test"), Role::User),
            )
            .await;
        env.random.clear();
        match result {
            Ok(invited) => assert_ne!(invited.user.id, id, "D11: {what} id reused"),
            Err(e) => {
                assert!(matches!(e, Error::Store(_)), "D11: {what}: {e:?}");
                assert_eq!(env.counters(env.tenant).await, before, "nothing stored");
            }
        }
    }
    assert!(matches!(
        env.app.attribution(env.tenant, first.id).await.unwrap(),
        Some(Attribution::Deleted(t)) if t.email.as_str() == "erin@acme.test"
    ));
    assert_eq!(env.user(env.tenant, again.id).await, again);
    env.assert_consistent(env.tenant).await;
}

// ----------------------------------------------------------------------------------- D14

/// [sign-in (D14)](tenantry_core::Rule::SignIn): a reported sign-in records last login for active users; invited and suspended users
/// are refused and unchanged; deleted or unknown users are not found.
pub async fn d14_sign_in_records_last_login_and_refuses_inactive_users(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let u = env.active_user("in@acme.test").await;
    env.clock.advance(Duration::days(2));
    let signed = env.app.record_sign_in(env.tenant, u.id).await.unwrap();
    assert_eq!(signed.last_login, Some(START + Duration::days(2)));
    assert_eq!(
        env.user(env.tenant, u.id).await.last_login,
        Some(START + Duration::days(2))
    );
    let admin = env.app.record_sign_in(env.tenant, env.admin).await.unwrap();
    assert_eq!(admin.last_login, Some(START + Duration::days(2)));

    let invited = env.invite("invited@acme.test").await.user;
    assert_rule(
        env.app.record_sign_in(env.tenant, invited.id).await,
        &E::SignInRefused {
            status: Status::Invited,
        },
    );
    env.edit(u.id, &status_edit(Status::Suspended)).await;
    env.clock.advance(Duration::days(1));
    assert_rule(
        env.app.record_sign_in(env.tenant, u.id).await,
        &E::SignInRefused {
            status: Status::Suspended,
        },
    );
    assert_eq!(
        env.user(env.tenant, u.id).await.last_login,
        Some(START + Duration::days(2))
    );
    assert_eq!(env.user(env.tenant, invited.id).await.last_login, None);
    let gone = env.active_user("gone@acme.test").await;
    env.app
        .delete_user(env.tenant, env.admin, gone.id)
        .await
        .unwrap();
    for id in [gone.id, unknown_user()] {
        assert_rule(
            env.app.record_sign_in(env.tenant, id).await,
            &E::UserNotFound,
        );
    }
}

/// [sign-in (D14)](tenantry_core::Rule::SignIn): hosts list users inactive since a time (never signed in, or last login before it),
/// page by page, in last-login order.
pub async fn d14_inactive_users_are_listed(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("never@acme.test").await.user;
    let a = env.active_user("a@acme.test").await; // last login START
    let b = env.active_user("b@acme.test").await;
    let c = env.active_user("c@acme.test").await;
    env.clock.advance(Duration::days(1));
    env.app.record_sign_in(env.tenant, b.id).await.unwrap(); // START+1d
    env.clock.advance(Duration::days(2));
    env.app.record_sign_in(env.tenant, c.id).await.unwrap(); // START+3d
    let since = START + Duration::days(2);
    let q = UserQuery {
        sort: SortBy::LastLogin,
        limit: 2,
        ..UserQuery::default()
    };
    let mut got = Vec::new();
    let mut query = q.clone();
    loop {
        let page = env
            .app
            .inactive_users(env.tenant, ActorRef::System, since, &query)
            .await
            .unwrap();
        got.extend(page.items.iter().map(|u| (u.id, u.last_login)));
        match page.next {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    let mut never: Vec<UserId> = vec![env.admin, invited.id];
    never.sort();
    let expected = vec![
        (never[0], None),
        (never[1], None),
        (a.id, Some(START)),
        (b.id, Some(START + Duration::days(1))),
    ];
    assert_eq!(
        got, expected,
        "D14: never signed in first, then by last login"
    );
    // Exactly at `since` is not inactive; after it neither.
    let at = env
        .app
        .inactive_users(
            env.tenant,
            ActorRef::System,
            START + Duration::days(1),
            &UserQuery::default(),
        )
        .await
        .unwrap();
    let ids: BTreeSet<UserId> = at.items.iter().map(|u| u.id).collect();
    assert_eq!(ids, BTreeSet::from([env.admin, invited.id, a.id]));
    assert!(!ids.contains(&c.id));
}
