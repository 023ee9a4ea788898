//! Scenarios of [roles (D1)](tenantry_core::Rule::Roles), [permission set (D4)](tenantry_core::Rule::PermissionSet), [CRM access (D5)](tenantry_core::Rule::CrmAccess) and [current access (D6)](tenantry_core::Rule::CurrentAccess).

use std::collections::BTreeMap;
use std::sync::Arc;

use tenantry_core::Error as E;
use tenantry_service::{
    Action, ActorRef, Category, Permission, Permissions, Reason, Request, Role, Status, Store,
    UserEdit, UserId,
};

use crate::support::{Env, assert_rule, request, request_with};

use super::helpers::{allowed, perm, role_edit, set_permissions, status_edit};

// ------------------------------------------------------------------------------------ D1

/// [roles (D1)](tenantry_core::Rule::Roles): an active admin holds every permission and CRM; a user holds only its direct grants
/// and its template's permissions, as stored.
pub async fn d1_admin_holds_everything_user_only_what_is_granted(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    for p in Permission::all() {
        let d = env
            .app
            .authorize(env.tenant, env.admin, p.into())
            .await
            .unwrap();
        assert!(d.is_allowed(), "D1: an admin holds {p}");
        assert_eq!(d.reason(), Reason::Admin);
    }
    let d = env
        .app
        .authorize(env.tenant, env.admin, Request::Crm)
        .await
        .unwrap();
    assert!(
        d.is_allowed() && d.reason() == Reason::Admin,
        "D1/D5: admin CRM"
    );
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, env.admin)
            .await
            .unwrap(),
        (Permissions::all(), true)
    );

    let t = env
        .new_template("Analysts", Permissions::ANALYTICS_VIEW)
        .await;
    let grants = Permissions::CONVERSATIONS_VIEW | Permissions::CONVERSATIONS_EDIT;
    let u = env
        .active(&request_with("user@acme.test", grants, Some(t.id), false))
        .await;
    let holds = grants | Permissions::ANALYTICS_VIEW;
    for p in Permission::all() {
        let d = env.app.authorize(env.tenant, u.id, p.into()).await.unwrap();
        assert_eq!(
            d.is_allowed(),
            holds.has(p),
            "D1: a user holds {p} iff granted"
        );
        let expected = if grants.has(p) {
            Reason::DirectGrant
        } else if holds.has(p) {
            Reason::Template { template_id: t.id }
        } else {
            Reason::MissingPermission { permission: p }
        };
        assert_eq!(d.reason(), expected, "D1: reason for {p}");
    }
    let d = env
        .app
        .authorize(env.tenant, u.id, Request::Crm)
        .await
        .unwrap();
    assert_eq!((d.is_allowed(), d.reason()), (false, Reason::NoCrmAccess));
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, u.id)
            .await
            .unwrap(),
        (holds, false)
    );

    // A plain user with nothing holds nothing.
    let bare = env.active_user("bare@acme.test").await;
    for p in Permission::all() {
        assert!(!allowed(&env, bare.id, p.into()).await, "D1: bare user {p}");
    }
    env.assert_consistent(env.tenant).await;
}

// -------------------------------------------------------------------------------- D4, D5

/// [permission set (D4)](tenantry_core::Rule::PermissionSet): every one of the 30 permissions, the empty set and the full set are stored and read
/// back exactly, on users and on templates.
pub async fn d4_permission_sets_round_trip_through_the_store(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let mut expected: Vec<(UserId, Permissions)> = Vec::new();
    for (i, p) in Permission::all().enumerate() {
        let u = env
            .invite_as(
                env.tenant,
                env.admin,
                &request_with(&format!("p{i:02}@acme.test"), p.flag(), None, false),
            )
            .await
            .user;
        expected.push((u.id, p.flag()));
    }
    let alternating = Permissions::from_bits_truncate(0x1555_5555);
    for (i, set) in [Permissions::empty(), Permissions::all(), alternating]
        .into_iter()
        .enumerate()
    {
        let u = env
            .invite_as(
                env.tenant,
                env.admin,
                &request_with(&format!("set{i}@acme.test"), set, None, true),
            )
            .await
            .user;
        expected.push((u.id, set));
    }
    for (id, set) in &expected {
        assert_eq!(env.user(env.tenant, *id).await.grants, *set, "D4: by id");
    }
    let listed: BTreeMap<UserId, Permissions> = env
        .users(env.tenant)
        .await
        .into_iter()
        .map(|u| (u.id, u.grants))
        .collect();
    for (id, set) in &expected {
        assert_eq!(listed.get(id), Some(set), "D4: by listing");
    }

    let mut templates = Vec::new();
    for (i, c) in Category::ALL.into_iter().enumerate() {
        let t = env
            .new_template(&format!("Category {i}"), Permissions::category(c))
            .await;
        templates.push((t.id, Permissions::category(c)));
    }
    for (n, set) in [
        ("All", Permissions::all()),
        ("None", Permissions::empty()),
        ("Alternating", alternating),
    ] {
        templates.push((env.new_template(n, set).await.id, set));
    }
    for (id, set) in &templates {
        let t = env
            .app
            .template(env.tenant, ActorRef::System, *id)
            .await
            .unwrap();
        assert_eq!(t.permissions, *set, "D4: template by id");
    }
    let listed: BTreeMap<_, _> = env
        .app
        .templates(env.tenant, ActorRef::System)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.permissions))
        .collect();
    for (id, set) in &templates {
        assert_eq!(listed.get(id), Some(set), "D4: template by listing");
    }
    // Edits round trip too.
    let (id, _) = templates[0];
    env.app
        .edit_template(env.tenant, env.admin, id, &set_permissions(alternating))
        .await
        .unwrap();
    assert_eq!(
        env.app
            .template(env.tenant, ActorRef::System, id)
            .await
            .unwrap()
            .permissions,
        alternating
    );
}

