//! One scenario per behaviour a storage backend can break, named after its rule.
//!
//! Every scenario takes a fresh, empty store, builds a [`tenantry_service::Tenantry`] on it (with a
//! [`tenantry_service::ManualClock`] and an [`tenantry_service::InMemoryMailer`]) and asserts through the
//! public service, so the same checks run on every backend.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use tenantry_core::decide::{self, Acting, Ctx, NewInvite};
use tenantry_core::{
    AuditAction, AuditTarget, Error as E, Field, FieldChange, MessageId, Outcome, TokenHash, Value,
};
use tenantry_service::{
    Action, ActorRef, Attribution, BulkInvite, BulkOutcome, Category, Cursor, DeliveryState,
    EmailError, Error, MailError, Message, Permission, Permissions, Policy, QueryError, Reason,
    Request, Role, RoleTemplate, Rule, SeatUsage, SortBy, Status, Store, StoreError,
    TemplateDeletion, TemplateEdit, TemplateName, User, UserEdit, UserId, UserQuery,
};
use time::Duration;

use crate::support::{
    BASE_URL, Env, Options, START, assert_rule, email, id_random_bytes, outcome, request,
    request_with, rule, unknown_template, unknown_user, with_status,
};

fn perm(category: Category, action: Action) -> Permission {
    Permission::new(category, action)
}

fn users_perm(action: Action) -> Permission {
    perm(Category::Users, action)
}

fn status_edit(status: Status) -> UserEdit {
    UserEdit {
        status: Some(status),
        ..UserEdit::default()
    }
}

fn role_edit(role: Role) -> UserEdit {
    UserEdit {
        role: Some(role),
        ..UserEdit::default()
    }
}

fn name(text: &str) -> TemplateName {
    TemplateName::parse(text).expect("a valid template name")
}

fn rename(text: &str) -> TemplateEdit {
    TemplateEdit {
        name: Some(name(text)),
        permissions: None,
    }
}

fn set_permissions(p: Permissions) -> TemplateEdit {
    TemplateEdit {
        name: None,
        permissions: Some(p),
    }
}

async fn allowed(env: &Env, user: UserId, request: Request) -> bool {
    env.app
        .authorize(env.tenant, user, request)
        .await
        .expect("authorize")
        .is_allowed()
}

// ------------------------------------------------------------------------------- D1, D2

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

// ------------------------------------------------------------------------------- D4, D5

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

// ------------------------------------------------------------------------------- D7, D8

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

// ------------------------------------------------------------------------------------ D9

/// [seat limit (D9)](tenantry_core::Rule::SeatLimit): an invite at the limit fails with a typed error; no row, no outbox message, no mail;
/// usage is reported as used, limit, remaining, at-limit; deleting frees the seat.
pub async fn d9_invite_at_limit_fails_and_stores_nothing(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(3),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        env.app.seat_usage(env.tenant).await.unwrap(),
        SeatUsage {
            used: 1,
            limit: Some(3),
            remaining: Some(2),
            at_limit: false
        }
    );
    let a = env.invite("a@acme.test").await.user;
    env.invite("b@acme.test").await;
    assert_eq!(
        env.app.seat_usage(env.tenant).await.unwrap(),
        SeatUsage {
            used: 3,
            limit: Some(3),
            remaining: Some(0),
            at_limit: true
        }
    );
    let counters = env.counters(env.tenant).await;
    let outbox = env.outbox_len(env.tenant).await;
    let sent = env.mailer.attempts();
    for role in [Role::User, Role::Admin] {
        assert_rule(
            env.app
                .invite(env.tenant, env.admin, &request("c@acme.test", role))
                .await,
            &E::SeatLimitReached { used: 3, limit: 3 },
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        counters,
        "D9: nothing stored"
    );
    assert_eq!(
        env.outbox_len(env.tenant).await,
        outbox,
        "D9: nothing queued"
    );
    assert_eq!(env.mailer.attempts(), sent, "D9: no mail sent");
    let users = env.assert_consistent(env.tenant).await;
    assert_eq!(users.len(), 3);
    assert!(users.iter().all(|u| u.email.key() != "c@acme.test"));

    env.app
        .delete_user(env.tenant, env.admin, a.id)
        .await
        .unwrap();
    assert_eq!(
        env.app.seat_usage(env.tenant).await.unwrap(),
        SeatUsage {
            used: 2,
            limit: Some(3),
            remaining: Some(1),
            at_limit: false
        },
        "D9: deleting frees the seat"
    );
    env.invite("c@acme.test").await;
    assert_eq!(env.counters(env.tenant).await.seats_used, 3);
    // Suspended and active users hold seats as invited ones do.
    env.assert_consistent(env.tenant).await;
}

/// [seat limit (D9)](tenantry_core::Rule::SeatLimit): the limit may be lowered below usage (over the limit, invites fail until under);
/// `None` is unlimited.
pub async fn d9_limit_lowered_below_usage_blocks_invites_until_under(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(env.invite(&format!("u{i}@acme.test")).await.user);
    }
    let s = env.active_user("active@acme.test").await;
    env.edit(s.id, &status_edit(Status::Suspended)).await;
    assert_eq!(
        env.app.seat_usage(env.tenant).await.unwrap(),
        SeatUsage {
            used: 6,
            limit: None,
            remaining: None,
            at_limit: false
        }
    );
    let usage = env.app.set_user_limit(env.tenant, Some(3)).await.unwrap();
    assert_eq!(
        usage,
        SeatUsage {
            used: 6,
            limit: Some(3),
            remaining: Some(0),
            at_limit: true
        }
    );
    assert_eq!(env.app.seat_usage(env.tenant).await.unwrap(), usage);
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.user_limit,
        Some(3)
    );
    assert_rule(
        env.app
            .invite(env.tenant, env.admin, &request("new@acme.test", Role::User))
            .await,
        &E::SeatLimitReached { used: 6, limit: 3 },
    );
    for (i, u) in users.iter().take(3).enumerate() {
        env.app
            .delete_user(env.tenant, env.admin, u.id)
            .await
            .unwrap();
        let used = 5 - u32::try_from(i).unwrap();
        if used >= 3 {
            assert_rule(
                env.app
                    .invite(env.tenant, env.admin, &request("new@acme.test", Role::User))
                    .await,
                &E::SeatLimitReached { used, limit: 3 },
            );
        }
    }
    // Now 3 of 3: still at the limit; one more delete puts the tenant under it.
    env.app
        .delete_user(env.tenant, env.admin, s.id)
        .await
        .unwrap();
    assert_eq!(
        env.app.seat_usage(env.tenant).await.unwrap(),
        SeatUsage {
            used: 2,
            limit: Some(3),
            remaining: Some(1),
            at_limit: false
        }
    );
    env.invite("new@acme.test").await;
    assert!(env.app.seat_usage(env.tenant).await.unwrap().at_limit);
    let usage = env.app.set_user_limit(env.tenant, None).await.unwrap();
    assert_eq!(
        (usage.limit, usage.remaining, usage.at_limit),
        (None, None, false)
    );
    env.invite("more@acme.test").await;
    env.assert_consistent(env.tenant).await;
}

// ----------------------------------------------------------------------------------- D10

