//! Scenarios of [role templates (D12)](tenantry_core::Rule::RoleTemplates).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::{AuditAction, Error as E, Field, FieldChange, Outcome, Value};
use tenantry_service::{
    Action, ActorRef, Category, Permissions, Store, TemplateDeletion, UserEdit, UserQuery,
};

use crate::support::{Env, assert_rule, request_with, unknown_template};

use super::helpers::{allowed, perm, rename};

// ----------------------------------------------------------------------------------- D12

/// [role templates (D12)](tenantry_core::Rule::RoleTemplates): template names are 1–64 characters and unique per tenant ignoring case, on create
/// and rename; a freed name can be reused; another tenant may use the same name.
pub async fn d12_template_names_unique_case_insensitive(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let agent = env
        .new_template("Support agent", Permissions::empty())
        .await;
    assert_eq!(agent.name.as_str(), "Support agent");
    let before = env.counters(env.tenant).await;
    assert_rule(
        env.app
            .create_template(
                env.tenant,
                env.admin,
                " SUPPORT AGENT ",
                Permissions::empty(),
            )
            .await,
        &E::TemplateNameTaken {
            name: "SUPPORT AGENT".into(),
        },
    );
    assert_eq!(env.counters(env.tenant).await, before);
    let agents = env
        .new_template("Support agents", Permissions::empty())
        .await;
    assert_rule(
        env.app
            .edit_template(env.tenant, env.admin, agents.id, &rename("support AGENT"))
            .await,
        &E::TemplateNameTaken {
            name: "support AGENT".into(),
        },
    );
    // Renaming to another case of its own name is allowed and displayed as typed.
    let renamed = env
        .app
        .edit_template(env.tenant, env.admin, agent.id, &rename("Support Agent"))
        .await
        .unwrap();
    assert_eq!(renamed.name.as_str(), "Support Agent");
    assert_eq!(
        env.app
            .template(env.tenant, ActorRef::System, agent.id)
            .await
            .unwrap()
            .name
            .as_str(),
        "Support Agent"
    );
    // Invalid names.
    let long = "x".repeat(65);
    for (input, expected) in [
        ("", tenantry_core::TemplateNameError::Empty),
        ("   ", tenantry_core::TemplateNameError::Empty),
        (
            long.as_str(),
            tenantry_core::TemplateNameError::TooLong { len: 65, max: 64 },
        ),
    ] {
        assert_rule(
            env.app
                .create_template(env.tenant, env.admin, input, Permissions::empty())
                .await,
            &E::InvalidTemplateName(expected),
        );
    }
    env.new_template(&"y".repeat(64), Permissions::empty())
        .await;
    // Listed by name.
    let names: Vec<String> = env
        .app
        .templates(env.tenant, ActorRef::System)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.as_str().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "Support Agent".to_owned(),
            "Support agents".into(),
            "y".repeat(64)
        ]
    );
    // A deleted template's name is free again; the old name is free after a rename.
    env.app
        .edit_template(env.tenant, env.admin, agents.id, &rename("Helpdesk"))
        .await
        .unwrap();
    env.new_template("SUPPORT AGENTS", Permissions::empty())
        .await;
    assert_eq!(
        env.app
            .delete_template(env.tenant, env.admin, agent.id, TemplateDeletion::Refuse)
            .await
            .unwrap(),
        0
    );
    env.new_template("support agent", Permissions::empty())
        .await;
    // Per tenant only.
    let (other, other_admin) = env.other_tenant("Other", "admin@other.test").await;
    env.app
        .create_template(other, other_admin, "Helpdesk", Permissions::empty())
        .await
        .unwrap();
    let keys: Vec<String> = env
        .app
        .templates(env.tenant, ActorRef::System)
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.key().to_owned())
        .collect();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "D12: unique name keys");
}

/// [role templates (D12)](tenantry_core::Rule::RoleTemplates): hosts can list the users that reference a template, page by page; the count
/// matches the one a refused delete reports.
pub async fn d12_template_users_lists_referencing_users(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let other = env.new_template("Others", Permissions::empty()).await;
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let req = request_with(
            &format!("agent{i}@acme.test"),
            Permissions::empty(),
            Some(t.id),
            false,
        );
        let u = if i % 2 == 0 {
            env.active(&req).await
        } else {
            env.invite_as(env.tenant, env.admin, &req).await.user
        };
        expected.insert(u.id);
    }
    for i in 0..3 {
        env.invite_as(
            env.tenant,
            env.admin,
            &request_with(
                &format!("other{i}@acme.test"),
                Permissions::empty(),
                Some(other.id),
                false,
            ),
        )
        .await;
        env.invite(&format!("none{i}@acme.test")).await;
    }
    // Moving a user onto the template by an edit lists it too.
    let moved = env.active_user("moved@acme.test").await;
    env.edit(
        moved.id,
        &UserEdit {
            template_id: Some(Some(t.id)),
            ..UserEdit::default()
        },
    )
    .await;
    expected.insert(moved.id);
    let mut seen = Vec::new();
    let mut q = UserQuery {
        limit: 3,
        ..UserQuery::default()
    };
    loop {
        let page = env
            .app
            .template_users(env.tenant, ActorRef::System, t.id, &q)
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        assert!(page.items.iter().all(|u| u.template_id == Some(t.id)));
        seen.extend(page.items.iter().map(|u| u.id));
        match page.next {
            Some(c) => q.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "D12: each user once");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_rule(
        env.app
            .delete_template(env.tenant, env.admin, t.id, TemplateDeletion::Refuse)
            .await,
        &E::TemplateInUse { users: 8 },
    );
}

