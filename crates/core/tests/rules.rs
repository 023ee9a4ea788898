//! One or more unit tests per rule (D1–D28, `docs/rules.md`) that the pure core implements
//! (D1–D12, D19–D24, plus the D13–D15 parts that live in the core). Every test names the
//! rule it checks; everything goes through the public API of `tenantry_core`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::HashSet;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use tenantry_core::decide::{
    self, Acting, BulkInvite, BulkOutcome, Ctx, InviteRequest, NewInvite, TemplateDeletion,
    TemplateEdit, UserEdit,
};
use tenantry_core::{
    Action, ActorRef, AuditAction, AuditTarget, Category, Change, Counters, Decision, Email,
    EmailError, Error, ErrorKind, Field, FieldChange, Invitation, InvitationKind, InvitationState,
    MAX_ACCEPT_ATTEMPTS, MAX_TEMPLATE_NAME_LEN, MAX_TENANT_NAME_LEN, NameError, Outcome,
    Permission, Permissions, Policy, Reason, Request, Role, RoleTemplate, Rule, SeatUsage, Status,
    TemplateId, TemplateName, TemplateNameError, Tenant, TenantId, TenantName, TenantState,
    TokenHash, Tombstone, User, UserId, Value, Write, authorize, check_name, effective_crm,
    effective_permissions, is_format_char, potential_permissions,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const MS: u64 = 1_700_000_000_000;

fn tenant_id() -> TenantId {
    TenantId::from_parts(MS, [1; 10])
}

fn other_tenant_id() -> TenantId {
    TenantId::from_parts(MS, [2; 10])
}

fn uid(n: u8) -> UserId {
    UserId::from_parts(MS, [n; 10])
}

fn tid(n: u8) -> TemplateId {
    TemplateId::from_parts(MS, [n; 10])
}

fn now() -> OffsetDateTime {
    datetime!(2025-01-01 12:00 UTC)
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

/// A set from its comma-separated wire form, e.g. `"users:view,users:edit"`.
fn perms(s: &str) -> Permissions {
    s.parse().unwrap()
}

fn perm(s: &str) -> Permission {
    s.parse().unwrap()
}

fn user(n: u8, role: Role, status: Status, grants: Permissions) -> User {
    User {
        id: uid(n),
        tenant_id: tenant_id(),
        email: email(&format!("user{n}@example.com")),
        role,
        status,
        template_id: None,
        crm_access: role == Role::Admin,
        grants,
        created_at: now() - Duration::days(30),
        last_login: None,
        invite_expires_at: (status == Status::Invited).then(|| now() + Duration::days(7)),
        identity: None,
    }
}

fn admin(n: u8) -> User {
    user(n, Role::Admin, Status::Active, Permissions::empty())
}

fn member(n: u8, grants: Permissions) -> User {
    user(n, Role::User, Status::Active, grants)
}

/// A non-admin user manager: every `users:*` permission plus `conversations:view`, no CRM.
fn manager(n: u8) -> User {
    member(
        n,
        Permissions::category(Category::Users) | Permissions::CONVERSATIONS_VIEW,
    )
}

fn template(n: u8, permissions: Permissions) -> RoleTemplate {
    RoleTemplate {
        id: tid(n),
        tenant_id: tenant_id(),
        name: TemplateName::parse(&format!("Template {n}")).unwrap(),
        permissions,
        created_at: now() - Duration::days(10),
        updated_at: now() - Duration::days(10),
    }
}

struct Fx {
    state: TenantState,
    policy: Policy,
    now: OffsetDateTime,
}

impl Fx {
    fn new(seats_used: u32, active_admins: u32, user_limit: Option<u32>) -> Self {
        Self {
            state: TenantState {
                tenant: Tenant {
                    id: tenant_id(),
                    name: "Acme".to_owned(),
                    user_limit,
                    created_at: now() - Duration::days(100),
                },
                counters: Counters {
                    version: 41,
                    seats_used,
                    active_admins,
                },
            },
            policy: Policy::default(),
            now: now(),
        }
    }

    /// A tenant with room to spare and two active admins.
    fn roomy() -> Self {
        Self::new(10, 2, Some(100))
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            state: &self.state,
            now: self.now,
            policy: &self.policy,
        }
    }
}

fn acting(user: &User) -> Acting<'_> {
    Acting {
        user,
        template: None,
    }
}

fn new_invite(n: u8) -> NewInvite {
    NewInvite {
        user_id: uid(n),
        token_hash: TokenHash([n; 32]),
    }
}

fn invite_request(address: &str, role: Role, grants: Permissions) -> InviteRequest {
    InviteRequest {
        email: email(address),
        role,
        template_id: None,
        crm_access: false,
        grants,
    }
}

fn invitation(user: &User, state: InvitationState, expires_at: OffsetDateTime) -> Invitation {
    Invitation {
        token_hash: TokenHash([9; 32]),
        tenant_id: tenant_id(),
        user_id: user.id,
        kind: InvitationKind::Initial,
        state,
        created_at: now() - Duration::days(1),
        expires_at,
        failed_attempts: 0,
    }
}