/// [invitations (D10)](tenantry_core::Rule::Invitations): accepting with the invited address (any case) activates the user and sets its last
/// login to the time of acceptance; another address is refused and changes nothing.
pub async fn d10_accept_activates_with_matching_email_only(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with(
                "Carol@Acme.test",
                Permissions::CONVERSATIONS_VIEW,
                None,
                true,
            ),
        )
        .await;
    assert_eq!(invited.user.status, Status::Invited);
    assert_eq!(invited.user.last_login, None);
    assert_eq!(
        invited.user.invite_expires_at,
        Some(START + Duration::days(7)),
        "D10: default lifetime 7 days"
    );
    let token = env.token(env.tenant, invited.message_id).await;
    assert!(
        env.mailer.sent()[0]
            .text
            .contains(&format!("{BASE_URL}?token={token}")),
        "D10: the link is built from the configured base URL"
    );
    env.clock.advance(Duration::hours(1));
    let before = env.counters(env.tenant).await;
    assert_rule(
        env.app.accept_invitation(&token, "someone@else.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    // Since D24 a wrong address on a live token is a counted (committed) failed attempt:
    // the tenant's version moves, but no seat, admin or user row changes.
    let after = env.counters(env.tenant).await;
    assert_eq!(
        (after.seats_used, after.active_admins),
        (before.seats_used, before.active_admins)
    );
    assert_eq!(
        after.version,
        before.version + 1,
        "D24: the attempt is committed"
    );
    assert_eq!(env.user(env.tenant, invited.user.id).await, invited.user);

    let user = env
        .app
        .accept_invitation(&token, " carol@ACME.test ")
        .await
        .unwrap();
    let now = START + Duration::hours(1);
    assert_eq!(user.status, Status::Active);
    assert_eq!(
        user.last_login,
        Some(now),
        "D10: last login is the acceptance"
    );
    assert_eq!(user.invite_expires_at, None);
    assert_eq!(env.user(env.tenant, user.id).await, user, "D10: persisted");
    assert!(
        allowed(
            &env,
            user.id,
            perm(Category::Conversations, Action::View).into()
        )
        .await
    );
    assert!(allowed(&env, user.id, Request::Crm).await);

    // An accepted admin invitation adds an active admin.
    let admin = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("boss@acme.test", Role::Admin),
        )
        .await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 1);
    env.accept(env.tenant, &admin).await;
    assert_eq!(env.counters(env.tenant).await.active_admins, 2);
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): a token works once.
pub async fn d10_token_is_single_use(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("dan@acme.test").await;
    let token = env.token(env.tenant, invited.message_id).await;
    let user = env
        .app
        .accept_invitation(&token, "dan@acme.test")
        .await
        .unwrap();
    env.clock.advance(Duration::minutes(5));
    let before = env.counters(env.tenant).await;
    for _ in 0..3 {
        assert_rule(
            env.app.accept_invitation(&token, "dan@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(env.counters(env.tenant).await, before);
    assert_eq!(
        env.user(env.tenant, user.id).await.last_login,
        Some(START),
        "D10: a second accept changes nothing"
    );
    // Suspending and reactivating does not revive the token.
    env.edit(user.id, &status_edit(Status::Suspended)).await;
    env.edit(user.id, &status_edit(Status::Active)).await;
    assert_rule(
        env.app.accept_invitation(&token, "dan@acme.test").await,
        &E::InvalidInvitation,
    );
    let accepted = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::InvitationAccepted)
        .count();
    assert_eq!(accepted, 1);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): a token expires after the configured lifetime (7 days by default): it works until
/// just before and is refused from the expiry on; the user keeps its row.
pub async fn d10_token_expires_after_ttl(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let early = env.invite("early@acme.test").await;
    let late = env.invite("late@acme.test").await;
    env.clock.advance(Duration::days(7) - Duration::seconds(1));
    env.accept(env.tenant, &early).await;
    env.clock.advance(Duration::seconds(1));
    let token = env.token(env.tenant, late.message_id).await;
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(
        env.user(env.tenant, late.user.id).await.status,
        Status::Invited
    );

    // A shorter configured lifetime is honoured by the store's expiry too.
    let short = Env::with(
        Arc::clone(env.app.store()),
        Options {
            policy: Policy {
                invite_ttl: Duration::hours(1),
                ..Policy::default()
            },
            admin_email: "admin@short.test",
            ..Options::default()
        },
    )
    .await;
    let a = short.invite("a@short.test").await;
    let b = short.invite("b@short.test").await;
    assert_eq!(a.user.invite_expires_at, Some(START + Duration::hours(1)));
    short.clock.advance(Duration::minutes(59));
    short.accept(short.tenant, &a).await;
    short.clock.advance(Duration::minutes(1));
    let token = short.token(short.tenant, b.message_id).await;
    assert_rule(
        short.app.accept_invitation(&token, "b@short.test").await,
        &E::InvalidInvitation,
    );
}

/// The users the host sees as expired invitations now ([expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations)).
async fn expired_ids(env: &Env) -> BTreeSet<UserId> {
    env.app
        .expired_invitations(env.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.id)
        .collect()
}

/// [invitations (D10)](tenantry_core::Rule::Invitations) with [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations), at the boundary: an invitation accepts until one nanosecond before its
/// expiry and is refused from the expiry on, exactly when hosts start to see it as expired
/// (never both, never neither). The clock stands at an instant with sub-microsecond digits,
/// so a backend that rounds stored times (to microseconds, say) moves the expiry and fails
/// here; an invitation resent after expiring follows the same boundary.
pub async fn d10_accept_at_exact_expiry_is_refused_one_nanosecond_before_accepted(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let ttl = Policy::default().invite_ttl;
    assert_eq!(ttl, Duration::days(7), "D10: 7 days by default");
    // Not a whole microsecond: 789 ns would be lost to a microsecond timestamp.
    let issued = START + Duration::nanoseconds(123_456_789);
    env.clock.set(issued);
    let early = env.invite("early@acme.test").await;
    let late = env.invite("late@acme.test").await;
    let expires = issued + ttl;
    for invited in [&early, &late] {
        assert_eq!(invited.user.invite_expires_at, Some(expires));
        assert_eq!(
            env.user(env.tenant, invited.user.id)
                .await
                .invite_expires_at,
            Some(expires),
            "D10: the expiry is stored to the nanosecond"
        );
    }

    // One nanosecond before the expiry: valid, and not listed as expired.
    env.clock.set(expires - Duration::nanoseconds(1));
    assert!(expired_ids(&env).await.is_empty(), "D20: not expired yet");
    assert!(
        env.app
            .purge_expired_invitations(env.tenant, env.admin)
            .await
            .unwrap()
            .is_empty()
    );
    let accepted = env.accept(env.tenant, &early).await;
    assert_eq!(accepted.status, Status::Active);
    assert_eq!(
        accepted.last_login,
        Some(expires - Duration::nanoseconds(1))
    );

    // Exactly at the expiry: refused, listed as expired, still invited and holding its seat.
    env.clock.set(expires);
    let token = env.token(env.tenant, late.message_id).await;
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(expired_ids(&env).await, BTreeSet::from([late.user.id]));
    let row = env.user(env.tenant, late.user.id).await;
    assert_eq!(row.status, Status::Invited);
    assert_eq!(row.invite_expires_at, Some(expires));
    assert_eq!(env.counters(env.tenant).await.seats_used, 3);

    // Resent at an odd instant, the new token follows the same boundary.
    let resent_at = expires + Duration::nanoseconds(1_001);
    env.clock.set(resent_at);
    let m = env.resend(late.user.id).await;
    let renewed = resent_at + ttl;
    assert_eq!(
        m.expires_at, renewed,
        "D26: the resend returns the new expiry"
    );
    assert_eq!(
        env.user(env.tenant, late.user.id).await.invite_expires_at,
        Some(renewed),
        "D10: a resend sets a new expiry, stored to the nanosecond"
    );
    assert!(
        expired_ids(&env).await.is_empty(),
        "D20: resent, not expired"
    );
    let token = env.token(env.tenant, m.message_id).await;
    env.clock.set(renewed);
    assert_rule(
        env.app.accept_invitation(&token, "late@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(expired_ids(&env).await, BTreeSet::from([late.user.id]));
    // Back one nanosecond (a refused accept changes nothing): the same token is valid.
    env.clock.set(renewed - Duration::nanoseconds(1));
    assert!(expired_ids(&env).await.is_empty());
    let accepted = env
        .app
        .accept_invitation(&token, "late@acme.test")
        .await
        .unwrap();
    assert_eq!(accepted.status, Status::Active);
    assert_eq!(accepted.invite_expires_at, None);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): resend issues a new token and invalidates every older one, never creating a second
/// user; an expired invitation can be resent; only invited users can be resent to.
pub async fn d10_resend_invalidates_older_tokens_and_expired_can_be_resent(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("erin@acme.test").await;
    let t0 = env.token(env.tenant, invited.message_id).await;
    env.clock.advance(Duration::days(8));
    assert_rule(
        env.app.accept_invitation(&t0, "erin@acme.test").await,
        &E::InvalidInvitation,
    );
    let m1 = env.resend(invited.user.id).await;
    let t1 = env.token(env.tenant, m1.message_id).await;
    assert_ne!(t0, t1);
    let row = env.user(env.tenant, invited.user.id).await;
    assert_eq!(row.status, Status::Invited);
    assert_eq!(
        row.invite_expires_at,
        Some(START + Duration::days(15)),
        "D10: a resend sets a new expiry"
    );
    env.clock.advance(Duration::minutes(1));
    let m2 = env.resend(invited.user.id).await;
    let t2 = env.token(env.tenant, m2.message_id).await;
    assert_eq!(
        env.users(env.tenant).await.len(),
        2,
        "D10: never a second user"
    );
    assert_eq!(env.counters(env.tenant).await.seats_used, 2);
    let sent: Vec<_> = env.mailer.sent();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|m| m.to == "erin@acme.test" && m.user_id == invited.user.id)
    );
    for old in [&t0, &t1] {
        assert_rule(
            env.app.accept_invitation(old, "erin@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    env.app
        .accept_invitation(&t2, "erin@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::NotInvited {
            status: Status::Active,
        },
    );
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): changing an invited user's address invalidates its tokens (with either address);
/// a resend then reaches the new address.
pub async fn d10_email_change_revokes_tokens(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("dave@acme.test").await;
    let t0 = env.token(env.tenant, invited.message_id).await;
    env.edit(
        invited.user.id,
        &UserEdit {
            email: Some(email("david@acme.test")),
            ..UserEdit::default()
        },
    )
    .await;
    for addr in ["david@acme.test", "dave@acme.test"] {
        assert_rule(
            env.app.accept_invitation(&t0, addr).await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited
    );
    let m = env.resend(invited.user.id).await;
    let msg = env
        .mailer
        .sent()
        .into_iter()
        .find(|x| x.id == m.message_id)
        .unwrap();
    assert_eq!(msg.to, "david@acme.test");
    let t1 = env.token(env.tenant, m.message_id).await;
    // The old address is a wrong one now: a counted attempt (D24), the first on this token.
    assert_rule(
        env.app.accept_invitation(&t1, "dave@acme.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    let user = env
        .app
        .accept_invitation(&t1, "David@acme.test")
        .await
        .unwrap();
    assert_eq!(user.email.as_str(), "david@acme.test");
    env.assert_consistent(env.tenant).await;
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): at most 3 resends in 10 minutes by default; a refused resend says when the next is
/// allowed, sends nothing and leaves the current token valid.
pub async fn d10_resend_is_rate_limited(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("fay@acme.test").await;
    let mut last = invited.message_id;
    for _ in 0..3 {
        last = env.resend(invited.user.id).await.message_id;
        env.clock.advance(Duration::minutes(1));
    }
    let outbox = env.outbox_len(env.tenant).await;
    let mails = env.mailer.attempts();
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::ResendRateLimited {
            retry_at: START + Duration::minutes(10),
        },
    );
    assert_eq!(
        env.outbox_len(env.tenant).await,
        outbox,
        "D10: nothing queued"
    );
    assert_eq!(env.mailer.attempts(), mails, "D10: nothing sent");
    env.clock.set(START + Duration::minutes(10));
    let next = env
        .app
        .resend_invitation(env.tenant, env.admin, invited.user.id)
        .await
        .expect("D10: allowed again at retry_at");
    env.remember(next.message_id, &next.accept_link);
    let next = next.message_id;
    assert_ne!(next, last);
    // The window slides: the next is refused until the second resend leaves it.
    assert_rule(
        env.app
            .resend_invitation(env.tenant, env.admin, invited.user.id)
            .await,
        &E::ResendRateLimited {
            retry_at: START + Duration::minutes(11),
        },
    );
    let token = env.token(env.tenant, next).await;
    env.app
        .accept_invitation(&token, "fay@acme.test")
        .await
        .unwrap();
    // Per user: another user's resends are not limited by these.
    let other = env.invite("gus@acme.test").await;
    env.app
        .resend_invitation(env.tenant, env.admin, other.user.id)
        .await
        .unwrap();
}

/// [invitations (D10)](tenantry_core::Rule::Invitations): expired, used, superseded, revoked-by-delete, unknown and malformed tokens are all
/// refused with one error kind and one message.
pub async fn d10_invalid_tokens_share_one_error_kind(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let expired = env.invite("expired@acme.test").await;
    env.clock.advance(Duration::days(8));
    let used = env.invite("used@acme.test").await;
    let superseded = env.invite("superseded@acme.test").await;
    let deleted = env.invite("deleted@acme.test").await;
    let t_expired = env.token(env.tenant, expired.message_id).await;
    let t_used = env.token(env.tenant, used.message_id).await;
    let t_superseded = env.token(env.tenant, superseded.message_id).await;
    let t_deleted = env.token(env.tenant, deleted.message_id).await;
    env.accept(env.tenant, &used).await;
    env.app
        .resend_invitation(env.tenant, env.admin, superseded.user.id)
        .await
        .unwrap();
    env.app
        .delete_user(env.tenant, env.admin, deleted.user.id)
        .await
        .unwrap();
    let prefix = env.tenant.as_uuid().simple().to_string();
    let unknown = format!("{prefix}.{}", "A".repeat(43));
    let unknown_tenant = format!("{}.{}", uuid::Uuid::now_v7().simple(), "B".repeat(43));
    let (_, secret) = t_superseded.split_once('.').unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", t_expired, "expired@acme.test"),
        ("used", t_used, "used@acme.test"),
        ("superseded", t_superseded.clone(), "superseded@acme.test"),
        ("deleted user", t_deleted, "deleted@acme.test"),
        ("unknown", unknown, "used@acme.test"),
        ("unknown tenant", unknown_tenant, "used@acme.test"),
        (
            "other tenant prefix",
            format!("{}.{secret}", uuid::Uuid::now_v7().simple()),
            "superseded@acme.test",
        ),
        ("garbage", "not-a-token".into(), "used@acme.test"),
        ("empty", String::new(), "used@acme.test"),
        (
            "truncated",
            t_superseded[..40].to_owned(),
            "superseded@acme.test",
        ),
    ];
    let before = env.counters(env.tenant).await;
    let mut messages = BTreeSet::new();
    for (what, token, addr) in &cases {
        let e = rule(env.app.accept_invitation(token, addr).await);
        assert_eq!(e, E::InvalidInvitation, "D10: {what}");
        messages.insert(e.to_string());
    }
    assert_eq!(messages.len(), 1, "D10: one message for all: {messages:?}");
    assert_eq!(env.counters(env.tenant).await, before);
}

/// [invitations (D10)](tenantry_core::Rule::Invitations)/[concurrency (D16)](tenantry_core::Rule::Concurrency): two invitations can never share a token hash; the store refuses the second
/// and nothing of it is stored.
pub async fn d10_token_hash_collision_is_refused_by_the_store(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let secret = [42u8; 32];
    env.random.push(&secret);
    let first = env.invite("first@acme.test").await;
    let before = env.counters(env.tenant).await;
    let outbox = env.outbox_len(env.tenant).await;
    env.random.push(&secret);
    let second = env
        .app
        .invite(
            env.tenant,
            env.admin,
            &request("second@acme.test", Role::User),
        )
        .await;
    env.random.clear();
    assert!(
        matches!(second, Err(Error::Store(_))),
        "D10: a duplicate token hash must be refused: {second:?}"
    );
    assert_eq!(env.counters(env.tenant).await, before, "nothing stored");
    assert_eq!(env.outbox_len(env.tenant).await, outbox, "nothing queued");
    let users = env.assert_consistent(env.tenant).await;
    assert!(users.iter().all(|u| u.email.key() != "second@acme.test"));
    // The first invitation still works.
    env.accept(env.tenant, &first).await;
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

// ----------------------------------------------------------------------------------- D13

/// [audit log (D13)](tenantry_core::Rule::AuditLog): every successful change appends an event (tenant, actor, action, target, time,
/// changes) and every refused management attempt appends a refusal naming its rule.
pub async fn d13_audit_records_changes_and_refused_attempts(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(3),
            ..Options::default()
        },
    )
    .await;
    let start = env.audit(env.tenant).await;
    assert_eq!(
        start.iter().map(|r| r.event.action).collect::<Vec<_>>(),
        vec![AuditAction::TenantCreated, AuditAction::UserInvited],
        "D13: creating a tenant is audited"
    );
    let mut expect: Vec<(AuditAction, ActorRef, AuditTarget, Option<Rule>)> = Vec::new();
    let tick = || env.clock.advance(Duration::seconds(10));

    tick();
    let invited = env.invite("una@acme.test").await;
    let u = invited.user.id;
    expect.push((
        AuditAction::UserInvited,
        ActorRef::User(env.admin),
        AuditTarget::User(u),
        None,
    ));
    tick();
    env.accept(env.tenant, &invited).await;
    expect.push((
        AuditAction::InvitationAccepted,
        ActorRef::User(u),
        AuditTarget::User(u),
        None,
    ));
    tick();
    env.app.record_sign_in(env.tenant, u).await.unwrap();
    expect.push((
        AuditAction::SignedIn,
        ActorRef::User(u),
        AuditTarget::User(u),
        None,
    ));
    tick();
    env.edit(
        u,
        &UserEdit {
            crm_access: Some(true),
            ..UserEdit::default()
        },
    )
    .await;
    expect.push((
        AuditAction::UserEdited,
        ActorRef::User(env.admin),
        AuditTarget::User(u),
        None,
    ));
    tick();
    let t = env.new_template("Agents", Permissions::empty()).await;
    expect.push((
        AuditAction::TemplateCreated,
        ActorRef::User(env.admin),
        AuditTarget::Template(t.id),
        None,
    ));
    tick();
    env.app
        .edit_template(env.tenant, env.admin, t.id, &rename("Agents 2"))
        .await
        .unwrap();
    expect.push((
        AuditAction::TemplateEdited,
        ActorRef::User(env.admin),
        AuditTarget::Template(t.id),
        None,
    ));
    tick();
    let invited2 = env.invite("vic@acme.test").await;
    let v = invited2.user.id;
    expect.push((
        AuditAction::UserInvited,
        ActorRef::User(env.admin),
        AuditTarget::User(v),
        None,
    ));
    tick();
    env.app
        .resend_invitation(env.tenant, env.admin, v)
        .await
        .unwrap();
    expect.push((
        AuditAction::InvitationResent,
        ActorRef::User(env.admin),
        AuditTarget::User(v),
        None,
    ));
    // Refusals: D9 (limit), D8 (last admin), D7 (no permission), D12 (template in use).
    tick();
    let counters = env.counters(env.tenant).await;
    assert!(
        env.app
            .invite(env.tenant, env.admin, &request("wes@acme.test", Role::User))
            .await
            .is_err()
    );
    expect.push((
        AuditAction::UserInvited,
        ActorRef::User(env.admin),
        AuditTarget::Tenant,
        Some(Rule::SeatLimit),
    ));
    tick();
    assert!(
        env.app
            .delete_user(env.tenant, env.admin, env.admin)
            .await
            .is_err()
    );
    expect.push((
        AuditAction::UserDeleted,
        ActorRef::User(env.admin),
        AuditTarget::User(env.admin),
        Some(Rule::LastAdmin),
    ));
    tick();
    assert!(
        env.app
            .edit_user(env.tenant, u, v, &status_edit(Status::Suspended))
            .await
            .is_err()
    );
    expect.push((
        AuditAction::UserEdited,
        ActorRef::User(u),
        AuditTarget::User(v),
        Some(Rule::ManagementAuthority),
    ));
    tick();
    env.edit(
        v,
        &UserEdit {
            template_id: Some(Some(t.id)),
            ..UserEdit::default()
        },
    )
    .await;
    expect.push((
        AuditAction::UserEdited,
        ActorRef::User(env.admin),
        AuditTarget::User(v),
        None,
    ));
    tick();
    assert!(
        env.app
            .delete_template(env.tenant, env.admin, t.id, TemplateDeletion::Refuse)
            .await
            .is_err()
    );
    expect.push((
        AuditAction::TemplateDeleted,
        ActorRef::User(env.admin),
        AuditTarget::Template(t.id),
        Some(Rule::RoleTemplates),
    ));
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        counters.seats_used,
        "refusals store nothing"
    );
    tick();
    env.app.delete_user(env.tenant, env.admin, v).await.unwrap();
    expect.push((
        AuditAction::UserDeleted,
        ActorRef::User(env.admin),
        AuditTarget::User(v),
        None,
    ));
    tick();
    env.app.set_user_limit(env.tenant, Some(10)).await.unwrap();
    expect.push((
        AuditAction::UserLimitChanged,
        ActorRef::System,
        AuditTarget::Tenant,
        None,
    ));

    let log = env.audit(env.tenant).await;
    let new: Vec<_> = log[start.len()..].to_vec();
    assert_eq!(
        new.len(),
        expect.len(),
        "D13: one event per change or refusal: {new:#?}"
    );
    for (i, (record, (action, actor, target, refused))) in new.iter().zip(&expect).enumerate() {
        let e = &record.event;
        assert_eq!(e.tenant_id, env.tenant);
        assert_eq!(
            (e.action, e.actor, e.target),
            (*action, *actor, *target),
            "D13: event {i}"
        );
        let at = START + Duration::seconds(10 * (i64::try_from(i).unwrap() + 1));
        assert_eq!(e.at, at, "D13: event {i} time");
        match (refused, &e.outcome) {
            (None, Outcome::Success) => assert!(
                !e.changes.is_empty() || *action == AuditAction::InvitationResent,
                "D13: event {i} says what changed"
            ),
            (Some(rule), Outcome::Refused { rule: got, message }) => {
                assert_eq!(got, rule, "D13: event {i} names its rule");
                assert!(!message.is_empty());
                if *action == AuditAction::UserInvited {
                    // A refused invite records the address that was tried (and nothing
                    // else); other refusals record no change.
                    assert_eq!(
                        e.changes,
                        vec![FieldChange {
                            field: Field::Email,
                            before: Value::None,
                            after: Value::Text("wes@acme.test".into()),
                        }],
                        "D13: event {i} records the address tried"
                    );
                } else {
                    assert!(e.changes.is_empty());
                }
            }
            (want, got) => panic!("D13: event {i}: expected refusal {want:?}, got {got:?}"),
        }
    }
    // The delete records the address that was removed.
    let last_delete = &new[new.len() - 2].event;
    assert!(last_delete.changes.contains(&FieldChange {
        field: Field::Email,
        before: Value::Text("vic@acme.test".into()),
        after: Value::None,
    }));
}

/// [audit log (D13)](tenantry_core::Rule::AuditLog): permission changes record the before and after sets (user grants, template
/// permissions), and other fields their before/after values.
pub async fn d13_permission_changes_record_before_and_after_sets(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let u = env
        .active(&request_with(
            "p@acme.test",
            Permissions::CONVERSATIONS_VIEW,
            None,
            false,
        ))
        .await;
    let before = Permissions::CONVERSATIONS_VIEW;
    let after = Permissions::CONVERSATIONS_VIEW
        | Permissions::ANALYTICS_VIEW
        | Permissions::EXPERIMENTS_MANAGE;
    env.edit(
        u.id,
        &UserEdit {
            grants: Some(after),
            role: Some(Role::User),
            crm_access: Some(true),
            ..UserEdit::default()
        },
    )
    .await;
    let log = env.audit(env.tenant).await;
    let last = &log.last().unwrap().event;
    assert_eq!(last.action, AuditAction::UserEdited);
    assert!(
        last.changes.contains(&FieldChange {
            field: Field::Grants,
            before: Value::Permissions(before),
            after: Value::Permissions(after),
        }),
        "D13: grants before/after: {:?}",
        last.changes
    );
    assert!(last.changes.contains(&FieldChange {
        field: Field::CrmAccess,
        before: Value::Bool(false),
        after: Value::Bool(true),
    }));
    assert!(
        last.changes.iter().all(|c| c.field != Field::Role),
        "D13: unchanged fields are not listed"
    );
    env.edit(u.id, &role_edit(Role::Admin)).await;
    let last = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert!(last.changes.contains(&FieldChange {
        field: Field::Role,
        before: Value::Role(Role::User),
        after: Value::Role(Role::Admin),
    }));

    let t = env.new_template("T", Permissions::USERS_VIEW).await;
    let created = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert!(created.changes.contains(&FieldChange {
        field: Field::Permissions,
        before: Value::None,
        after: Value::Permissions(Permissions::USERS_VIEW),
    }));
    let new_set = Permissions::USERS_VIEW | Permissions::SETTINGS_EDIT;
    env.app
        .edit_template(env.tenant, env.admin, t.id, &set_permissions(new_set))
        .await
        .unwrap();
    let edited = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert_eq!(edited.target, AuditTarget::Template(t.id));
    assert_eq!(
        edited.changes,
        vec![FieldChange {
            field: Field::Permissions,
            before: Value::Permissions(Permissions::USERS_VIEW),
            after: Value::Permissions(new_set),
        }],
        "D13: template before/after sets"
    );
    // Assigning a template records the reference change.
    let v = env.active_user("v@acme.test").await;
    env.edit(
        v.id,
        &UserEdit {
            template_id: Some(Some(t.id)),
            ..UserEdit::default()
        },
    )
    .await;
    let assigned = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert!(assigned.changes.contains(&FieldChange {
        field: Field::Template,
        before: Value::None,
        after: Value::Template(t.id),
    }));
}

/// [audit log (D13)](tenantry_core::Rule::AuditLog): the log is read page by page from a cursor (`after`), in order, with no gaps or
/// repeats, also while events keep being appended; page sizes are checked.
pub async fn d13_audit_feed_pages_without_gaps_or_repeats(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    for i in 0..30 {
        env.invite(&format!("feed{i:02}@acme.test")).await;
        if i % 4 == 0 {
            // A refusal in between.
            let _ = env
                .app
                .invite(
                    env.tenant,
                    env.admin,
                    &request(&format!("feed{i:02}@acme.test"), Role::User),
                )
                .await;
        }
    }
    let full = env.audit(env.tenant).await;
    let seqs: Vec<u64> = full.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=u64::try_from(full.len()).unwrap()).collect();
    assert_eq!(
        seqs, expected,
        "D13: positions 1, 2, 3, … in the tenant's log"
    );
    for limit in [1u32, 7, 500] {
        let mut read = Vec::new();
        let mut after = 0;
        loop {
            let page = env
                .app
                .audit_log(env.tenant, ActorRef::System, after, limit)
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = last.seq;
            read.extend(page);
        }
        assert_eq!(read, full, "D13: paging by {limit} reads the same log");
    }
    // A feed continued from its cursor sees exactly the new events.
    let cursor = full.last().unwrap().seq;
    let mut fed = Vec::new();
    let mut after = cursor;
    for round in 0..5 {
        env.invite(&format!("late{round}@acme.test")).await;
        let page = env
            .app
            .audit_log(env.tenant, ActorRef::System, after, 3)
            .await
            .unwrap();
        if let Some(last) = page.last() {
            after = last.seq;
        }
        fed.extend(page);
    }
    loop {
        let page = env
            .app
            .audit_log(env.tenant, ActorRef::System, after, 3)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        fed.extend(page);
    }
    let all = env.audit(env.tenant).await;
    assert_eq!(
        fed,
        all[full.len()..].to_vec(),
        "D13: a feed misses and repeats nothing"
    );
    assert_eq!(fed.len(), 5);
    assert!(
        env.app
            .audit_log(env.tenant, ActorRef::System, after + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for limit in [0, 501] {
        assert!(
            matches!(
                env.app.audit_log(env.tenant, ActorRef::System, 0, limit).await,
                Err(Error::Query(QueryError::LimitOutOfRange { limit: l })) if l == limit
            ),
            "D13/D18: page size {limit}"
        );
    }
    // Viewing the log needs users:view.
    let plain = env.active_user("plain@acme.test").await;
    assert_rule(
        env.app
            .audit_log(env.tenant, ActorRef::User(plain.id), 0, 10)
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::View),
        },
    );
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

// ----------------------------------------------------------------------------------- D16

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): a change that names rows which do not exist — a user, a tenant, a message — is
/// refused by the store as a whole: nothing of it lands, not even its audit event, and the
/// version stays.
pub async fn d16_store_refuses_changes_to_missing_rows_and_writes_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = env.app.store();
    let state = st.tenant(env.tenant).await.unwrap().unwrap();
    let audit = env.audit(env.tenant).await.len();
    let mut ghost = env.user(env.tenant, env.admin).await;
    ghost.id = unknown_user();
    ghost.role = Role::User;
    let mut counters = state.counters;
    counters.version += 1;
    let event = env.audit(env.tenant).await.last().unwrap().event.clone();
    let forged = tenantry_core::decide::Change {
        tenant_id: env.tenant,
        expected_version: state.counters.version,
        counters,
        writes: vec![tenantry_core::decide::Write::UpdateUser(ghost)],
        events: vec![event.clone()],
    };
    let refused = st.commit(&forged, &[]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                constraint: tenantry_store::Constraint::MissingRow
            })
        ),
        "{refused:?}"
    );
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // A tenant that does not exist: not found, for changes and for audit events alike.
    let mut elsewhere = forged.clone();
    elsewhere.tenant_id = tenantry_service::TenantId::from_parts(1, [9; 10]);
    elsewhere.writes.clear();
    assert!(matches!(
        st.commit(&elsewhere, &[]).await,
        Err(StoreError::NotFound)
    ));
    let mut stray = event;
    stray.tenant_id = elsewhere.tenant_id;
    assert!(matches!(
        st.append_audit(&stray).await,
        Err(StoreError::NotFound)
    ));
    // A delivery result for a message that does not exist.
    let unknown = MessageId::from_parts(1, [9; 10]);
    assert!(matches!(
        st.record_delivery(
            env.tenant,
            unknown,
            &tenantry_store::DeliveryUpdate::Sent {
                at: env.clock_now()
            }
        )
        .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): a change decided on a snapshot whose version is no longer current is refused with
/// a version mismatch and writes nothing (no row, no audit event, no outbox message).
pub async fn d16_stale_snapshot_commit_is_refused_and_writes_nothing(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = env.app.store();
    let stale = st.tenant(env.tenant).await.unwrap().unwrap();
    let policy = Policy::default();
    let ctx = Ctx {
        state: &stale,
        now: env.clock_now(),
        policy: &policy,
    };
    let first = decide::set_user_limit(ctx, ActorRef::System, Some(50));
    let second = decide::set_user_limit(ctx, ActorRef::System, Some(60));
    st.commit(&first, &[]).await.unwrap();
    let audit = env.audit(env.tenant).await.len();
    let after_first = env.counters(env.tenant).await;
    assert_eq!(after_first.version, stale.counters.version + 1);
    let refused = st.commit(&second, &[]).await;
    assert!(
        matches!(refused, Err(StoreError::VersionMismatch { .. })),
        "D16: {refused:?}"
    );
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.user_limit,
        Some(50)
    );
    assert_eq!(env.counters(env.tenant).await, after_first);
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // A stale invite with its outbox message: nothing of it lands.
    let admin = env.user(env.tenant, env.admin).await;
    let acting = Acting {
        user: &admin,
        template: None,
    };
    let ctx = Ctx {
        state: &stale,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: unknown_user(),
        token_hash: TokenHash([7; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request("stale@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let message = fake_message(env.tenant, new.user_id);
    let refused = st.commit(&change, std::slice::from_ref(&message)).await;
    assert!(
        matches!(refused, Err(StoreError::VersionMismatch { .. })),
        "D16: {refused:?}"
    );
    assert_eq!(env.counters(env.tenant).await, after_first);
    assert!(st.user(env.tenant, new.user_id).await.unwrap().is_none());
    assert!(
        st.invitation(env.tenant, &new.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.app
            .outbox_message(env.tenant, message.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    env.assert_consistent(env.tenant).await;
}

/// [concurrency (D16)](tenantry_core::Rule::Concurrency): the store's unique constraints (email key, template name key, user id) refuse a
/// change that the decision wrongly allowed, and the whole change is rolled back.
pub async fn d16_store_unique_constraints_are_the_second_line(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let st = Arc::clone(env.app.store());
    let existing = env.invite("taken@acme.test").await.user;
    env.new_template("Agents", Permissions::empty()).await;
    let policy = Policy::default();
    let admin = env.user(env.tenant, env.admin).await;
    let acting = Acting {
        user: &admin,
        template: None,
    };

    // The email key, told "not taken".
    let state = st.tenant(env.tenant).await.unwrap().unwrap();
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: unknown_user(),
        token_hash: TokenHash([9; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request(" TAKEN@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let message = fake_message(env.tenant, new.user_id);
    let audit = env.audit(env.tenant).await.len();
    let r = st.commit(&change, std::slice::from_ref(&message)).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D3/D16: duplicate email key: {r:?}"
    );
    assert_eq!(
        env.counters(env.tenant).await,
        state.counters,
        "D16: rolled back"
    );
    assert!(st.user(env.tenant, new.user_id).await.unwrap().is_none());
    assert!(
        st.invitation(env.tenant, &new.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.app
            .outbox_message(env.tenant, message.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);

    // The template name key, told "not taken".
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let change = decide::create_template(
        ctx,
        &acting,
        unknown_template(),
        name("AGENTS"),
        Permissions::empty(),
        false,
    )
    .unwrap();
    let r = st.commit(&change, &[]).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D12/D16: duplicate name key: {r:?}"
    );
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(
        env.app
            .templates(env.tenant, ActorRef::System)
            .await
            .unwrap()
            .len(),
        1
    );

    // A user id that exists.
    let ctx = Ctx {
        state: &state,
        now: env.clock_now(),
        policy: &policy,
    };
    let new = NewInvite {
        user_id: existing.id,
        token_hash: TokenHash([10; 32]),
    };
    let change = decide::invite(
        ctx,
        &acting,
        &request("fresh@acme.test", Role::User),
        None,
        false,
        new,
    )
    .unwrap();
    let r = st.commit(&change, &[]).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "D11/D16: duplicate user id: {r:?}"
    );
    assert_eq!(env.user(env.tenant, existing.id).await, existing);
    assert_eq!(env.counters(env.tenant).await, state.counters);
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    env.assert_consistent(env.tenant).await;
}

fn fake_message(tenant: tenantry_service::TenantId, user: UserId) -> Message {
    Message {
        id: MessageId::from_uuid(uuid::Uuid::now_v7()),
        tenant_id: tenant,
        user_id: user,
        to: "stale@acme.test".into(),
        subject: "s".into(),
        text: "t".into(),
        html: "h".into(),
    }
}

// ----------------------------------------------------------------------------------- D17

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): the invitation message is recorded with the invite (pending, with the accept
/// link), delivered only after commit by dispatch, then marked sent with its body cleared,
/// and never sent again.
pub async fn d17_message_queued_in_invite_commit_and_delivered_after(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            user_limit: Some(3),
            ..Options::default()
        },
    )
    .await;
    let invited = env.invite("Hal@Acme.test").await;
    assert!(
        env.mailer.sent().is_empty(),
        "D17: not delivered inside the commit"
    );
    let record = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .expect("D17: queued with the invite");
    assert_eq!(record.state, DeliveryState::Pending);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.created_at, START);
    assert_eq!(record.message.to, "Hal@Acme.test");
    assert_eq!(record.message.user_id, invited.user.id);
    assert_eq!(record.message.tenant_id, env.tenant);
    // D26: the service never shows a body holding a live link, not even while pending; the
    // store keeps it (the dispatcher sends it) until it is sent.
    assert!(
        record.message.text.is_empty() && record.message.html.is_empty(),
        "D26: the outbox read shows no body"
    );
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .expect("D17: stored with the invite");
    assert!(
        stored.message.text.contains(&format!("{BASE_URL}?token=")),
        "D10/D17: link in the queued body"
    );
    assert!(!stored.message.html.is_empty());
    let pending = env.app.outbox(env.tenant, true, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        vec![invited.message_id]
    );
    let token = env.token(env.tenant, invited.message_id).await;

    env.clock.advance(Duration::seconds(5));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!((report.sent, report.retrying, report.failed), (1, 0, 0));
    let sent = env.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0], stored.message,
        "D17: the recorded message is what is sent"
    );
    let record = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.state,
        DeliveryState::Sent {
            at: START + Duration::seconds(5)
        }
    );
    assert_eq!(record.attempts, 1);
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.message.text.is_empty() && stored.message.html.is_empty(),
        "D17/D26: the store cleared the sent body"
    );
    assert!(
        env.app
            .outbox(env.tenant, true, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Never re-sent, whatever time passes.
    for _ in 0..3 {
        env.clock.advance(Duration::hours(2));
        let report = env.app.dispatch(env.tenant).await.unwrap();
        assert_eq!(report.sent, 0);
        assert_eq!(env.app.dispatch_all().await.unwrap().sent, 0);
    }
    assert_eq!(
        env.mailer.attempts(),
        1,
        "D17: a sent message is not re-sent"
    );
    // The delivered link works.
    env.app
        .accept_invitation(&token, "hal@acme.test")
        .await
        .unwrap();
    // A refused invite queues nothing.
    env.invite("ivy@acme.test").await;
    let before = env.outbox_len(env.tenant).await;
    assert!(
        env.app
            .invite(env.tenant, env.admin, &request("jon@acme.test", Role::User))
            .await
            .is_err()
    );
    assert_eq!(env.outbox_len(env.tenant).await, before);
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 1);
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a transient failure never loses or rolls back the invite: the message stays
/// pending with the reason, is retried after the backoff, and is delivered exactly once;
/// transient failures up to the attempt limit end as failed.
pub async fn d17_transient_failure_is_retried_after_backoff(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    env.mailer
        .fail_next(MailError::Transient("421 try later".into()));
    let invited = env.invite("kim@acme.test").await;
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited,
        "D17: the invite stays"
    );
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.state, DeliveryState::Pending);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_error.as_deref(), Some("421 try later"));
    assert_eq!(
        r.next_attempt_at,
        START + Duration::seconds(30),
        "D17: retried after the backoff"
    );
    // The store keeps the body for the retry (D17); the service's read never shows it (D26).
    assert!(r.message.text.is_empty(), "D26: no body in the outbox read");
    let stored = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.message.text.is_empty(),
        "D17: the body is kept for the retry"
    );
    assert!(env.mailer.sent().is_empty());

    env.clock.advance(Duration::seconds(29));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: not before the backoff"
    );
    assert_eq!(env.mailer.attempts(), 1);
    env.clock.advance(Duration::seconds(1));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(report.sent, 1);
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Sent {
            at: START + Duration::seconds(30)
        }
    );
    assert_eq!(r.attempts, 2);
    assert_eq!(env.mailer.sent().len(), 1);
    env.clock.advance(Duration::hours(1));
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    assert_eq!(env.mailer.sent().len(), 1, "D17: delivered exactly once");
    env.accept(env.tenant, &invited).await;

    // Transient failures until the attempt limit (5 by default): then failed.
    env.mailer
        .fail_all(MailError::Transient("451 greylisted".into()));
    let doomed = env.invite("lee@acme.test").await;
    for _ in 0..10 {
        env.clock.advance(Duration::hours(2));
        env.app.dispatch(env.tenant).await.unwrap();
    }
    let r = env
        .app
        .outbox_message(env.tenant, doomed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&r.state, DeliveryState::Failed { reason, .. } if reason == "451 greylisted"),
        "{r:?}"
    );
    assert_eq!(r.attempts, 5);
    env.mailer.recover();
    env.clock.advance(Duration::hours(2));
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    assert_eq!(
        env.user(env.tenant, doomed.user.id).await.status,
        Status::Invited,
        "D17: never rolled back"
    );
    // The host can resend; the new message is delivered.
    let again = env.resend(doomed.user.id).await;
    assert!(env.mailer.sent().iter().any(|m| m.id == again.message_id));
    env.assert_consistent(env.tenant).await;
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a permanent failure marks the message failed with the transport's reason at once;
/// the user stays invited and nothing is retried.
pub async fn d17_permanent_failure_is_marked_failed_with_reason(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    env.clock.advance(Duration::minutes(3));
    env.mailer
        .fail_next(MailError::Permanent("550 no such mailbox".into()));
    let invited = env.invite("max@acme.test").await;
    let r = env
        .app
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Failed {
            reason: "550 no such mailbox".into(),
            at: START + Duration::minutes(3)
        }
    );
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_error.as_deref(), Some("550 no such mailbox"));
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited
    );
    assert!(
        env.app
            .outbox(env.tenant, true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for _ in 0..3 {
        env.clock.advance(Duration::hours(2));
        assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    }
    assert_eq!(
        env.mailer.attempts(),
        1,
        "D17: a failed message is not retried"
    );
    assert!(env.mailer.sent().is_empty());
    let failed = env.app.outbox(env.tenant, false, 10).await.unwrap();
    assert_eq!(failed.len(), 1, "D17: the failure stays visible");
    env.assert_consistent(env.tenant).await;
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a message claimed by one dispatcher (which then vanished) is not taken by another
/// until the lease expires; it is then delivered once.
pub async fn d17_claimed_message_is_leased_until_the_lease_expires(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let invited = env.invite("ned@acme.test").await;
    let now = env.clock_now();
    let claimed = env
        .app
        .store()
        .claim_due_mail(env.tenant, now, now + Duration::minutes(2), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        vec![invited.message_id]
    );
    assert!(
        env.app
            .store()
            .claim_due_mail(env.tenant, now, now + Duration::minutes(2), 10)
            .await
            .unwrap()
            .is_empty(),
        "D17: claimed once"
    );
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: leased"
    );
    env.clock.advance(Duration::seconds(119));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: still leased"
    );
    env.clock.advance(Duration::seconds(1));
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        1,
        "D17: lease expired"
    );
    assert_eq!(env.mailer.sent().len(), 1);
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now() + Duration::days(1), 10)
        .await
        .unwrap();
    assert!(!due.contains(&env.tenant));
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): the background dispatcher finds and delivers the due mail of every tenant.
pub async fn d17_dispatch_all_delivers_every_tenant(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let (b, b_admin) = env.other_tenant("Beta", "admin@beta.test").await;
    env.invite("one@acme.test").await;
    env.invite("two@acme.test").await;
    env.invite_as(b, b_admin, &request("three@beta.test", Role::User))
        .await;
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now(), 10)
        .await
        .unwrap();
    assert_eq!(
        due.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([env.tenant, b])
    );
    let report = env.app.dispatch_all().await.unwrap();
    assert_eq!(report.sent, 3);
    let mut to: Vec<String> = env.mailer.sent().into_iter().map(|m| m.to).collect();
    to.sort();
    assert_eq!(
        to,
        vec!["one@acme.test", "three@beta.test", "two@acme.test"]
    );
    assert!(
        env.app
            .store()
            .tenants_with_due_mail(env.clock_now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.app.dispatch_all().await.unwrap().sent, 0);
}

