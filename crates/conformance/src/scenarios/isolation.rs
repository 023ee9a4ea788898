//! Scenarios of [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation).

use std::sync::Arc;

use tenantry_core::{Error as E, MessageId};
use tenantry_service::{
    Action, ActorRef, BulkInvite, Category, Permissions, Request, Role, Status, Store,
    TemplateDeletion, UserEdit, UserQuery,
};
use time::Duration;

use crate::support::{
    Env, Options, START, assert_rule, email, outcome, request, request_with, unknown_template,
    unknown_user,
};

use super::helpers::{perm, rename, set_permissions, status_edit};

// ----------------------------------------------------------------------------------- D15

/// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): every public operation called with another tenant's user, template, message or
/// actor ids behaves exactly as with ids that do not exist, and changes nothing there.
pub async fn d15_foreign_ids_behave_as_not_found(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let a = env.tenant;
    let a_admin = env.admin;
    let a_t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let a_user = env.active_user("a.user@acme.test").await;
    let a_invited = env.invite("a.invited@acme.test").await.user;

    let (b, b_admin) = env.other_tenant("Beta", "admin@beta.test").await;
    let b_t = env
        .app
        .create_template(b, b_admin, "Beta agents", Permissions::CONVERSATIONS_VIEW)
        .await
        .unwrap();
    let b_user_inv = env
        .invite_as(
            b,
            b_admin,
            &request_with(
                "b.user@beta.test",
                Permissions::empty(),
                Some(b_t.id),
                false,
            ),
        )
        .await;
    let b_user = env.accept(b, &b_user_inv).await;
    let b_invited = env
        .invite_as(b, b_admin, &request("b.invited@beta.test", Role::User))
        .await;
    let b_token = env.token(b, b_invited.message_id).await;

    let b_users_before = env.users(b).await;
    let b_counters_before = env.counters(b).await;
    let b_audit_before = env.audit(b).await;
    let b_templates_before = env.app.templates(b, ActorRef::System).await.unwrap();
    let b_outbox_before = env.app.outbox(b, false, 500).await.unwrap();
    let a_users_before = env.users(a).await;

    let nobody = unknown_user();
    let no_template = unknown_template();
    let app = &env.app;

    macro_rules! same {
        ($what:expr, |$id:ident| $call:expr, $foreign:expr, $unknown:expr) => {{
            let foreign = {
                let $id = $foreign;
                $call
            };
            let unknown = {
                let $id = $unknown;
                $call
            };
            assert_eq!(
                outcome(&foreign),
                outcome(&unknown),
                "D15: {} with another tenant's id must behave as with an unknown id",
                $what
            );
        }};
    }

    // Users of B as targets in A.
    for (foreign, label) in [
        (b_user.id, "active"),
        (b_invited.user.id, "invited"),
        (b_admin, "admin"),
    ] {
        same!(
            format!("user({label})"),
            |id| app.user(a, ActorRef::System, id).await,
            foreign,
            nobody
        );
        same!(
            format!("user as admin ({label})"),
            |id| app.user(a, ActorRef::User(a_admin), id).await,
            foreign,
            nobody
        );
        same!(
            format!("edit_user({label})"),
            |id| app
                .edit_user(a, a_admin, id, &status_edit(Status::Suspended))
                .await,
            foreign,
            nobody
        );
        same!(
            format!("edit_user email ({label})"),
            |id| app
                .edit_user(
                    a,
                    a_admin,
                    id,
                    &UserEdit {
                        email: Some(email("x@acme.test")),
                        ..UserEdit::default()
                    }
                )
                .await,
            foreign,
            nobody
        );
        same!(
            format!("delete_user({label})"),
            |id| app.delete_user(a, a_admin, id).await,
            foreign,
            nobody
        );
        same!(
            format!("resend_invitation({label})"),
            |id| app.resend_invitation(a, a_admin, id).await,
            foreign,
            nobody
        );
        same!(
            format!("record_sign_in({label})"),
            |id| app.record_sign_in(a, id).await,
            foreign,
            nobody
        );
        same!(
            format!("attribution({label})"),
            |id| app.attribution(a, id).await,
            foreign,
            nobody
        );
        same!(
            format!("authorize({label})"),
            |id| app
                .authorize(a, id, perm(Category::Conversations, Action::View).into())
                .await,
            foreign,
            nobody
        );
        same!(
            format!("authorize CRM ({label})"),
            |id| app.authorize(a, id, Request::Crm).await,
            foreign,
            nobody
        );
        same!(
            format!("effective_permissions({label})"),
            |id| app.effective_permissions(a, id).await,
            foreign,
            nobody
        );
    }
    // B's admin and user as actors or viewers in A.
    for (foreign, label) in [(b_admin, "admin"), (b_user.id, "user")] {
        same!(
            format!("invite by {label}"),
            |id| app
                .invite(a, id, &request("new@acme.test", Role::User))
                .await,
            foreign,
            nobody
        );
        same!(
            format!("invite_many by {label}"),
            |id| app
                .invite_many(
                    a,
                    id,
                    &BulkInvite {
                        emails: vec!["new@acme.test".into()],
                        ..BulkInvite::default()
                    }
                )
                .await,
            foreign,
            nobody
        );
        same!(
            format!("edit_user by {label}"),
            |id| app
                .edit_user(a, id, a_user.id, &status_edit(Status::Suspended))
                .await,
            foreign,
            nobody
        );
        same!(
            format!("delete_user by {label}"),
            |id| app.delete_user(a, id, a_user.id).await,
            foreign,
            nobody
        );
        same!(
            format!("resend by {label}"),
            |id| app.resend_invitation(a, id, a_invited.id).await,
            foreign,
            nobody
        );
        same!(
            format!("purge by {label}"),
            |id| app.purge_expired_invitations(a, id).await,
            foreign,
            nobody
        );
        same!(
            format!("create_template by {label}"),
            |id| app
                .create_template(a, id, "New", Permissions::empty())
                .await,
            foreign,
            nobody
        );
        same!(
            format!("create_template bad name by {label}"),
            |id| app.create_template(a, id, "", Permissions::empty()).await,
            foreign,
            nobody
        );
        same!(
            format!("edit_template by {label}"),
            |id| app.edit_template(a, id, a_t.id, &rename("X")).await,
            foreign,
            nobody
        );
        same!(
            format!("delete_template by {label}"),
            |id| app
                .delete_template(a, id, a_t.id, TemplateDeletion::Detach)
                .await,
            foreign,
            nobody
        );
        same!(
            format!("list_users viewed by {label}"),
            |id| app
                .list_users(a, ActorRef::User(id), &UserQuery::default())
                .await,
            foreign,
            nobody
        );
        same!(
            format!("inactive_users viewed by {label}"),
            |id| app
                .inactive_users(a, ActorRef::User(id), START, &UserQuery::default())
                .await,
            foreign,
            nobody
        );
        same!(
            format!("expired_invitations viewed by {label}"),
            |id| app
                .expired_invitations(a, ActorRef::User(id), &UserQuery::default())
                .await,
            foreign,
            nobody
        );
        same!(
            format!("audit_log viewed by {label}"),
            |id| app.audit_log(a, ActorRef::User(id), 0, 10).await,
            foreign,
            nobody
        );
        same!(
            format!("templates viewed by {label}"),
            |id| app.templates(a, ActorRef::User(id)).await,
            foreign,
            nobody
        );
        same!(
            format!("template viewed by {label}"),
            |id| app.template(a, ActorRef::User(id), a_t.id).await,
            foreign,
            nobody
        );
        same!(
            format!("user viewed by {label}"),
            |id| app.user(a, ActorRef::User(id), a_user.id).await,
            foreign,
            nobody
        );
        same!(
            format!("template_users viewed by {label}"),
            |id| app
                .template_users(a, ActorRef::User(id), a_t.id, &UserQuery::default())
                .await,
            foreign,
            nobody
        );
    }
    // B's template in A.
    same!(
        "template",
        |id| app.template(a, ActorRef::System, id).await,
        b_t.id,
        no_template
    );
    same!(
        "template_users",
        |id| app
            .template_users(a, ActorRef::System, id, &UserQuery::default())
            .await,
        b_t.id,
        no_template
    );
    same!(
        "list_users by template",
        |id| app
            .list_users(
                a,
                ActorRef::System,
                &UserQuery {
                    template_id: Some(id),
                    ..UserQuery::default()
                }
            )
            .await,
        b_t.id,
        no_template
    );
    same!(
        "edit_template",
        |id| app.edit_template(a, a_admin, id, &rename("Stolen")).await,
        b_t.id,
        no_template
    );
    same!(
        "edit_template permissions",
        |id| app
            .edit_template(a, a_admin, id, &set_permissions(Permissions::all()))
            .await,
        b_t.id,
        no_template
    );
    for mode in [
        TemplateDeletion::Refuse,
        TemplateDeletion::Detach,
        TemplateDeletion::Reassign(a_t.id),
    ] {
        same!(
            format!("delete_template {mode:?}"),
            |id| app.delete_template(a, a_admin, id, mode).await,
            b_t.id,
            no_template
        );
    }
    same!(
        "delete_template reassign to",
        |id| app
            .delete_template(a, a_admin, a_t.id, TemplateDeletion::Reassign(id))
            .await,
        b_t.id,
        no_template
    );
    same!(
        "invite with template",
        |id| app
            .invite(
                a,
                a_admin,
                &request_with("t@acme.test", Permissions::empty(), Some(id), false)
            )
            .await,
        b_t.id,
        no_template
    );
    same!(
        "invite_many with template",
        |id| app
            .invite_many(
                a,
                a_admin,
                &BulkInvite {
                    emails: vec!["t@acme.test".into()],
                    template_id: Some(id),
                    ..BulkInvite::default()
                }
            )
            .await,
        b_t.id,
        no_template
    );
    same!(
        "edit_user template",
        |id| app
            .edit_user(
                a,
                a_admin,
                a_user.id,
                &UserEdit {
                    template_id: Some(Some(id)),
                    ..UserEdit::default()
                }
            )
            .await,
        b_t.id,
        no_template
    );
    // B's outbox message in A.
    same!(
        "outbox_message",
        |id| app.outbox_message(a, id).await,
        b_invited.message_id,
        MessageId::from_uuid(uuid::Uuid::now_v7())
    );
    // B's token with A's tenant prefix.
    let (_, secret) = b_token.split_once('.').unwrap();
    let a_prefix = a.as_uuid().simple().to_string();
    same!(
        "accept_invitation",
        |t| app.accept_invitation(&t, "b.invited@beta.test").await,
        format!("{a_prefix}.{secret}"),
        format!("{a_prefix}.{}", "A".repeat(43))
    );

    // Nothing of B changed, and A's rows are as they were.
    assert_eq!(
        env.users(b).await,
        b_users_before,
        "D15: B's users unchanged"
    );
    assert_eq!(
        env.counters(b).await,
        b_counters_before,
        "D15: B's counters unchanged"
    );
    assert_eq!(
        env.audit(b).await,
        b_audit_before,
        "D15: B's audit unchanged"
    );
    assert_eq!(
        env.app.templates(b, ActorRef::System).await.unwrap(),
        b_templates_before
    );
    assert_eq!(
        env.app.outbox(b, false, 500).await.unwrap(),
        b_outbox_before
    );
    assert_eq!(
        env.users(a).await,
        a_users_before,
        "D15: A's users unchanged"
    );
    // B's token still works in B.
    env.app
        .accept_invitation(&b_token, "b.invited@beta.test")
        .await
        .unwrap();
    // An unknown tenant is not found.
    let nowhere = tenantry_service::TenantId::from_uuid(uuid::Uuid::now_v7());
    assert_rule(env.app.seat_usage(nowhere).await, &E::TenantNotFound);
    assert_rule(
        env.app
            .invite(nowhere, a_admin, &request("z@acme.test", Role::User))
            .await,
        &E::TenantNotFound,
    );
    assert_rule(
        env.app
            .list_users(nowhere, ActorRef::System, &UserQuery::default())
            .await,
        &E::TenantNotFound,
    );
}

/// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): listing, template lists, template users, the audit log, the outbox, dispatch and
/// purge of one tenant never show or touch another tenant's rows, even with equal
/// addresses and template names.
pub async fn d15_lists_audit_and_outbox_stay_within_the_tenant(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let (b, b_admin) = env.other_tenant("Beta", "Admin@Acme.test").await;
    let mut ta = Vec::new();
    for (tenant, admin) in [(env.tenant, env.admin), (b, b_admin)] {
        let t = env
            .app
            .create_template(tenant, admin, "Agents", Permissions::CONVERSATIONS_VIEW)
            .await
            .unwrap();
        ta.push(t.id);
        for i in 0..5 {
            env.invite_as(
                tenant,
                admin,
                &request_with(
                    &format!("shared{i}@x.test"),
                    Permissions::empty(),
                    Some(t.id),
                    i % 2 == 0,
                ),
            )
            .await;
        }
    }
    env.clock.advance(Duration::days(8));
    // One more, not expired, in each.
    env.invite_as(env.tenant, env.admin, &request("fresh@x.test", Role::User))
        .await;
    env.invite_as(b, b_admin, &request("fresh@x.test", Role::User))
        .await;

    for (tenant, t) in [(env.tenant, ta[0]), (b, ta[1])] {
        let users = env.assert_consistent(tenant).await;
        assert_eq!(users.len(), 7);
        assert!(users.iter().all(|u| u.tenant_id == tenant), "D15: list");
        let by_t = env
            .collect(
                tenant,
                &UserQuery {
                    template_id: Some(t),
                    ..UserQuery::default()
                },
            )
            .await;
        assert_eq!(by_t.len(), 5);
        assert!(by_t.iter().all(|u| u.tenant_id == tenant));
        let templates = env.app.templates(tenant, ActorRef::System).await.unwrap();
        assert_eq!(
            templates.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![t],
            "D15: templates"
        );
        let audit = env.audit(tenant).await;
        assert!(
            audit.iter().all(|r| r.event.tenant_id == tenant),
            "D15: audit"
        );
        let outbox = env.app.outbox(tenant, false, 500).await.unwrap();
        assert_eq!(outbox.len(), 6);
        assert!(
            outbox.iter().all(|r| r.message.tenant_id == tenant),
            "D15: outbox"
        );
        let expired = env
            .app
            .expired_invitations(tenant, ActorRef::System, &UserQuery::default())
            .await
            .unwrap();
        assert_eq!(expired.items.len(), 5);
        assert!(expired.items.iter().all(|u| u.tenant_id == tenant));
    }
    // Dispatching A delivers only A's mail.
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(report.sent, 6);
    assert!(env.mailer.sent().iter().all(|m| m.tenant_id == env.tenant));
    assert_eq!(
        env.app.outbox(b, true, 500).await.unwrap().len(),
        6,
        "D15: B's mail pending"
    );
    // Purging A deletes only A's expired invitations.
    let purged = env
        .app
        .purge_expired_invitations(env.tenant, env.admin)
        .await
        .unwrap();
    assert_eq!(purged.len(), 5);
    assert_eq!(env.users(env.tenant).await.len(), 2);
    assert_eq!(env.users(b).await.len(), 7, "D15: B untouched by A's purge");
    assert_eq!(env.counters(b).await.seats_used, 7);
    // Deleting A's template does not touch B's users.
    env.app
        .delete_template(env.tenant, env.admin, ta[0], TemplateDeletion::Detach)
        .await
        .unwrap();
    assert_eq!(
        env.collect(
            b,
            &UserQuery {
                template_id: Some(ta[1]),
                ..UserQuery::default()
            }
        )
        .await
        .len(),
        5
    );
    env.assert_consistent(b).await;
}