/// The single `UpdateUser` write of a change.
fn updated_user(change: &Change) -> &User {
    let users: Vec<&User> = change
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::UpdateUser(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(
        users.len(),
        1,
        "expected exactly one UpdateUser in {change:?}"
    );
    users[0]
}

fn inserted_users(change: &Change) -> Vec<&User> {
    change
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::InsertUser(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn tombstones(change: &Change) -> Vec<&Tombstone> {
    change
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::DeleteUser(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn edit_user(
    fx: &Fx,
    actor: &User,
    target: &User,
    edit: &UserEdit,
) -> Result<Change, tenantry_core::Error> {
    decide::edit(fx.ctx(), &acting(actor), target, None, None, edit, false)
}

fn req(s: &str) -> Request {
    Request::Permission(perm(s))
}

// ---------------------------------------------------------------------------------------------
// D1 Roles
// ---------------------------------------------------------------------------------------------

#[test]
fn d1_admin_holds_every_permission_and_crm() {
    let a = admin(1);
    assert_eq!(effective_permissions(&a, None), Permissions::all());
    assert_eq!(Permissions::all().bits().count_ones(), 30);
    for p in Permission::all() {
        assert_eq!(
            authorize(&a, None, p.into()),
            Decision::new(Reason::Admin),
            "{p}"
        );
    }
    assert!(authorize(&a, None, Request::Crm).is_allowed());
    assert!(effective_crm(&a));
}

#[test]
fn d1_admin_holds_all_even_with_crm_flag_false_and_no_grants() {
    let mut a = admin(1);
    a.crm_access = false; // a corrupt row must not take CRM away from an admin
    assert!(effective_crm(&a));
    assert_eq!(authorize(&a, None, Request::Crm).reason(), Reason::Admin);
}

#[test]
fn d1_user_holds_only_grants_and_template() {
    let t = template(1, Permissions::ANALYTICS_VIEW);
    let mut u = member(2, Permissions::CONVERSATIONS_VIEW);
    u.template_id = Some(t.id);
    assert_eq!(
        effective_permissions(&u, Some(&t)),
        Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW
    );
    for p in Permission::all() {
        let expected = p == perm("conversations:view") || p == perm("analytics:view");
        assert_eq!(
            authorize(&u, Some(&t), p.into()).is_allowed(),
            expected,
            "{p}"
        );
    }
}

#[test]
fn d1_role_wire_names() {
    assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
    assert_eq!("user".parse::<Role>().unwrap(), Role::User);
    assert!("Admin".parse::<Role>().is_err());
    assert!("owner".parse::<Role>().is_err());
    assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
    assert_eq!(serde_json::to_string(&Role::User).unwrap(), "\"user\"");
    assert!(serde_json::from_str::<Role>("\"superuser\"").is_err());
}

#[test]
fn d1_admin_may_manage_users_and_templates() {
    let fx = Fx::roomy();
    let a = admin(1);
    let ctx = fx.ctx();
    assert!(
        decide::invite(
            ctx,
            &acting(&a),
            &invite_request("new@example.com", Role::Admin, Permissions::empty()),
            None,
            false,
            new_invite(50),
        )
        .is_ok()
    );
    assert!(
        decide::create_template(
            ctx,
            &acting(&a),
            tid(9),
            TemplateName::parse("Everything").unwrap(),
            Permissions::all(),
            false,
        )
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------------
// D2 Statuses and transitions
// ---------------------------------------------------------------------------------------------

#[test]
fn d2_edit_transition_table() {
    use Status::{Active, Invited, Suspended};
    let allowed = [
        (Active, Active),
        (Active, Suspended),
        (Suspended, Suspended),
        (Suspended, Active),
        (Invited, Invited),
    ];
    for from in [Invited, Active, Suspended] {
        for to in [Invited, Active, Suspended] {
            assert_eq!(
                from.edit_allows(to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn d2_edit_suspends_and_reactivates() {
    let fx = Fx::roomy();
    let a = admin(1);
    let u = member(2, Permissions::CONVERSATIONS_VIEW);
    let suspend = UserEdit {
        status: Some(Status::Suspended),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &u, &suspend).unwrap();
    let suspended = updated_user(&c).clone();
    assert_eq!(suspended.status, Status::Suspended);

    let reactivate = UserEdit {
        status: Some(Status::Active),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &suspended, &reactivate).unwrap();
    assert_eq!(updated_user(&c).status, Status::Active);
}

#[test]
fn d2_invited_cannot_be_activated_or_suspended_by_edit() {
    let fx = Fx::roomy();
    let a = admin(1);
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    for to in [Status::Active, Status::Suspended] {
        let e = UserEdit {
            status: Some(to),
            ..UserEdit::default()
        };
        let err = edit_user(&fx, &a, &invited, &e).unwrap_err();
        assert_eq!(
            err,
            Error::InvalidTransition {
                from: Status::Invited,
                to
            }
        );
        assert_eq!(err.rule(), Rule::StatusTransitions);
        assert!(err.to_string().contains("invited"), "{err}");
    }
}

#[test]
fn d2_nobody_goes_back_to_invited() {
    let fx = Fx::roomy();
    let a = admin(1);
    for from in [Status::Active, Status::Suspended] {
        let u = user(2, Role::User, from, Permissions::empty());
        let e = UserEdit {
            status: Some(Status::Invited),
            ..UserEdit::default()
        };
        assert_eq!(
            edit_user(&fx, &a, &u, &e).unwrap_err(),
            Error::InvalidTransition {
                from,
                to: Status::Invited
            }
        );
    }
}

#[test]
fn d2_accepting_is_the_way_from_invited_to_active() {
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    let c = decide::accept(fx.ctx(), &inv, &invited, &invited.email).unwrap();
    assert_eq!(updated_user(&c).status, Status::Active);
}

#[test]
fn d2_editable_statuses_for_the_form() {
    assert_eq!(
        decide::editable_statuses(Status::Invited),
        &[Status::Invited]
    );
    assert_eq!(
        decide::editable_statuses(Status::Active),
        &[Status::Active, Status::Suspended]
    );
    assert_eq!(
        decide::editable_statuses(Status::Suspended),
        &[Status::Active, Status::Suspended]
    );
}

// ---------------------------------------------------------------------------------------------
// D3 Email
// ---------------------------------------------------------------------------------------------

#[test]
fn d3_stored_trimmed_as_typed_and_keyed_lowercase() {
    let e = Email::parse(" \t Ada.Lovelace@Example.COM \r\n").unwrap();
    assert_eq!(e.as_str(), "Ada.Lovelace@Example.COM");
    assert_eq!(e.to_string(), "Ada.Lovelace@Example.COM");
    assert_eq!(e.key(), "ada.lovelace@example.com");
    let f = Email::parse("ADA.LOVELACE@example.com").unwrap();
    assert!(e.same_as(&f));
    assert!(!e.same_as(&Email::parse("ada.lovelace2@example.com").unwrap()));
}

#[test]
fn d3_every_syntax_error_says_why() {
    let cases: Vec<(String, EmailError)> = vec![
        ("".into(), EmailError::Empty),
        ("   \t".into(), EmailError::Empty),
        (
            "jos\u{e9}@example.com".into(),
            EmailError::NonAscii {
                ch: '\u{e9}',
                position: 3,
            },
        ),
        ("example.com".into(), EmailError::MissingAt),
        ("a@b@example.com".into(), EmailError::MultipleAt),
        ("@example.com".into(), EmailError::EmptyLocalPart),
        (
            format!("{}@example.com", "a".repeat(65)),
            EmailError::LocalPartTooLong { len: 65 },
        ),
        (
            "a b@example.com".into(),
            EmailError::InvalidLocalChar { ch: ' ' },
        ),
        (
            "a\"b@example.com".into(),
            EmailError::InvalidLocalChar { ch: '"' },
        ),
        (
            "a(b)@example.com".into(),
            EmailError::InvalidLocalChar { ch: '(' },
        ),
        (".ab@example.com".into(), EmailError::MisplacedDot),
        ("ab.@example.com".into(), EmailError::MisplacedDot),
        ("a..b@example.com".into(), EmailError::MisplacedDot),
        ("ab@".into(), EmailError::EmptyDomain),
        ("ab@.example.com".into(), EmailError::EmptyDomainLabel),
        ("ab@example.com.".into(), EmailError::EmptyDomainLabel),
        ("ab@example..com".into(), EmailError::EmptyDomainLabel),
        (
            format!("ab@{}.com", "d".repeat(64)),
            EmailError::DomainLabelTooLong {
                label: "d".repeat(64),
            },
        ),
        (
            "ab@exa_mple.com".into(),
            EmailError::InvalidDomainChar { ch: '_' },
        ),
        (
            "ab@[127.0.0.1]".into(),
            EmailError::InvalidDomainChar { ch: '[' },
        ),
        (
            "ab@-example.com".into(),
            EmailError::DomainLabelHyphen {
                label: "-example".into(),
            },
        ),
        (
            "ab@example-.com".into(),
            EmailError::DomainLabelHyphen {
                label: "example-".into(),
            },
        ),
        (
            "a\r\nb@example.com".into(),
            EmailError::InvalidLocalChar { ch: '\r' },
        ),
        (
            "ab@exa\0mple.com".into(),
            EmailError::InvalidDomainChar { ch: '\0' },
        ),
    ];
    for (input, expected) in cases {
        let err = Email::parse(&input).unwrap_err();
        assert_eq!(err, expected, "{input:?}");
        assert!(!err.to_string().is_empty());
        // As a decide error it names D3.
        assert_eq!(Error::from(err).rule(), Rule::UniqueEmail);
    }
}

#[test]
fn d3_length_boundaries() {
    // local part: 64 ok, 65 refused
    assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
    assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    // label: 63 ok, 64 refused
    assert!(Email::parse(&format!("a@{}.com", "b".repeat(63))).is_ok());
    assert!(Email::parse(&format!("a@{}.com", "b".repeat(64))).is_err());
    // whole address: 254 ok, 255 refused
    let domain_254 = format!(
        "{}.{}.{}.{}",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(254 - 2 - 63 * 3 - 3)
    );
    let ok = format!("a@{domain_254}");
    assert_eq!(ok.len(), 254);
    assert!(Email::parse(&ok).is_ok());
    let too_long = format!("aa@{domain_254}");
    assert_eq!(
        Email::parse(&too_long).unwrap_err(),
        EmailError::TooLong { len: 255 }
    );
    // surrounding white space does not count
    assert!(Email::parse(&format!("   {ok}   ")).is_ok());
}

#[test]
fn d3_dot_atom_specials_and_idn_xn_form() {
    for ok in [
        "o'brien+tag@example.com",
        "a!#$%&'*+-/=?^_`{|}~z@example.com",
        "first.last@sub.example.co.uk",
        "x@xn--bcher-kva.example",
        "x@localhost",
        "x@123.example",
    ] {
        assert!(Email::parse(ok).is_ok(), "{ok}");
    }
    assert!(matches!(
        Email::parse("x@b\u{fc}cher.example").unwrap_err(),
        EmailError::NonAscii { ch: '\u{fc}', .. }
    ));
}

#[test]
fn d3_case_mapping_traps_are_refused_not_folded() {
    // Each of these lowercases (or case-folds) to ASCII under Unicode rules.
    for trap in [
        "\u{212A}elvin@example.com", // KELVIN SIGN -> k
        "adm\u{0131}n@example.com",  // dotless i
        "\u{017F}ales@example.com",  // long s
        "\u{FB01}le@example.com",    // fi ligature
        "\u{FF41}dmin@example.com",  // fullwidth a
        "admin@\u{FF45}xample.com",  // fullwidth e in the domain
        "\u{0130}nfo@example.com",   // I with dot above
        "admin\u{FF20}example.com",  // fullwidth @
    ] {
        let err = Email::parse(trap).unwrap_err();
        assert!(
            matches!(err, EmailError::NonAscii { .. }),
            "{trap}: {err:?}"
        );
    }
}

#[test]
fn d3_invite_refuses_taken_address() {
    let fx = Fx::roomy();
    let a = admin(1);
    let err = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("Taken@Example.com", Role::User, Permissions::empty()),
        None,
        true,
        new_invite(50),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::EmailTaken {
            email: "Taken@Example.com".into()
        }
    );
    assert_eq!(err.rule(), Rule::UniqueEmail);
}

#[test]
fn d3_edit_email_taken_only_when_the_key_changes() {
    let fx = Fx::roomy();
    let a = admin(1);
    let u = member(2, Permissions::empty());
    // another user has the new key
    let to_other = UserEdit {
        email: Some(email("someone@example.com")),
        ..UserEdit::default()
    };
    assert_eq!(
        decide::edit(fx.ctx(), &acting(&a), &u, None, None, &to_other, true).unwrap_err(),
        Error::EmailTaken {
            email: "someone@example.com".into()
        }
    );
    // a case-only change keeps the key: the user itself owns it, so this is not "taken"
    let recase = UserEdit {
        email: Some(email("USER2@example.com")),
        ..UserEdit::default()
    };
    let c = decide::edit(fx.ctx(), &acting(&a), &u, None, None, &recase, true).unwrap();
    assert_eq!(updated_user(&c).email.as_str(), "USER2@example.com");
}

#[test]
fn d3_email_serde_validates() {
    let e: Email = serde_json::from_str("\" Bob@Example.com \"").unwrap();
    assert_eq!(e.as_str(), "Bob@Example.com");
    assert_eq!(serde_json::to_string(&e).unwrap(), "\"Bob@Example.com\"");
    assert!(serde_json::from_str::<Email>("\"not an address\"").is_err());
    assert!(serde_json::from_str::<Email>("\"\u{212A}@example.com\"").is_err());
}

// ---------------------------------------------------------------------------------------------
// D4 Permissions
// ---------------------------------------------------------------------------------------------

#[test]
fn d4_thirty_distinct_flags() {
    let all: Vec<Permission> = Permission::all().collect();
    assert_eq!(all.len(), 30);
    let mut union = Permissions::empty();
    for p in &all {
        assert_eq!(p.flag().bits().count_ones(), 1, "{p}");
        assert!(!union.intersects(p.flag()), "{p} collides");
        union |= p.flag();
    }
    assert_eq!(union, Permissions::all());
    for c in Category::ALL {
        assert_eq!(Permissions::category(c).bits().count_ones(), 5);
        for a in Action::ALL {
            assert!(Permissions::category(c).has(Permission::new(c, a)));
        }
    }
}

#[test]
fn d4_no_action_implies_another() {
    for granted in Permission::all() {
        let u = member(2, granted.into());
        for asked in Permission::all() {
            assert_eq!(
                authorize(&u, None, asked.into()).is_allowed(),
                granted == asked,
                "{granted} must not imply {asked}"
            );
        }
    }
}

#[test]
fn d4_wire_format_is_a_sorted_list_of_strings() {
    let set = Permissions::USERS_VIEW
        | Permissions::ANALYTICS_VIEW
        | Permissions::CONVERSATIONS_MANAGE
        | Permissions::EXPERIMENTS_CREATE;
    let json = serde_json::to_value(set).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            "analytics:view",
            "conversations:manage",
            "experiments:create",
            "users:view"
        ])
    );
    assert_eq!(serde_json::to_string(&Permissions::empty()).unwrap(), "[]");
    let back: Permissions = serde_json::from_value(json).unwrap();
    assert_eq!(back, set);
    // order and repeats do not matter on input
    let unordered: Permissions =
        serde_json::from_str(r#"["users:view","analytics:view","users:view"]"#).unwrap();
    assert_eq!(
        unordered,
        Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW
    );
    // Display / FromStr use the same names
    assert_eq!(
        (Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW).to_string(),
        "analytics:view,users:view"
    );
    assert_eq!(
        perms(" users:view , analytics:view "),
        Permissions::USERS_VIEW | Permissions::ANALYTICS_VIEW
    );
    assert_eq!(perms(""), Permissions::empty());
    assert_eq!(
        serde_json::to_string(&perm("settings:delete")).unwrap(),
        "\"settings:delete\""
    );
}

#[test]
fn d4_unknown_strings_and_raw_bits_are_errors() {
    for bad in [
        r#"["users:view","users:fly"]"#,
        r#"["Users:view"]"#,
        r#"["users"]"#,
        r#"["users:view:extra"]"#,
        r#"["crm:view"]"#,
        r#"[""]"#,
        "1024",
        r#""users:view""#,
    ] {
        assert!(serde_json::from_str::<Permissions>(bad).is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<Permission>(r#""users:fly""#).is_err());
    let err = Permissions::parse_list(["analytics:view", "bogus:thing"]).unwrap_err();
    assert_eq!(err.input, "bogus:thing");
    assert!("users:view,nope".parse::<Permissions>().is_err());
}

// ---------------------------------------------------------------------------------------------
// D5 CRM access
// ---------------------------------------------------------------------------------------------

#[test]
fn d5_admin_crm_cannot_be_turned_off() {
    let fx = Fx::roomy();
    let a = admin(1);
    let other = admin(2);
    let e = UserEdit {
        crm_access: Some(false),
        ..UserEdit::default()
    };
    let err = edit_user(&fx, &a, &other, &e).unwrap_err();
    assert_eq!(err, Error::AdminCrmRequired);
    assert_eq!(err.rule(), Rule::CrmAccess);
    // promoting and turning it off at once is the same error
    let u = member(3, Permissions::empty());
    let promote_off = UserEdit {
        role: Some(Role::Admin),
        crm_access: Some(false),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &a, &u, &promote_off).unwrap_err(),
        Error::AdminCrmRequired
    );
}

#[test]
fn d5_promotion_turns_crm_on_and_demotion_keeps_it() {
    let fx = Fx::roomy();
    let a = admin(1);
    let u = member(2, Permissions::empty());
    assert!(!u.crm_access);
    let promote = UserEdit {
        role: Some(Role::Admin),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &u, &promote).unwrap();
    let promoted = updated_user(&c).clone();
    assert_eq!(promoted.role, Role::Admin);
    assert!(promoted.crm_access);

    let demote = UserEdit {
        role: Some(Role::User),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &promoted, &demote).unwrap();
    let demoted = updated_user(&c);
    assert_eq!(demoted.role, Role::User);
    assert!(demoted.crm_access, "demoting keeps CRM access");

    // demoting and turning CRM off in one edit is allowed
    let demote_off = UserEdit {
        role: Some(Role::User),
        crm_access: Some(false),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &promoted, &demote_off).unwrap();
    assert!(!updated_user(&c).crm_access);
}

#[test]
fn d5_invited_admin_gets_crm() {
    let fx = Fx::roomy();
    let a = admin(1);
    let c = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("boss@example.com", Role::Admin, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap();
    assert!(inserted_users(&c)[0].crm_access);
}

#[test]
fn d5_turning_crm_off_removes_only_crm() {
    let fx = Fx::roomy();
    let a = admin(1);
    let mut u = member(
        2,
        Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW,
    );
    u.crm_access = true;
    assert_eq!(
        authorize(&u, None, Request::Crm),
        Decision::new(Reason::CrmAccess)
    );
    let off = UserEdit {
        crm_access: Some(false),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &u, &off).unwrap();
    let after = updated_user(&c);
    assert_eq!(
        authorize(after, None, Request::Crm),
        Decision::new(Reason::NoCrmAccess)
    );
    assert_eq!(after.grants, u.grants);
    assert_eq!(
        effective_permissions(after, None),
        effective_permissions(&u, None)
    );
    assert!(!effective_crm(after));
}

// ---------------------------------------------------------------------------------------------
// D6 Effective permissions
// ---------------------------------------------------------------------------------------------

#[test]
fn d6_grants_union_template_with_reasons() {
    let t = template(
        1,
        Permissions::ANALYTICS_VIEW | Permissions::CONVERSATIONS_VIEW,
    );
    let mut u = member(
        2,
        Permissions::CONVERSATIONS_VIEW | Permissions::SETTINGS_VIEW,
    );
    u.template_id = Some(t.id);
    assert_eq!(
        effective_permissions(&u, Some(&t)),
        perms("conversations:view,settings:view,analytics:view")
    );
    assert_eq!(
        authorize(&u, Some(&t), req("conversations:view")).reason(),
        Reason::DirectGrant
    );
    assert_eq!(
        authorize(&u, Some(&t), req("analytics:view")).reason(),
        Reason::Template { template_id: t.id }
    );
    assert_eq!(
        authorize(&u, Some(&t), req("analytics:edit")),
        Decision::new(Reason::MissingPermission {
            permission: perm("analytics:edit")
        })
    );
}

#[test]
fn d6_template_is_read_at_evaluation_time() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::ANALYTICS_VIEW);
    let mut u = member(2, Permissions::empty());
    u.template_id = Some(t.id);
    assert!(!authorize(&u, Some(&t), req("experiments:view")).is_allowed());

    let e = TemplateEdit {
        name: None,
        permissions: Some(Permissions::EXPERIMENTS_VIEW),
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &e, false, &[]).unwrap();
    let new_t = match &c.writes[..] {
        [Write::UpdateTemplate(nt)] => nt.clone(),
        other => panic!("unexpected writes {other:?}"),
    };
    // The user row is untouched; the next check sees the template's new permissions.
    assert!(authorize(&u, Some(&new_t), req("experiments:view")).is_allowed());
    assert!(!authorize(&u, Some(&new_t), req("analytics:view")).is_allowed());
    assert_eq!(
        effective_permissions(&u, Some(&new_t)),
        Permissions::EXPERIMENTS_VIEW
    );
}

#[test]
fn d6_invited_and_suspended_hold_nothing_not_even_crm() {
    for role in [Role::Admin, Role::User] {
        for (status, reason) in [
            (Status::Invited, Reason::Invited),
            (Status::Suspended, Reason::Suspended),
        ] {
            let t = template(1, Permissions::all());
            let mut u = user(2, role, status, Permissions::all());
            u.crm_access = true;
            u.template_id = Some(t.id);
            assert!(effective_permissions(&u, Some(&t)).is_empty());
            assert!(!effective_crm(&u));
            assert_eq!(authorize(&u, Some(&t), Request::Crm), Decision::new(reason));
            for p in Permission::all() {
                assert_eq!(authorize(&u, Some(&t), p.into()).reason(), reason);
                assert!(!authorize(&u, Some(&t), p.into()).is_allowed());
            }
            // what it would hold when active is still computable
            assert!(!potential_permissions(&u, Some(&t)).is_empty());
        }
    }
    assert!(!Decision::unknown_user().is_allowed());
    assert_eq!(Decision::unknown_user().reason(), Reason::UnknownUser);
}

#[test]
fn d6_a_template_that_is_not_the_users_contributes_nothing() {
    let mut u = member(2, Permissions::empty());
    u.template_id = Some(tid(1));
    // wrong id
    let wrong = template(3, Permissions::all());
    assert!(effective_permissions(&u, Some(&wrong)).is_empty());
    assert!(!authorize(&u, Some(&wrong), req("users:manage")).is_allowed());
    // right id, other tenant
    let mut foreign = template(1, Permissions::all());
    foreign.tenant_id = other_tenant_id();
    assert!(effective_permissions(&u, Some(&foreign)).is_empty());
    assert!(!authorize(&u, Some(&foreign), req("users:manage")).is_allowed());
    // user references nothing but a template is passed
    u.template_id = None;
    let t = template(1, Permissions::all());
    assert!(effective_permissions(&u, Some(&t)).is_empty());
    assert!(!authorize(&u, Some(&t), req("users:view")).is_allowed());
}

// ---------------------------------------------------------------------------------------------
// D7 Who may manage
// ---------------------------------------------------------------------------------------------

#[test]
fn d7_each_operation_needs_its_users_permission() {
    let fx = Fx::roomy();
    let ctx = fx.ctx();
    // An actor with every permission except users:*.
    let nobody = member(
        3,
        Permissions::all() - Permissions::category(Category::Users),
    );
    let act = acting(&nobody);
    let target = member(4, Permissions::empty());
    let invited = user(5, Role::User, Status::Invited, Permissions::empty());
    let t = template(1, Permissions::empty());
    let needed = |s: &str| Error::NotAllowed { needed: perm(s) };

    let e = decide::invite(
        ctx,
        &act,
        &invite_request("x@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap_err();
    assert_eq!(e, needed("users:create"));
    assert_eq!(e.rule(), Rule::ManagementAuthority);
    assert_eq!(
        decide::resend(ctx, &act, &invited, None, &[], TokenHash([1; 32])).unwrap_err(),
        needed("users:create")
    );
    assert_eq!(
        decide::invite_many(
            ctx,
            &act,
            &BulkInvite {
                emails: vec!["x@example.com".into()],
                ..BulkInvite::default()
            },
            None,
            &|_| false,
            &mut || new_invite(50),
        )
        .unwrap_err(),
        needed("users:create")
    );
    assert_eq!(
        edit_user(
            &fx,
            &nobody,
            &target,
            &UserEdit {
                crm_access: Some(true),
                ..UserEdit::default()
            }
        )
        .unwrap_err(),
        needed("users:edit")
    );
    assert_eq!(
        decide::delete(ctx, &act, &target, None).unwrap_err(),
        needed("users:delete")
    );
    assert_eq!(
        decide::purge_expired(ctx, &act, &[], &[]).unwrap_err(),
        needed("users:delete")
    );
    assert_eq!(
        decide::create_template(
            ctx,
            &act,
            tid(8),
            TemplateName::parse("New").unwrap(),
            Permissions::empty(),
            false
        )
        .unwrap_err(),
        needed("users:manage")
    );
    assert_eq!(
        decide::edit_template(ctx, &act, &t, &TemplateEdit::default(), false, &[]).unwrap_err(),
        needed("users:manage")
    );
    assert_eq!(
        decide::delete_template(ctx, &act, &t, 0, TemplateDeletion::Refuse, None, &[]).unwrap_err(),
        needed("users:manage")
    );
}

#[test]
fn d7_each_permission_alone_is_enough_for_its_operation() {
    let fx = Fx::roomy();
    let ctx = fx.ctx();
    let target = member(4, Permissions::empty());
    let t = template(1, Permissions::empty());

    let creator = member(3, Permissions::USERS_CREATE);
    assert!(
        decide::invite(
            ctx,
            &acting(&creator),
            &invite_request("x@example.com", Role::User, Permissions::empty()),
            None,
            false,
            new_invite(50),
        )
        .is_ok()
    );
    let editor = member(3, Permissions::USERS_EDIT);
    assert!(
        edit_user(
            &fx,
            &editor,
            &target,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            }
        )
        .is_ok()
    );
    let deleter = member(3, Permissions::USERS_DELETE);
    assert!(decide::delete(ctx, &acting(&deleter), &target, None).is_ok());
    let templater = member(3, Permissions::USERS_MANAGE);
    assert!(
        decide::delete_template(
            ctx,
            &acting(&templater),
            &t,
            0,
            TemplateDeletion::Refuse,
            None,
            &[]
        )
        .is_ok()
    );
    // and the permission may come from the actor's template
    let tm = template(2, Permissions::USERS_DELETE);
    let mut via_template = member(3, Permissions::empty());
    via_template.template_id = Some(tm.id);
    let act = Acting {
        user: &via_template,
        template: Some(&tm),
    };
    assert!(decide::delete(ctx, &act, &target, None).is_ok());
}

#[test]
fn d7_users_view_gates_the_user_table() {
    let viewer = member(2, Permissions::USERS_VIEW);
    let other = member(3, Permissions::USERS_CREATE | Permissions::USERS_EDIT);
    assert!(authorize(&viewer, None, req("users:view")).is_allowed());
    assert!(!authorize(&other, None, req("users:view")).is_allowed());
    assert!(authorize(&admin(1), None, req("users:view")).is_allowed());
}

#[test]
fn d7_inactive_or_foreign_actor_may_not_manage() {
    let fx = Fx::roomy();
    let target = member(4, Permissions::empty());
    let mut suspended = manager(3);
    suspended.status = Status::Suspended;
    assert!(matches!(
        decide::delete(fx.ctx(), &acting(&suspended), &target, None).unwrap_err(),
        Error::NotAllowed { .. }
    ));
    let mut suspended_admin = admin(2);
    suspended_admin.status = Status::Suspended;
    assert!(matches!(
        decide::delete(fx.ctx(), &acting(&suspended_admin), &target, None).unwrap_err(),
        Error::NotAllowed { .. }
    ));
    let mut foreign_admin = admin(2);
    foreign_admin.tenant_id = other_tenant_id();
    assert!(matches!(
        decide::delete(fx.ctx(), &acting(&foreign_admin), &target, None).unwrap_err(),
        Error::NotAllowed { .. }
    ));
}

#[test]
fn d7_non_admin_cannot_invite_or_create_an_admin() {
    let fx = Fx::roomy();
    let m = manager(3);
    let err = decide::invite(
        fx.ctx(),
        &acting(&m),
        &invite_request("boss@example.com", Role::Admin, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap_err();
    assert_eq!(err, Error::AdminOnly);
    assert_eq!(err.rule(), Rule::ManagementAuthority);
    let bulk = BulkInvite {
        emails: vec!["boss@example.com".into()],
        role: Some(Role::Admin),
        ..BulkInvite::default()
    };
    assert_eq!(
        decide::invite_many(fx.ctx(), &acting(&m), &bulk, None, &|_| false, &mut || {
            new_invite(50)
        })
        .unwrap_err(),
        Error::AdminOnly
    );
    // promotion by edit
    let u = member(4, Permissions::empty());
    let promote = UserEdit {
        role: Some(Role::Admin),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &m, &u, &promote).unwrap_err(),
        Error::AdminOnly
    );
}

#[test]
fn d7_non_admin_cannot_edit_delete_or_resend_to_an_admin() {
    let fx = Fx::roomy();
    let m = manager(3);
    let a = admin(1);
    let e = UserEdit {
        email: Some(email("renamed@example.com")),
        ..UserEdit::default()
    };
    assert_eq!(edit_user(&fx, &m, &a, &e).unwrap_err(), Error::AdminOnly);
    let demote = UserEdit {
        role: Some(Role::User),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &m, &a, &demote).unwrap_err(),
        Error::AdminOnly
    );
    assert_eq!(
        decide::delete(fx.ctx(), &acting(&m), &a, None).unwrap_err(),
        Error::AdminOnly
    );
    let invited_admin = user(6, Role::Admin, Status::Invited, Permissions::empty());
    assert_eq!(
        decide::resend(
            fx.ctx(),
            &acting(&m),
            &invited_admin,
            None,
            &[],
            TokenHash([1; 32])
        )
        .unwrap_err(),
        Error::AdminOnly
    );
    assert_eq!(
        decide::delete(fx.ctx(), &acting(&m), &invited_admin, None).unwrap_err(),
        Error::AdminOnly
    );
}

#[test]
fn d7_invite_cannot_grant_what_the_actor_lacks() {
    let fx = Fx::roomy();
    let m = manager(3); // users:* + conversations:view, no CRM
    // a permission it holds is fine
    assert!(
        decide::invite(
            fx.ctx(),
            &acting(&m),
            &invite_request(
                "ok@example.com",
                Role::User,
                Permissions::CONVERSATIONS_VIEW | Permissions::USERS_VIEW
            ),
            None,
            false,
            new_invite(50),
        )
        .is_ok()
    );
    // directly
    let err = decide::invite(
        fx.ctx(),
        &acting(&m),
        &invite_request(
            "x@example.com",
            Role::User,
            Permissions::CONVERSATIONS_VIEW | Permissions::SETTINGS_MANAGE,
        ),
        None,
        false,
        new_invite(50),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Escalation {
            missing: Permissions::SETTINGS_MANAGE,
            crm: false
        }
    );
    assert_eq!(err.rule(), Rule::ManagementAuthority);
    // through a template
    let t = template(1, Permissions::ANALYTICS_EDIT);
    let mut r = invite_request("y@example.com", Role::User, Permissions::empty());
    r.template_id = Some(t.id);
    assert_eq!(
        decide::invite(fx.ctx(), &acting(&m), &r, Some(&t), false, new_invite(50)).unwrap_err(),
        Error::Escalation {
            missing: Permissions::ANALYTICS_EDIT,
            crm: false
        }
    );
    // CRM access
    let mut r = invite_request("z@example.com", Role::User, Permissions::empty());
    r.crm_access = true;
    assert_eq!(
        decide::invite(fx.ctx(), &acting(&m), &r, None, false, new_invite(50)).unwrap_err(),
        Error::Escalation {
            missing: Permissions::empty(),
            crm: true
        }
    );
    // with CRM itself, granting CRM is fine
    let mut m_crm = manager(4);
    m_crm.crm_access = true;
    assert!(decide::invite(fx.ctx(), &acting(&m_crm), &r, None, false, new_invite(50)).is_ok());
    // bulk invite checks the same
    let bulk = BulkInvite {
        emails: vec!["b@example.com".into()],
        grants: Permissions::EXPERIMENTS_VIEW,
        ..BulkInvite::default()
    };
    assert!(matches!(
        decide::invite_many(fx.ctx(), &acting(&m), &bulk, None, &|_| false, &mut || {
            new_invite(50)
        })
        .unwrap_err(),
        Error::Escalation { .. }
    ));
}

#[test]
fn d7_edit_cannot_grant_what_the_actor_lacks() {
    let fx = Fx::roomy();
    let m = manager(3);
    let u = member(4, Permissions::empty());
    // direct grants
    let e = UserEdit {
        grants: Some(Permissions::CONVERSATIONS_VIEW | Permissions::INTEGRATIONS_MANAGE),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &m, &u, &e).unwrap_err(),
        Error::Escalation {
            missing: Permissions::INTEGRATIONS_MANAGE,
            crm: false
        }
    );
    // CRM
    let e = UserEdit {
        crm_access: Some(true),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &m, &u, &e).unwrap_err(),
        Error::Escalation {
            missing: Permissions::empty(),
            crm: true
        }
    );
    // template assignment
    let t = template(
        1,
        Permissions::SETTINGS_EDIT | Permissions::CONVERSATIONS_VIEW,
    );
    let e = UserEdit {
        template_id: Some(Some(t.id)),
        ..UserEdit::default()
    };
    assert_eq!(
        decide::edit(fx.ctx(), &acting(&m), &u, None, Some(&t), &e, false).unwrap_err(),
        Error::Escalation {
            missing: Permissions::SETTINGS_EDIT,
            crm: false
        }
    );
    // a template within the actor's own permissions is fine
    let ok_t = template(2, Permissions::CONVERSATIONS_VIEW);
    let e = UserEdit {
        template_id: Some(Some(ok_t.id)),
        ..UserEdit::default()
    };
    let c = decide::edit(fx.ctx(), &acting(&m), &u, None, Some(&ok_t), &e, false).unwrap();
    assert_eq!(updated_user(&c).template_id, Some(ok_t.id));
    // removing what the actor holds is not a gain
    let within = member(5, Permissions::USERS_VIEW | Permissions::CONVERSATIONS_VIEW);
    let e = UserEdit {
        grants: Some(Permissions::CONVERSATIONS_VIEW),
        ..UserEdit::default()
    };
    assert!(edit_user(&fx, &m, &within, &e).is_ok());
    // Changed by D21: this used to pass as "removing what the actor lacks is not a gain".
    // A non-admin may now not edit a user holding more than itself at all (not even to take
    // the excess away); the refusal names the excess. An admin still may.
    let rich = member(
        5,
        Permissions::SETTINGS_MANAGE | Permissions::CONVERSATIONS_VIEW,
    );
    let err = edit_user(&fx, &m, &rich, &e).unwrap_err();
    assert_eq!(
        err,
        Error::BeyondOwnAccess {
            missing: Permissions::SETTINGS_MANAGE,
            crm: false
        }
    );
    assert_eq!(err.rule(), Rule::WithinOwnAccess);
    assert!(edit_user(&fx, &admin(1), &rich, &e).is_ok());
}

#[test]
fn d7_reactivating_a_user_is_a_gain() {
    let fx = Fx::roomy();
    let m = manager(3);
    let mut s = user(
        4,
        Role::User,
        Status::Suspended,
        Permissions::SETTINGS_MANAGE,
    );
    let e = UserEdit {
        status: Some(Status::Active),
        ..UserEdit::default()
    };
    // Changed by D21: these refusals used to be D7 `Escalation` (the reactivation's gain).
    // D21 now refuses first, since a suspended user's access once active already counts as
    // what it holds; the refusal names the same permissions and CRM. Reactivation is still
    // refused, with the same missing set.
    assert_eq!(
        edit_user(&fx, &m, &s, &e).unwrap_err(),
        Error::BeyondOwnAccess {
            missing: Permissions::SETTINGS_MANAGE,
            crm: false
        }
    );
    s.grants = Permissions::empty();
    s.crm_access = true;
    assert_eq!(
        edit_user(&fx, &m, &s, &e).unwrap_err(),
        Error::BeyondOwnAccess {
            missing: Permissions::empty(),
            crm: true
        }
    );
    // an actor with CRM itself may reactivate it
    let mut m_crm = manager(5);
    m_crm.crm_access = true;
    let c = edit_user(&fx, &m_crm, &s, &e).unwrap();
    assert_eq!(updated_user(&c).status, Status::Active);
    s.crm_access = false;
    assert!(edit_user(&fx, &m, &s, &e).is_ok());
    // an admin reactivates anyone (D21 does not limit admins)
    s.grants = Permissions::all();
    s.crm_access = true;
    assert!(edit_user(&fx, &admin(1), &s, &e).is_ok());
}

#[test]
fn d7_template_create_and_edit_cannot_add_what_the_actor_lacks() {
    let fx = Fx::roomy();
    let m = manager(3);
    assert_eq!(
        decide::create_template(
            fx.ctx(),
            &acting(&m),
            tid(8),
            TemplateName::parse("Power").unwrap(),
            Permissions::SETTINGS_MANAGE | Permissions::USERS_VIEW,
            false
        )
        .unwrap_err(),
        Error::Escalation {
            missing: Permissions::SETTINGS_MANAGE,
            crm: false
        }
    );
    assert!(
        decide::create_template(
            fx.ctx(),
            &acting(&m),
            tid(8),
            TemplateName::parse("Agent").unwrap(),
            Permissions::USERS_VIEW | Permissions::CONVERSATIONS_VIEW,
            false
        )
        .is_ok()
    );
    // editing: adding what it lacks is refused; keeping what is already there is not a gain
    let t = template(1, Permissions::ANALYTICS_MANAGE);
    let add = TemplateEdit {
        name: None,
        permissions: Some(Permissions::ANALYTICS_MANAGE | Permissions::EXPERIMENTS_DELETE),
    };
    assert_eq!(
        decide::edit_template(fx.ctx(), &acting(&m), &t, &add, false, &[]).unwrap_err(),
        Error::Escalation {
            missing: Permissions::EXPERIMENTS_DELETE,
            crm: false
        }
    );
    let keep = TemplateEdit {
        name: None,
        permissions: Some(Permissions::ANALYTICS_MANAGE | Permissions::CONVERSATIONS_VIEW),
    };
    assert!(decide::edit_template(fx.ctx(), &acting(&m), &t, &keep, false, &[]).is_ok());
}

#[test]
fn d7_template_reassign_on_delete_cannot_escalate() {
    let fx = Fx::roomy();
    let m = manager(3);
    let from = template(1, Permissions::CONVERSATIONS_VIEW);
    let to = template(
        2,
        Permissions::CONVERSATIONS_VIEW | Permissions::SETTINGS_MANAGE,
    );
    assert_eq!(
        decide::delete_template(
            fx.ctx(),
            &acting(&m),
            &from,
            2,
            TemplateDeletion::Reassign(to.id),
            Some(&to),
            &[]
        )
        .unwrap_err(),
        Error::Escalation {
            missing: Permissions::SETTINGS_MANAGE,
            crm: false
        }
    );
    // detaching only removes permissions
    assert!(
        decide::delete_template(
            fx.ctx(),
            &acting(&m),
            &from,
            2,
            TemplateDeletion::Detach,
            None,
            &[]
        )
        .is_ok()
    );
    // an admin may reassign to anything
    assert!(
        decide::delete_template(
            fx.ctx(),
            &acting(&admin(1)),
            &from,
            2,
            TemplateDeletion::Reassign(to.id),
            Some(&to),
            &[]
        )
        .is_ok()
    );
}

#[test]
fn d7_non_admin_cannot_delete_itself_but_an_admin_can_if_not_the_last() {
    let fx = Fx::roomy();
    let m = manager(3);
    let err = decide::delete(fx.ctx(), &acting(&m), &m, None).unwrap_err();
    assert_eq!(err, Error::SelfChange);
    assert_eq!(err.rule(), Rule::ManagementAuthority);
    let a = admin(1);
    let two_admins = Fx::new(5, 2, None);
    assert!(decide::delete(two_admins.ctx(), &acting(&a), &a, None).is_ok());
    let one_admin = Fx::new(5, 1, None);
    assert_eq!(
        decide::delete(one_admin.ctx(), &acting(&a), &a, None).unwrap_err(),
        Error::LastAdmin
    );
}

#[test]
fn d7_non_admin_cannot_change_itself() {
    let fx = Fx::roomy();
    let mut m = manager(3);
    m.crm_access = true;
    let edits = [
        UserEdit {
            role: Some(Role::Admin),
            ..UserEdit::default()
        },
        UserEdit {
            grants: Some(Permissions::USERS_VIEW),
            ..UserEdit::default()
        },
        UserEdit {
            status: Some(Status::Suspended),
            ..UserEdit::default()
        },
        UserEdit {
            crm_access: Some(false),
            ..UserEdit::default()
        },
    ];
    let expected = [
        Error::AdminOnly,
        Error::SelfChange,
        Error::SelfChange,
        Error::SelfChange,
    ];
    for (e, want) in edits.iter().zip(expected) {
        assert_eq!(edit_user(&fx, &m, &m, e).unwrap_err(), want, "{e:?}");
    }
    // template (even one it could grant)
    let t = template(1, Permissions::USERS_VIEW);
    let e = UserEdit {
        template_id: Some(Some(t.id)),
        ..UserEdit::default()
    };
    let err = decide::edit(fx.ctx(), &acting(&m), &m, None, Some(&t), &e, false).unwrap_err();
    assert_eq!(err, Error::SelfChange);
    assert_eq!(err.rule(), Rule::ManagementAuthority);
    // its own email is not access: allowed
    let e = UserEdit {
        email: Some(email("me@example.com")),
        ..UserEdit::default()
    };
    assert!(edit_user(&fx, &m, &m, &e).is_ok());
    // an admin may edit itself (D8 permitting)
    let a = admin(1);
    let e = UserEdit {
        grants: Some(Permissions::USERS_VIEW),
        ..UserEdit::default()
    };
    assert!(edit_user(&fx, &a, &a, &e).is_ok());
}

#[test]
fn d7_non_admin_cannot_change_its_own_template_by_editing_or_deleting_it() {
    let fx = Fx::roomy();
    let t = template(1, Permissions::USERS_MANAGE | Permissions::ANALYTICS_VIEW);
    let other = template(2, Permissions::USERS_MANAGE);
    let mut m = member(3, Permissions::empty());
    m.template_id = Some(t.id);
    let act = Acting {
        user: &m,
        template: Some(&t),
    };
    let shrink = TemplateEdit {
        name: None,
        permissions: Some(Permissions::USERS_MANAGE),
    };
    assert_eq!(
        decide::edit_template(fx.ctx(), &act, &t, &shrink, false, &[]).unwrap_err(),
        Error::SelfChange
    );
    // renaming alone does not change access
    let rename = TemplateEdit {
        name: Some(TemplateName::parse("Renamed").unwrap()),
        permissions: None,
    };
    assert!(decide::edit_template(fx.ctx(), &act, &t, &rename, false, &[]).is_ok());
    assert_eq!(
        decide::delete_template(fx.ctx(), &act, &t, 1, TemplateDeletion::Detach, None, &[])
            .unwrap_err(),
        Error::SelfChange
    );
    assert_eq!(
        decide::delete_template(
            fx.ctx(),
            &act,
            &t,
            1,
            TemplateDeletion::Reassign(other.id),
            Some(&other),
            &[]
        )
        .unwrap_err(),
        Error::SelfChange
    );
}

// ---------------------------------------------------------------------------------------------
// D8 Last admin
// ---------------------------------------------------------------------------------------------

#[test]
fn d8_last_admin_cannot_be_demoted() {
    let fx = Fx::new(5, 1, None);
    let a = admin(1);
    let e = UserEdit {
        role: Some(Role::User),
        ..UserEdit::default()
    };
    let err = edit_user(&fx, &a, &a, &e).unwrap_err();
    assert_eq!(err, Error::LastAdmin);
    assert_eq!(err.rule(), Rule::LastAdmin);
}

#[test]
fn d8_last_admin_cannot_be_suspended() {
    let fx = Fx::new(5, 1, None);
    let a = admin(1);
    let e = UserEdit {
        status: Some(Status::Suspended),
        ..UserEdit::default()
    };
    assert_eq!(edit_user(&fx, &a, &a, &e).unwrap_err(), Error::LastAdmin);
}

#[test]
fn d8_last_admin_cannot_be_deleted() {
    let fx = Fx::new(5, 1, None);
    let a = admin(1);
    assert_eq!(
        decide::delete(fx.ctx(), &acting(&a), &a, None).unwrap_err(),
        Error::LastAdmin
    );
}

#[test]
fn d8_with_two_admins_one_may_go_and_the_count_follows() {
    let fx = Fx::new(5, 2, None);
    let a = admin(1);
    let b = admin(2);
    let demote = UserEdit {
        role: Some(Role::User),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &b, &demote).unwrap();
    assert_eq!(c.counters.active_admins, 1);
    let suspend = UserEdit {
        status: Some(Status::Suspended),
        ..UserEdit::default()
    };
    assert_eq!(
        edit_user(&fx, &a, &b, &suspend)
            .unwrap()
            .counters
            .active_admins,
        1
    );
    let c = decide::delete(fx.ctx(), &acting(&a), &b, None).unwrap();
    assert_eq!(c.counters.active_admins, 1);
    assert_eq!(c.counters.seats_used, 4);
}

#[test]
fn d8_inactive_admins_do_not_count_and_can_be_removed() {
    let fx = Fx::new(5, 1, None);
    let a = admin(1);
    let suspended_admin = user(2, Role::Admin, Status::Suspended, Permissions::empty());
    let c = decide::delete(fx.ctx(), &acting(&a), &suspended_admin, None).unwrap();
    assert_eq!(c.counters.active_admins, 1);
    let invited_admin = user(3, Role::Admin, Status::Invited, Permissions::empty());
    let c = decide::delete(fx.ctx(), &acting(&a), &invited_admin, None).unwrap();
    assert_eq!(c.counters.active_admins, 1);
    // reactivating a suspended admin raises the count
    let e = UserEdit {
        status: Some(Status::Active),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &suspended_admin, &e).unwrap();
    assert_eq!(c.counters.active_admins, 2);
    // accepting an admin invitation raises the count
    let inv = invitation(
        &invited_admin,
        InvitationState::Pending,
        now() + Duration::hours(1),
    );
    let c = decide::accept(fx.ctx(), &inv, &invited_admin, &invited_admin.email).unwrap();
    assert_eq!(c.counters.active_admins, 2);
    // a freshly created tenant has one active admin
    let c =
        decide::create_tenant(fx.state.tenant.clone(), uid(1), email("root@example.com")).unwrap();
    assert_eq!(c.counters.active_admins, 1);
    assert_eq!(c.counters.seats_used, 1);
    assert!(inserted_users(&c)[0].is_active_admin());
}

// ---------------------------------------------------------------------------------------------
// D9 Seats
// ---------------------------------------------------------------------------------------------

#[test]
fn d9_invite_at_the_limit_fails_and_stores_nothing() {
    let fx = Fx::new(5, 1, Some(5));
    let a = admin(1);
    let err = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("x@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap_err();
    assert_eq!(err, Error::SeatLimitReached { used: 5, limit: 5 });
    assert_eq!(err.rule(), Rule::SeatLimit);
}

#[test]
fn d9_invite_below_the_limit_takes_a_seat() {
    let fx = Fx::new(4, 1, Some(5));
    let a = admin(1);
    let c = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("x@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap();
    assert_eq!(c.counters.seats_used, 5);
    assert_eq!(c.expected_version, 41);
    assert_eq!(c.counters.version, 42);
    let u = inserted_users(&c);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].status, Status::Invited);
}

#[test]
fn d9_limit_may_be_lowered_below_usage() {
    let fx = Fx::new(8, 1, Some(10));
    let c = decide::set_user_limit(fx.ctx(), ActorRef::System, Some(5));
    let tenant = match &c.writes[..] {
        [Write::UpdateTenant(t)] => t.clone(),
        other => panic!("unexpected writes {other:?}"),
    };
    assert_eq!(tenant.user_limit, Some(5));
    assert_eq!(c.events[0].action, AuditAction::UserLimitChanged);
    let lowered = Fx {
        state: TenantState {
            tenant,
            counters: c.counters,
        },
        ..Fx::new(0, 0, None)
    };
    let usage = lowered.state.seat_usage();
    assert_eq!(
        usage,
        SeatUsage {
            used: 8,
            limit: Some(5),
            remaining: Some(0),
            at_limit: true
        }
    );
    let a = admin(1);
    assert_eq!(
        decide::invite(
            lowered.ctx(),
            &acting(&a),
            &invite_request("x@example.com", Role::User, Permissions::empty()),
            None,
            false,
            new_invite(50),
        )
        .unwrap_err(),
        Error::SeatLimitReached { used: 8, limit: 5 }
    );
    // setting the same limit again writes nothing
    assert!(decide::set_user_limit(lowered.ctx(), ActorRef::System, Some(5)).is_empty());
}

#[test]
fn d9_no_limit_is_unlimited() {
    let fx = Fx::new(u32::MAX - 1, 1, None);
    let a = admin(1);
    assert!(
        decide::invite(
            fx.ctx(),
            &acting(&a),
            &invite_request("x@example.com", Role::User, Permissions::empty()),
            None,
            false,
            new_invite(50),
        )
        .is_ok()
    );
    let usage = fx.state.seat_usage();
    assert_eq!(usage.limit, None);
    assert_eq!(usage.remaining, None);
    assert!(!usage.at_limit);
}

#[test]
fn d9_seat_usage_fields() {
    assert_eq!(
        SeatUsage::new(3, Some(10)),
        SeatUsage {
            used: 3,
            limit: Some(10),
            remaining: Some(7),
            at_limit: false
        }
    );
    assert_eq!(
        SeatUsage::new(10, Some(10)),
        SeatUsage {
            used: 10,
            limit: Some(10),
            remaining: Some(0),
            at_limit: true
        }
    );
    assert!(SeatUsage::new(0, Some(0)).at_limit);
    assert_eq!(SeatUsage::new(12, Some(10)).remaining, Some(0));
    let json = serde_json::to_value(SeatUsage::new(3, Some(10))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"used": 3, "limit": 10, "remaining": 7, "at_limit": false})
    );
}

#[test]
fn d9_every_status_occupies_a_seat_and_delete_frees_it() {
    let fx = Fx::new(5, 2, Some(5));
    let a = admin(1);
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let u = user(2, Role::User, status, Permissions::empty());
        let c = decide::delete(fx.ctx(), &acting(&a), &u, None).unwrap();
        assert_eq!(c.counters.seats_used, 4, "{status}");
        assert!(!c.counters.seats_used.eq(&fx.state.counters.seats_used));
    }
}

// ---------------------------------------------------------------------------------------------
// D10 Invitations
// ---------------------------------------------------------------------------------------------

#[test]
fn d10_invite_issues_a_pending_token_that_expires_after_seven_days() {
    let fx = Fx::roomy();
    let a = admin(1);
    let c = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("x@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap();
    let inv = c
        .writes
        .iter()
        .find_map(|w| match w {
            Write::InsertInvitation(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(inv.token_hash, TokenHash([50; 32]));
    assert_eq!(inv.user_id, uid(50));
    assert_eq!(inv.state, InvitationState::Pending);
    assert_eq!(inv.kind, InvitationKind::Initial);
    assert_eq!(inv.expires_at, now() + Duration::days(7));
    assert_eq!(
        inserted_users(&c)[0].invite_expires_at,
        Some(inv.expires_at)
    );
    // the user row is written before its invitation
    let pos_user = c
        .writes
        .iter()
        .position(|w| matches!(w, Write::InsertUser(_)))
        .unwrap();
    let pos_inv = c
        .writes
        .iter()
        .position(|w| matches!(w, Write::InsertInvitation(_)))
        .unwrap();
    assert!(pos_user < pos_inv);
    // the time to live is configurable
    let mut short = Fx::roomy();
    short.policy.invite_ttl = Duration::hours(2);
    let c = decide::invite(
        short.ctx(),
        &acting(&a),
        &invite_request("x@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new_invite(50),
    )
    .unwrap();
    assert_eq!(
        inserted_users(&c)[0].invite_expires_at,
        Some(now() + Duration::hours(2))
    );
}

#[test]
fn d10_default_policy() {
    let p = Policy::default();
    assert_eq!(p.invite_ttl, Duration::days(7));
    assert_eq!(p.resend_limit, 3);
    assert_eq!(p.resend_window, Duration::minutes(10));
}

#[test]
fn d10_accept_activates_and_sets_last_login() {
    let fx = Fx::roomy();
    let invited = user(
        2,
        Role::User,
        Status::Invited,
        Permissions::CONVERSATIONS_VIEW,
    );
    let inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::seconds(1),
    );
    // the host passes the address the person signed up with; case does not matter (D3)
    let c = decide::accept(fx.ctx(), &inv, &invited, &email("USER2@EXAMPLE.COM")).unwrap();
    let u = updated_user(&c);
    assert_eq!(u.status, Status::Active);
    assert_eq!(u.last_login, Some(now()));
    assert_eq!(u.invite_expires_at, None);
    assert!(c.writes.contains(&Write::UseInvitation(inv.token_hash)));
    assert!(c.writes.contains(&Write::RevokeInvitations(invited.id)));
    assert_eq!(c.events[0].action, AuditAction::InvitationAccepted);
    assert_eq!(c.counters.seats_used, fx.state.counters.seats_used);
    assert!(authorize(u, None, req("conversations:view")).is_allowed());
}

#[test]
fn d10_accept_with_another_email_is_refused() {
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    let err =
        decide::accept(fx.ctx(), &inv, &invited, &email("someone.else@example.com")).unwrap_err();
    // D24: the mismatch now also says how many further wrong addresses the token survives
    // (a fresh invitation has none counted yet: this attempt leaves 4).
    assert_eq!(err, Error::InvitationEmailMismatch { attempts_left: 4 });
    assert_eq!(err.rule(), Rule::Invitations);
}

#[test]
fn d10_expired_used_revoked_or_foreign_tokens_get_one_error() {
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let later = now() + Duration::days(1);
    let mut foreign = invitation(&invited, InvitationState::Pending, later);
    foreign.tenant_id = other_tenant_id();
    let mut other_user = invitation(&invited, InvitationState::Pending, later);
    other_user.user_id = uid(99);
    let cases = [
        invitation(&invited, InvitationState::Pending, now()), // expires exactly now
        invitation(
            &invited,
            InvitationState::Pending,
            now() - Duration::days(1),
        ),
        invitation(&invited, InvitationState::Used, later),
        invitation(&invited, InvitationState::Revoked, later),
        foreign,
        other_user,
    ];
    for inv in &cases {
        let err = decide::accept(fx.ctx(), inv, &invited, &invited.email).unwrap_err();
        assert_eq!(err, Error::InvalidInvitation, "{inv:?}");
        // even with a wrong address the token error comes first and says nothing more
        assert_eq!(
            decide::accept(fx.ctx(), inv, &invited, &email("other@example.com")).unwrap_err(),
            Error::InvalidInvitation
        );
    }
    // a user that is already active cannot accept again
    let active = member(2, Permissions::empty());
    let inv = invitation(&active, InvitationState::Pending, later);
    assert_eq!(
        decide::accept(fx.ctx(), &inv, &active, &active.email).unwrap_err(),
        Error::InvalidInvitation
    );
}

#[test]
fn d10_resend_issues_new_token_revokes_older_and_creates_no_user() {
    let fx = Fx::roomy();
    let a = admin(1);
    let mut invited = user(2, Role::User, Status::Invited, Permissions::empty());
    // an invitation that expired yesterday: the resend must move the expiry, not keep it
    invited.invite_expires_at = Some(now() - Duration::days(1));
    let c = decide::resend(
        fx.ctx(),
        &acting(&a),
        &invited,
        None,
        &[],
        TokenHash([3; 32]),
    )
    .unwrap();
    assert!(inserted_users(&c).is_empty());
    assert_eq!(c.counters.seats_used, fx.state.counters.seats_used);
    let revoke = c
        .writes
        .iter()
        .position(|w| *w == Write::RevokeInvitations(invited.id))
        .unwrap();
    let (insert, inv) = c
        .writes
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w {
            Write::InsertInvitation(inv) => Some((i, inv.clone())),
            _ => None,
        })
        .unwrap();
    assert!(
        revoke < insert,
        "older tokens die before the new one is added"
    );
    assert_eq!(inv.token_hash, TokenHash([3; 32]));
    assert_eq!(inv.kind, InvitationKind::Resend);
    assert_eq!(inv.state, InvitationState::Pending);
    assert_eq!(inv.expires_at, now() + Duration::days(7));
    assert_eq!(
        updated_user(&c).invite_expires_at,
        Some(now() + Duration::days(7))
    );
    assert_eq!(c.events[0].action, AuditAction::InvitationResent);
}

#[test]
fn d10_resend_only_to_invited_users_even_when_expired() {
    let fx = Fx::roomy();
    let a = admin(1);
    for status in [Status::Active, Status::Suspended] {
        let u = user(2, Role::User, status, Permissions::empty());
        let err =
            decide::resend(fx.ctx(), &acting(&a), &u, None, &[], TokenHash([3; 32])).unwrap_err();
        assert_eq!(err, Error::NotInvited { status });
        assert_eq!(err.rule(), Rule::Invitations);
    }
    let mut expired = user(2, Role::User, Status::Invited, Permissions::empty());
    expired.invite_expires_at = Some(now() - Duration::days(30));
    assert!(expired.invitation_expired(now()));
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&a),
            &expired,
            None,
            &[],
            TokenHash([3; 32])
        )
        .is_ok()
    );
}

#[test]
fn d10_resend_is_rate_limited_with_retry_at() {
    let fx = Fx::roomy();
    let a = admin(1);
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let m = |mins: i64| now() - Duration::minutes(mins);
    // two in the window: fine
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&a),
            &invited,
            None,
            &[m(1), m(5)],
            TokenHash([3; 32])
        )
        .is_ok()
    );
    // three in the window (given out of order): refused until the oldest leaves the window
    let err = decide::resend(
        fx.ctx(),
        &acting(&a),
        &invited,
        None,
        &[m(1), m(8), m(5)],
        TokenHash([3; 32]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::ResendRateLimited {
            retry_at: m(8) + Duration::minutes(10)
        }
    );
    assert_eq!(err.rule(), Rule::Invitations);
    // older resends outside the window do not count
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&a),
            &invited,
            None,
            &[m(1), m(5), m(10), m(11), m(60)],
            TokenHash([3; 32])
        )
        .is_ok()
    );
    // more than the limit in the window: retry when enough have left
    let err = decide::resend(
        fx.ctx(),
        &acting(&a),
        &invited,
        None,
        &[m(1), m(2), m(3), m(4)],
        TokenHash([3; 32]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::ResendRateLimited {
            retry_at: m(3) + Duration::minutes(10)
        }
    );
    // the limit is configurable
    let mut strict = Fx::roomy();
    strict.policy.resend_limit = 1;
    strict.policy.resend_window = Duration::hours(1);
    assert_eq!(
        decide::resend(
            strict.ctx(),
            &acting(&a),
            &invited,
            None,
            &[m(30)],
            TokenHash([3; 32])
        )
        .unwrap_err(),
        Error::ResendRateLimited {
            retry_at: m(30) + Duration::hours(1)
        }
    );
}

#[test]
fn d10_retry_at_is_when_a_resend_is_allowed_again() {
    let mut fx = Fx::roomy();
    let a = admin(1);
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let history = [
        now() - Duration::minutes(9),
        now() - Duration::minutes(3),
        now() - Duration::seconds(10),
    ];
    let Error::ResendRateLimited { retry_at } = decide::resend(
        fx.ctx(),
        &acting(&a),
        &invited,
        None,
        &history,
        TokenHash([3; 32]),
    )
    .unwrap_err() else {
        panic!("expected a rate limit");
    };
    fx.now = retry_at - Duration::seconds(1);
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&a),
            &invited,
            None,
            &history,
            TokenHash([3; 32])
        )
        .is_err()
    );
    fx.now = retry_at;
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&a),
            &invited,
            None,
            &history,
            TokenHash([3; 32])
        )
        .is_ok()
    );
}