// ----------------------------------------------------------------------------------- D18

struct Setup {
    env: Env,
    t1: RoleTemplate,
    t2: RoleTemplate,
}

/// A tenant with 30 users of every status, role, template and CRM setting, with ties in
/// creation time and last login.
async fn listing_setup(store: Arc<dyn Store>) -> Setup {
    let env = Env::new(store).await;
    let t1 = env
        .new_template("One", Permissions::CONVERSATIONS_VIEW)
        .await;
    let t2 = env.new_template("Two", Permissions::ANALYTICS_VIEW).await;
    let names = ["Ann", "bob", "CAT", "dan", "Eve"];
    let domains = ["sales.acme.test", "Support.Acme.test", "acme.test"];
    let mut invited = Vec::new();
    for i in 0..29usize {
        if i % 3 == 0 {
            env.clock.advance(Duration::seconds(1)); // ties in created_at
        }
        let addr = format!("{}{:02}@{}", names[i % 5], (i * 7) % 29, domains[i % 3]);
        let req = if i % 7 == 3 {
            request(&addr, Role::Admin)
        } else {
            request_with(
                &addr,
                Permissions::empty(),
                [None, Some(t1.id), Some(t2.id)][i % 3],
                i % 2 == 0,
            )
        };
        invited.push(env.invite_as(env.tenant, env.admin, &req).await);
    }
    for (i, inv) in invited.iter().enumerate() {
        if i % 4 != 0 {
            if i % 5 == 0 {
                env.clock.advance(Duration::minutes(1)); // ties in last_login
            }
            let u = env.accept(env.tenant, inv).await;
            if i % 6 == 1 {
                env.edit(u.id, &status_edit(Status::Suspended)).await;
            }
        }
    }
    Setup { env, t1, t2 }
}

