//! Scenarios of [seat limit (D9)](tenantry_core::Rule::SeatLimit), [names (D22)](tenantry_core::Rule::Names) and [first seat (D23)](tenantry_core::Rule::FirstSeat).

use std::sync::Arc;

use tenantry_core::{AuditAction, AuditTarget, Error as E};
use tenantry_service::{
    ActorRef, Error, Permissions, Role, Rule, SeatUsage, Status, Store, TemplateName, UserId,
};

use crate::support::{Env, Options, START, assert_rule, email, request, rule};

use super::helpers::{assert_new_events, status_edit};

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

// ----------------------------------------------------------------------------------- D22

/// The 10 random bytes of a tenant id (as [`id_random_bytes`](crate::support::id_random_bytes) for users).
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

/// [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): the operators' listing of tenants, the one read not scoped to a tenant,
/// returns tenant rows and counters only. Pages of 2 walk every tenant once, in order of name
/// by its bytes (upper case before lower, "Ä" after "z") and then id (two tenants may share a
/// name), each with its seat limit, seats used and creation time; a cursor survives its text
/// form; a rename moves the tenant to its new place at once.
pub async fn d15_tenants_are_listed_by_name_in_pages(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    env.invite("bob@acme.test").await;
    let mut made = vec![(String::from("Acme"), env.tenant)];
    for (i, name) in ["beta", "Beta", "Zulu", "\u{c4}rger", "Same", "Same", "acme"]
        .into_iter()
        .enumerate()
    {
        let random = [u8::try_from(i).unwrap() + 40; 10];
        let (created, id) = create_tenant_forced(&env, random, name, Some(7)).await;
        assert_eq!(created.unwrap().0, id);
        made.push((name.to_owned(), id));
    }
    made.sort_by(|a, b| (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)));
    let mut seen = Vec::new();
    let mut after: Option<tenantry_service::TenantCursor> = None;
    for _ in 0..10 {
        let page = env.app.tenants(after.as_ref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        for state in &page.items {
            seen.push((state.tenant.name.clone(), state.tenant.id));
            let expected_seats = if state.tenant.id == env.tenant { 2 } else { 1 };
            assert_eq!(
                state.counters.seats_used, expected_seats,
                "{}",
                state.tenant.name
            );
            let limit = if state.tenant.id == env.tenant {
                None
            } else {
                Some(7)
            };
            assert_eq!(state.tenant.user_limit, limit);
            assert!(state.tenant.created_at >= START);
        }
        // The cursor travels as text.
        after = page.next.map(|c| c.to_string().parse().unwrap());
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, made, "every tenant once, by name bytes then id");
    env.app
        .rename_tenant(env.tenant, env.admin, "Zz Acme")
        .await
        .unwrap();
    let all = env.app.tenants(None, 500).await.unwrap();
    assert!(all.next.is_none());
    let names: Vec<&str> = all.items.iter().map(|s| s.tenant.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Beta",
            "Same",
            "Same",
            "Zulu",
            "Zz Acme",
            "acme",
            "beta",
            "\u{c4}rger"
        ],
        "a rename moves the tenant at once"
    );
}

/// [names (D22)](tenantry_core::Rule::Names) and [management authority (D7)](tenantry_core::Rule::ManagementAuthority): only an active admin renames its tenant. The name
/// is trimmed and stored, and the rename audited with the old and new name; the same name
/// again changes and records nothing. A manager holding `users:edit` is refused `AdminOnly`, a
/// plain user `NotAllowed`, a suspended admin `NotAllowed`, an invalid name
/// `InvalidTenantName`: each refusal is audited under its rule and leaves the name and the
/// version as they were. An admin of another tenant cannot rename this one.
pub async fn d22_only_an_admin_renames_its_tenant(store: Arc<dyn Store>) {
    let env = Env::new(store).await;
    let manager = env
        .active(&crate::support::request_with(
            "manager@acme.test",
            Permissions::USERS_VIEW | Permissions::USERS_EDIT,
            None,
            false,
        ))
        .await;
    let user = env.active_user("user@acme.test").await;
    let second = env.active_admin("second@acme.test").await;
    let from = env.audit(env.tenant).await.len();
    let renamed = env
        .app
        .rename_tenant(env.tenant, env.admin, "  Acme Support\t")
        .await
        .unwrap();
    assert_eq!(renamed.name, "Acme Support", "D22: trimmed");
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.name,
        "Acme Support"
    );
    let log = assert_new_events(
        &env,
        from,
        &[(
            ActorRef::User(env.admin),
            AuditAction::TenantRenamed,
            AuditTarget::Tenant,
            None,
        )],
    )
    .await;
    let change = &log[0].event.changes[0];
    assert_eq!(change.field, tenantry_core::Field::Name);
    assert_eq!(change.before, tenantry_core::Value::Text("Acme".into()));
    assert_eq!(
        change.after,
        tenantry_core::Value::Text("Acme Support".into())
    );

    // The same name again: nothing written, nothing recorded.
    let version = env.counters(env.tenant).await.version;
    let from = env.audit(env.tenant).await.len();
    env.app
        .rename_tenant(env.tenant, env.admin, "Acme Support")
        .await
        .unwrap();
    assert_eq!(env.counters(env.tenant).await.version, version);
    assert_eq!(env.audit(env.tenant).await.len(), from);

    env.edit(second.id, &status_edit(Status::Suspended)).await;
    let version = env.counters(env.tenant).await.version;
    let from = env.audit(env.tenant).await.len();
    let needed =
        tenantry_core::Permission::new(tenantry_core::Category::Users, tenantry_core::Action::Edit);
    assert_rule(
        env.app
            .rename_tenant(env.tenant, manager.id, "Manager's")
            .await,
        &E::AdminOnly,
    );
    assert_rule(
        env.app.rename_tenant(env.tenant, user.id, "User's").await,
        &E::NotAllowed { needed },
    );
    assert_rule(
        env.app
            .rename_tenant(env.tenant, second.id, "Suspended's")
            .await,
        &E::NotAllowed { needed },
    );
    let invalid = rule(
        env.app
            .rename_tenant(env.tenant, env.admin, "Acme\u{202E}")
            .await,
    );
    assert!(matches!(invalid, E::InvalidTenantName(_)), "{invalid:?}");
    assert_new_events(
        &env,
        from,
        &[
            (
                ActorRef::User(manager.id),
                AuditAction::TenantRenamed,
                AuditTarget::Tenant,
                Some(Rule::ManagementAuthority),
            ),
            (
                ActorRef::User(user.id),
                AuditAction::TenantRenamed,
                AuditTarget::Tenant,
                Some(Rule::ManagementAuthority),
            ),
            (
                ActorRef::User(second.id),
                AuditAction::TenantRenamed,
                AuditTarget::Tenant,
                Some(Rule::ManagementAuthority),
            ),
            (
                ActorRef::User(env.admin),
                AuditAction::TenantRenamed,
                AuditTarget::Tenant,
                Some(Rule::Names),
            ),
        ],
    )
    .await;
    assert_eq!(env.counters(env.tenant).await.version, version);
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.name,
        "Acme Support"
    );

    // An admin of another tenant is not a user of this one.
    let (_, other_admin) = env.other_tenant("Globex", "hank@globex.test").await;
    assert_rule(
        env.app
            .rename_tenant(env.tenant, other_admin, "Taken over")
            .await,
        &E::NotAllowed { needed },
    );
    assert_eq!(
        env.app.tenant(env.tenant).await.unwrap().tenant.name,
        "Acme Support"
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