#[test]
fn d10_changing_an_invited_users_email_revokes_its_tokens() {
    let fx = Fx::roomy();
    let a = admin(1);
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let e = UserEdit {
        email: Some(email("fixed.typo@example.com")),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &invited, &e).unwrap();
    assert!(c.writes.contains(&Write::RevokeInvitations(invited.id)));
    let u = updated_user(&c);
    assert_eq!(u.email.as_str(), "fixed.typo@example.com");
    assert_eq!(u.status, Status::Invited);
    // D10/D20: the user has no usable link until a resend, but is not an *expired*
    // invitation, so a purge of expired invitations does not take a typo fix for one.
    assert_eq!(u.invite_expires_at, None);
    assert!(!u.invitation_expired(now() + Duration::days(30)));
    // an active user's address change has no tokens to revoke
    let active = member(3, Permissions::empty());
    let c = edit_user(&fx, &a, &active, &e).unwrap();
    assert!(
        !c.writes
            .iter()
            .any(|w| matches!(w, Write::RevokeInvitations(_)))
    );
    // a case-only change keeps the same address (D3): tokens stay valid
    let recase = UserEdit {
        email: Some(email("USER2@example.com")),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &invited, &recase).unwrap();
    assert!(
        !c.writes
            .iter()
            .any(|w| matches!(w, Write::RevokeInvitations(_)))
    );
}