fn reference_filter(users: &[User], keep: impl Fn(&User) -> bool) -> BTreeSet<UserId> {
    users.iter().filter(|u| keep(u)).map(|u| u.id).collect()
}

/// [listing (D18)](tenantry_core::Rule::Listing): status, role, template, CRM and email-substring filters (alone and combined)
/// select exactly the matching rows, on every page.
pub async fn d18_filters_select_exactly_the_matching_rows(store: Arc<dyn Store>) {
    let Setup { env, t1, t2 } = listing_setup(store).await;
    let all = env.assert_consistent(env.tenant).await;
    assert_eq!(all.len(), 30);
    let q = |f: &dyn Fn(&mut UserQuery)| {
        let mut q = UserQuery {
            limit: 4,
            ..UserQuery::default()
        };
        f(&mut q);
        q
    };
    let cases: Vec<(String, UserQuery, BTreeSet<UserId>)> = vec![
        (
            "status invited".into(),
            q(&|q| q.status = Some(Status::Invited)),
            reference_filter(&all, |u| u.status == Status::Invited),
        ),
        (
            "status active".into(),
            q(&|q| q.status = Some(Status::Active)),
            reference_filter(&all, |u| u.status == Status::Active),
        ),
        (
            "status suspended".into(),
            q(&|q| q.status = Some(Status::Suspended)),
            reference_filter(&all, |u| u.status == Status::Suspended),
        ),
        (
            "role admin".into(),
            q(&|q| q.role = Some(Role::Admin)),
            reference_filter(&all, |u| u.role == Role::Admin),
        ),
        (
            "role user".into(),
            q(&|q| q.role = Some(Role::User)),
            reference_filter(&all, |u| u.role == Role::User),
        ),
        (
            "template one".into(),
            q(&|q| q.template_id = Some(t1.id)),
            reference_filter(&all, |u| u.template_id == Some(t1.id)),
        ),
        (
            "template two".into(),
            q(&|q| q.template_id = Some(t2.id)),
            reference_filter(&all, |u| u.template_id == Some(t2.id)),
        ),
        (
            "crm on".into(),
            q(&|q| q.crm_access = Some(true)),
            reference_filter(&all, |u| u.crm_access),
        ),
        (
            "crm off".into(),
            q(&|q| q.crm_access = Some(false)),
            reference_filter(&all, |u| !u.crm_access),
        ),
        (
            "email SUPPORT".into(),
            q(&|q| q.email_contains = Some("SUPPORT".into())),
            reference_filter(&all, |u| {
                u.email.as_str().to_ascii_lowercase().contains("support")
            }),
        ),
        (
            "email cat".into(),
            q(&|q| q.email_contains = Some("cat".into())),
            reference_filter(&all, |u| {
                u.email.as_str().to_ascii_lowercase().contains("cat")
            }),
        ),
        (
            "email 07@".into(),
            q(&|q| q.email_contains = Some("07@".into())),
            reference_filter(&all, |u| u.email.as_str().contains("07@")),
        ),
        (
            "email none".into(),
            q(&|q| q.email_contains = Some("nobody-has-this".into())),
            BTreeSet::new(),
        ),
        (
            "active + crm + template one".into(),
            q(&|q| {
                q.status = Some(Status::Active);
                q.crm_access = Some(true);
                q.template_id = Some(t1.id);
            }),
            reference_filter(&all, |u| {
                u.status == Status::Active && u.crm_access && u.template_id == Some(t1.id)
            }),
        ),
        (
            "user + invited + email sales, by creation desc".into(),
            q(&|q| {
                q.role = Some(Role::User);
                q.status = Some(Status::Invited);
                q.email_contains = Some("sales".into());
                q.sort = SortBy::CreatedAt;
                q.descending = true;
            }),
            reference_filter(&all, |u| {
                u.role == Role::User
                    && u.status == Status::Invited
                    && u.email.key().contains("sales")
            }),
        ),
    ];
    for (what, query, expected) in cases {
        let got = env.collect(env.tenant, &query).await;
        let ids: Vec<UserId> = got.iter().map(|u| u.id).collect();
        let set: BTreeSet<UserId> = ids.iter().copied().collect();
        assert_eq!(ids.len(), set.len(), "D18: {what}: no row twice");
        assert_eq!(set, expected, "D18: filter {what}");
        if what != "email none" {
            assert!(!expected.is_empty(), "fixture covers {what}");
        }
    }
}

