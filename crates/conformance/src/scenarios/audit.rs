//! Scenarios of [audit log (D13)](tenantry_core::Rule::AuditLog).

use std::collections::BTreeSet;
use std::sync::Arc;

use tenantry_core::{AuditAction, AuditTarget, Error as E, Field, FieldChange, Outcome, Value};
use tenantry_service::{
    Action, ActorRef, Error, Permissions, QueryError, Role, Rule, Status, Store, TemplateDeletion,
    UserEdit, UserId,
};
use time::Duration;

use crate::support::{
    Env, Options, START, assert_rule, request, request_with, rule, unknown_template,
};

use super::helpers::{
    assert_new_events, rename, role_edit, set_permissions, status_edit, users_perm,
};

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

// ------------------------------------------------------------------------- D13 additions

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

/// [audit log (D13)](tenantry_core::Rule::AuditLog): a refused management attempt by an actor that is not a user of the tenant (a
/// user of another tenant, or an id of no one) is recorded in the tenant it named, sampled:
/// the first in each minute, carrying how many were only counted since the last one
/// recorded ([`Field::UnrecordedRefusals`]). The actor gets the same answer whether or not its
/// id exists anywhere, and a flood does not grow the log.
pub async fn d13_refusals_by_non_users_are_recorded_sampled(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let (other, outsider) = env.other_tenant("Globex", "gil@globex.test").await;
    let before = env.audit(env.tenant).await.len();
    let other_before = env.audit(other).await.len();
    let nobody = crate::support::unknown_user();

    // Same answer for a real user of another tenant and for an id of no one.
    let by_outsider = rule(
        env.app
            .invite(env.tenant, outsider, &request("x@acme.test", Role::User))
            .await,
    );
    let by_nobody = rule(
        env.app
            .invite(env.tenant, nobody, &request("x@acme.test", Role::User))
            .await,
    );
    assert_eq!(
        by_outsider, by_nobody,
        "D13/D15: nothing tells the ids apart"
    );
    assert_eq!(by_outsider.rule(), Rule::ManagementAuthority);

    let log = env.audit(env.tenant).await;
    assert_eq!(log.len(), before + 1, "D13: the first refusal is recorded");
    let first = &log[before].event;
    assert_eq!(first.actor, ActorRef::User(outsider));
    assert_eq!(first.action, AuditAction::UserInvited);
    assert_eq!(first.target, AuditTarget::Tenant);
    assert!(matches!(
        first.outcome,
        Outcome::Refused {
            rule: Rule::ManagementAuthority,
            ..
        }
    ));
    assert_eq!(
        first.changes,
        vec![FieldChange {
            field: Field::UnrecordedRefusals,
            before: Value::None,
            after: Value::Number(0),
        }]
    );

    // A flood within the minute: counted, not recorded.
    let admin = env.admin;
    for i in 0..40u32 {
        env.clock.advance(Duration::seconds(1));
        let actor = if i % 2 == 0 { outsider } else { nobody };
        let refused = match i % 4 {
            0 => env
                .app
                .delete_user(env.tenant, actor, admin)
                .await
                .map(drop),
            1 => env
                .app
                .edit_user(env.tenant, actor, admin, &role_edit(Role::User))
                .await
                .map(drop),
            2 => env
                .app
                .purge_expired_invitations(env.tenant, actor)
                .await
                .map(drop),
            _ => env
                .app
                .invite(env.tenant, actor, &request("y@acme.test", Role::User))
                .await
                .map(drop),
        };
        assert_eq!(rule(refused).rule(), Rule::ManagementAuthority);
    }
    assert_eq!(
        env.audit(env.tenant).await.len(),
        before + 1,
        "D13: a flood within the window adds nothing"
    );
    assert_eq!(
        env.audit(other).await.len(),
        other_before,
        "D15: nothing is written to the outsider's own tenant"
    );

    // The next window: one more event, with the count of the ones only counted (the second
    // attempt above, and the 40 of the flood).
    env.clock.advance(Duration::seconds(60));
    let _ = env
        .app
        .invite(env.tenant, nobody, &request("z@acme.test", Role::User))
        .await;
    let log = env.audit(env.tenant).await;
    assert_eq!(log.len(), before + 2);
    let next = &log[before + 1].event;
    assert_eq!(next.actor, ActorRef::User(nobody));
    assert_eq!(next.changes[0].after, Value::Number(41));
    assert_eq!(
        env.user(env.tenant, admin).await.role,
        Role::Admin,
        "nothing was changed"
    );
}