// ---------------------------------------------------------------------------------------------
// D11 Delete
// ---------------------------------------------------------------------------------------------

#[test]
fn d11_delete_leaves_a_tombstone_kills_tokens_and_frees_the_seat() {
    let fx = Fx::new(7, 2, Some(7));
    let a = admin(1);
    let u = member(2, Permissions::CONVERSATIONS_VIEW);
    let c = decide::delete(fx.ctx(), &acting(&a), &u, None).unwrap();
    assert_eq!(
        tombstones(&c),
        vec![&Tombstone {
            user_id: u.id,
            tenant_id: tenant_id(),
            email: u.email.clone(),
            deleted_at: now(),
            deleted_by: ActorRef::User(a.id),
        }]
    );
    assert!(c.writes.contains(&Write::RevokeInvitations(u.id)));
    assert_eq!(c.counters.seats_used, 6);
    assert_eq!(c.events[0].action, AuditAction::UserDeleted);
    assert_eq!(c.events[0].target, AuditTarget::User(u.id));
}

#[test]
fn d11_a_user_of_another_tenant_is_not_found() {
    let fx = Fx::roomy();
    let a = admin(1);
    let mut foreign = member(2, Permissions::empty());
    foreign.tenant_id = other_tenant_id();
    let err = decide::delete(fx.ctx(), &acting(&a), &foreign, None).unwrap_err();
    assert_eq!(err, Error::UserNotFound);
    assert_eq!(err.rule(), Rule::TenantIsolation);
    assert_eq!(
        edit_user(&fx, &a, &foreign, &UserEdit::default()).unwrap_err(),
        Error::UserNotFound
    );
}

#[test]
fn d11_the_same_address_may_be_invited_again_as_a_new_user() {
    let fx = Fx::new(3, 1, Some(3));
    let a = admin(1);
    let old = member(2, Permissions::empty());
    let c = decide::delete(fx.ctx(), &acting(&a), &old, None).unwrap();
    let after = Fx {
        state: TenantState {
            tenant: fx.state.tenant.clone(),
            counters: c.counters,
        },
        ..Fx::roomy()
    };
    let c = decide::invite(
        after.ctx(),
        &acting(&a),
        &invite_request(old.email.as_str(), Role::User, Permissions::empty()),
        None,
        false,
        new_invite(60),
    )
    .unwrap();
    let u = inserted_users(&c)[0];
    assert_eq!(u.email, old.email);
    assert_ne!(u.id, old.id);
    assert_eq!(c.counters.seats_used, 3);
}

// ---------------------------------------------------------------------------------------------
// D12 Role templates
// ---------------------------------------------------------------------------------------------

#[test]
fn d12_template_name_rules() {
    assert_eq!(
        TemplateName::parse("").unwrap_err(),
        TemplateNameError::Empty
    );
    assert_eq!(
        TemplateName::parse("  \t ").unwrap_err(),
        TemplateNameError::Empty
    );
    assert!(TemplateName::parse(&"a".repeat(64)).is_ok());
    assert_eq!(
        TemplateName::parse(&"a".repeat(65)).unwrap_err(),
        TemplateNameError::TooLong { len: 65, max: 64 }
    );
    // characters, not bytes
    assert!(TemplateName::parse(&"é".repeat(64)).is_ok());
    assert_eq!(
        TemplateName::parse(&"é".repeat(65)).unwrap_err(),
        TemplateNameError::TooLong { len: 65, max: 64 }
    );
    // D22 replaced the bare "control character" error by one naming the character and its
    // position (and ruled by D22, not D12).
    assert_eq!(
        TemplateName::parse("Sup\nport").unwrap_err(),
        TemplateNameError::ForbiddenCharacter {
            character: '\n',
            position: 3
        }
    );
    assert_eq!(
        Error::from(TemplateName::parse("Sup\nport").unwrap_err()).rule(),
        Rule::Names
    );
    let n = TemplateName::parse("  Support Agent ").unwrap();
    assert_eq!(n.as_str(), "Support Agent");
    assert_eq!(n.key(), TemplateName::parse("SUPPORT agent").unwrap().key());
    assert_ne!(
        n.key(),
        TemplateName::parse("Support Agents").unwrap().key()
    );
    assert!(serde_json::from_str::<TemplateName>("\"\"").is_err());
    assert_eq!(
        Error::from(TemplateNameError::Empty).rule(),
        Rule::RoleTemplates
    );
}

#[test]
fn d12_template_names_are_unique_per_tenant() {
    let fx = Fx::roomy();
    let a = admin(1);
    let err = decide::create_template(
        fx.ctx(),
        &acting(&a),
        tid(8),
        TemplateName::parse("Support agent").unwrap(),
        Permissions::empty(),
        true,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::TemplateNameTaken {
            name: "Support agent".into()
        }
    );
    assert_eq!(err.rule(), Rule::RoleTemplates);
    let t = template(1, Permissions::empty()); // "Template 1"
    // renaming to another case of its own name is not "taken" by another template
    let recase = TemplateEdit {
        name: Some(TemplateName::parse("TEMPLATE 1").unwrap()),
        permissions: None,
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &recase, true, &[]).unwrap();
    assert!(
        matches!(&c.writes[..], [Write::UpdateTemplate(nt)] if nt.name.as_str() == "TEMPLATE 1")
    );
    // renaming to a name another template has is refused
    let rename = TemplateEdit {
        name: Some(TemplateName::parse("Sales").unwrap()),
        permissions: None,
    };
    assert_eq!(
        decide::edit_template(fx.ctx(), &acting(&a), &t, &rename, true, &[]).unwrap_err(),
        Error::TemplateNameTaken {
            name: "Sales".into()
        }
    );
}