fn sort_key(sort: SortBy, u: &User) -> (String, i128, Option<i128>, UserId) {
    match sort {
        SortBy::Email => (u.email.key().to_owned(), 0, None, u.id),
        SortBy::CreatedAt => (
            String::new(),
            u.created_at.unix_timestamp_nanos(),
            None,
            u.id,
        ),
        SortBy::LastLogin => (
            String::new(),
            0,
            u.last_login.map(time::OffsetDateTime::unix_timestamp_nanos),
            u.id,
        ),
    }
}

/// [listing (D18)](tenantry_core::Rule::Listing): by email, creation time and last login, ascending and descending, with page sizes
/// 1, 4 and 500, keyset paging visits every row exactly once in order (ties broken by id;
/// never-signed-in users first in ascending last-login order).
pub async fn d18_every_sort_pages_every_row_exactly_once(store: Arc<dyn Store>) {
    let Setup { env, .. } = listing_setup(store).await;
    let all = env.users(env.tenant).await;
    assert_eq!(all.len(), 30);
    for sort in [SortBy::Email, SortBy::CreatedAt, SortBy::LastLogin] {
        let mut expected = all.clone();
        expected.sort_by_key(|u| sort_key(sort, u));
        let ids: Vec<UserId> = expected.iter().map(|u| u.id).collect();
        // Ties exist in this fixture, so the tie-break by id is exercised.
        let keys: HashSet<_> = expected
            .iter()
            .map(|u| {
                let mut k = sort_key(sort, u);
                k.3 = UserId::from_uuid(uuid::Uuid::nil());
                k
            })
            .collect();
        if sort != SortBy::Email {
            assert!(keys.len() < expected.len(), "fixture has ties for {sort:?}");
        }
        for descending in [false, true] {
            let want: Vec<UserId> = if descending {
                ids.iter().rev().copied().collect()
            } else {
                ids.clone()
            };
            for limit in [1u32, 4, 500] {
                let got: Vec<UserId> = env
                    .collect(
                        env.tenant,
                        &UserQuery {
                            sort,
                            descending,
                            limit,
                            ..UserQuery::default()
                        },
                    )
                    .await
                    .iter()
                    .map(|u| u.id)
                    .collect();
                assert_eq!(
                    got, want,
                    "D18: {sort:?} descending={descending} limit={limit}"
                );
            }
        }
    }
    // Filtered and sorted together.
    let mut active: Vec<&User> = all.iter().filter(|u| u.status == Status::Active).collect();
    active.sort_by_key(|u| std::cmp::Reverse(sort_key(SortBy::LastLogin, u)));
    let got: Vec<UserId> = env
        .collect(
            env.tenant,
            &UserQuery {
                status: Some(Status::Active),
                sort: SortBy::LastLogin,
                descending: true,
                limit: 3,
                ..UserQuery::default()
            },
        )
        .await
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(got, active.iter().map(|u| u.id).collect::<Vec<_>>());
}

/// [listing (D18)](tenantry_core::Rule::Listing): keyset paging stays correct while rows are added, changed and deleted between
/// pages: no row is returned twice and every row present throughout is returned once.
pub async fn d18_paging_is_stable_while_rows_change(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(env.invite(&format!("m{i:02}@acme.test")).await.user.id);
    }
    for sort in [SortBy::Email, SortBy::CreatedAt] {
        let mut q = UserQuery {
            sort,
            limit: 3,
            ..UserQuery::default()
        };
        let mut seen: Vec<UserId> = Vec::new();
        let mut deleted = HashSet::new();
        let mut round = 0;
        loop {
            let page = env
                .app
                .list_users(env.tenant, ActorRef::System, &q)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|u| u.id));
            let Some(next) = page.next else { break };
            q.after = Some(next);
            round += 1;
            env.clock.advance(Duration::seconds(1));
            // Add rows before and after the cursor, delete an unread one, edit another.
            env.invite(&format!("a{sort:?}{round:02}@acme.test")).await;
            env.invite(&format!("z{sort:?}{round:02}@acme.test")).await;
            if let Some(victim) = ids
                .iter()
                .rev()
                .find(|id| !seen.contains(id) && !deleted.contains(*id))
                .copied()
            {
                env.app
                    .delete_user(env.tenant, env.admin, victim)
                    .await
                    .unwrap();
                deleted.insert(victim);
            }
            if let Some(e) = ids
                .iter()
                .find(|id| !seen.contains(id) && !deleted.contains(*id))
                .copied()
            {
                env.edit(
                    e,
                    &UserEdit {
                        crm_access: Some(round % 2 == 0),
                        ..UserEdit::default()
                    },
                )
                .await;
            }
        }
        let unique: HashSet<UserId> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "D18 {sort:?}: no row twice");
        for id in ids.iter().chain(std::iter::once(&env.admin)) {
            if !deleted.contains(id) {
                assert!(
                    unique.contains(id),
                    "D18 {sort:?}: a row present throughout was skipped"
                );
            }
        }
        for id in &deleted {
            assert!(
                !unique.contains(id),
                "D18 {sort:?}: a deleted row was returned"
            );
        }
        ids.retain(|id| !deleted.contains(id));
    }
}

/// [listing (D18)](tenantry_core::Rule::Listing): a page holds 1–500 rows (50 by default); other sizes and cursors of another sort
/// order are refused with typed errors.
pub async fn d18_page_size_and_cursor_errors(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let bulk = BulkInvite {
        emails: (0..60).map(|i| format!("bulk{i:02}@acme.test")).collect(),
        ..BulkInvite::default()
    };
    env.app
        .invite_many(env.tenant, env.admin, &bulk)
        .await
        .unwrap();
    assert_eq!(UserQuery::default().limit, 50);
    let page = env
        .app
        .list_users(env.tenant, ActorRef::System, &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 50, "D18: 50 rows by default");
    let cursor = page.next.expect("more rows");
    let rest = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                after: Some(cursor.clone()),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 11);
    assert!(rest.next.is_none());
    let full = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                limit: 500,
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(full.items.len(), 61);
    assert!(full.next.is_none());
    for limit in [0u32, 501, 10_000] {
        let q = UserQuery {
            limit,
            ..UserQuery::default()
        };
        assert!(
            matches!(env.app.list_users(env.tenant, ActorRef::System, &q).await, Err(Error::Query(QueryError::LimitOutOfRange { limit: l })) if l == limit),
            "D18: limit {limit}"
        );
        assert!(matches!(
            env.app
                .inactive_users(env.tenant, ActorRef::System, START, &q)
                .await,
            Err(Error::Query(_))
        ));
        assert!(matches!(
            env.app
                .expired_invitations(env.tenant, ActorRef::System, &q)
                .await,
            Err(Error::Query(_))
        ));
    }
    let mismatched = UserQuery {
        sort: SortBy::CreatedAt,
        after: Some(cursor),
        ..UserQuery::default()
    };
    assert!(matches!(
        env.app
            .list_users(env.tenant, ActorRef::System, &mismatched)
            .await,
        Err(Error::Query(QueryError::CursorMismatch))
    ));
    // A cursor past every row gives an empty last page.
    let past = Cursor::Email("~~~~".into(), unknown_user());
    let page = env
        .app
        .list_users(
            env.tenant,
            ActorRef::System,
            &UserQuery {
                after: Some(past),
                ..UserQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.next.is_none());
}

// ----------------------------------------------------------------------------------- D19

/// [bulk invite (D19)](tenantry_core::Rule::BulkInvite): a bulk invite gives each address its own outcome (invited, duplicate in the tenant
/// or in the call, invalid with the reason, limit reached) and the seat limit holds
/// exactly.
pub async fn d19_bulk_invite_outcomes_with_exact_seat_limit(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(6),
            ..Options::default()
        },
    )
    .await;
    env.invite("old@acme.test").await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let emails: Vec<String> = [
        "new1@acme.test",
        " NEW1@acme.test ",
        "OLD@acme.test",
        "not-an-address",
        "new2@acme.test",
        "",
        "new3@acme.test",
        "new4@acme.test",
        "new5@acme.test",
        "bad@@acme.test",
        "new1@acme.test",
        "new6@acme.test",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mails = env.mailer.sent().len();
    let items = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: emails.clone(),
                role: Some(Role::User),
                template_id: Some(t.id),
                crm_access: true,
                grants: Permissions::ANALYTICS_VIEW,
            },
        )
        .await
        .unwrap();
    assert_eq!(items.len(), emails.len(), "D19: one outcome per address");
    for (item, input) in items.iter().zip(&emails) {
        assert_eq!(&item.input, input, "D19: outcomes in input order");
    }
    let kinds: Vec<&str> = items
        .iter()
        .map(|i| match &i.outcome {
            BulkOutcome::Invited { .. } => "invited",
            BulkOutcome::Duplicate => "duplicate",
            BulkOutcome::Invalid { .. } => "invalid",
            BulkOutcome::LimitReached { used: 6, limit: 6 } => "limit",
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "invited",
            "duplicate",
            "duplicate",
            "invalid",
            "invited",
            "invalid",
            "invited",
            "invited",
            "limit",
            "invalid",
            "duplicate",
            "limit"
        ]
    );
    assert!(matches!(
        items[3].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::MissingAt
        }
    ));
    assert!(matches!(
        items[5].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::Empty
        }
    ));
    assert!(matches!(
        items[9].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::MultipleAt
        }
    ));
    let invited: Vec<UserId> = items
        .iter()
        .filter_map(|i| match i.outcome {
            BulkOutcome::Invited { user_id } => Some(user_id),
            _ => None,
        })
        .collect();
    let users = env.assert_consistent(env.tenant).await;
    assert_eq!(users.len(), 6, "D19: the limit holds exactly");
    for id in &invited {
        let u = env.user(env.tenant, *id).await;
        assert_eq!(
            (u.status, u.template_id, u.crm_access, u.grants),
            (
                Status::Invited,
                Some(t.id),
                true,
                Permissions::ANALYTICS_VIEW
            )
        );
    }
    let sent: Vec<_> = env.mailer.sent()[mails..].to_vec();
    assert_eq!(sent.len(), 4, "D19: one mail per invited address");
    assert_eq!(
        sent.iter().map(|m| m.user_id).collect::<BTreeSet<_>>(),
        invited.iter().copied().collect::<BTreeSet<_>>()
    );
    // Each invitation works.
    for m in &sent {
        let token = tenantry_service::token_from_link(&m.text).unwrap();
        env.app.accept_invitation(&token, &m.to).await.unwrap();
    }
    let invites = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::UserInvited && r.event.outcome == Outcome::Success
        })
        .count();
    assert_eq!(invites, 2 + 4, "D19/D13: one event per invited address");
    // At the limit, nothing more.
    let items = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: vec!["x@acme.test".into(), "y@acme.test".into()],
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    assert!(
        items
            .iter()
            .all(|i| matches!(i.outcome, BulkOutcome::LimitReached { used: 6, limit: 6 }))
    );
    assert_eq!(env.assert_consistent(env.tenant).await.len(), 6);
    assert_eq!(with_status(&env.users(env.tenant).await, Status::Active), 5);
}

// ----------------------------------------------------------------------------------- D20

/// [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations): expired invitations keep their seat until deleted; hosts list them and delete them
/// all in one call, which frees their seats and leaves tombstones.
pub async fn d20_expired_invitations_listed_and_purged_in_one_call(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(6),
            ..Options::default()
        },
    )
    .await;
    let u1 = env.invite("old1@acme.test").await;
    let u2 = env.invite("old2@acme.test").await;
    let old_admin = env
        .invite_as(
            env.tenant,
            env.admin,
            &request("oldadmin@acme.test", Role::Admin),
        )
        .await;
    env.clock.advance(Duration::days(1));
    let u3 = env.invite("recent@acme.test").await;
    let u4 = env.invite("accepted@acme.test").await;
    env.accept(env.tenant, &u4).await;
    env.clock.advance(Duration::days(6));
    // START + 7d: the first three expire exactly now.
    let ids = expired_ids(&env).await;
    assert_eq!(
        ids,
        BTreeSet::from([u1.user.id, u2.user.id, old_admin.user.id]),
        "D20: listed"
    );
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        6,
        "D20: expired invitations keep their seat"
    );
    assert!(
        env.app
            .invite(
                env.tenant,
                env.admin,
                &request("blocked@acme.test", Role::User)
            )
            .await
            .is_err()
    );
    // A manager without users:delete may not purge.
    let viewers = env.new_template("Viewers", Permissions::USERS_VIEW).await;
    env.edit(
        u4.user.id,
        &UserEdit {
            template_id: Some(Some(viewers.id)),
            ..UserEdit::default()
        },
    )
    .await;
    assert_rule(
        env.app
            .purge_expired_invitations(env.tenant, u4.user.id)
            .await,
        &E::NotAllowed {
            needed: users_perm(Action::Delete),
        },
    );
    env.clock.advance(Duration::minutes(1));
    let purged = env
        .app
        .purge_expired_invitations(env.tenant, env.admin)
        .await
        .unwrap();
    assert_eq!(
        purged.iter().copied().collect::<BTreeSet<_>>(),
        ids,
        "D20: deleted in one call"
    );
    assert_eq!(purged.len(), 3);
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        3,
        "D20: seats freed"
    );
    for id in &purged {
        match env.app.attribution(env.tenant, *id).await.unwrap() {
            Some(Attribution::Deleted(t)) => {
                assert_eq!(t.deleted_by, ActorRef::User(env.admin));
                assert_eq!(
                    t.deleted_at,
                    START + Duration::days(7) + Duration::minutes(1)
                );
            }
            other => panic!("D20/D11: tombstone expected, got {other:?}"),
        }
    }
    assert_eq!(
        env.user(env.tenant, u3.user.id).await.status,
        Status::Invited
    );
    assert!(expired_ids(&env).await.is_empty());
    assert!(
        env.app
            .purge_expired_invitations(env.tenant, env.admin)
            .await
            .unwrap()
            .is_empty()
    );
    // The freed seats can be used; the old addresses can be invited again.
    env.invite("old1@acme.test").await;
    let deletes = env
        .audit(env.tenant)
        .await
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::UserDeleted && r.event.outcome == Outcome::Success
        })
        .count();
    assert_eq!(deletes, 3, "D20/D13: one event per deleted invitation");
    env.assert_consistent(env.tenant).await;
}