/// [CRM access (D5)](tenantry_core::Rule::CrmAccess): admins always have CRM access (invited admins too, edits cannot turn it off);
/// promoting turns it on, demoting keeps it; turning it off removes only CRM access.
pub async fn d5_crm_access_rules_persist(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("second@acme.test", Role::Admin),
        )
        .await;
    assert!(
        invited.user.crm_access,
        "D5: an invited admin has CRM access"
    );
    assert!(env.user(env.tenant, invited.user.id).await.crm_access);
    let admin2 = env.accept(env.tenant, &invited).await;
    assert_rule(
        env.app
            .edit_user(
                env.tenant,
                env.admin,
                admin2.id,
                &UserEdit {
                    crm_access: Some(false),
                    ..UserEdit::default()
                },
            )
            .await,
        &E::AdminCrmRequired,
    );
    assert!(env.user(env.tenant, admin2.id).await.crm_access);

    // Demoting keeps CRM; the user then holds only its grants.
    let demoted = env
        .edit(
            admin2.id,
            &UserEdit {
                role: Some(Role::User),
                grants: Some(Permissions::CONVERSATIONS_VIEW),
                ..UserEdit::default()
            },
        )
        .await;
    assert_eq!((demoted.role, demoted.crm_access), (Role::User, true));
    assert!(allowed(&env, admin2.id, Request::Crm).await);
    // Turning CRM off removes CRM access only.
    let off = env
        .edit(
            admin2.id,
            &UserEdit {
                crm_access: Some(false),
                ..UserEdit::default()
            },
        )
        .await;
    assert!(!off.crm_access);
    assert!(!env.user(env.tenant, admin2.id).await.crm_access);
    let d = env
        .app
        .authorize(env.tenant, admin2.id, Request::Crm)
        .await
        .unwrap();
    assert_eq!((d.is_allowed(), d.reason()), (false, Reason::NoCrmAccess));
    assert!(
        allowed(
            &env,
            admin2.id,
            perm(Category::Conversations, Action::View).into()
        )
        .await
    );
    // Promoting turns it on.
    let promoted = env.edit(admin2.id, &role_edit(Role::Admin)).await;
    assert!(promoted.crm_access);
    assert!(env.user(env.tenant, admin2.id).await.crm_access);
    env.assert_consistent(env.tenant).await;
}

// ------------------------------------------------------------------------------------ D6