#[test]
fn d12_create_and_edit_template_writes() {
    let fx = Fx::roomy();
    let a = admin(1);
    let c = decide::create_template(
        fx.ctx(),
        &acting(&a),
        tid(8),
        TemplateName::parse("Support agent").unwrap(),
        Permissions::CONVERSATIONS_VIEW,
        false,
    )
    .unwrap();
    let t = match &c.writes[..] {
        [Write::InsertTemplate(t)] => t.clone(),
        other => panic!("unexpected writes {other:?}"),
    };
    assert_eq!(t.id, tid(8));
    assert_eq!(t.tenant_id, tenant_id());
    assert_eq!(t.permissions, Permissions::CONVERSATIONS_VIEW);
    // a no-op edit writes nothing
    let noop = TemplateEdit {
        name: None,
        permissions: Some(Permissions::CONVERSATIONS_VIEW),
    };
    assert!(
        decide::edit_template(fx.ctx(), &acting(&a), &t, &noop, false, &[])
            .unwrap()
            .is_empty()
    );
    // an edit records before/after permission sets (D13)
    let e = TemplateEdit {
        name: None,
        permissions: Some(Permissions::CONVERSATIONS_EDIT),
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &e, false, &[]).unwrap();
    let ev = &c.events[0];
    assert_eq!(ev.action, AuditAction::TemplateEdited);
    assert_eq!(ev.changes[0].field, Field::Permissions);
    // a template of another tenant is not found
    let mut foreign = template(3, Permissions::empty());
    foreign.tenant_id = other_tenant_id();
    assert_eq!(
        decide::edit_template(fx.ctx(), &acting(&a), &foreign, &e, false, &[]).unwrap_err(),
        Error::TemplateNotFound
    );
}

#[test]
fn d12_deleting_a_referenced_template_is_refused_by_default_with_the_count() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::CONVERSATIONS_VIEW);
    assert_eq!(TemplateDeletion::default(), TemplateDeletion::Refuse);
    let err = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        3,
        TemplateDeletion::default(),
        None,
        &[],
    )
    .unwrap_err();
    assert_eq!(err, Error::TemplateInUse { users: 3 });
    assert_eq!(err.rule(), Rule::RoleTemplates);
    assert!(err.to_string().contains('3'));
    // unreferenced: deleted
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        0,
        TemplateDeletion::Refuse,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(c.writes, vec![Write::DeleteTemplate(t.id)]);
}

#[test]
fn d12_delete_can_detach_the_users() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::CONVERSATIONS_VIEW);
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        2,
        TemplateDeletion::Detach,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        c.writes,
        vec![
            Write::MoveTemplateUsers {
                from: t.id,
                to: None
            },
            Write::DeleteTemplate(t.id)
        ]
    );
    // a detached user keeps only its direct grants
    let mut u = member(4, Permissions::ANALYTICS_VIEW);
    u.template_id = Some(t.id);
    assert!(authorize(&u, Some(&t), req("conversations:view")).is_allowed());
    u.template_id = None;
    assert_eq!(effective_permissions(&u, None), Permissions::ANALYTICS_VIEW);
}

#[test]
fn d12_delete_can_reassign_the_users() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::CONVERSATIONS_VIEW);
    let to = template(2, Permissions::ANALYTICS_VIEW);
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        2,
        TemplateDeletion::Reassign(to.id),
        Some(&to),
        &[],
    )
    .unwrap();
    assert_eq!(
        c.writes,
        vec![
            Write::MoveTemplateUsers {
                from: t.id,
                to: Some(to.id)
            },
            Write::DeleteTemplate(t.id)
        ]
    );
    // reassigning to itself, to a template that was not passed, or to another tenant's fails
    let mut foreign = template(2, Permissions::empty());
    foreign.tenant_id = other_tenant_id();
    for (mode, passed) in [
        (TemplateDeletion::Reassign(t.id), Some(&t)),
        (TemplateDeletion::Reassign(to.id), None),
        (TemplateDeletion::Reassign(tid(7)), Some(&to)),
        (TemplateDeletion::Reassign(foreign.id), Some(&foreign)),
    ] {
        assert_eq!(
            decide::delete_template(fx.ctx(), &acting(&a), &t, 2, mode, passed, &[]).unwrap_err(),
            Error::TemplateNotFound,
            "{mode:?}"
        );
    }
}

#[test]
fn d12_assigning_a_template_must_name_an_existing_one() {
    let fx = Fx::roomy();
    let a = admin(1);
    let u = member(2, Permissions::empty());
    let e = UserEdit {
        template_id: Some(Some(tid(1))),
        ..UserEdit::default()
    };
    assert_eq!(
        decide::edit(fx.ctx(), &acting(&a), &u, None, None, &e, false).unwrap_err(),
        Error::TemplateNotFound
    );
    let mut r = invite_request("x@example.com", Role::User, Permissions::empty());
    r.template_id = Some(tid(1));
    let wrong = template(2, Permissions::empty());
    assert_eq!(
        decide::invite(
            fx.ctx(),
            &acting(&a),
            &r,
            Some(&wrong),
            false,
            new_invite(50)
        )
        .unwrap_err(),
        Error::TemplateNotFound
    );
    // clearing the template
    let mut with_t = member(3, Permissions::empty());
    let t = template(1, Permissions::USERS_VIEW);
    with_t.template_id = Some(t.id);
    let clear = UserEdit {
        template_id: Some(None),
        ..UserEdit::default()
    };
    let c = decide::edit(
        fx.ctx(),
        &acting(&a),
        &with_t,
        Some(&t),
        None,
        &clear,
        false,
    )
    .unwrap();
    assert_eq!(updated_user(&c).template_id, None);
}

// ---------------------------------------------------------------------------------------------
// D13 / D14 (the parts in the core)
// ---------------------------------------------------------------------------------------------

#[test]
fn d13_edits_record_before_and_after_and_refusals_name_their_rule() {
    let fx = Fx::roomy();
    let a = admin(1);
    let u = member(2, Permissions::USERS_VIEW);
    let e = UserEdit {
        grants: Some(Permissions::ANALYTICS_VIEW),
        ..UserEdit::default()
    };
    let c = edit_user(&fx, &a, &u, &e).unwrap();
    let ev = &c.events[0];
    assert_eq!(ev.tenant_id, tenant_id());
    assert_eq!(ev.actor, ActorRef::User(a.id));
    assert_eq!(ev.target, AuditTarget::User(u.id));
    assert_eq!(ev.at, now());
    assert_eq!(ev.outcome, Outcome::Success);
    assert_eq!(ev.changes.len(), 1);
    assert_eq!(ev.changes[0].field, Field::Grants);
    // a no-op edit writes nothing at all
    let same = UserEdit {
        grants: Some(Permissions::USERS_VIEW),
        ..UserEdit::default()
    };
    assert!(edit_user(&fx, &a, &u, &same).unwrap().is_empty());
    let refused = decide::refused_event(
        tenant_id(),
        ActorRef::User(u.id),
        AuditAction::UserDeleted,
        AuditTarget::User(a.id),
        now(),
        &Error::AdminOnly,
    );
    assert_eq!(
        refused.outcome,
        Outcome::Refused {
            rule: Rule::ManagementAuthority,
            message: Error::AdminOnly.to_string()
        }
    );
}

#[test]
fn d14_only_active_users_sign_in() {
    let fx = Fx::roomy();
    for status in [Status::Invited, Status::Suspended] {
        let u = user(2, Role::User, status, Permissions::empty());
        let err = decide::sign_in(fx.ctx(), &u).unwrap_err();
        assert_eq!(err, Error::SignInRefused { status });
        assert_eq!(err.rule(), Rule::SignIn);
    }
    let u = member(2, Permissions::empty());
    let c = decide::sign_in(fx.ctx(), &u).unwrap();
    assert_eq!(updated_user(&c).last_login, Some(now()));
}

// ---------------------------------------------------------------------------------------------
// D19 Bulk invite
// ---------------------------------------------------------------------------------------------

#[test]
fn d19_each_address_gets_its_own_outcome() {
    let fx = Fx::roomy();
    let a = admin(1);
    let request = BulkInvite {
        emails: vec![
            "new1@example.com".into(),
            "not an address".into(),
            "existing@example.com".into(),
            " NEW1@example.com ".into(),
            "new2@example.com".into(),
            "\u{212A}@example.com".into(),
        ],
        role: None,
        template_id: None,
        crm_access: false,
        grants: Permissions::CONVERSATIONS_VIEW,
    };
    let mut next = 100u8;
    let (c, items) = decide::invite_many(
        fx.ctx(),
        &acting(&a),
        &request,
        None,
        &|key| key == "existing@example.com",
        &mut || {
            next += 1;
            new_invite(next)
        },
    )
    .unwrap();
    let inputs: Vec<&str> = items.iter().map(|i| i.input.as_str()).collect();
    assert_eq!(
        inputs,
        request
            .emails
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(items[0].outcome, BulkOutcome::Invited { user_id: uid(101) });
    assert!(matches!(
        items[1].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::MissingAt
        }
    ));
    assert_eq!(items[2].outcome, BulkOutcome::Duplicate);
    assert_eq!(items[3].outcome, BulkOutcome::Duplicate);
    assert_eq!(items[4].outcome, BulkOutcome::Invited { user_id: uid(102) });
    assert!(matches!(
        items[5].outcome,
        BulkOutcome::Invalid {
            reason: EmailError::NonAscii { .. }
        }
    ));
    let users = inserted_users(&c);
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u.role == Role::User
        && u.status == Status::Invited
        && u.grants == Permissions::CONVERSATIONS_VIEW));
    assert_eq!(c.counters.seats_used, fx.state.counters.seats_used + 2);
    assert_eq!(
        c.writes
            .iter()
            .filter(|w| matches!(w, Write::InsertInvitation(_)))
            .count(),
        2
    );
    assert_eq!(c.events.len(), 2);
}

#[test]
fn d19_the_seat_limit_holds_exactly() {
    let fx = Fx::new(3, 1, Some(5));
    let a = admin(1);
    let request = BulkInvite {
        emails: (0..6).map(|i| format!("n{i}@example.com")).collect(),
        ..BulkInvite::default()
    };
    let mut next = 100u8;
    let (c, items) = decide::invite_many(
        fx.ctx(),
        &acting(&a),
        &request,
        None,
        &|_| false,
        &mut || {
            next += 1;
            new_invite(next)
        },
    )
    .unwrap();
    let invited = items
        .iter()
        .filter(|i| matches!(i.outcome, BulkOutcome::Invited { .. }))
        .count();
    assert_eq!(invited, 2);
    assert!(matches!(items[0].outcome, BulkOutcome::Invited { .. }));
    assert!(matches!(items[1].outcome, BulkOutcome::Invited { .. }));
    for item in &items[2..] {
        assert_eq!(
            item.outcome,
            BulkOutcome::LimitReached { used: 5, limit: 5 }
        );
    }
    assert_eq!(c.counters.seats_used, 5);
    assert_eq!(inserted_users(&c).len(), 2);
    // the ids handed out are all distinct and only drawn for invited addresses
    let ids: HashSet<UserId> = inserted_users(&c).iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn d19_a_repeat_of_an_address_refused_for_the_limit_is_refused_for_the_limit_again() {
    // One seat left: x is invited, y is refused for the limit, then y and x come again.
    let fx = Fx::new(4, 1, Some(5));
    let a = admin(1);
    let request = BulkInvite {
        emails: vec![
            "x@example.com".into(),
            "y@example.com".into(),
            "Y@example.com".into(),
            "x@example.com".into(),
        ],
        ..BulkInvite::default()
    };
    let mut next = 100u8;
    let (c, items) = decide::invite_many(
        fx.ctx(),
        &acting(&a),
        &request,
        None,
        &|_| false,
        &mut || {
            next += 1;
            new_invite(next)
        },
    )
    .unwrap();
    assert!(matches!(items[0].outcome, BulkOutcome::Invited { .. }));
    let full = BulkOutcome::LimitReached { used: 5, limit: 5 };
    assert_eq!(items[1].outcome, full);
    // What y would get on its own at this point: the limit, not "duplicate".
    assert_eq!(items[2].outcome, full);
    // x was invited by this call: a repeat of it is a duplicate.
    assert_eq!(items[3].outcome, BulkOutcome::Duplicate);
    assert_eq!(inserted_users(&c).len(), 1);
}

#[test]
fn d19_over_the_limit_invites_nobody() {
    let fx = Fx::new(7, 1, Some(5));
    let a = admin(1);
    let request = BulkInvite {
        emails: vec!["a@example.com".into(), "b@example.com".into()],
        ..BulkInvite::default()
    };
    let (c, items) = decide::invite_many(
        fx.ctx(),
        &acting(&a),
        &request,
        None,
        &|_| false,
        &mut || new_invite(100),
    )
    .unwrap();
    assert!(inserted_users(&c).is_empty());
    assert!(
        items
            .iter()
            .all(|i| i.outcome == BulkOutcome::LimitReached { used: 7, limit: 5 })
    );
}

// ---------------------------------------------------------------------------------------------
// D20 Expired invitations
// ---------------------------------------------------------------------------------------------

#[test]
fn d20_purge_deletes_only_expired_invitations_and_frees_their_seats() {
    let fx = Fx::new(10, 1, Some(10));
    let m = manager(3);
    let mut expired1 = user(10, Role::User, Status::Invited, Permissions::empty());
    expired1.invite_expires_at = Some(now() - Duration::days(1));
    let mut expired_now = user(11, Role::User, Status::Invited, Permissions::empty());
    expired_now.invite_expires_at = Some(now());
    let pending = user(12, Role::User, Status::Invited, Permissions::empty());
    let active = member(13, Permissions::empty());
    let mut expired_admin = user(14, Role::Admin, Status::Invited, Permissions::empty());
    expired_admin.invite_expires_at = Some(now() - Duration::days(1));
    let mut foreign = user(15, Role::User, Status::Invited, Permissions::empty());
    foreign.invite_expires_at = Some(now() - Duration::days(1));
    foreign.tenant_id = other_tenant_id();

    assert!(expired1.invitation_expired(now()));
    assert!(expired_now.invitation_expired(now()));
    assert!(!pending.invitation_expired(now()));
    assert!(!active.invitation_expired(now()));

    let candidates = [
        expired1.clone(),
        pending,
        active,
        expired_admin.clone(),
        foreign,
        expired_now.clone(),
    ];
    let (c, deleted) = decide::purge_expired(fx.ctx(), &acting(&m), &candidates, &[]).unwrap();
    assert_eq!(deleted, vec![expired1.id, expired_now.id]);
    assert_eq!(c.counters.seats_used, 8);
    let ts: Vec<UserId> = tombstones(&c).iter().map(|t| t.user_id).collect();
    assert_eq!(ts, deleted);
    // an admin purges the expired admin invitation too
    let a = admin(1);
    let (c, deleted) = decide::purge_expired(fx.ctx(), &acting(&a), &candidates, &[]).unwrap();
    assert_eq!(deleted, vec![expired1.id, expired_admin.id, expired_now.id]);
    assert_eq!(c.counters.seats_used, 7);
    assert_eq!(c.counters.active_admins, 1);
}

#[test]
fn d20_expired_invitations_keep_their_seat_until_deleted() {
    // an expired invitation is still a row: the tenant at its limit stays there
    let fx = Fx::new(5, 1, Some(5));
    let a = admin(1);
    let mut expired = user(10, Role::User, Status::Invited, Permissions::empty());
    expired.invite_expires_at = Some(now() - Duration::days(30));
    assert!(
        decide::invite(
            fx.ctx(),
            &acting(&a),
            &invite_request("x@example.com", Role::User, Permissions::empty()),
            None,
            false,
            new_invite(50),
        )
        .is_err()
    );
    let (c, deleted) = decide::purge_expired(fx.ctx(), &acting(&a), &[expired], &[]).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        SeatUsage::new(c.counters.seats_used, Some(5)).remaining,
        Some(1)
    );
    // nothing to purge: an empty change
    let (c, deleted) = decide::purge_expired(fx.ctx(), &acting(&a), &[], &[]).unwrap();
    assert!(deleted.is_empty());
    assert!(c.is_empty());
}

// ---------------------------------------------------------------------------------------------
// D15 Tenant isolation (the parts in the core)
// ---------------------------------------------------------------------------------------------

#[test]
fn d15_foreign_templates_behave_like_missing_ones() {
    let fx = Fx::roomy();
    let a = admin(1);
    let mut foreign = template(1, Permissions::empty());
    foreign.tenant_id = other_tenant_id();
    assert_eq!(
        decide::delete_template(
            fx.ctx(),
            &acting(&a),
            &foreign,
            0,
            TemplateDeletion::Refuse,
            None,
            &[]
        )
        .unwrap_err(),
        Error::TemplateNotFound
    );
    let mut r = invite_request("x@example.com", Role::User, Permissions::empty());
    r.template_id = Some(foreign.id);
    assert_eq!(
        decide::invite(
            fx.ctx(),
            &acting(&a),
            &r,
            Some(&foreign),
            false,
            new_invite(50)
        )
        .unwrap_err(),
        Error::TemplateNotFound
    );
}

// ---------------------------------------------------------------------------------------------
// D21 Manage only within your own access
// ---------------------------------------------------------------------------------------------

/// Every kind of edit a manager might try on a user of `status`, down to a lone address
/// change (a status change only where D2 allows one).
fn every_kind_of_edit(status: Status) -> Vec<UserEdit> {
    let mut edits = vec![
        UserEdit {
            email: Some(email("retargeted@example.com")),
            ..UserEdit::default()
        },
        UserEdit {
            crm_access: Some(false),
            ..UserEdit::default()
        },
        UserEdit {
            grants: Some(Permissions::empty()),
            ..UserEdit::default()
        },
        UserEdit {
            template_id: Some(None),
            ..UserEdit::default()
        },
    ];
    let flip = match status {
        Status::Invited => None,
        Status::Active => Some(Status::Suspended),
        Status::Suspended => Some(Status::Active),
    };
    if let Some(to) = flip {
        edits.push(UserEdit {
            status: Some(to),
            ..UserEdit::default()
        });
    }
    edits
}

fn beyond(missing: Permissions, crm: bool) -> Error {
    Error::BeyondOwnAccess { missing, crm }
}