/// [mail delivery (D17)](tenantry_core::Rule::MailDelivery): a delivery result that arrives after the message left `pending` (a dispatcher
/// whose lease ran out reporting late) changes nothing: sent stays sent, failed stays failed.
pub async fn d17_late_delivery_result_does_not_overwrite_a_final_state(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            inline: false,
            ..Options::default()
        },
    )
    .await;
    let sent = env.invite("late1@acme.test").await;
    let failed = env.invite("late2@acme.test").await;
    let s = env.app.store();
    let now = env.clock_now();
    s.record_delivery(
        env.tenant,
        sent.message_id,
        &tenantry_store::DeliveryUpdate::Sent { at: now },
    )
    .await
    .unwrap();
    s.record_delivery(
        env.tenant,
        failed.message_id,
        &tenantry_store::DeliveryUpdate::Failed {
            reason: "550 no".into(),
            at: now,
        },
    )
    .await
    .unwrap();
    for id in [sent.message_id, failed.message_id] {
        s.record_delivery(
            env.tenant,
            id,
            &tenantry_store::DeliveryUpdate::Retry {
                reason: "421 late".into(),
                retry_at: now,
            },
        )
        .await
        .unwrap();
    }
    let r = s
        .outbox_message(env.tenant, sent.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        tenantry_store::DeliveryState::Sent { at: now },
        "D17: sent stays sent"
    );
    assert_eq!(r.attempts, 1);
    let r = s
        .outbox_message(env.tenant, failed.message_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r.state, tenantry_store::DeliveryState::Failed { .. }),
        "D17: failed stays failed"
    );
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: nothing is sent again"
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

// --------------------------------------------------------------------- D21 to D26 helpers

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

/// Asserts that the audit log holds exactly `expected` after its first `from` records:
/// (actor, action, target, refusing rule or `None` for a success).
async fn assert_new_events(
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

/// The secret part of a token (what follows the tenant prefix).
fn secret_of(token: &str) -> String {
    token
        .split_once('.')
        .map(|(_, s)| s.to_owned())
        .expect("a token has a tenant prefix")
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

// ----------------------------------------------------------------------------------- D22

/// The 10 random bytes of a tenant id (as [`id_random_bytes`] for users).
fn tenant_random_bytes(id: tenantry_service::TenantId) -> [u8; 10] {
    let bytes = id.as_uuid().into_bytes();
    let mut out = [0u8; 10];
    out.copy_from_slice(&bytes[6..16]);
    out
}

/// The id the service gives the next tenant it creates when its next 10-byte draw is
/// `random` (ids are UUID v7 of the clock's millisecond).
fn next_tenant_id(env: &Env, random: [u8; 10]) -> tenantry_service::TenantId {
    let millis = u64::try_from(env.clock_now().unix_timestamp_nanos() / 1_000_000).unwrap();
    tenantry_service::TenantId::from_parts(millis, random)
}

/// Tries to create a tenant whose id is forced to a known value, and returns the result
/// and that id: a refused creation must leave no tenant under it.
async fn create_tenant_forced(
    env: &Env,
    random: [u8; 10],
    name: &str,
    limit: Option<u32>,
) -> (
    Result<(tenantry_service::TenantId, UserId), Error>,
    tenantry_service::TenantId,
) {
    let id = next_tenant_id(env, random);
    env.random.push(&random);
    let result = env
        .app
        .create_tenant(name, limit, email("founder@new.test"))
        .await;
    env.random.clear();
    (result, id)
}

async fn assert_no_tenant(env: &Env, id: tenantry_service::TenantId, what: &str) {
    assert!(
        env.app.store().tenant(id).await.unwrap().is_none(),
        "{what}: nothing stored"
    );
    assert_rule(env.app.seat_usage(id).await, &E::TenantNotFound);
}

/// [names (D22)](tenantry_core::Rule::Names): tenant names are 1–100 characters after trimming, with no control (Cc) or format
/// (Cf) character; the typed error says which character and where (in the name as given);
/// nothing is created for a refused name. Every backend stores the trimmed name.
pub async fn d22_tenant_names_refuse_control_and_format_characters(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    // The forced id technique works: a valid name gets exactly the predicted id.
    let (ok, id) = create_tenant_forced(&env, [1; 10], "  Acme Ltd \t", None).await;
    assert_eq!(ok.unwrap().0, id);
    assert_eq!(
        env.app.tenant(id).await.unwrap().tenant.name,
        "Acme Ltd",
        "D22: stored trimmed"
    );
    let long = "n".repeat(101);
    let cases: Vec<(String, tenantry_core::NameError)> = vec![
        (
            "Acme\u{202E}".into(),
            tenantry_core::NameError::ForbiddenCharacter {
                character: '\u{202E}',
                position: 4,
            },
        ),
        (
            "Zero\u{200B}Width".into(),
            tenantry_core::NameError::ForbiddenCharacter {
                character: '\u{200B}',
                position: 4,
            },
        ),
        (
            "Line\r\nBreak".into(),
            tenantry_core::NameError::ForbiddenCharacter {
                character: '\r',
                position: 4,
            },
        ),
        (
            "  \u{FEFF}Acme".into(),
            tenantry_core::NameError::ForbiddenCharacter {
                character: '\u{FEFF}',
                position: 2,
            },
        ),
        (
            "Bell\u{7}".into(),
            tenantry_core::NameError::ForbiddenCharacter {
                character: '\u{7}',
                position: 4,
            },
        ),
        ("   ".into(), tenantry_core::NameError::Empty),
        (
            long,
            tenantry_core::NameError::TooLong { len: 101, max: 100 },
        ),
    ];
    for (i, (name, expected)) in cases.into_iter().enumerate() {
        let random = [u8::try_from(i).unwrap() + 10; 10];
        let (result, id) = create_tenant_forced(&env, random, &name, Some(5)).await;
        let e = rule(result);
        assert_eq!(e, E::InvalidTenantName(expected), "D22: {name:?}");
        assert_eq!(e.rule(), Rule::Names);
        assert_no_tenant(&env, id, &format!("D22: {name:?}")).await;
    }
    // 100 characters are allowed.
    let (ok, id) = create_tenant_forced(&env, [99; 10], &"n".repeat(100), None).await;
    assert_eq!(ok.unwrap().0, id);
    assert_eq!(
        env.app.tenant(id).await.unwrap().tenant.name,
        "n".repeat(100)
    );
}

/// [names (D22)](tenantry_core::Rule::Names) with [role templates (D12)](tenantry_core::Rule::RoleTemplates): template names with control or format characters (right-to-left
/// override, zero-width space, CR-LF, byte-order mark) are refused on create with the
/// character and its position, audited under [names (D22)](tenantry_core::Rule::Names), and nothing is stored; so the look-alikes
/// "Agent", "Agent\u{200B}" and "Agent\u{202E}" can never exist side by side, whichever is
/// tried first.
pub async fn d22_template_names_refuse_control_and_format_characters(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let look_alikes = [
        ("Agent\u{200B}", '\u{200B}', 5),
        ("Agent\u{202E}", '\u{202E}', 5),
        ("Ag\u{202E}ent", '\u{202E}', 2),
        ("Sup\r\nport", '\r', 3),
        (" \u{FEFF}Agent", '\u{FEFF}', 1),
        ("\u{2066}Agent\u{2069}", '\u{2066}', 0),
    ];
    let before = env.counters(env.tenant).await;
    let audit = env.audit(env.tenant).await.len();
    for (name, character, position) in look_alikes {
        let e = rule(
            env.app
                .create_template(env.tenant, env.admin, name, Permissions::empty())
                .await,
        );
        assert_eq!(
            e,
            E::InvalidTemplateName(tenantry_core::NameError::ForbiddenCharacter {
                character,
                position
            }),
            "D22: {name:?}"
        );
        assert_eq!(e.rule(), Rule::Names);
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D22: nothing stored"
    );
    assert!(
        env.app
            .templates(env.tenant, ActorRef::System)
            .await
            .unwrap()
            .is_empty()
    );
    let refusal = (
        ActorRef::User(env.admin),
        AuditAction::TemplateCreated,
        AuditTarget::Tenant,
        Some(Rule::Names),
    );
    assert_new_events(&env, audit, &[refusal; 6]).await;
    // "Agent" exists; its look-alikes still cannot join it.
    let agent = env.new_template("Agent", Permissions::empty()).await;
    for name in ["Agent\u{200B}", "Agent\u{202E}", "\u{200B}Agent"] {
        assert!(matches!(
            rule(
                env.app
                    .create_template(env.tenant, env.admin, name, Permissions::empty())
                    .await
            ),
            E::InvalidTemplateName(tenantry_core::NameError::ForbiddenCharacter { .. })
        ));
    }
    // Nor can a rename produce one: such a name cannot even be built.
    assert!(TemplateName::parse("Agent\u{200B}").is_err());
    let templates = env
        .app
        .templates(env.tenant, ActorRef::System)
        .await
        .unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].id, agent.id);
    assert_eq!(templates[0].name.as_str(), "Agent");
    // Trailing CR-LF is surrounding white space: trimmed, and then a duplicate of "Agent".
    assert_rule(
        env.app
            .create_template(env.tenant, env.admin, "Agent\r\n", Permissions::empty())
            .await,
        &E::TemplateNameTaken {
            name: "Agent".into(),
        },
    );
}

// ----------------------------------------------------------------------------------- D23

/// [first seat (D23)](tenantry_core::Rule::FirstSeat): a tenant created with a limit of 0 is refused with `FirstSeatRequired` (its first
/// admin takes a seat) on every backend and no tenant exists afterwards; a limit of 1
/// works and the tenant is then at its limit; a later change may set 0; only a tenant id
/// conflict is `TenantExists`, and a zero limit with a colliding id is still reported as
/// the seat rule.
pub async fn d23_first_seat_required_and_only_an_id_conflict_is_tenant_exists(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let (refused, id) = create_tenant_forced(&env, [3; 10], "Zero", Some(0)).await;
    let e = rule(refused);
    assert_eq!(e, E::FirstSeatRequired);
    assert_eq!(e.rule(), Rule::FirstSeat);
    assert_no_tenant(&env, id, "D23").await;

    let (ok, id) = create_tenant_forced(&env, [4; 10], "One", Some(1)).await;
    let (tenant, admin) = ok.unwrap();
    assert_eq!(tenant, id);
    assert_eq!(
        env.app.seat_usage(tenant).await.unwrap(),
        SeatUsage {
            used: 1,
            limit: Some(1),
            remaining: Some(0),
            at_limit: true
        },
        "D23: the first admin holds the one seat"
    );
    assert_rule(
        env.app
            .invite(tenant, admin, &request("second@new.test", Role::User))
            .await,
        &E::SeatLimitReached { used: 1, limit: 1 },
    );
    // D9: a later change may set any value, 0 included.
    let usage = env.app.set_user_limit(tenant, Some(0)).await.unwrap();
    assert_eq!(
        (usage.used, usage.limit, usage.at_limit),
        (1, Some(0), true)
    );

    // A colliding tenant id (same millisecond, same random bytes) is `TenantExists`; with a
    // zero limit the seat rule answers first. The existing tenant is untouched.
    let existing = env.app.tenant(env.tenant).await.unwrap();
    let bytes = tenant_random_bytes(env.tenant);
    env.clock.set(START);
    let (refused, same) = create_tenant_forced(&env, bytes, "Impostor", Some(0)).await;
    assert_eq!(same, env.tenant, "the forced id collides");
    assert_rule(refused, &E::FirstSeatRequired);
    let (refused, _) = create_tenant_forced(&env, bytes, "Impostor", Some(5)).await;
    assert_rule(refused, &E::TenantExists);
    let (refused, _) = create_tenant_forced(&env, bytes, "Impostor", None).await;
    assert_rule(refused, &E::TenantExists);
    assert_eq!(env.app.tenant(env.tenant).await.unwrap(), existing);
    env.assert_consistent(env.tenant).await;
}

// ----------------------------------------------------------------------------------- D24

/// The stored invitations of a user, oldest first (token hashes only).
async fn invitations(env: &Env, user: UserId) -> Vec<tenantry_core::Invitation> {
    env.app
        .store()
        .invitations_of(env.tenant, user)
        .await
        .unwrap()
}

