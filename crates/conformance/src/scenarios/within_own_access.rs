//! Scenarios of [within own access (D21)](tenantry_core::Rule::WithinOwnAccess).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::{AuditAction, AuditTarget, Error as E};
use tenantry_service::{
    Action, ActorRef, Category, Permissions, RoleTemplate, Rule, Status, Store, TemplateDeletion,
    TemplateEdit, User, UserEdit, UserId,
};
use time::Duration;

use crate::support::{Env, assert_rule, email, request_with, rule};

use super::helpers::{allowed, assert_new_events, expired_ids, perm, set_permissions, status_edit};

// --------------------------------------------------------------------------- D21 helpers

/// What a refused call must leave as it was: the tenant's rows, counters, templates, the
/// stored outbox (with bodies), the mail attempts and the target's stored invitations.
#[derive(Debug, PartialEq)]
struct Snapshot {
    users: Vec<User>,
    counters: tenantry_core::Counters,
    templates: Vec<RoleTemplate>,
    outbox: Vec<tenantry_service::OutboxRecord>,
    mail_attempts: u64,
    invitations: Vec<tenantry_core::Invitation>,
}

async fn snapshot(env: &Env, target: UserId) -> Snapshot {
    Snapshot {
        users: env.users(env.tenant).await,
        counters: env.counters(env.tenant).await,
        templates: env
            .app
            .templates(env.tenant, ActorRef::System)
            .await
            .unwrap(),
        outbox: env
            .app
            .store()
            .outbox(env.tenant, false, 500)
            .await
            .unwrap(),
        mail_attempts: env.mailer.attempts(),
        invitations: env
            .app
            .store()
            .invitations_of(env.tenant, target)
            .await
            .unwrap(),
    }
}

/// A manager with the five users permissions and conversations:view (through a template),
/// no CRM access.
async fn manager(env: &Env) -> (User, RoleTemplate) {
    let managers = env
        .new_template(
            "Managers",
            Permissions::USERS_VIEW
                | Permissions::USERS_CREATE
                | Permissions::USERS_EDIT
                | Permissions::USERS_DELETE
                | Permissions::CONVERSATIONS_VIEW,
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
    (m, managers)
}

fn email_edit(address: &str) -> UserEdit {
    UserEdit {
        email: Some(email(address)),
        ..UserEdit::default()
    }
}

// ----------------------------------------------------------------------------------- D21

/// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): a non-admin manager may not change the address of an invitee that holds (or would
/// hold once active) more than the manager — by a direct grant, through its template, or by
/// CRM access — nor any other field of it; the refusal names the excess, is audited, and
/// nothing changes: not the address, not the tokens (the invitation still works at the
/// invited address), no mail, no other event.
pub async fn d21_address_change_of_a_stronger_invitee_is_refused_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let (m, managers) = manager(&env).await;
    let analysts = env
        .new_template(
            "Analysts",
            Permissions::ANALYTICS_VIEW | Permissions::CONVERSATIONS_VIEW,
        )
        .await;
    let everything = Permissions::all() - managers.permissions;
    let cases = [
        (
            "grant@acme.test",
            request_with(
                "grant@acme.test",
                Permissions::SETTINGS_MANAGE | Permissions::CONVERSATIONS_VIEW,
                None,
                false,
            ),
            E::BeyondOwnAccess {
                missing: Permissions::SETTINGS_MANAGE,
                crm: false,
            },
        ),
        (
            "template@acme.test",
            request_with(
                "template@acme.test",
                Permissions::empty(),
                Some(analysts.id),
                false,
            ),
            E::BeyondOwnAccess {
                missing: Permissions::ANALYTICS_VIEW,
                crm: false,
            },
        ),
        (
            "crm@acme.test",
            request_with("crm@acme.test", Permissions::CONVERSATIONS_VIEW, None, true),
            E::BeyondOwnAccess {
                missing: Permissions::empty(),
                crm: true,
            },
        ),
        (
            "all@acme.test",
            request_with("all@acme.test", Permissions::all(), Some(analysts.id), true),
            E::BeyondOwnAccess {
                missing: everything,
                crm: true,
            },
        ),
    ];
    for (address, req, expected) in cases {
        assert_eq!(expected.rule(), Rule::WithinOwnAccess);
        let invited = env.invite_as(env.tenant, env.admin, &req).await;
        let id = invited.user.id;
        let token = env.token(env.tenant, invited.message_id).await;
        let before = snapshot(&env, id).await;
        let audit = env.audit(env.tenant).await.len();
        let edits = [
            email_edit("attacker@evil.test"),
            // Even a change of case of its own address.
            email_edit(&address.to_ascii_uppercase()),
            // Even an edit that only takes access away.
            UserEdit {
                grants: Some(Permissions::empty()),
                crm_access: Some(false),
                template_id: Some(None),
                ..UserEdit::default()
            },
        ];
        for edit in &edits {
            assert_rule(
                env.app.edit_user(env.tenant, m.id, id, edit).await,
                &expected,
            );
        }
        assert_eq!(
            snapshot(&env, id).await,
            before,
            "D21: nothing changed for {address}"
        );
        assert_eq!(env.user(env.tenant, id).await.email.as_str(), address);
        let refusal = (
            ActorRef::User(m.id),
            AuditAction::UserEdited,
            AuditTarget::User(id),
            Some(Rule::WithinOwnAccess),
        );
        let new = assert_new_events(&env, audit, &[refusal, refusal, refusal]).await;
        assert!(new.iter().all(|r| r.event.changes.is_empty()));
        // The tokens were not revoked: the person still signs up, at the invited address.
        let user = env.app.accept_invitation(&token, address).await.unwrap();
        assert_eq!(user.status, Status::Active);
    }
    env.assert_consistent(env.tenant).await;
}

/// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): an active or suspended user holding more than a non-admin manager cannot be
/// edited in any field (address, status, CRM, grants, template) nor deleted by it; nothing
/// changes and every refusal is audited under [within own access (D21)](tenantry_core::Rule::WithinOwnAccess).
pub async fn d21_stronger_active_and_suspended_users_cannot_be_edited_or_deleted(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let (m, managers) = manager(&env).await;
    let strong = env
        .active(&request_with(
            "strong@acme.test",
            Permissions::SETTINGS_MANAGE,
            None,
            false,
        ))
        .await;
    let sleeping = env
        .active(&request_with(
            "sleeping@acme.test",
            Permissions::ANALYTICS_VIEW,
            None,
            true,
        ))
        .await;
    env.edit(sleeping.id, &status_edit(Status::Suspended)).await;
    for (target, toggle, expected) in [
        (
            strong.id,
            Status::Suspended,
            E::BeyondOwnAccess {
                missing: Permissions::SETTINGS_MANAGE,
                crm: false,
            },
        ),
        (
            sleeping.id,
            Status::Active,
            E::BeyondOwnAccess {
                missing: Permissions::ANALYTICS_VIEW,
                crm: true,
            },
        ),
    ] {
        let before = snapshot(&env, target).await;
        let audit = env.audit(env.tenant).await.len();
        let edits = [
            email_edit("taken.over@evil.test"),
            status_edit(toggle),
            UserEdit {
                crm_access: Some(false),
                ..UserEdit::default()
            },
            UserEdit {
                grants: Some(Permissions::CONVERSATIONS_VIEW),
                ..UserEdit::default()
            },
            UserEdit {
                template_id: Some(Some(managers.id)),
                ..UserEdit::default()
            },
        ];
        for edit in &edits {
            assert_rule(
                env.app.edit_user(env.tenant, m.id, target, edit).await,
                &expected,
            );
        }
        assert_rule(
            env.app.delete_user(env.tenant, m.id, target).await,
            &expected,
        );
        assert_eq!(snapshot(&env, target).await, before, "D21: nothing changed");
        let edited = (
            ActorRef::User(m.id),
            AuditAction::UserEdited,
            AuditTarget::User(target),
            Some(Rule::WithinOwnAccess),
        );
        let deleted = (
            ActorRef::User(m.id),
            AuditAction::UserDeleted,
            AuditTarget::User(target),
            Some(Rule::WithinOwnAccess),
        );
        assert_new_events(
            &env,
            audit,
            &[edited, edited, edited, edited, edited, deleted],
        )
        .await;
    }
    // The strong user still holds what it held, and can still sign in.
    assert!(
        allowed(
            &env,
            strong.id,
            perm(Category::Settings, Action::Manage).into()
        )
        .await
    );
    env.app.record_sign_in(env.tenant, strong.id).await.unwrap();
    env.assert_consistent(env.tenant).await;
}

/// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): a non-admin manager with `users:manage` may not change the permissions of a
/// template, nor detach or reassign its users, when a user on it holds more than the
/// manager: that changes the stronger user's access as much as editing it would. The same
/// changes go through once every user on the template is within the manager's access, and
/// an admin is not limited.
pub async fn d21_template_changes_reaching_stronger_users_are_refused(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (m, managers) = manager(&env).await;
    // The manager may manage templates, and holds conversations:view through its own.
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            managers.id,
            &TemplateEdit {
                permissions: Some(managers.permissions | Permissions::USERS_MANAGE),
                ..TemplateEdit::default()
            },
        )
        .await
        .unwrap();
    let agents = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let spare = env.new_template("Spare", Permissions::empty()).await;
    let weak = env
        .active(&request_with(
            "weak@acme.test",
            Permissions::empty(),
            Some(agents.id),
            false,
        ))
        .await;
    let strong = env
        .active(&request_with(
            "strong@acme.test",
            Permissions::SETTINGS_MANAGE,
            Some(agents.id),
            true,
        ))
        .await;
    let expected = E::BeyondOwnAccess {
        missing: Permissions::SETTINGS_MANAGE,
        crm: true,
    };
    let audit = env.audit(env.tenant).await.len();
    assert_rule(
        env.app
            .edit_template(
                env.tenant,
                m.id,
                agents.id,
                &TemplateEdit {
                    permissions: Some(Permissions::empty()),
                    ..TemplateEdit::default()
                },
            )
            .await,
        &expected,
    );
    for mode in [
        TemplateDeletion::Detach,
        TemplateDeletion::Reassign(spare.id),
    ] {
        assert_rule(
            env.app
                .delete_template(env.tenant, m.id, agents.id, mode)
                .await,
            &expected,
        );
    }
    // A rename changes no one's access: allowed.
    env.app
        .edit_template(
            env.tenant,
            m.id,
            agents.id,
            &TemplateEdit {
                name: Some("Support agents".parse().unwrap()),
                ..TemplateEdit::default()
            },
        )
        .await
        .unwrap();
    let template = (
        ActorRef::User(m.id),
        AuditAction::TemplateEdited,
        AuditTarget::Template(agents.id),
        Some(Rule::WithinOwnAccess),
    );
    let deleted = (
        ActorRef::User(m.id),
        AuditAction::TemplateDeleted,
        AuditTarget::Template(agents.id),
        Some(Rule::WithinOwnAccess),
    );
    let renamed = (
        ActorRef::User(m.id),
        AuditAction::TemplateEdited,
        AuditTarget::Template(agents.id),
        None,
    );
    assert_new_events(&env, audit, &[template, deleted, deleted, renamed]).await;
    // Nothing changed for the users.
    let s = env
        .app
        .user(env.tenant, ActorRef::System, strong.id)
        .await
        .unwrap();
    assert_eq!(s.template_id, Some(agents.id));
    assert!(
        allowed(
            &env,
            strong.id,
            perm(Category::Conversations, Action::View).into()
        )
        .await
    );
    // Once the stronger user is gone from the template, the manager may change it.
    env.edit(
        strong.id,
        &UserEdit {
            template_id: Some(None),
            ..UserEdit::default()
        },
    )
    .await;
    env.app
        .edit_template(
            env.tenant,
            m.id,
            agents.id,
            &TemplateEdit {
                permissions: Some(Permissions::empty()),
                ..TemplateEdit::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        env.app
            .delete_template(env.tenant, m.id, agents.id, TemplateDeletion::Detach)
            .await
            .unwrap(),
        1
    );
    let w = env
        .app
        .user(env.tenant, ActorRef::System, weak.id)
        .await
        .unwrap();
    assert_eq!(w.template_id, None);
    env.assert_consistent(env.tenant).await;
}

/// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): a non-admin manager may not resend to or delete an invitee holding more than it;
/// its purge of expired invitations skips such invitations (an admin's takes them).
pub async fn d21_resend_delete_and_purge_of_stronger_invitations_are_refused(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let (m, _) = manager(&env).await;
    let strong = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "strong@acme.test",
                Permissions::SETTINGS_MANAGE,
                None,
                false,
            ),
        )
        .await;
    let crm = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with("crm@acme.test", Permissions::empty(), None, true),
        )
        .await;
    let weak = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "weak@acme.test",
                Permissions::CONVERSATIONS_VIEW,
                None,
                false,
            ),
        )
        .await;
    for (target, expected) in [
        (
            strong.user.id,
            E::BeyondOwnAccess {
                missing: Permissions::SETTINGS_MANAGE,
                crm: false,
            },
        ),
        (
            crm.user.id,
            E::BeyondOwnAccess {
                missing: Permissions::empty(),
                crm: true,
            },
        ),
    ] {
        let before = snapshot(&env, target).await;
        let audit = env.audit(env.tenant).await.len();
        assert_rule(
            env.app.resend_invitation(env.tenant, m.id, target).await,
            &expected,
        );
        assert_rule(
            env.app.delete_user(env.tenant, m.id, target).await,
            &expected,
        );
        assert_eq!(
            snapshot(&env, target).await,
            before,
            "D21: no new token, no mail, no delete"
        );
        assert_new_events(
            &env,
            audit,
            &[
                (
                    ActorRef::User(m.id),
                    AuditAction::InvitationResent,
                    AuditTarget::User(target),
                    Some(Rule::WithinOwnAccess),
                ),
                (
                    ActorRef::User(m.id),
                    AuditAction::UserDeleted,
                    AuditTarget::User(target),
                    Some(Rule::WithinOwnAccess),
                ),
            ],
        )
        .await;
    }
    // The manager's purge takes only what it may delete.
    env.clock.advance(Duration::days(8));
    let purged = env
        .app
        .purge_expired_invitations(env.tenant, m.id)
        .await
        .unwrap();
    assert_eq!(
        purged,
        vec![weak.user.id],
        "D21: the purge skips stronger invitations"
    );
    assert_eq!(
        expired_ids(&env).await,
        BTreeSet::from([strong.user.id, crm.user.id]),
        "D20/D21: the stronger expired invitations remain, with their seats"
    );
    let mut purged = env
        .app
        .purge_expired_invitations(env.tenant, env.admin)
        .await
        .unwrap();
    purged.sort();
    let mut want = vec![strong.user.id, crm.user.id];
    want.sort();
    assert_eq!(purged, want, "D21: admins are not limited");
    env.assert_consistent(env.tenant).await;
}

/// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): within its own access a manager manages as before — an equal or weaker invitee's
/// address (its old link dies, the resend's link works), suspension, deletion; admins are
/// not limited; and the check follows the current stored state (a grant to the manager, or
/// a template edit of the target's template, applies at the next call).
pub async fn d21_users_within_the_managers_own_access_can_be_managed(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (m, managers) = manager(&env).await;
    // Give the manager CRM access (directly, by the admin).
    env.edit(
        m.id,
        &UserEdit {
            crm_access: Some(true),
            ..UserEdit::default()
        },
    )
    .await;
    let agents = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    // Weaker: a subset, with CRM; equal: the manager's own template.
    let weak = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "weak@acme.test",
                Permissions::USERS_VIEW,
                Some(agents.id),
                true,
            ),
        )
        .await;
    let equal = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "equal@acme.test",
                Permissions::empty(),
                Some(managers.id),
                true,
            ),
        )
        .await;
    let old = env.token(env.tenant, weak.message_id).await;
    let moved = env
        .app
        .edit_user(
            env.tenant,
            m.id,
            weak.user.id,
            &email_edit("weak.new@acme.test"),
        )
        .await
        .expect("D21: within the manager's access");
    assert_eq!(moved.email.as_str(), "weak.new@acme.test");
    assert_rule(
        env.app.accept_invitation(&old, "weak.new@acme.test").await,
        &E::InvalidInvitation,
    );
    let resent = env
        .app
        .resend_invitation(env.tenant, m.id, weak.user.id)
        .await
        .expect("D21: resend within the manager's access");
    let token = resent.accept_link.token().unwrap();
    env.app
        .accept_invitation(&token, "weak.new@acme.test")
        .await
        .unwrap();
    env.app
        .edit_user(
            env.tenant,
            m.id,
            weak.user.id,
            &status_edit(Status::Suspended),
        )
        .await
        .expect("D21: suspend within");
    env.app
        .edit_user(
            env.tenant,
            m.id,
            equal.user.id,
            &email_edit("equal2@acme.test"),
        )
        .await
        .expect("D21: equal access is within");
    env.app
        .delete_user(env.tenant, m.id, equal.user.id)
        .await
        .expect("D21: delete within");

    // Admins are not limited by D21.
    let strong = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "strong@acme.test",
                Permissions::SETTINGS_MANAGE,
                None,
                false,
            ),
        )
        .await
        .user;
    env.app
        .edit_user(
            env.tenant,
            env.admin,
            strong.id,
            &email_edit("strong2@acme.test"),
        )
        .await
        .expect("D21: an admin edits anyone");
    // Granting the manager what the target holds lets it manage the target at once.
    assert!(matches!(
        rule(
            env.app
                .edit_user(
                    env.tenant,
                    m.id,
                    strong.id,
                    &email_edit("strong3@acme.test")
                )
                .await
        ),
        E::BeyondOwnAccess { .. }
    ));
    env.edit(
        m.id,
        &UserEdit {
            grants: Some(Permissions::SETTINGS_MANAGE),
            ..UserEdit::default()
        },
    )
    .await;
    env.app
        .edit_user(
            env.tenant,
            m.id,
            strong.id,
            &email_edit("strong3@acme.test"),
        )
        .await
        .expect("D21: the manager now holds what the target holds");
    // A template edit giving the target more than the manager holds applies at once.
    let agent = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "agent@acme.test",
                Permissions::empty(),
                Some(agents.id),
                false,
            ),
        )
        .await
        .user;
    env.app
        .edit_user(env.tenant, m.id, agent.id, &email_edit("agent2@acme.test"))
        .await
        .expect("D21: within");
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            agents.id,
            &set_permissions(Permissions::CONVERSATIONS_VIEW | Permissions::EXPERIMENTS_MANAGE),
        )
        .await
        .unwrap();
    assert_rule(
        env.app
            .edit_user(env.tenant, m.id, agent.id, &email_edit("agent3@acme.test"))
            .await,
        &E::BeyondOwnAccess {
            missing: Permissions::EXPERIMENTS_MANAGE,
            crm: false,
        },
    );
    assert_eq!(
        env.user(env.tenant, agent.id).await.email.as_str(),
        "agent2@acme.test"
    );
    env.assert_consistent(env.tenant).await;
}