#[test]
fn d21_edit_of_any_field_of_a_stronger_user_is_refused_naming_exactly_the_excess() {
    let fx = Fx::roomy();
    let m = manager(3); // users:* + conversations:view, no CRM
    let t = template(1, Permissions::ANALYTICS_EDIT | Permissions::USERS_VIEW);
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        // (grants, template, crm) of the target → what the refusal must name
        let cases = [
            (
                Permissions::SETTINGS_MANAGE | Permissions::CONVERSATIONS_VIEW,
                false,
                false,
                beyond(Permissions::SETTINGS_MANAGE, false),
            ),
            (
                Permissions::USERS_VIEW,
                true,
                false,
                beyond(Permissions::ANALYTICS_EDIT, false),
            ),
            (
                Permissions::INTEGRATIONS_VIEW | Permissions::USERS_DELETE,
                true,
                true,
                beyond(
                    Permissions::INTEGRATIONS_VIEW | Permissions::ANALYTICS_EDIT,
                    true,
                ),
            ),
        ];
        for (grants, with_template, crm, want) in cases {
            let mut target = user(4, Role::User, status, grants);
            target.crm_access = crm;
            if with_template {
                target.template_id = Some(t.id);
            }
            let current = with_template.then_some(&t);
            for e in every_kind_of_edit(status) {
                // the template stays what it was unless the edit clears it
                let new = if e.template_id == Some(None) {
                    None
                } else {
                    current
                };
                let err = decide::edit(fx.ctx(), &acting(&m), &target, current, new, &e, false)
                    .unwrap_err();
                assert_eq!(err, want, "{status} {grants} {e:?}");
                assert_eq!(err.rule(), Rule::WithinOwnAccess);
            }
        }
    }
}

#[test]
fn d21_retargeting_a_stronger_invitation_by_email_is_refused_and_nothing_is_written() {
    // The attack D21 closes: a manager without settings:manage re-addresses an invitation
    // that grants it (or an account that holds it) to a mailbox it controls.
    let fx = Fx::roomy();
    let m = manager(3);
    let invited = user(4, Role::User, Status::Invited, Permissions::SETTINGS_MANAGE);
    let e = UserEdit {
        email: Some(email("attacker@example.com")),
        ..UserEdit::default()
    };
    let err = edit_user(&fx, &m, &invited, &e).unwrap_err();
    assert_eq!(err, beyond(Permissions::SETTINGS_MANAGE, false));
    // the message names what the target holds beyond the actor
    let msg = err.to_string();
    assert!(msg.contains("settings:manage"), "{msg}");
    assert!(!msg.contains("conversations:view"), "{msg}");
    // an admin may fix the address (and the tokens die, D10)
    let c = edit_user(&fx, &admin(1), &invited, &e).unwrap();
    assert!(c.writes.contains(&Write::RevokeInvitations(invited.id)));
    // so may a manager when the invitation holds nothing beyond it
    let weak = user(
        5,
        Role::User,
        Status::Invited,
        Permissions::CONVERSATIONS_VIEW,
    );
    assert!(edit_user(&fx, &m, &weak, &e).is_ok());
}

#[test]
fn d21_resend_to_a_stronger_invitee_is_refused() {
    let fx = Fx::roomy();
    let m = manager(3);
    let t = template(1, Permissions::EXPERIMENTS_MANAGE);
    let direct = user(4, Role::User, Status::Invited, Permissions::SETTINGS_VIEW);
    let err = decide::resend(
        fx.ctx(),
        &acting(&m),
        &direct,
        None,
        &[],
        TokenHash([7; 32]),
    )
    .unwrap_err();
    assert_eq!(err, beyond(Permissions::SETTINGS_VIEW, false));
    assert_eq!(err.rule(), Rule::WithinOwnAccess);
    // through its template
    let mut via_template = user(5, Role::User, Status::Invited, Permissions::empty());
    via_template.template_id = Some(t.id);
    assert_eq!(
        decide::resend(
            fx.ctx(),
            &acting(&m),
            &via_template,
            Some(&t),
            &[],
            TokenHash([7; 32])
        )
        .unwrap_err(),
        beyond(Permissions::EXPERIMENTS_MANAGE, false)
    );
    // CRM only
    let mut crm = user(6, Role::User, Status::Invited, Permissions::USERS_VIEW);
    crm.crm_access = true;
    assert_eq!(
        decide::resend(fx.ctx(), &acting(&m), &crm, None, &[], TokenHash([7; 32])).unwrap_err(),
        beyond(Permissions::empty(), true)
    );
    // within the actor: fine; an admin: fine for all
    let within = user(7, Role::User, Status::Invited, Permissions::USERS_VIEW);
    assert!(
        decide::resend(
            fx.ctx(),
            &acting(&m),
            &within,
            None,
            &[],
            TokenHash([7; 32])
        )
        .is_ok()
    );
    let a = admin(1);
    for (target, template) in [(&direct, None), (&via_template, Some(&t)), (&crm, None)] {
        assert!(
            decide::resend(
                fx.ctx(),
                &acting(&a),
                target,
                template,
                &[],
                TokenHash([7; 32])
            )
            .is_ok()
        );
    }
    // D21 is checked before D10's "only invited users": a stronger active user is refused
    // as beyond the actor, not as "not invited"
    let active = member(8, Permissions::SETTINGS_VIEW);
    assert_eq!(
        decide::resend(
            fx.ctx(),
            &acting(&m),
            &active,
            None,
            &[],
            TokenHash([7; 32])
        )
        .unwrap_err(),
        beyond(Permissions::SETTINGS_VIEW, false)
    );
}

#[test]
fn d21_delete_of_a_stronger_user_is_refused_whatever_its_status() {
    let fx = Fx::roomy();
    let m = manager(3);
    let t = template(1, Permissions::ANALYTICS_VIEW);
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let strong = user(4, Role::User, status, Permissions::INTEGRATIONS_DELETE);
        let err = decide::delete(fx.ctx(), &acting(&m), &strong, None).unwrap_err();
        assert_eq!(
            err,
            beyond(Permissions::INTEGRATIONS_DELETE, false),
            "{status}"
        );
        assert_eq!(err.rule(), Rule::WithinOwnAccess);
        let mut via_template = user(5, Role::User, status, Permissions::empty());
        via_template.template_id = Some(t.id);
        assert_eq!(
            decide::delete(fx.ctx(), &acting(&m), &via_template, Some(&t)).unwrap_err(),
            beyond(Permissions::ANALYTICS_VIEW, false),
            "{status}"
        );
        let mut crm = user(6, Role::User, status, Permissions::empty());
        crm.crm_access = true;
        assert_eq!(
            decide::delete(fx.ctx(), &acting(&m), &crm, None).unwrap_err(),
            beyond(Permissions::empty(), true),
            "{status}"
        );
        // an admin deletes them all
        let a = admin(1);
        assert!(decide::delete(fx.ctx(), &acting(&a), &strong, None).is_ok());
        assert!(decide::delete(fx.ctx(), &acting(&a), &via_template, Some(&t)).is_ok());
        assert!(decide::delete(fx.ctx(), &acting(&a), &crm, None).is_ok());
        // the manager deletes a user within its own access
        let weak = user(7, Role::User, status, Permissions::CONVERSATIONS_VIEW);
        let c = decide::delete(fx.ctx(), &acting(&m), &weak, None).unwrap();
        assert_eq!(tombstones(&c).len(), 1);
    }
}

#[test]
fn d21_purge_skips_expired_invitations_holding_more_than_the_actor() {
    let fx = Fx::new(10, 1, Some(10));
    let m = manager(3);
    let t_strong = template(1, Permissions::SETTINGS_EDIT);
    let t_weak = template(2, Permissions::CONVERSATIONS_VIEW);
    let expired = |n: u8, grants: Permissions| {
        let mut u = user(n, Role::User, Status::Invited, grants);
        u.invite_expires_at = Some(now() - Duration::days(1));
        u
    };
    let weak = expired(10, Permissions::USERS_VIEW);
    let strong_grant = expired(11, Permissions::ANALYTICS_VIEW);
    let mut strong_template = expired(12, Permissions::empty());
    strong_template.template_id = Some(t_strong.id);
    let mut weak_template = expired(13, Permissions::empty());
    weak_template.template_id = Some(t_weak.id);
    let mut crm = expired(14, Permissions::empty());
    crm.crm_access = true;
    let candidates = [
        weak.clone(),
        strong_grant.clone(),
        strong_template.clone(),
        weak_template.clone(),
        crm.clone(),
    ];
    let templates = [t_strong.clone(), t_weak.clone()];
    let (c, deleted) =
        decide::purge_expired(fx.ctx(), &acting(&m), &candidates, &templates).unwrap();
    assert_eq!(deleted, vec![weak.id, weak_template.id]);
    assert_eq!(c.counters.seats_used, 8);
    let ts: Vec<UserId> = tombstones(&c).iter().map(|t| t.user_id).collect();
    assert_eq!(ts, deleted);
    // the skipped ones leave no trace in the change
    for skipped in [&strong_grant, &strong_template, &crm] {
        assert!(!c.writes.contains(&Write::RevokeInvitations(skipped.id)));
        assert!(
            !c.events
                .iter()
                .any(|e| e.target == AuditTarget::User(skipped.id))
        );
    }
    // an admin purges them all
    let (c, deleted) =
        decide::purge_expired(fx.ctx(), &acting(&admin(1)), &candidates, &templates).unwrap();
    assert_eq!(deleted.len(), 5);
    assert_eq!(c.counters.seats_used, 5);
    // a manager whose own template covers the excess purges those too
    let t_actor = template(3, Permissions::ANALYTICS_VIEW | Permissions::SETTINGS_EDIT);
    let mut m2 = manager(4);
    m2.template_id = Some(t_actor.id);
    let act = Acting {
        user: &m2,
        template: Some(&t_actor),
    };
    let (_, deleted) = decide::purge_expired(fx.ctx(), &act, &candidates, &templates).unwrap();
    assert_eq!(
        deleted,
        vec![
            weak.id,
            strong_grant.id,
            strong_template.id,
            weak_template.id
        ]
    );
}

#[test]
fn d21_admin_actors_are_not_limited() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::all());
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let mut strong = user(4, Role::User, status, Permissions::all());
        strong.crm_access = true;
        strong.template_id = Some(t.id);
        assert_eq!(acting(&a).check_within(&strong, Some(&t)), Ok(()));
        for e in every_kind_of_edit(status) {
            let new = if e.template_id == Some(None) {
                None
            } else {
                Some(&t)
            };
            assert!(
                decide::edit(fx.ctx(), &acting(&a), &strong, Some(&t), new, &e, false).is_ok(),
                "{status} {e:?}"
            );
        }
        assert!(decide::delete(fx.ctx(), &acting(&a), &strong, Some(&t)).is_ok());
        if status == Status::Invited {
            assert!(
                decide::resend(
                    fx.ctx(),
                    &acting(&a),
                    &strong,
                    Some(&t),
                    &[],
                    TokenHash([7; 32])
                )
                .is_ok()
            );
        }
    }
    // other admins too (D7 and D8 permitting)
    let b = admin(2);
    assert_eq!(acting(&a).check_within(&b, None), Ok(()));
    assert!(decide::delete(fx.ctx(), &acting(&a), &b, None).is_ok());
    // but a suspended admin is no admin: it may not manage at all (D7)
    let mut suspended_admin = admin(5);
    suspended_admin.status = Status::Suspended;
    assert!(matches!(
        decide::delete(
            fx.ctx(),
            &acting(&suspended_admin),
            &member(6, Permissions::empty()),
            None
        )
        .unwrap_err(),
        Error::NotAllowed { .. }
    ));
}

#[test]
fn d21_a_target_with_exactly_the_actors_access_is_allowed() {
    let fx = Fx::roomy();
    // the actor's access comes partly from its template
    let t_actor = template(1, Permissions::ANALYTICS_VIEW | Permissions::SETTINGS_VIEW);
    let mut m = manager(3);
    m.crm_access = true;
    m.template_id = Some(t_actor.id);
    let act = Acting {
        user: &m,
        template: Some(&t_actor),
    };
    let holds = act.holds();
    assert_eq!(
        holds,
        Permissions::category(Category::Users)
            | Permissions::CONVERSATIONS_VIEW
            | Permissions::ANALYTICS_VIEW
            | Permissions::SETTINGS_VIEW
    );
    // the target holds exactly the same set, composed differently, and CRM like the actor
    let t_target = template(2, Permissions::SETTINGS_VIEW | Permissions::USERS_MANAGE);
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let mut same = user(
            4,
            Role::User,
            status,
            holds - Permissions::SETTINGS_VIEW - Permissions::USERS_MANAGE,
        );
        same.crm_access = true;
        same.template_id = Some(t_target.id);
        assert_eq!(potential_permissions(&same, Some(&t_target)), holds);
        assert_eq!(act.check_within(&same, Some(&t_target)), Ok(()));
        let e = UserEdit {
            email: Some(email("moved@example.com")),
            ..UserEdit::default()
        };
        assert!(
            decide::edit(
                fx.ctx(),
                &act,
                &same,
                Some(&t_target),
                Some(&t_target),
                &e,
                false
            )
            .is_ok()
        );
        assert!(decide::delete(fx.ctx(), &act, &same, Some(&t_target)).is_ok());
        if status == Status::Invited {
            assert!(
                decide::resend(
                    fx.ctx(),
                    &act,
                    &same,
                    Some(&t_target),
                    &[],
                    TokenHash([7; 32])
                )
                .is_ok()
            );
        }
        // one permission more is refused, naming just that one
        let mut more = same.clone();
        more.grants |= Permissions::EXPERIMENTS_VIEW;
        assert_eq!(
            decide::delete(fx.ctx(), &act, &more, Some(&t_target)).unwrap_err(),
            beyond(Permissions::EXPERIMENTS_VIEW, false)
        );
    }
    // a non-admin still edits its own address: its own access is within itself
    let e = UserEdit {
        email: Some(email("me@example.com")),
        ..UserEdit::default()
    };
    assert!(
        decide::edit(
            fx.ctx(),
            &act,
            &m,
            Some(&t_actor),
            Some(&t_actor),
            &e,
            false
        )
        .is_ok()
    );
}

#[test]
fn d21_a_crm_only_difference_is_refused() {
    let fx = Fx::roomy();
    let m = manager(3); // no CRM
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let mut target = user(4, Role::User, status, Permissions::CONVERSATIONS_VIEW);
        target.crm_access = true;
        let want = beyond(Permissions::empty(), true);
        let e = UserEdit {
            email: Some(email("moved@example.com")),
            ..UserEdit::default()
        };
        let err = edit_user(&fx, &m, &target, &e).unwrap_err();
        assert_eq!(err, want, "{status}");
        assert_eq!(err.rule(), Rule::WithinOwnAccess);
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        assert!(err.to_string().contains("CRM access"), "{err}");
        // even turning the CRM flag off (removing the excess) is refused
        let off = UserEdit {
            crm_access: Some(false),
            ..UserEdit::default()
        };
        assert_eq!(edit_user(&fx, &m, &target, &off).unwrap_err(), want);
        assert_eq!(
            decide::delete(fx.ctx(), &acting(&m), &target, None).unwrap_err(),
            want
        );
        if status == Status::Invited {
            assert_eq!(
                decide::resend(
                    fx.ctx(),
                    &acting(&m),
                    &target,
                    None,
                    &[],
                    TokenHash([7; 32])
                )
                .unwrap_err(),
                want
            );
        }
        // a manager holding CRM itself may
        let mut m_crm = manager(5);
        m_crm.crm_access = true;
        assert!(edit_user(&fx, &m_crm, &target, &e).is_ok());
        assert!(decide::delete(fx.ctx(), &acting(&m_crm), &target, None).is_ok());
    }
    // both kinds of excess are named together
    let mut both = member(6, Permissions::SETTINGS_VIEW);
    both.crm_access = true;
    let err = decide::delete(fx.ctx(), &acting(&m), &both, None).unwrap_err();
    assert_eq!(err, beyond(Permissions::SETTINGS_VIEW, true));
    assert!(
        err.to_string().contains("settings:view and CRM access"),
        "{err}"
    );
}