/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): each sign-up with a wrong address on a live token is a failed attempt, counted
/// down in the answer (4, 3, 2, 1, 0), committed (the invitation's count, an audit event by
/// the host refused under [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)) while the user stays invited; the fifth kills the token, so
/// that even the right address is then refused as an invalid invitation and nothing more
/// is counted; a resend issues a fresh token with its own five attempts.
pub async fn d24_wrong_addresses_count_down_and_the_fifth_kills_the_token(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env.invite("bob@acme.test").await;
    let bob = invited.user.id;
    let token = env.token(env.tenant, invited.message_id).await;
    let wrong = [
        "eve@acme.test",
        "mallory@evil.test",
        "bob@acme.test.evil",
        "bob2@acme.test",
        "b.o.b@acme.test",
    ];
    for (i, address) in wrong.iter().enumerate() {
        env.clock.advance(Duration::seconds(1));
        let before = env.counters(env.tenant).await;
        let audit = env.audit(env.tenant).await.len();
        let failed = u32::try_from(i).unwrap() + 1;
        assert_rule(
            env.app.accept_invitation(&token, address).await,
            &E::InvitationEmailMismatch {
                attempts_left: 5 - failed,
            },
        );
        let after = env.counters(env.tenant).await;
        assert_eq!(
            after.version,
            before.version + 1,
            "D24: the attempt is committed"
        );
        assert_eq!(
            (after.seats_used, after.active_admins),
            (before.seats_used, before.active_admins)
        );
        assert_eq!(
            env.user(env.tenant, bob).await,
            invited.user,
            "D24: the user stays invited, unchanged"
        );
        let stored = invitations(&env, bob).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].failed_attempts, failed,
            "D24: counted in the store"
        );
        let state = if failed < 5 {
            tenantry_core::InvitationState::Pending
        } else {
            tenantry_core::InvitationState::Revoked
        };
        assert_eq!(stored[0].state, state, "D24: the fifth revokes");
        let new = assert_new_events(
            &env,
            audit,
            &[(
                ActorRef::System,
                AuditAction::AcceptAttemptFailed,
                AuditTarget::User(bob),
                Some(Rule::AcceptAttempts),
            )],
        )
        .await;
        let event = &new[0].event;
        assert_eq!(event.at, START + Duration::seconds(i64::from(failed)));
        assert!(
            event.changes.contains(&FieldChange {
                field: Field::FailedAttempts,
                before: Value::Number(u64::from(failed - 1)),
                after: Value::Number(u64::from(failed)),
            }),
            "D24: the count is audited: {:?}",
            event.changes
        );
        assert_eq!(
            event
                .changes
                .iter()
                .any(|c| c.field == Field::InvitationState),
            failed == 5,
            "D24: the last attempt records the token's end: {:?}",
            event.changes
        );
    }
    // The token is dead: the right address too is refused, and nothing more is counted.
    let before = env.counters(env.tenant).await;
    let audit = env.audit(env.tenant).await.len();
    for address in ["bob@acme.test", " BOB@acme.test ", "eve@acme.test"] {
        assert_rule(
            env.app.accept_invitation(&token, address).await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D24: a dead token counts nothing"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    assert_eq!(invitations(&env, bob).await[0].failed_attempts, 5);
    let row = env.user(env.tenant, bob).await;
    assert_eq!(row.status, Status::Invited, "D24: the user stays invited");
    assert_eq!(
        env.counters(env.tenant).await.seats_used,
        2,
        "D9: its seat stays"
    );

    // A resend revives the invitation with a fresh count.
    env.clock.advance(Duration::minutes(1));
    let resent = env.resend(bob).await;
    let fresh = env.token(env.tenant, resent.message_id).await;
    assert_ne!(fresh, token);
    for left in [4, 3, 2, 1] {
        assert_rule(
            env.app.accept_invitation(&fresh, "eve@acme.test").await,
            &E::InvitationEmailMismatch {
                attempts_left: left,
            },
        );
    }
    assert_rule(
        env.app.accept_invitation(&token, "bob@acme.test").await,
        &E::InvalidInvitation,
    );
    // After four failures the right address (in any spelling) still works.
    let user = env
        .app
        .accept_invitation(&fresh, " Bob@ACME.test ")
        .await
        .expect("D24: the fifth attempt was not used");
    assert_eq!(user.status, Status::Active);
    env.assert_consistent(env.tenant).await;
}

/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): attempts count per invitation and only on live tokens: failures on one
/// invitation leave another's count alone; an invalid address ([unique email (D3)](tenantry_core::Rule::UniqueEmail)), an unknown, expired,
/// used or superseded token count nothing; an address change ([invitations (D10)](tenantry_core::Rule::Invitations)) kills the token and its
/// count with it.
pub async fn d24_failed_attempts_count_per_live_invitation_only(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let a = env.invite("ann@acme.test").await;
    let b = env.invite("ben@acme.test").await;
    let ta = env.token(env.tenant, a.message_id).await;
    let tb = env.token(env.tenant, b.message_id).await;
    for left in [4, 3, 2] {
        assert_rule(
            env.app.accept_invitation(&ta, "ben@acme.test").await,
            &E::InvitationEmailMismatch {
                attempts_left: left,
            },
        );
    }
    assert_eq!(invitations(&env, b.user.id).await[0].failed_attempts, 0);
    assert_rule(
        env.app.accept_invitation(&tb, "ann@acme.test").await,
        &E::InvitationEmailMismatch { attempts_left: 4 },
    );
    // Not counted: an address D3 refuses, and tokens that are not live.
    let before = env.counters(env.tenant).await;
    let audit = env.audit(env.tenant).await.len();
    assert!(matches!(
        rule(env.app.accept_invitation(&ta, "not an address").await),
        E::InvalidEmail(_)
    ));
    let prefix = env.tenant.as_uuid().simple().to_string();
    let unknown = format!("{prefix}.{}", "A".repeat(43));
    assert_rule(
        env.app.accept_invitation(&unknown, "eve@acme.test").await,
        &E::InvalidInvitation,
    );
    assert_eq!(
        env.counters(env.tenant).await,
        before,
        "D24: nothing counted"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit);
    let used = env.invite("used@acme.test").await;
    let tu = env.token(env.tenant, used.message_id).await;
    env.accept(env.tenant, &used).await;
    let superseded = env.invite("old@acme.test").await;
    let ts = env.token(env.tenant, superseded.message_id).await;
    env.resend(superseded.user.id).await;
    let expired = env.invite("late@acme.test").await;
    let te = env.token(env.tenant, expired.message_id).await;
    let before_dead = env.counters(env.tenant).await;
    let audit_dead = env.audit(env.tenant).await.len();
    env.clock.advance(Duration::days(8));
    for t in [&tu, &ts, &te] {
        assert_rule(
            env.app.accept_invitation(t, "eve@acme.test").await,
            &E::InvalidInvitation,
        );
    }
    assert_eq!(
        env.counters(env.tenant).await,
        before_dead,
        "D24: nothing counted"
    );
    assert_eq!(env.audit(env.tenant).await.len(), audit_dead);
    for (user, count) in [
        (used.user.id, 0),
        (superseded.user.id, 0),
        (expired.user.id, 0),
    ] {
        assert!(
            invitations(&env, user)
                .await
                .iter()
                .all(|i| i.failed_attempts == count),
            "D24: no attempt counted on a dead token"
        );
    }
    assert_eq!(invitations(&env, a.user.id).await[0].failed_attempts, 3);
    env.assert_consistent(env.tenant).await;
}

// ----------------------------------------------------------------------------------- D25

