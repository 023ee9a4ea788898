//! Helpers the scenario files share.

use std::collections::BTreeSet;

use tenantry_core::{AuditAction, AuditTarget, Outcome};
use tenantry_service::{
    Action, ActorRef, Category, Permission, Permissions, Request, Role, Rule, Status, TemplateEdit,
    TemplateName, UserEdit, UserId, UserQuery,
};

use crate::support::Env;

pub(super) fn perm(category: Category, action: Action) -> Permission {
    Permission::new(category, action)
}

pub(super) fn users_perm(action: Action) -> Permission {
    perm(Category::Users, action)
}

pub(super) fn status_edit(status: Status) -> UserEdit {
    UserEdit {
        status: Some(status),
        ..UserEdit::default()
    }
}

pub(super) fn role_edit(role: Role) -> UserEdit {
    UserEdit {
        role: Some(role),
        ..UserEdit::default()
    }
}

pub(super) fn name(text: &str) -> TemplateName {
    TemplateName::parse(text).expect("a valid template name")
}

pub(super) fn rename(text: &str) -> TemplateEdit {
    TemplateEdit {
        name: Some(name(text)),
        permissions: None,
    }
}

pub(super) fn set_permissions(p: Permissions) -> TemplateEdit {
    TemplateEdit {
        name: None,
        permissions: Some(p),
    }
}

pub(super) async fn allowed(env: &Env, user: UserId, request: Request) -> bool {
    env.app
        .authorize(env.tenant, user, request)
        .await
        .expect("authorize")
        .is_allowed()
}

/// The users the host sees as expired invitations now ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)).
pub(super) async fn expired_ids(env: &Env) -> BTreeSet<UserId> {
    env.app
        .expired_invitations(env.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.id)
        .collect()
}

/// Asserts that the audit log holds exactly `expected` after its first `from` records:
/// (actor, action, target, refusing rule or `None` for a success).
pub(super) async fn assert_new_events(
    env: &Env,
    from: usize,
    expected: &[(ActorRef, AuditAction, AuditTarget, Option<Rule>)],
) -> Vec<tenantry_core::AuditRecord> {
    let log = env.audit(env.tenant).await;
    let new = log[from..].to_vec();
    let got: Vec<_> = new
        .iter()
        .map(|r| {
            let rule = match &r.event.outcome {
                Outcome::Success => None,
                Outcome::Refused { rule, .. } => Some(*rule),
            };
            (r.event.actor, r.event.action, r.event.target, rule)
        })
        .collect();
    assert_eq!(got, expected, "D13: the events appended");
    new
}