/// [role templates (D12)](tenantry_core::Rule::RoleTemplates): deleting a referenced template is refused by default with the count; detach leaves
/// the users their direct grants; reassign moves them to another template.
pub async fn d12_delete_referenced_template_refuse_detach_reassign(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let t1 = env
        .new_template("One", Permissions::CONVERSATIONS_VIEW)
        .await;
    let t2 = env.new_template("Two", Permissions::ANALYTICS_VIEW).await;
    let u1 = env
        .active(&request_with(
            "u1@acme.test",
            Permissions::SETTINGS_VIEW,
            Some(t1.id),
            false,
        ))
        .await;
    let u2 = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "u2@acme.test",
                Permissions::SETTINGS_VIEW,
                Some(t1.id),
                false,
            ),
        )
        .await
        .user;
    let u3 = env
        .active(&request_with(
            "u3@acme.test",
            Permissions::empty(),
            Some(t2.id),
            false,
        ))
        .await;
    let before = env.counters(env.tenant).await;
    assert_rule(
        env.app
            .delete_template(env.tenant, env.admin, t1.id, TemplateDeletion::Refuse)
            .await,
        &E::TemplateInUse { users: 2 },
    );
    for target in [t1.id, unknown_template()] {
        assert_rule(
            env.app
                .delete_template(
                    env.tenant,
                    env.admin,
                    t1.id,
                    TemplateDeletion::Reassign(target),
                )
                .await,
            &E::TemplateNotFound,
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D12: refusals change nothing"
    );
    assert_eq!(env.user(env.tenant, u1.id).await.template_id, Some(t1.id));
    env.app
        .template(env.tenant, ActorRef::System, t1.id)
        .await
        .unwrap();

    // Reassign.
    let moved = env
        .app
        .delete_template(
            env.tenant,
            env.admin,
            t1.id,
            TemplateDeletion::Reassign(t2.id),
        )
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_rule(
        env.app.template(env.tenant, ActorRef::System, t1.id).await,
        &E::TemplateNotFound,
    );
    for id in [u1.id, u2.id, u3.id] {
        let u = env.user(env.tenant, id).await;
        assert_eq!(u.template_id, Some(t2.id), "D12: reassigned");
    }
    assert_eq!(
        env.user(env.tenant, u1.id).await.grants,
        Permissions::SETTINGS_VIEW
    );
    assert!(allowed(&env, u1.id, perm(Category::Analytics, Action::View).into()).await);
    assert!(
        !allowed(
            &env,
            u1.id,
            perm(Category::Conversations, Action::View).into()
        )
        .await
    );
    let listed = env
        .collect(
            env.tenant,
            &UserQuery {
                template_id: Some(t2.id),
                ..UserQuery::default()
            },
        )
        .await;
    assert_eq!(listed.len(), 3);
    assert!(
        env.collect(
            env.tenant,
            &UserQuery {
                template_id: Some(t1.id),
                ..UserQuery::default()
            }
        )
        .await
        .is_empty()
    );

    // Detach.
    let detached = env
        .app
        .delete_template(env.tenant, env.admin, t2.id, TemplateDeletion::Detach)
        .await
        .unwrap();
    assert_eq!(detached, 3);
    for id in [u1.id, u2.id, u3.id] {
        assert_eq!(
            env.user(env.tenant, id).await.template_id,
            None,
            "D12: detached"
        );
    }
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, u1.id)
            .await
            .unwrap(),
        (Permissions::SETTINGS_VIEW, false),
        "D12: only direct grants remain"
    );
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, u3.id)
            .await
            .unwrap(),
        (Permissions::empty(), false)
    );
    assert!(
        env.app
            .templates(env.tenant, ActorRef::System)
            .await
            .unwrap()
            .is_empty()
    );
    let deleted_events: Vec<_> = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::TemplateDeleted && r.event.outcome == Outcome::Success
        })
        .collect();
    assert_eq!(deleted_events.len(), 2);
    assert!(deleted_events[0].event.changes.contains(&FieldChange {
        field: Field::AffectedUsers,
        before: Value::Number(2),
        after: Value::Number(0),
    }));
    env.assert_consistent(env.tenant).await;
}