/// [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest): inline delivery sends only the messages the call itself queued. An older message
/// that is pending and due — kept by a transient failure, or queued by a service without
/// inline delivery — is left to the dispatcher, whatever invite, resend or bulk invite runs
/// meanwhile; the dispatcher then delivers it once.
pub async fn d25_inline_delivery_sends_only_the_calls_own_messages(store: Arc<dyn Store>) {
    assert_eq!(
        tenantry_service::DeliverySettings::default().inline_deadline,
        Duration::seconds(5),
        "D25: 5 s by default"
    );
    let env = Env::new(store).await;
    env.mailer
        .fail_next(MailError::Transient("421 try later".into()));
    let old = env.invite("old@acme.test").await;
    let record = |id| {
        let env = env.clone();
        async move {
            env.app
                .store()
                .outbox_message(env.tenant, id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(record(old.message_id).await.state, DeliveryState::Pending);
    // Well past its backoff: the old message is due.
    env.clock.advance(Duration::minutes(5));
    let due = env
        .app
        .store()
        .tenants_with_due_mail(env.clock_now(), 10)
        .await
        .unwrap();
    assert!(due.contains(&env.tenant), "the old message is due");

    let new = env.invite("new@acme.test").await;
    let resent = env.resend(new.user.id).await;
    let bulk = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: vec!["b1@acme.test".into(), "b2@acme.test".into()],
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    let bulk_users: BTreeSet<UserId> = bulk
        .iter()
        .filter_map(|r| match r.outcome {
            BulkOutcome::Invited { user_id } => Some(user_id),
            _ => None,
        })
        .collect();
    assert_eq!(bulk_users.len(), 2);
    let sent = env.mailer.sent();
    assert_eq!(
        sent.iter().map(|m| m.id).collect::<Vec<_>>()[..2],
        [new.message_id, resent.message_id],
        "D25: each call delivers its own message"
    );
    assert_eq!(
        sent[2..].iter().map(|m| m.user_id).collect::<BTreeSet<_>>(),
        bulk_users
    );
    assert_eq!(sent.len(), 4, "D25: the older message is not among them");
    let r = record(old.message_id).await;
    assert_eq!(
        r.state,
        DeliveryState::Pending,
        "D25: left to the dispatcher"
    );
    assert_eq!(r.attempts, 1, "D25: not attempted again inline");

    // A message queued without inline delivery is not sent by a later inline call either.
    let quiet = env.with_delivery(false, Duration::seconds(5));
    let queued = quiet.invite("queued@acme.test").await;
    assert_eq!(record(queued.message_id).await.attempts, 0);
    let loud = env.invite("loud@acme.test").await;
    let sent = env.mailer.sent();
    assert_eq!(sent.last().unwrap().id, loud.message_id);
    assert!(
        sent.iter()
            .all(|m| m.id != queued.message_id && m.id != old.message_id)
    );
    assert_eq!(
        record(queued.message_id).await.state,
        DeliveryState::Pending
    );

    // The dispatcher delivers both, once.
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(report.sent, 2);
    assert_eq!(env.app.dispatch(env.tenant).await.unwrap().sent, 0);
    for id in [old.message_id, queued.message_id] {
        assert!(matches!(record(id).await.state, DeliveryState::Sent { .. }));
        assert_eq!(env.mailer.sent().iter().filter(|m| m.id == id).count(), 1);
    }
}

/// [mail never holds a request (D25)](tenantry_core::Rule::MailNeverHoldsARequest): a silent mail server never holds an invite (or a resend) past the inline deadline:
/// the call returns in time with its user stored; the message, cut off, stays pending and
/// is not taken again at once (the cut-off send may have reached the server: it is retried
/// only after its lease or backoff, [mail delivery (D17)](tenantry_core::Rule::MailDelivery)), and the dispatcher then delivers it once.
pub async fn d25_inline_delivery_is_bounded_by_its_deadline(store: Arc<dyn Store>) {
    let deadline = std::time::Duration::from_millis(300);
    let env = Env::with(
        store,
        Options {
            inline_deadline: Duration::milliseconds(300),
            ..Options::default()
        },
    )
    .await;
    env.mail_delay.set(Some(std::time::Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let invited = env.invite("slow@acme.test").await;
    let took = started.elapsed();
    println!("d25_inline_delivery_is_bounded_by_its_deadline: the invite took {took:?}");
    assert!(
        took < deadline + std::time::Duration::from_secs(3),
        "D25: the invite waited {took:?} for a silent mail server (deadline {deadline:?})"
    );
    assert_eq!(
        env.user(env.tenant, invited.user.id).await.status,
        Status::Invited,
        "D25/D17: the invite is not rolled back"
    );
    let r = env
        .app
        .store()
        .outbox_message(env.tenant, invited.message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        DeliveryState::Pending,
        "D25: left to the dispatcher"
    );
    assert!(env.mailer.sent().is_empty());
    // A resend is bounded the same way.
    let started = std::time::Instant::now();
    let resent = env.resend(invited.user.id).await;
    assert!(started.elapsed() < deadline + std::time::Duration::from_secs(3));
    env.mail_delay.set(None);
    // Not taken again at once (the default lease is 2 minutes, the first backoff 30 s).
    assert_eq!(
        env.app.dispatch(env.tenant).await.unwrap().sent,
        0,
        "D17: a cut-off send is not repeated at once"
    );
    env.clock.advance(Duration::minutes(2));
    let report = env.app.dispatch(env.tenant).await.unwrap();
    assert_eq!(
        report.sent, 2,
        "D25: the dispatcher delivers what was cut off"
    );
    let sent = env.mailer.sent();
    for id in [invited.message_id, resent.message_id] {
        assert_eq!(sent.iter().filter(|m| m.id == id).count(), 1);
    }
    // The resent link is the live one.
    let token = resent.accept_link.token().unwrap();
    env.app
        .accept_invitation(&token, "slow@acme.test")
        .await
        .unwrap();
}

// ----------------------------------------------------------------------------------- D26

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): no outbox read, stored message no longer pending, audit record, user row or
/// listing, template listing, attribution or stored invitation shows a token's secret —
/// after the message was sent, after it failed for good at once or after its retries, and
/// while it is pending (the store alone keeps the body of a pending message, to send it).
/// The links the calls returned still work, each once.
pub async fn d26_live_links_are_never_readable_after_the_call(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let sent = env
        .invite_as(
            env.tenant,
            env.admin,
            &request_with("sent@acme.test", Permissions::empty(), Some(t.id), true),
        )
        .await;
    env.mailer
        .fail_next(MailError::Permanent("550 no such mailbox".into()));
    let failed = env.invite("failed@acme.test").await;
    env.mailer
        .fail_all(MailError::Transient("451 greylisted".into()));
    let retried = env.invite("retried@acme.test").await;
    for _ in 0..8 {
        env.clock.advance(Duration::hours(2));
        env.app.dispatch(env.tenant).await.unwrap();
    }
    env.mailer.recover();
    let quiet = env.with_delivery(false, Duration::seconds(5));
    let pending = quiet.invite("pending@acme.test").await;
    // A resend replaces one link; the old one is dead but must not show either.
    let first = env.invite("twice@acme.test").await;
    let second = env.resend(first.user.id).await;

    let store = env.app.store();
    let state = |id| {
        let env = env.clone();
        async move {
            env.app
                .store()
                .outbox_message(env.tenant, id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert!(matches!(
        state(sent.message_id).await.state,
        DeliveryState::Sent { .. }
    ));
    assert!(matches!(
        state(failed.message_id).await.state,
        DeliveryState::Failed { .. }
    ));
    let r = state(retried.message_id).await;
    assert!(matches!(r.state, DeliveryState::Failed { .. }), "{r:?}");
    assert_eq!(r.attempts, 5);
    for id in [
        sent.message_id,
        failed.message_id,
        retried.message_id,
        first.message_id,
        second.message_id,
    ] {
        let r = state(id).await;
        assert!(
            r.message.text.is_empty() && r.message.html.is_empty(),
            "D26: the store cleared the body of a message sent or failed for good: {r:?}"
        );
    }
    let p = state(pending.message_id).await;
    assert_eq!(p.state, DeliveryState::Pending);
    assert!(
        !p.message.text.is_empty(),
        "D17: the store keeps a pending body to send it"
    );
    let claimed = store
        .claim_due_mail(env.tenant, env.clock_now(), env.clock_now(), 10)
        .await
        .unwrap();
    assert!(claimed.iter().all(|r| r.message.id == pending.message_id));

    let tokens = [
        ("sent", env.token(env.tenant, sent.message_id).await),
        ("failed", failed.accept_link.token().unwrap()),
        ("retried", retried.accept_link.token().unwrap()),
        ("pending", pending.accept_link.token().unwrap()),
        ("superseded", first.accept_link.token().unwrap()),
        ("resent", second.accept_link.token().unwrap()),
    ];
    for (what, token) in &tokens {
        let found = env.secret_shown(env.tenant, &secret_of(token)).await;
        assert!(
            found.is_empty(),
            "D26: the {what} link is readable through {found:?}"
        );
    }
    // The links handed out still work once each (the superseded one not at all).
    for (invited, token) in [
        (&failed, &tokens[1].1),
        (&retried, &tokens[2].1),
        (&pending, &tokens[3].1),
    ] {
        let address = invited.user.email.as_str();
        env.app.accept_invitation(token, address).await.unwrap();
        assert_rule(
            env.app.accept_invitation(token, address).await,
            &E::InvalidInvitation,
        );
    }
    assert_rule(
        env.app
            .accept_invitation(&tokens[4].1, "twice@acme.test")
            .await,
        &E::InvalidInvitation,
    );
    // And, accepted, they still do not show anywhere.
    for (what, token) in &tokens {
        let found = env.secret_shown(env.tenant, &secret_of(token)).await;
        assert!(
            found.is_empty(),
            "D26: the {what} link shows through {found:?}"
        );
    }
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the link returned by an invite, a resend or a bulk invite is the one mailed, built
/// from the base URL, hidden from `Debug`, and works exactly once; a resend's link kills the
/// invite's; a bulk invite returns a link for each invited address and none for the others.
pub async fn d26_returned_links_work_exactly_once(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let invited = env
        .app
        .invite(env.tenant, env.admin, &request("ann@acme.test", Role::User))
        .await
        .unwrap();
    let token = invited.accept_link.token().unwrap();
    assert_eq!(
        invited.accept_link.expose(),
        format!("{BASE_URL}?token={token}"),
        "D10/D26: built from the base URL"
    );
    let mailed = env
        .mailer
        .sent()
        .into_iter()
        .find(|m| m.id == invited.message_id)
        .unwrap();
    assert_eq!(
        tenantry_service::token_from_link(&mailed.text),
        Some(token.clone())
    );
    assert!(
        !format!("{invited:?}").contains(&secret_of(&token)),
        "D26: Debug hides the link"
    );
    env.app
        .accept_invitation(&token, "ann@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app.accept_invitation(&token, "ann@acme.test").await,
        &E::InvalidInvitation,
    );

    // Resend: a new link, the old one dead.
    let ben = env
        .app
        .invite(env.tenant, env.admin, &request("ben@acme.test", Role::User))
        .await
        .unwrap();
    let old = ben.accept_link.token().unwrap();
    env.clock.advance(Duration::minutes(1));
    let resent = env
        .app
        .resend_invitation(env.tenant, env.admin, ben.user.id)
        .await
        .unwrap();
    let new = resent.accept_link.token().unwrap();
    assert_ne!(old, new);
    assert!(!format!("{resent:?}").contains(&secret_of(&new)));
    assert_eq!(
        Some(resent.expires_at),
        env.user(env.tenant, ben.user.id).await.invite_expires_at,
        "D10: the resend returns the new expiry"
    );
    assert_eq!(
        resent.expires_at,
        START + Duration::minutes(1) + Duration::days(7)
    );
    let mailed = env
        .mailer
        .sent()
        .into_iter()
        .find(|m| m.id == resent.message_id)
        .unwrap();
    assert_eq!(
        tenantry_service::token_from_link(&mailed.text),
        Some(new.clone())
    );
    assert_rule(
        env.app.accept_invitation(&old, "ben@acme.test").await,
        &E::InvalidInvitation,
    );
    env.app
        .accept_invitation(&new, "ben@acme.test")
        .await
        .unwrap();
    assert_rule(
        env.app.accept_invitation(&new, "ben@acme.test").await,
        &E::InvalidInvitation,
    );

    // Bulk invite: a link per invited address.
    let inputs = [
        "c1@acme.test",
        "ann@acme.test",
        "nope",
        "c2@acme.test",
        "C1@acme.test",
    ];
    let results = env
        .app
        .invite_many(
            env.tenant,
            env.admin,
            &BulkInvite {
                emails: inputs.iter().map(|s| (*s).to_owned()).collect(),
                ..BulkInvite::default()
            },
        )
        .await
        .unwrap();
    let mut links = Vec::new();
    for r in &results {
        match (&r.outcome, &r.accept_link) {
            (BulkOutcome::Invited { user_id }, Some(link)) => {
                let token = link.token().unwrap();
                assert!(link.expose().starts_with(&format!("{BASE_URL}?token=")));
                let mailed = env
                    .mailer
                    .sent()
                    .into_iter()
                    .find(|m| m.user_id == *user_id)
                    .unwrap();
                assert_eq!(
                    tenantry_service::token_from_link(&mailed.text),
                    Some(token.clone())
                );
                links.push((r.input.clone(), token));
            }
            (BulkOutcome::Invited { .. }, None) => panic!("D26: no link for {r:?}"),
            (_, Some(_)) => panic!("D26: a link for {r:?}"),
            (_, None) => {}
        }
    }
    assert_eq!(
        links.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        vec!["c1@acme.test", "c2@acme.test"]
    );
    assert_ne!(links[0].1, links[1].1);
    for (address, token) in &links {
        env.app.accept_invitation(token, address).await.unwrap();
        assert_rule(
            env.app.accept_invitation(token, address).await,
            &E::InvalidInvitation,
        );
    }
    env.assert_consistent(env.tenant).await;
}

// ------------------------------------------------------------------------ D13 additions

/// [audit log (D13)](tenantry_core::Rule::AuditLog): a refused invite's audit event records the address that was tried (as typed,
/// trimmed) — for a seat, an authority, an address and a template refusal alike — and no
/// other change.
pub async fn d13_refused_invite_records_the_address_tried(store: Arc<dyn Store>) {
    let env = Env::with(
        store,
        Options {
            user_limit: Some(3),
            ..Options::default()
        },
    )
    .await;
    let plain = env.active_user("plain@acme.test").await;
    let cases: Vec<(UserId, tenantry_service::InviteRequest, &str, Rule)> = vec![
        (
            env.admin,
            request("  ADMIN@acme.test ", Role::User),
            "ADMIN@acme.test",
            Rule::UniqueEmail,
        ),
        (
            plain.id,
            request("Guest@Acme.test", Role::User),
            "Guest@Acme.test",
            Rule::ManagementAuthority,
        ),
        (
            env.admin,
            request_with(
                "templated@acme.test",
                Permissions::empty(),
                Some(unknown_template()),
                false,
            ),
            "templated@acme.test",
            Rule::TenantIsolation,
        ),
    ];
    for (actor, req, tried, rule_id) in cases {
        let audit = env.audit(env.tenant).await.len();
        let e = rule(env.app.invite(env.tenant, actor, &req).await);
        assert_eq!(e.rule(), rule_id, "{e:?}");
        let new = assert_new_events(
            &env,
            audit,
            &[(
                ActorRef::User(actor),
                AuditAction::UserInvited,
                AuditTarget::Tenant,
                Some(rule_id),
            )],
        )
        .await;
        assert_eq!(
            new[0].event.changes,
            vec![FieldChange {
                field: Field::Email,
                before: Value::None,
                after: Value::Text(tried.into()),
            }],
            "D13: the refusal records the address tried"
        );
    }
    // At the limit (3 of 3 with one more invite).
    env.invite("third@acme.test").await;
    let audit = env.audit(env.tenant).await.len();
    assert_rule(
        env.app
            .invite(
                env.tenant,
                env.admin,
                &request("Over@Acme.test", Role::User),
            )
            .await,
        &E::SeatLimitReached { used: 3, limit: 3 },
    );
    let new = assert_new_events(
        &env,
        audit,
        &[(
            ActorRef::User(env.admin),
            AuditAction::UserInvited,
            AuditTarget::Tenant,
            Some(Rule::SeatLimit),
        )],
    )
    .await;
    assert_eq!(
        new[0].event.changes,
        vec![FieldChange {
            field: Field::Email,
            before: Value::None,
            after: Value::Text("Over@Acme.test".into()),
        }]
    );
}

/// The users a template event names as having changed access (`Field::ChangedUsers`), or
/// none when it names none.
fn changed_users(event: &tenantry_core::AuditEvent) -> BTreeSet<UserId> {
    let entries: Vec<&FieldChange> = event
        .changes
        .iter()
        .filter(|c| c.field == Field::ChangedUsers)
        .collect();
    assert!(entries.len() <= 1, "one ChangedUsers entry at most");
    match entries.first() {
        None => BTreeSet::new(),
        Some(c) => match &c.after {
            Value::Users(ids) => {
                let set: BTreeSet<UserId> = ids.iter().copied().collect();
                assert_eq!(set.len(), ids.len(), "D13: no user named twice");
                set
            }
            other => panic!("ChangedUsers holds {other:?}"),
        },
    }
}

/// [audit log (D13)](tenantry_core::Rule::AuditLog): a template's permission edit, and a delete that detaches or reassigns its users,
/// record `ChangedUsers`: exactly the users referencing it whose access (now or once
/// active) changed — invited and suspended users included, users whose direct grants
/// already cover the difference, admins, and other templates' users not; a rename names
/// nobody. Read back from every backend's audit log.
pub async fn d13_template_changes_name_exactly_the_users_whose_access_changed(
    store: Arc<dyn Store>,
) {
    let env = Env::new(store).await;
    let t = env
        .new_template("Agents", Permissions::CONVERSATIONS_VIEW)
        .await;
    let other = env
        .new_template("Others", Permissions::CONVERSATIONS_VIEW)
        .await;
    let on_t = |addr: &str, grants| request_with(addr, grants, Some(t.id), false);
    let active = env
        .active(&on_t("active@acme.test", Permissions::empty()))
        .await;
    let covered = env
        .active(&on_t(
            "covered@acme.test",
            Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW,
        ))
        .await;
    let invited = env
        .invite_as(
            env.tenant,
            env.admin,
            &on_t("invited@acme.test", Permissions::empty()),
        )
        .await
        .user;
    let suspended = env
        .active(&on_t("suspended@acme.test", Permissions::SETTINGS_VIEW))
        .await;
    env.edit(suspended.id, &status_edit(Status::Suspended))
        .await;
    let promoted = env
        .active(&on_t("promoted@acme.test", Permissions::empty()))
        .await;
    env.edit(promoted.id, &role_edit(Role::Admin)).await;
    env.active(&request_with(
        "elsewhere@acme.test",
        Permissions::empty(),
        Some(other.id),
        false,
    ))
    .await;

    // Adding analytics:view changes everyone on the template but `covered` (and the admin).
    env.app
        .edit_template(
            env.tenant,
            env.admin,
            t.id,
            &set_permissions(Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW),
        )
        .await
        .unwrap();
    let last = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert_eq!(last.action, AuditAction::TemplateEdited);
    assert_eq!(
        env.app
            .effective_permissions(env.tenant, covered.id)
            .await
            .unwrap(),
        (
            Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW,
            false
        ),
        "its direct grants already held the addition"
    );
    assert_eq!(
        changed_users(&last),
        BTreeSet::from([active.id, invited.id, suspended.id]),
        "D13: the edit names exactly the users whose access changed"
    );
    // A rename changes nobody's access.
    env.app
        .edit_template(env.tenant, env.admin, t.id, &rename("Agents 2"))
        .await
        .unwrap();
    let last = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert!(
        changed_users(&last).is_empty(),
        "D13: a rename names nobody"
    );

    // Reassigning to `Others` (conversations:view only) takes analytics:view away from all
    // but `covered`, which holds it directly.
    env.app
        .delete_template(
            env.tenant,
            env.admin,
            t.id,
            TemplateDeletion::Reassign(other.id),
        )
        .await
        .unwrap();
    let last = env.audit(env.tenant).await.last().unwrap().event.clone();
    assert_eq!(last.action, AuditAction::TemplateDeleted);
    assert_eq!(
        changed_users(&last),
        BTreeSet::from([active.id, invited.id, suspended.id]),
        "D13: the reassignment names exactly the users whose access changed"
    );
    // Detaching `Others` takes conversations:view from everyone on it but `covered`.
    env.app
        .delete_template(env.tenant, env.admin, other.id, TemplateDeletion::Detach)
        .await
        .unwrap();
    let last = env.audit(env.tenant).await.last().unwrap().event.clone();
    let elsewhere = env
        .users(env.tenant)
        .await
        .into_iter()
        .find(|u| u.email.as_str() == "elsewhere@acme.test")
        .unwrap();
    assert_eq!(
        changed_users(&last),
        BTreeSet::from([active.id, invited.id, suspended.id, elsewhere.id]),
        "D13: the detachment names exactly the users whose access changed"
    );
    env.assert_consistent(env.tenant).await;
}