#[test]
fn d21_only_the_actors_current_access_counts() {
    let fx = Fx::roomy();
    let target = member(4, Permissions::ANALYTICS_VIEW);
    // a template passed for the actor that is not the one it references gives it nothing
    let t = template(1, Permissions::ANALYTICS_VIEW);
    let mut m_other = manager(3);
    m_other.template_id = Some(tid(2));
    let wrong = Acting {
        user: &m_other,
        template: Some(&t),
    };
    assert_eq!(
        decide::delete(fx.ctx(), &wrong, &target, None).unwrap_err(),
        beyond(Permissions::ANALYTICS_VIEW, false)
    );
    let mut m = manager(3);
    m.template_id = Some(t.id);
    let right = Acting {
        user: &m,
        template: Some(&t),
    };
    assert!(decide::delete(fx.ctx(), &right, &target, None).is_ok());
    // a template passed for the target that is not the one it references adds nothing to it
    let strong_t = template(9, Permissions::all());
    assert!(decide::delete(fx.ctx(), &right, &target, Some(&strong_t)).is_ok());
    // refusals are audited with their rule (D13)
    let err = decide::delete(fx.ctx(), &wrong, &target, None).unwrap_err();
    let ev = decide::refused_event(
        tenant_id(),
        ActorRef::User(m.id),
        AuditAction::UserDeleted,
        AuditTarget::User(target.id),
        now(),
        &err,
    );
    assert!(matches!(
        ev.outcome,
        Outcome::Refused {
            rule: Rule::WithinOwnAccess,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// D22 Names
// ---------------------------------------------------------------------------------------------

fn forbidden(character: char, position: usize) -> NameError {
    NameError::ForbiddenCharacter {
        character,
        position,
    }
}

#[test]
fn d22_tenant_name_lengths_are_counted_after_trimming() {
    assert_eq!(MAX_TENANT_NAME_LEN, 100);
    assert_eq!(TenantName::parse("").unwrap_err(), NameError::Empty);
    assert_eq!(TenantName::parse(" \t\r\n ").unwrap_err(), NameError::Empty);
    assert_eq!(
        TenantName::parse("\u{3000}\u{a0}").unwrap_err(),
        NameError::Empty
    );
    assert_eq!(TenantName::parse("a").unwrap().as_str(), "a");
    let hundred = "a".repeat(100);
    assert_eq!(TenantName::parse(&hundred).unwrap().as_str(), hundred);
    assert_eq!(
        TenantName::parse(&"a".repeat(101)).unwrap_err(),
        NameError::TooLong { len: 101, max: 100 }
    );
    // white space around does not count; characters, not bytes, do
    assert!(TenantName::parse(&format!("   {hundred}\n")).is_ok());
    assert!(TenantName::parse(&"é".repeat(100)).is_ok());
    assert_eq!(
        TenantName::parse(&"株".repeat(101)).unwrap_err(),
        NameError::TooLong { len: 101, max: 100 }
    );
    // inner spaces count
    assert_eq!(
        TenantName::parse(&format!("a{}b", " ".repeat(99))).unwrap_err(),
        NameError::TooLong { len: 101, max: 100 }
    );
    let n = TenantName::parse("  Acme Support \t").unwrap();
    assert_eq!(n.as_str(), "Acme Support");
    assert_eq!(n.to_string(), "Acme Support");
    assert_eq!("Acme".parse::<TenantName>().unwrap().into_string(), "Acme");
    // the wire validates too
    assert_eq!(
        serde_json::from_str::<TenantName>("\" Acme \"")
            .unwrap()
            .as_str(),
        "Acme"
    );
    assert!(serde_json::from_str::<TenantName>("\"\"").is_err());
    assert!(serde_json::from_str::<TenantName>("\"Ac\\u202eme\"").is_err());
    assert_eq!(serde_json::to_string(&n).unwrap(), "\"Acme Support\"");
}

#[test]
fn d22_template_name_lengths_are_64_after_trimming() {
    assert_eq!(MAX_TEMPLATE_NAME_LEN, 64);
    assert!(TemplateName::parse(&"a".repeat(64)).is_ok());
    assert!(TemplateName::parse(&format!("\t{} ", "a".repeat(64))).is_ok());
    assert_eq!(
        TemplateName::parse(&"a".repeat(65)).unwrap_err(),
        NameError::TooLong { len: 65, max: 64 }
    );
    assert_eq!(TemplateName::parse("  ").unwrap_err(), NameError::Empty);
    // the length errors keep their D12 rule; forbidden characters are D22
    assert_eq!(Error::from(NameError::Empty).rule(), Rule::RoleTemplates);
    assert_eq!(
        Error::from(NameError::TooLong { len: 65, max: 64 }).rule(),
        Rule::RoleTemplates
    );
    assert_eq!(Error::from(forbidden('\u{200b}', 0)).rule(), Rule::Names);
    for e in [
        NameError::Empty,
        NameError::TooLong { len: 101, max: 100 },
        forbidden('\n', 1),
    ] {
        assert_eq!(Error::InvalidTenantName(e).rule(), Rule::Names);
    }
}

#[test]
fn d22_control_characters_inside_a_name_are_refused() {
    for (input, c, at) in [
        ("Ac\rme", '\r', 2),
        ("Ac\nme", '\n', 2),
        ("Ac\r\nme", '\r', 2),
        ("A\tB", '\t', 1),
        ("A\0B", '\0', 1),
        ("A\u{7f}B", '\u{7f}', 1),
        ("A\u{85}B", '\u{85}', 1),
        ("A\u{9f}B", '\u{9f}', 1),
        ("A\u{1b}[31mB", '\u{1b}', 1),
        ("A\u{1c}B", '\u{1c}', 1),
    ] {
        assert_eq!(
            TenantName::parse(input).unwrap_err(),
            forbidden(c, at),
            "{input:?}"
        );
        assert_eq!(
            TemplateName::parse(input).unwrap_err(),
            forbidden(c, at),
            "{input:?}"
        );
    }
    // surrounding white space that happens to be a control character is trimmed away
    assert_eq!(TenantName::parse("\r\nAcme\r\n").unwrap().as_str(), "Acme");
    assert_eq!(TemplateName::parse("\tAgent\n").unwrap().as_str(), "Agent");
    // but a control character that is not white space is refused even at the ends
    assert_eq!(
        TenantName::parse("\u{0}Acme").unwrap_err(),
        forbidden('\0', 0)
    );
    assert_eq!(
        TenantName::parse("Acme\u{7f}").unwrap_err(),
        forbidden('\u{7f}', 4)
    );
}

#[test]
fn d22_format_characters_are_refused() {
    for (input, c, at) in [
        ("Acme\u{202e}", '\u{202e}', 4),   // RIGHT-TO-LEFT OVERRIDE
        ("Ac\u{200b}me", '\u{200b}', 2),   // ZERO WIDTH SPACE
        ("\u{feff}Acme", '\u{feff}', 0),   // BYTE ORDER MARK (not trimmed: not white space)
        ("Ac\u{ad}me", '\u{ad}', 2),       // SOFT HYPHEN
        ("Acme\u{e0041}", '\u{e0041}', 4), // TAG LATIN CAPITAL LETTER A
        ("Ac\u{200d}me", '\u{200d}', 2),   // ZERO WIDTH JOINER
        ("Ac\u{2066}me", '\u{2066}', 2),   // LEFT-TO-RIGHT ISOLATE
        ("Ac\u{61c}me", '\u{61c}', 2),     // ARABIC LETTER MARK
        ("Ac\u{2060}me", '\u{2060}', 2),   // WORD JOINER
        ("Ac\u{e0001}me", '\u{e0001}', 2), // LANGUAGE TAG
        ("Acme\u{e007f}", '\u{e007f}', 4), // CANCEL TAG
    ] {
        assert!(is_format_char(c), "{c:?}");
        assert_eq!(
            TenantName::parse(input).unwrap_err(),
            forbidden(c, at),
            "{input:?}"
        );
        assert_eq!(
            TemplateName::parse(input).unwrap_err(),
            forbidden(c, at),
            "{input:?}"
        );
        let err = Error::from(TemplateName::parse(input).unwrap_err());
        assert_eq!(err.rule(), Rule::Names);
    }
    // look-alike names differing only by such a character cannot exist side by side: only
    // the visible one is a name
    assert!(TemplateName::parse("Support").is_ok());
    assert!(TemplateName::parse("Sup\u{200b}port").is_err());
    assert!(TenantName::parse("Acme").is_ok());
    assert!(TenantName::parse("Acme\u{200b}").is_err());
}

#[test]
fn d22_position_is_the_character_index_in_the_name_as_given() {
    // leading spaces count: the position is in the input, not in the trimmed name
    assert_eq!(
        TenantName::parse("   Ac\u{200b}me").unwrap_err(),
        forbidden('\u{200b}', 5)
    );
    assert_eq!(
        TemplateName::parse("\t\n Ac\u{202e}me").unwrap_err(),
        forbidden('\u{202e}', 5)
    );
    // multi-byte characters before it count once each (characters, not bytes)
    assert_eq!(
        TenantName::parse("Café\u{feff}").unwrap_err(),
        forbidden('\u{feff}', 4)
    );
    assert_eq!(
        TenantName::parse("\u{3000}\u{3000}株式\u{200b}会社").unwrap_err(),
        forbidden('\u{200b}', 4)
    );
    assert_eq!(
        TenantName::parse("😀😀\u{e0041}").unwrap_err(),
        forbidden('\u{e0041}', 2)
    );
    // the first forbidden character is the one reported
    assert_eq!(
        TenantName::parse(" a\u{200b}b\nc\u{202e}").unwrap_err(),
        forbidden('\u{200b}', 2)
    );
    // and a forbidden character is reported before any length problem
    let long = format!("{}\u{ad}", "a".repeat(200));
    assert_eq!(
        TenantName::parse(&long).unwrap_err(),
        forbidden('\u{ad}', 200)
    );
    // the reported position indexes exactly that character in `input.chars()`
    for input in [
        "   Ac\u{200b}me",
        "\u{3000}\u{3000}株式\u{200b}会社",
        "😀😀\u{e0041}",
        " \u{a0}x\u{7f}",
    ] {
        let Err(NameError::ForbiddenCharacter {
            character,
            position,
        }) = check_name(input, 100)
        else {
            panic!("{input:?} accepted");
        };
        assert_eq!(input.chars().nth(position), Some(character), "{input:?}");
    }
}

#[test]
fn d22_error_messages_name_the_code_point_and_where() {
    let msg = TenantName::parse("Acme\u{202e}").unwrap_err().to_string();
    assert!(msg.contains("U+202E"), "{msg}");
    assert!(msg.contains("format character"), "{msg}");
    assert!(msg.contains('4'), "{msg}");
    let msg = TenantName::parse("Acme\u{e0041}").unwrap_err().to_string();
    assert!(msg.contains("U+E0041"), "{msg}");
    let msg = TenantName::parse("Ac\u{ad}me").unwrap_err().to_string();
    assert!(msg.contains("U+00AD"), "{msg}");
    let msg = TemplateName::parse("Sup\nport").unwrap_err().to_string();
    assert!(msg.contains("U+000A"), "{msg}");
    assert!(msg.contains("control character"), "{msg}");
    // the message never embeds the invisible character itself
    assert!(!msg.contains('\n'), "{msg:?}");
    let msg = TenantName::parse("Acme\u{202e}").unwrap_err().to_string();
    assert!(!msg.contains('\u{202e}'), "{msg:?}");
    let err = Error::InvalidTenantName(TenantName::parse("").unwrap_err());
    assert!(err.to_string().contains("tenant name"), "{err}");
    let err = Error::from(TemplateName::parse("A\u{200b}").unwrap_err());
    assert!(err.to_string().contains("template name"), "{err}");
    assert!(err.to_string().contains("U+200B"), "{err}");
    let msg = NameError::TooLong { len: 101, max: 100 }.to_string();
    assert!(msg.contains("101") && msg.contains("100"), "{msg}");
}

#[test]
fn d22_format_character_list_is_unicode_cf() {
    // known Cf characters (Unicode 16)
    for c in [
        '\u{ad}',
        '\u{600}',
        '\u{605}',
        '\u{61c}',
        '\u{6dd}',
        '\u{70f}',
        '\u{890}',
        '\u{891}',
        '\u{8e2}',
        '\u{180e}',
        '\u{200b}',
        '\u{200c}',
        '\u{200d}',
        '\u{200e}',
        '\u{200f}',
        '\u{202a}',
        '\u{202e}',
        '\u{2060}',
        '\u{2064}',
        '\u{2066}',
        '\u{206f}',
        '\u{feff}',
        '\u{fff9}',
        '\u{fffb}',
        '\u{110bd}',
        '\u{110cd}',
        '\u{13430}',
        '\u{1343f}',
        '\u{1bca0}',
        '\u{1bca3}',
        '\u{1d173}',
        '\u{1d17a}',
        '\u{e0001}',
        '\u{e0020}',
        '\u{e0041}',
        '\u{e007f}',
    ] {
        assert!(is_format_char(c), "{:04X}", u32::from(c));
    }
    // neighbours and look-alikes that are not Cf
    for c in [
        'a',
        ' ',
        '\u{ac}',
        '\u{ae}',
        '\u{606}',
        '\u{200a}',
        '\u{2010}',
        '\u{2028}',
        '\u{2029}',
        '\u{2065}',
        '\u{2070}',
        '\u{202f}',
        '\u{fefe}',
        '\u{fff8}',
        '\u{fffc}',
        '\u{13440}',
        '\u{1d172}',
        '\u{1d17b}',
        '\u{e0000}',
        '\u{e0002}',
        '\u{e001f}',
        '\u{e0080}',
        '\u{e0100}',
        '\u{034f}',
        '\u{fe0f}',
        '\u{115f}',
        '\u{3164}',
        '\n',
        '\u{7f}',
    ] {
        assert!(!is_format_char(c), "{:04X}", u32::from(c));
    }
    // control characters are Cc, not Cf, but names refuse both
    assert!(!is_format_char('\n') && '\n'.is_control());
}

// ---------------------------------------------------------------------------------------------
// D23 The first seat
// ---------------------------------------------------------------------------------------------

fn new_tenant(name: &str, user_limit: Option<u32>) -> Tenant {
    Tenant {
        id: tenant_id(),
        name: name.to_owned(),
        user_limit,
        created_at: now(),
    }
}

fn inserted_tenant(c: &Change) -> &Tenant {
    match &c.writes[..] {
        [Write::InsertTenant(t), Write::InsertUser(_)] => t,
        other => panic!("unexpected writes {other:?}"),
    }
}

#[test]
fn d23_a_new_tenant_needs_a_seat_for_its_first_admin() {
    let err = decide::create_tenant(
        new_tenant("Acme", Some(0)),
        uid(1),
        email("root@example.com"),
    )
    .unwrap_err();
    assert_eq!(err, Error::FirstSeatRequired);
    assert_eq!(err.rule(), Rule::FirstSeat);
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at least 1"), "{err}");
    for limit in [Some(1), Some(2), Some(u32::MAX), None] {
        let c = decide::create_tenant(new_tenant("Acme", limit), uid(1), email("root@example.com"))
            .unwrap();
        assert_eq!(inserted_tenant(&c).user_limit, limit);
        assert_eq!(c.counters.seats_used, 1);
        assert_eq!(c.counters.active_admins, 1);
        assert_eq!(c.counters.version, 1);
        let usage = SeatUsage::new(c.counters.seats_used, limit);
        assert_eq!(usage.at_limit, limit == Some(1));
    }
    // a later change may still set 0 (D9: below usage is allowed there)
    let fx = Fx::new(1, 1, Some(1));
    let c = decide::set_user_limit(fx.ctx(), ActorRef::System, Some(0));
    assert!(matches!(&c.writes[..], [Write::UpdateTenant(t)] if t.user_limit == Some(0)));
}

#[test]
fn d23_create_tenant_refuses_invalid_names_and_stores_the_name_trimmed() {
    let root = || email("root@example.com");
    for (name, want) in [
        ("", NameError::Empty),
        ("  \t ", NameError::Empty),
        ("Ac\u{202e}me", forbidden('\u{202e}', 2)),
        ("  Ac\u{200b}me", forbidden('\u{200b}', 4)),
        ("Ac\nme", forbidden('\n', 2)),
    ] {
        let err = decide::create_tenant(new_tenant(name, None), uid(1), root()).unwrap_err();
        assert_eq!(err, Error::InvalidTenantName(want), "{name:?}");
        assert_eq!(err.rule(), Rule::Names);
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    let err =
        decide::create_tenant(new_tenant(&"x".repeat(101), Some(5)), uid(1), root()).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidTenantName(NameError::TooLong { len: 101, max: 100 })
    );
    // an invalid name with a zero limit is refused too (whichever rule it names)
    assert!(decide::create_tenant(new_tenant("", Some(0)), uid(1), root()).is_err());
    // stored trimmed
    let c =
        decide::create_tenant(new_tenant("  Acme Support \n", Some(3)), uid(1), root()).unwrap();
    assert_eq!(inserted_tenant(&c).name, "Acme Support");
    let c = decide::create_tenant(new_tenant(&"x".repeat(100), Some(3)), uid(1), root()).unwrap();
    assert_eq!(inserted_tenant(&c).name.chars().count(), 100);
}

// ---------------------------------------------------------------------------------------------
// D24 Accept attempts
// ---------------------------------------------------------------------------------------------

/// Applies a [`Write::FailAcceptAttempt`] to the invitation the way a store would.
fn apply_failed_attempt(inv: &mut Invitation, c: &Change) {
    let [
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        },
    ] = &c.writes[..]
    else {
        panic!("unexpected writes {:?}", c.writes);
    };
    assert_eq!(*token_hash, inv.token_hash);
    inv.failed_attempts = *failed_attempts;
    if *revoke {
        inv.state = InvitationState::Revoked;
    }
}

#[test]
fn d24_attempts_left_count_down_and_the_fifth_failure_kills_the_token() {
    assert_eq!(MAX_ACCEPT_ATTEMPTS, 5);
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let mut inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    let wrong = email("intruder@example.com");
    for (k, left) in [4u32, 3, 2, 1, 0].into_iter().enumerate() {
        let k = u32::try_from(k).unwrap();
        assert_eq!(inv.failed_attempts, k);
        let err = decide::accept(fx.ctx(), &inv, &invited, &wrong).unwrap_err();
        assert_eq!(
            err,
            Error::InvitationEmailMismatch {
                attempts_left: left
            }
        );
        assert_eq!(err.rule(), Rule::Invitations);
        assert!(
            err.to_string().contains(&format!("{left} attempt")),
            "{err}"
        );
        let c = decide::failed_accept(fx.ctx(), &inv, &err);
        assert_eq!(
            c.writes,
            vec![Write::FailAcceptAttempt {
                token_hash: inv.token_hash,
                failed_attempts: k + 1,
                revoke: k + 1 == 5,
            }]
        );
        // the user stays as it was: invited, its seat kept, no user row written
        assert_eq!(c.counters.seats_used, fx.state.counters.seats_used);
        assert_eq!(c.expected_version, fx.state.counters.version);
        apply_failed_attempt(&mut inv, &c);
        if k + 1 < 5 {
            assert_eq!(inv.state, InvitationState::Pending);
        }
    }
    assert_eq!(inv.failed_attempts, 5);
    assert_eq!(inv.state, InvitationState::Revoked);
    // dead: even the right address is refused, with the one error that says nothing more
    assert_eq!(
        decide::accept(fx.ctx(), &inv, &invited, &invited.email).unwrap_err(),
        Error::InvalidInvitation
    );
    assert_eq!(
        decide::accept(fx.ctx(), &inv, &invited, &wrong).unwrap_err(),
        Error::InvalidInvitation
    );
}

#[test]
fn d24_the_count_alone_kills_the_token() {
    // even if a store only recorded the count, five failures refuse the right address
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let mut inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    for n in [5, 6, u32::MAX] {
        inv.failed_attempts = n;
        assert_eq!(
            decide::accept(fx.ctx(), &inv, &invited, &invited.email).unwrap_err(),
            Error::InvalidInvitation,
            "{n}"
        );
    }
    // four failures do not stop the right person
    inv.failed_attempts = 4;
    let c = decide::accept(fx.ctx(), &inv, &invited, &invited.email).unwrap();
    assert_eq!(updated_user(&c).status, Status::Active);
    // a resend issues a fresh token with no failures counted; the user stays invited
    let c = decide::resend(
        fx.ctx(),
        &acting(&admin(1)),
        &invited,
        None,
        &[],
        TokenHash([5; 32]),
    )
    .unwrap();
    let fresh = c
        .writes
        .iter()
        .find_map(|w| match w {
            Write::InsertInvitation(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(fresh.failed_attempts, 0);
    assert_eq!(fresh.state, InvitationState::Pending);
    assert_eq!(updated_user(&c).status, Status::Invited);
    // the count defaults to 0 on the wire (rows written before D24)
    let mut json = serde_json::to_value(&fresh).unwrap();
    json.as_object_mut().unwrap().remove("failed_attempts");
    let back: Invitation = serde_json::from_value(json).unwrap();
    assert_eq!(back, fresh);
}

#[test]
fn d24_failed_attempts_are_audited() {
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let mut inv = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    let wrong = email("intruder@example.com");
    // an ordinary failure
    let err = decide::accept(fx.ctx(), &inv, &invited, &wrong).unwrap_err();
    let c = decide::failed_accept(fx.ctx(), &inv, &err);
    assert_eq!(c.events.len(), 1);
    let ev = &c.events[0];
    assert_eq!(ev.tenant_id, tenant_id());
    assert_eq!(ev.actor, ActorRef::System);
    assert_eq!(ev.action, AuditAction::AcceptAttemptFailed);
    assert_eq!(ev.target, AuditTarget::User(invited.id));
    assert_eq!(ev.at, now());
    assert_eq!(
        ev.outcome,
        Outcome::Refused {
            rule: Rule::AcceptAttempts,
            message: err.to_string()
        }
    );
    assert_eq!(
        ev.changes,
        vec![FieldChange {
            field: Field::FailedAttempts,
            before: Value::Number(0),
            after: Value::Number(1),
        }]
    );
    // the event never holds the address that was tried (nor the token)
    let json = serde_json::to_string(ev).unwrap();
    assert!(!json.contains("intruder"), "{json}");
    // the fifth also records the revocation
    inv.failed_attempts = 4;
    let err = decide::accept(fx.ctx(), &inv, &invited, &wrong).unwrap_err();
    assert_eq!(err, Error::InvitationEmailMismatch { attempts_left: 0 });
    let c = decide::failed_accept(fx.ctx(), &inv, &err);
    assert_eq!(
        c.events[0].changes,
        vec![
            FieldChange {
                field: Field::FailedAttempts,
                before: Value::Number(4),
                after: Value::Number(5),
            },
            FieldChange {
                field: Field::InvitationState,
                before: Value::Text("pending".into()),
                after: Value::Text("revoked".into()),
            },
        ]
    );
    assert_eq!(
        c.events[0].outcome,
        Outcome::Refused {
            rule: Rule::AcceptAttempts,
            message: err.to_string()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// D13 Template edits and deletes name the users whose access changes
// ---------------------------------------------------------------------------------------------

fn changed_users(c: &Change) -> Option<Vec<UserId>> {
    let ev = &c.events[0];
    let found: Vec<&FieldChange> = ev
        .changes
        .iter()
        .filter(|f| f.field == Field::ChangedUsers)
        .collect();
    match found[..] {
        [] => None,
        [f] => {
            assert_eq!(f.before, Value::None);
            match &f.after {
                Value::Users(ids) => Some(ids.clone()),
                other => panic!("unexpected value {other:?}"),
            }
        }
        _ => panic!("ChangedUsers twice in {ev:?}"),
    }
}

/// Users referencing template 1: a plain member, one whose grants already hold
/// `analytics:view`, an admin, an invited and a suspended one; and one on template 2.
fn template_users(t: &RoleTemplate) -> Vec<User> {
    let on = |mut u: User| {
        u.template_id = Some(t.id);
        u
    };
    let mut other = member(16, Permissions::empty());
    other.template_id = Some(tid(2));
    vec![
        on(member(10, Permissions::empty())),
        on(member(11, Permissions::ANALYTICS_VIEW)),
        on(admin(12)),
        on(user(13, Role::User, Status::Invited, Permissions::empty())),
        on(user(
            14,
            Role::User,
            Status::Suspended,
            Permissions::empty(),
        )),
        other,
    ]
}

#[test]
fn d13_template_edit_names_only_the_users_whose_access_changes() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::CONVERSATIONS_VIEW);
    let users = template_users(&t);
    // adding analytics:view: user 11 holds it directly already; the admin holds everything
    let add = TemplateEdit {
        name: None,
        permissions: Some(Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW),
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &add, false, &users).unwrap();
    assert_eq!(changed_users(&c), Some(vec![uid(10), uid(13), uid(14)]));
    // the permission change is still recorded first, with its before/after sets
    assert_eq!(c.events[0].changes[0].field, Field::Permissions);
    // removing conversations:view changes everyone referencing it but the admin
    let t2 = template(
        1,
        Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW,
    );
    let remove = TemplateEdit {
        name: None,
        permissions: Some(Permissions::ANALYTICS_VIEW),
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t2, &remove, false, &users).unwrap();
    assert_eq!(
        changed_users(&c),
        Some(vec![uid(10), uid(11), uid(13), uid(14)])
    );
    // a change nobody notices names nobody (and adds no empty field)
    let covered = vec![users[1].clone(), users[2].clone()];
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &add, false, &covered).unwrap();
    assert_eq!(changed_users(&c), None);
    // a rename changes no one's access
    let rename = TemplateEdit {
        name: Some(TemplateName::parse("Renamed").unwrap()),
        permissions: None,
    };
    let c = decide::edit_template(fx.ctx(), &acting(&a), &t, &rename, false, &users).unwrap();
    assert_eq!(changed_users(&c), None);
}

#[test]
fn d13_template_delete_names_only_the_users_whose_access_changes() {
    let fx = Fx::roomy();
    let a = admin(1);
    let t = template(1, Permissions::ANALYTICS_VIEW);
    let users = template_users(&t);
    let referencing = 5;
    // detach: user 11 keeps analytics:view through its grants; the admin keeps everything
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        referencing,
        TemplateDeletion::Detach,
        None,
        &users,
    )
    .unwrap();
    assert_eq!(changed_users(&c), Some(vec![uid(10), uid(13), uid(14)]));
    // reassign to a template with the same permissions: nobody's access changes
    let same = template(3, Permissions::ANALYTICS_VIEW);
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        referencing,
        TemplateDeletion::Reassign(same.id),
        Some(&same),
        &users,
    )
    .unwrap();
    assert_eq!(changed_users(&c), None);
    // reassign to a bigger one: everyone but the admin gains
    let bigger = template(4, Permissions::ANALYTICS_VIEW | Permissions::SETTINGS_VIEW);
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        referencing,
        TemplateDeletion::Reassign(bigger.id),
        Some(&bigger),
        &users,
    )
    .unwrap();
    assert_eq!(
        changed_users(&c),
        Some(vec![uid(10), uid(11), uid(13), uid(14)])
    );
    // an unreferenced template: nothing moves, nobody is named
    let c = decide::delete_template(
        fx.ctx(),
        &acting(&a),
        &t,
        0,
        TemplateDeletion::Refuse,
        None,
        &[],
    )
    .unwrap();
    assert_eq!(changed_users(&c), None);
}

#[test]
fn d21_template_changes_reaching_stronger_users_are_refused() {
    let fx = Fx::roomy();
    let m = manager(3); // users:* (manage included) + conversations:view, no CRM
    let t = template(1, Permissions::CONVERSATIONS_VIEW);
    let spare = template(2, Permissions::empty());
    let mut weak = user(4, Role::User, Status::Active, Permissions::empty());
    weak.template_id = Some(t.id);
    let mut strong = user(
        5,
        Role::User,
        Status::Suspended,
        Permissions::SETTINGS_MANAGE,
    );
    strong.template_id = Some(t.id);
    let mut crm = user(6, Role::User, Status::Invited, Permissions::empty());
    crm.template_id = Some(t.id);
    crm.crm_access = true;
    let users = vec![weak.clone(), strong.clone(), crm.clone()];
    let shrink = TemplateEdit {
        name: None,
        permissions: Some(Permissions::empty()),
    };
    // the refusal names the union of what the users on it hold beyond the actor
    let want = beyond(Permissions::SETTINGS_MANAGE, true);
    let err = decide::edit_template(fx.ctx(), &acting(&m), &t, &shrink, false, &users).unwrap_err();
    assert_eq!(err, want);
    assert_eq!(err.rule(), Rule::WithinOwnAccess);
    for mode in [
        TemplateDeletion::Detach,
        TemplateDeletion::Reassign(spare.id),
    ] {
        let to = matches!(mode, TemplateDeletion::Reassign(_)).then_some(&spare);
        assert_eq!(
            decide::delete_template(fx.ctx(), &acting(&m), &t, 3, mode, to, &users).unwrap_err(),
            want
        );
    }
    // each kind of excess alone refuses too, and is named alone
    for (alone, want) in [
        (&strong, beyond(Permissions::SETTINGS_MANAGE, false)),
        (&crm, beyond(Permissions::empty(), true)),
    ] {
        let one = vec![weak.clone(), alone.clone()];
        assert_eq!(
            decide::edit_template(fx.ctx(), &acting(&m), &t, &shrink, false, &one).unwrap_err(),
            want
        );
        assert_eq!(
            decide::delete_template(
                fx.ctx(),
                &acting(&m),
                &t,
                2,
                TemplateDeletion::Detach,
                None,
                &one
            )
            .unwrap_err(),
            want
        );
    }
    // a rename changes no one's access
    let rename = TemplateEdit {
        name: Some(TemplateName::parse("Renamed").unwrap()),
        permissions: None,
    };
    assert!(decide::edit_template(fx.ctx(), &acting(&m), &t, &rename, false, &users).is_ok());
    // with only users within the manager's access the same changes go through
    let within = vec![weak.clone()];
    assert!(decide::edit_template(fx.ctx(), &acting(&m), &t, &shrink, false, &within).is_ok());
    assert!(
        decide::delete_template(
            fx.ctx(),
            &acting(&m),
            &t,
            1,
            TemplateDeletion::Detach,
            None,
            &within
        )
        .is_ok()
    );
    // an admin is not limited
    let a = admin(1);
    assert!(decide::edit_template(fx.ctx(), &acting(&a), &t, &shrink, false, &users).is_ok());
    assert!(
        decide::delete_template(
            fx.ctx(),
            &acting(&a),
            &t,
            3,
            TemplateDeletion::Detach,
            None,
            &users
        )
        .is_ok()
    );
}

#[test]
fn rules_have_names_ids_in_order_and_read_their_old_wire_form() {
    let mut names = std::collections::HashSet::new();
    for (i, rule) in Rule::ALL.iter().enumerate() {
        assert_eq!(rule.id(), format!("D{}", i + 1));
        assert!(names.insert(rule.name()), "{} named twice", rule.name());
        assert_eq!(rule.to_string(), rule.name());
        let json = serde_json::to_string(rule).unwrap();
        assert_eq!(json, format!("\"{}\"", rule.name()));
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), *rule);
        // audit records written when rules were stored by id stay readable
        let old = format!("\"{}\"", rule.id());
        assert_eq!(serde_json::from_str::<Rule>(&old).unwrap(), *rule);
    }
    assert_eq!(Rule::SeatLimit.id(), "D9");
    assert_eq!(Error::LastAdmin.rule(), Rule::LastAdmin);
    assert!(serde_json::from_str::<Rule>("\"D29\"").is_err());
}

#[test]
fn d26_the_core_sees_only_token_hashes_and_no_event_carries_one() {
    // The core is handed a token's hash, never the token: the only place a hash appears is
    // the invitation row it writes; no audit event of invite, resend, accept or a failed
    // accept carries it (so no audit listing can lead back to a link).
    let fx = Fx::roomy();
    let a = admin(1);
    let new = new_invite(7);
    let hex = TokenHash([7; 32]).to_hex();
    let invite = decide::invite(
        fx.ctx(),
        &acting(&a),
        &invite_request("bob@example.com", Role::User, Permissions::empty()),
        None,
        false,
        new,
    )
    .unwrap();
    assert!(
        invite
            .writes
            .iter()
            .any(|w| matches!(w, Write::InsertInvitation(i) if i.token_hash == new.token_hash))
    );
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let resend = decide::resend(
        fx.ctx(),
        &acting(&a),
        &invited,
        None,
        &[],
        TokenHash([7; 32]),
    )
    .unwrap();
    let inv = Invitation {
        token_hash: TokenHash([7; 32]),
        ..invitation(
            &invited,
            InvitationState::Pending,
            now() + Duration::days(1),
        )
    };
    let accept = decide::accept(fx.ctx(), &inv, &invited, &invited.email).unwrap();
    let wrong = decide::accept(fx.ctx(), &inv, &invited, &email("eve@example.com")).unwrap_err();
    let failed = decide::failed_accept(fx.ctx(), &inv, &wrong);
    for change in [&invite, &resend, &accept, &failed] {
        assert!(!change.events.is_empty());
        for event in &change.events {
            let json = serde_json::to_string(event).unwrap();
            assert!(!json.contains(&hex), "{json}");
            assert!(!json.contains(&"7,".repeat(31)), "{json}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// D28 one person, several tenants
// ---------------------------------------------------------------------------------------------

fn ident(s: &str) -> tenantry_core::IdentityId {
    tenantry_core::IdentityId::parse(s).unwrap()
}

fn identity_change(c: &Change) -> Option<(Value, Value)> {
    c.events
        .iter()
        .flat_map(|e| &e.changes)
        .find_map(|f| (f.field == Field::Identity).then(|| (f.before.clone(), f.after.clone())))
}

#[test]
fn d28_only_an_active_admin_sets_an_identity() {
    let fx = Fx::roomy();
    let target = member(5, Permissions::empty());
    // A manager holding users:edit is refused as admin-only; one without it, not allowed.
    let err = decide::set_identity(
        fx.ctx(),
        &acting(&manager(3)),
        &target,
        Some(ident("s")),
        false,
    )
    .unwrap_err();
    assert_eq!(err, Error::AdminOnly);
    assert_eq!(err.rule(), Rule::ManagementAuthority);
    let plain = member(4, Permissions::USERS_VIEW);
    assert!(matches!(
        decide::set_identity(fx.ctx(), &acting(&plain), &target, Some(ident("s")), false),
        Err(Error::NotAllowed { .. })
    ));
    let suspended_admin = user(6, Role::Admin, Status::Suspended, Permissions::empty());
    assert!(matches!(
        decide::set_identity(fx.ctx(), &acting(&suspended_admin), &target, None, false),
        Err(Error::NotAllowed { .. })
    ));
    // An admin may, on a user of any status, and the change is audited with old and new.
    for status in [Status::Invited, Status::Active, Status::Suspended] {
        let t = user(7, Role::User, status, Permissions::empty());
        let c = decide::set_identity(
            fx.ctx(),
            &acting(&admin(1)),
            &t,
            Some(ident("oidc|7")),
            false,
        )
        .unwrap();
        assert_eq!(updated_user(&c).identity, Some(ident("oidc|7")));
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].action, AuditAction::UserEdited);
        assert_eq!(c.events[0].target, AuditTarget::User(t.id));
        assert_eq!(c.events[0].actor, ActorRef::User(uid(1)));
        assert_eq!(
            identity_change(&c),
            Some((Value::None, Value::Text("oidc|7".into())))
        );
        assert_eq!(
            (
                c.counters.seats_used,
                c.counters.active_admins,
                c.counters.version
            ),
            (10, 2, 42),
            "no seat or admin moves; the version does"
        );
    }
}

#[test]
fn d28_an_identity_is_unique_per_tenant_and_the_same_value_is_no_change() {
    let fx = Fx::roomy();
    let mut target = member(5, Permissions::empty());
    let a = admin(1);
    assert_eq!(
        decide::set_identity(fx.ctx(), &acting(&a), &target, Some(ident("x")), true).unwrap_err(),
        Error::IdentityTaken
    );
    assert_eq!(Error::IdentityTaken.rule(), Rule::OnePersonSeveralTenants);
    assert_eq!(Error::IdentityTaken.kind(), ErrorKind::Conflict);
    // Clearing never collides.
    target.identity = Some(ident("x"));
    let c = decide::set_identity(fx.ctx(), &acting(&a), &target, None, true).unwrap();
    assert_eq!(updated_user(&c).identity, None);
    assert_eq!(
        identity_change(&c),
        Some((Value::Text("x".into()), Value::None))
    );
    // The value it already holds: nothing to write or audit, even if "taken" (by itself).
    let same =
        decide::set_identity(fx.ctx(), &acting(&a), &target, Some(ident("x")), true).unwrap();
    assert!(same.writes.is_empty() && same.events.is_empty());
    // A user of another tenant is not found.
    let mut foreign = member(8, Permissions::empty());
    foreign.tenant_id = other_tenant_id();
    assert_eq!(
        decide::set_identity(fx.ctx(), &acting(&a), &foreign, None, false).unwrap_err(),
        Error::UserNotFound
    );
}

#[test]
fn d28_accept_attaches_an_identity_after_the_token_and_address_checks() {
    let fx = Fx::roomy();
    let invited = user(2, Role::User, Status::Invited, Permissions::empty());
    let live = invitation(
        &invited,
        InvitationState::Pending,
        now() + Duration::days(1),
    );
    let c = decide::accept_as(
        fx.ctx(),
        &live,
        &invited,
        &invited.email,
        Some(ident("sub")),
        false,
    )
    .unwrap();
    let accepted = updated_user(&c);
    assert_eq!(
        (accepted.status, accepted.identity.clone()),
        (Status::Active, Some(ident("sub")))
    );
    assert_eq!(c.events[0].action, AuditAction::InvitationAccepted);
    assert_eq!(
        identity_change(&c),
        Some((Value::None, Value::Text("sub".into())))
    );
    // Taken: refused, but only once the token and the address were found good.
    assert_eq!(
        decide::accept_as(
            fx.ctx(),
            &live,
            &invited,
            &invited.email,
            Some(ident("sub")),
            true
        )
        .unwrap_err(),
        Error::IdentityTaken
    );
    let used = invitation(&invited, InvitationState::Used, now() + Duration::days(1));
    assert_eq!(
        decide::accept_as(
            fx.ctx(),
            &used,
            &invited,
            &invited.email,
            Some(ident("sub")),
            true
        )
        .unwrap_err(),
        Error::InvalidInvitation
    );
    assert!(matches!(
        decide::accept_as(
            fx.ctx(),
            &live,
            &invited,
            &email("x@y.test"),
            Some(ident("sub")),
            true
        ),
        Err(Error::InvitationEmailMismatch { .. })
    ));
    // Without an identity, or with the one it holds, nothing about identity is recorded.
    let plain = decide::accept(fx.ctx(), &live, &invited, &invited.email).unwrap();
    assert_eq!(identity_change(&plain), None);
    assert_eq!(updated_user(&plain).identity, None);
    let mut holder = invited.clone();
    holder.identity = Some(ident("sub"));
    let live = invitation(&holder, InvitationState::Pending, now() + Duration::days(1));
    let kept = decide::accept_as(
        fx.ctx(),
        &live,
        &holder,
        &holder.email,
        Some(ident("sub")),
        true,
    )
    .unwrap();
    assert_eq!(identity_change(&kept), None);
    assert_eq!(updated_user(&kept).identity, Some(ident("sub")));
}