/// [current access (D6)](tenantry_core::Rule::CurrentAccess): template edits (and direct-grant and template-assignment edits) reach every
/// referencing user at the very next authorize call.
pub async fn d6_template_edits_reach_users_at_next_authorize(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let conv_view = perm(Category::Conversations, Action::View);
    let analytics_view = perm(Category::Analytics, Action::View);
    let settings_view = perm(Category::Settings, Action::View);
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(
            env.active(&request_with(
                &format!("agent{i}@acme.test"),
                Permissions::empty(),
                Some(t.id),
                false,
            ))
            .await,
        );
    }
    for u in &members {
        let d = env
            .app
            .authorize(env.tenant, u.id, conv_view.into())
            .await
            .unwrap();
        assert_eq!(d.reason(), Reason::Template { template_id: t.id });
        assert!(!allowed(&env, u.id, analytics_view.into()).await);
    }
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            t.id,
            &set_permissions(Permissions::ANALYTICS_VIEW),
        )
        .await
        .unwrap();
    for u in &members {
        assert!(
            !allowed(&env, u.id, conv_view.into()).await,
            "D6: removed at once"
        );
        assert!(
            allowed(&env, u.id, analytics_view.into()).await,
            "D6: added at once"
        );
        assert_eq!(
            env.app
                .effective_permissions(env.tenant, u.id)
                .await
                .unwrap(),
            (Permissions::ANALYTICS_VIEW, false)
        );
    }
    // Back and forth, checked right after each edit.
    for round in 0..4 {
        let p = if round % 2 == 0 {
            Permissions::CONVERSATIONS_VIEW
        } else {
            Permissions::ANALYTICS_VIEW
        };
        env.app
            .edit_template(env.tenant, env.admin, t.id, &set_permissions(p))
            .await
            .unwrap();
        let u = &members[round % members.len()];
        assert_eq!(allowed(&env, u.id, conv_view.into()).await, round % 2 == 0);
        assert_eq!(
            allowed(&env, u.id, analytics_view.into()).await,
            round % 2 == 1
        );
    }
    // Direct grants apply at once.
    let u = &members[0];
    env.edit(
        u.id,
        &UserEdit {
            grants: Some(Permissions::SETTINGS_VIEW),
            ..UserEdit::default()
        },
    )
    .await;
    let d = env
        .app
        .authorize(env.tenant, u.id, settings_view.into())
        .await
        .unwrap();
    assert_eq!((d.is_allowed(), d.reason()), (true, Reason::DirectGrant));
    // Moving to another template, then clearing it, applies at once.
    let t2 = env
        .new_template("Experimenters", Permissions::EXPERIMENTS_VIEW)
        .await;
    env.edit(
        u.id,
        &UserEdit {
            template_id: Some(Some(t2.id)),
            ..UserEdit::default()
        },
    )
    .await;
    assert!(allowed(&env, u.id, perm(Category::Experiments, Action::View).into()).await);
    assert!(!allowed(&env, u.id, conv_view.into()).await);
    env.edit(
        u.id,
        &UserEdit {
            template_id: Some(None),
            ..UserEdit::default()
        },
    )
    .await;
    assert_eq!(env.user(env.tenant, u.id).await.template_id, None);
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, u.id)
            .await
            .unwrap(),
        (Permissions::SETTINGS_VIEW, false)
    );
    // Suspending applies at once, and so does reactivating.
    env.edit(u.id, &status_edit(Status::Suspended)).await;
    let d = env
        .app
        .authorize(env.tenant, u.id, settings_view.into())
        .await
        .unwrap();
    assert_eq!((d.is_allowed(), d.reason()), (false, Reason::Suspended));
    env.edit(u.id, &status_edit(Status::Active)).await;
    assert!(allowed(&env, u.id, settings_view.into()).await);
}

/// [current access (D6)](tenantry_core::Rule::CurrentAccess): invited, suspended and deleted users hold nothing, CRM included, whatever they were
/// granted.
pub async fn d6_inactive_and_deleted_users_hold_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let t = env.new_template("Everything", Permissions::all()).await;
    let everything = |addr: &str| request_with(addr, Permissions::all(), Some(t.id), true);
    let invited = env
        .invite_as(env.tenant, env.admin, &everything("invited@acme.test"))
        .await
        .user;
    let suspended = env.active(&everything("suspended@acme.test")).await;
    env.edit(suspended.id, &status_edit(Status::Suspended))
        .await;
    let deleted = env.active(&everything("deleted@acme.test")).await;
    env.app
        .delete_user(env.tenant, env.admin, deleted.id)
        .await
        .unwrap();
    let admin2 = env.active_admin("admin2@acme.test").await;
    env.edit(admin2.id, &status_edit(Status::Suspended)).await;

    for (id, reason) in [
        (invited.id, Reason::Invited),
        (suspended.id, Reason::Suspended),
        (admin2.id, Reason::Suspended),
        (deleted.id, Reason::UnknownUser),
    ] {
        for p in Permission::all() {
            let d = env.app.authorize(env.tenant, id, p.into()).await.unwrap();
            assert_eq!((d.is_allowed(), d.reason()), (false, reason), "D6: {p}");
        }
        let d = env
            .app
            .authorize(env.tenant, id, Request::Crm)
            .await
            .unwrap();
        assert_eq!((d.is_allowed(), d.reason()), (false, reason), "D6: CRM");
    }
    for id in [invited.id, suspended.id, admin2.id] {
        assert_eq!(
            env.app.effective_permissions(env.tenant, id).await.unwrap(),
            (Permissions::empty(), false)
        );
    }
    assert_rule(
        env.app.effective_permissions(env.tenant, deleted.id).await,
        &E::UserNotFound,
    );
}
