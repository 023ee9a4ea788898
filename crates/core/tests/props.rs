//! Property tests of the core:
//!
//! (a) D7: no privilege escalation through invite, bulk invite, edit (incl. template
//!     assignment), template edit or template delete with reassign/detach;
//! (b) D3: email parsing is idempotent on its key, accepted addresses are plain ASCII, and
//!     Unicode case-mapping traps are refused rather than folded;
//! (c) D4 and the wire: serde round trips of every public serializable type, permissions as
//!     sorted `"category:action"` lists, unknown strings refused;
//! (d) D1/D5/D6: `authorize` agrees with a naive reference model;
//! (e) D21: a non-admin's accepted edit, resend, delete or purge only touches users whose
//!     access (now and once active, CRM included) is within its own, before and after;
//! (f) D22: tenant and template names are accepted exactly when an independent oracle
//!     (trimmed length, no Unicode Cc/Cf) says so, and refusals point at the character.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::HashSet;
use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::{Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use tenantry_core::decide::{
    self, Acting, BulkInvite, BulkItem, BulkOutcome, Ctx, InviteRequest, NewInvite,
    TemplateDeletion, TemplateEdit, UserEdit,
};
use tenantry_core::{
    Action, ActorRef, AuditAction, AuditEvent, AuditRecord, AuditTarget, Category, Change,
    Counters, Decision, Email, EmailError, Field, FieldChange, Invitation, InvitationKind,
    InvitationState, MessageId, Outcome, Permission, Permissions, Policy, Reason, Request, Role,
    RoleTemplate, Rule, SeatUsage, Status, TemplateId, TemplateName, Tenant, TenantId, TenantName,
    TenantState, TokenHash, Tombstone, User, UserId, Value, Write, authorize, effective_crm,
    effective_permissions, potential_permissions,
};

// ---------------------------------------------------------------------------------------------
// Shared fixtures
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
    OffsetDateTime::from_unix_timestamp(1_735_732_800).unwrap()
}

fn arb_perms() -> impl Strategy<Value = Permissions> {
    any::<u32>().prop_map(Permissions::from_bits_truncate)
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Admin), Just(Role::User)]
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Invited),
        Just(Status::Active),
        Just(Status::Suspended)
    ]
}

fn all_permissions() -> Vec<Permission> {
    Permission::all().collect()
}

fn arb_permission() -> impl Strategy<Value = Permission> {
    select(all_permissions())
}

// ---------------------------------------------------------------------------------------------
// (a) D7: no privilege escalation
// ---------------------------------------------------------------------------------------------

/// Templates 1–3 belong to the tenant, 4 to another tenant, 5 does not exist.
fn arb_template_ref() -> impl Strategy<Value = Option<TemplateId>> {
    prop_oneof![
        2 => Just(None),
        6 => (1u8..=3).prop_map(|n| Some(tid(n))),
        1 => Just(Some(tid(4))),
        1 => Just(Some(tid(5))),
    ]
}

#[derive(Debug, Clone)]
struct UserSpec {
    role: Role,
    status: Status,
    crm: bool,
    grants: Permissions,
    template: Option<TemplateId>,
}

fn arb_user_spec() -> impl Strategy<Value = UserSpec> {
    (
        prop_oneof![1 => Just(Role::Admin), 4 => Just(Role::User)],
        arb_status(),
        any::<bool>(),
        arb_perms(),
        arb_template_ref(),
    )
        .prop_map(|(role, status, crm, grants, template)| UserSpec {
            role,
            status,
            crm,
            grants,
            template,
        })
}

/// A non-admin actor, mostly active, often holding some `users:*` permissions.
fn arb_actor_spec() -> impl Strategy<Value = UserSpec> {
    (
        prop_oneof![
            8 => Just(Status::Active),
            1 => Just(Status::Suspended),
            1 => Just(Status::Invited)
        ],
        any::<bool>(),
        arb_perms(),
        prop::bool::weighted(0.85),
        arb_template_ref(),
    )
        .prop_map(|(status, crm, grants, manager, template)| UserSpec {
            role: Role::User,
            status,
            crm,
            grants: if manager {
                grants | Permissions::category(Category::Users)
            } else {
                grants
            },
            template,
        })
}

fn build_user(n: u8, spec: &UserSpec) -> User {
    User {
        id: uid(n),
        tenant_id: tenant_id(),
        email: Email::parse(&format!("u{n}@example.com")).unwrap(),
        role: spec.role,
        status: spec.status,
        template_id: spec.template,
        crm_access: spec.crm || spec.role == Role::Admin,
        grants: spec.grants,
        created_at: now() - Duration::days(3),
        last_login: None,
        invite_expires_at: (spec.status == Status::Invited).then(|| now() + Duration::days(1)),
        identity: None,
    }
}

fn build_template(n: u8, permissions: Permissions) -> RoleTemplate {
    RoleTemplate {
        id: tid(n),
        tenant_id: if n == 4 {
            other_tenant_id()
        } else {
            tenant_id()
        },
        name: TemplateName::parse(&format!("Template {n}")).unwrap(),
        permissions,
        created_at: now() - Duration::days(3),
        updated_at: now() - Duration::days(3),
    }
}

#[derive(Debug, Clone)]
struct World {
    users: Vec<User>,
    templates: Vec<RoleTemplate>,
}

impl World {
    fn template(&self, id: Option<TemplateId>) -> Option<&RoleTemplate> {
        id.and_then(|id| self.templates.iter().find(|t| t.id == id))
    }

    fn user(&self, id: UserId) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn effective(&self, u: &User) -> Permissions {
        effective_permissions(u, self.template(u.template_id))
    }

    fn potential(&self, u: &User) -> Permissions {
        potential_permissions(u, self.template(u.template_id))
    }

    /// Applies a change's writes the way a store would.
    fn apply(&mut self, change: &Change) {
        for w in &change.writes {
            match w {
                Write::InsertUser(u) => self.users.push(u.clone()),
                Write::UpdateUser(u) => {
                    let slot = self.users.iter_mut().find(|x| x.id == u.id).unwrap();
                    *slot = u.clone();
                }
                Write::DeleteUser(t) => self.users.retain(|x| x.id != t.user_id),
                Write::InsertTemplate(t) => self.templates.push(t.clone()),
                Write::UpdateTemplate(t) => {
                    let slot = self.templates.iter_mut().find(|x| x.id == t.id).unwrap();
                    *slot = t.clone();
                }
                Write::DeleteTemplate(id) => self.templates.retain(|t| t.id != *id),
                Write::MoveTemplateUsers { from, to } => {
                    for u in &mut self.users {
                        if u.template_id == Some(*from) {
                            u.template_id = *to;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// What CRM access a user would have if active.
fn potential_crm(u: &User) -> bool {
    u.role == Role::Admin || u.crm_access
}

#[derive(Debug, Clone)]
struct EditSpec {
    email: bool,
    role: Option<Role>,
    status: Option<Status>,
    template: Option<Option<TemplateId>>,
    crm: Option<bool>,
    grants: Option<Permissions>,
}

fn arb_edit_spec() -> impl Strategy<Value = EditSpec> {
    (
        prop::bool::weighted(0.3),
        proptest::option::weighted(0.15, arb_role()),
        proptest::option::weighted(0.4, arb_status()),
        proptest::option::weighted(0.3, arb_template_ref()),
        proptest::option::weighted(0.3, any::<bool>()),
        proptest::option::weighted(0.3, arb_perms()),
    )
        .prop_map(|(email, role, status, template, crm, grants)| EditSpec {
            email,
            role,
            status,
            template,
            crm,
            grants,
        })
}

#[derive(Debug, Clone)]
enum Op {
    Invite {
        role: Role,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    },
    BulkInvite {
        role: Option<Role>,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    },
    /// `target` indexes the world's users (0 is the actor itself).
    Edit { target: usize, edit: EditSpec },
    /// Assign a template and nothing else (the common template-assignment path).
    AssignTemplate {
        target: usize,
        template: Option<TemplateId>,
    },
    EditTemplate {
        template: u8,
        permissions: Option<Permissions>,
        rename: bool,
    },
    DeleteTemplate {
        template: u8,
        /// `None` detaches; `Some(n)` reassigns to template `n`.
        reassign: Option<u8>,
    },
}

fn arb_invite_op() -> BoxedStrategy<Op> {
    (arb_role(), arb_template_ref(), any::<bool>(), arb_perms())
        .prop_map(|(role, template, crm, grants)| Op::Invite {
            role,
            template,
            crm,
            grants,
        })
        .boxed()
}

fn arb_bulk_invite_op() -> BoxedStrategy<Op> {
    (
        proptest::option::of(arb_role()),
        arb_template_ref(),
        any::<bool>(),
        arb_perms(),
    )
        .prop_map(|(role, template, crm, grants)| Op::BulkInvite {
            role,
            template,
            crm,
            grants,
        })
        .boxed()
}

fn arb_edit_op() -> BoxedStrategy<Op> {
    (0usize..6, arb_edit_spec())
        .prop_map(|(target, edit)| Op::Edit { target, edit })
        .boxed()
}

fn arb_assign_template_op() -> BoxedStrategy<Op> {
    (0usize..6, arb_template_ref())
        .prop_map(|(target, template)| Op::AssignTemplate { target, template })
        .boxed()
}

fn arb_edit_template_op() -> BoxedStrategy<Op> {
    (
        1u8..=5,
        proptest::option::weighted(0.9, arb_perms()),
        any::<bool>(),
    )
        .prop_map(|(template, permissions, rename)| Op::EditTemplate {
            template,
            permissions,
            rename,
        })
        .boxed()
}

fn arb_delete_template_op() -> BoxedStrategy<Op> {
    (1u8..=5, proptest::option::weighted(0.8, 1u8..=5))
        .prop_map(|(template, reassign)| Op::DeleteTemplate { template, reassign })
        .boxed()
}

fn arb_op() -> BoxedStrategy<Op> {
    prop_oneof![
        arb_invite_op(),
        arb_bulk_invite_op(),
        arb_edit_op(),
        arb_assign_template_op(),
        arb_edit_template_op(),
        arb_delete_template_op(),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Case {
    actor: UserSpec,
    others: Vec<UserSpec>,
    templates: [Permissions; 4],
    op: Op,
    /// When set, grant-like inputs (the op's grants, other users' grants) are cut down to
    /// what the actor holds, so that many cases get past the escalation check.
    tame: bool,
    /// When set, the world's templates are cut down to what the actor holds. Independent of
    /// `tame`, so that an escalation through a template alone is generated too.
    tame_templates: bool,
}

fn arb_case(op: BoxedStrategy<Op>) -> impl Strategy<Value = Case> {
    (
        arb_actor_spec(),
        vec(arb_user_spec(), 1..6),
        [arb_perms(), arb_perms(), arb_perms(), arb_perms()],
        op,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(actor, others, templates, op, tame, tame_templates)| Case {
                actor,
                others,
                templates,
                op,
                tame,
                tame_templates,
            },
        )
}

/// Runs one case; returns whether the decide function said Ok (and the property held).
fn run_case(case: &Case) -> Result<bool, TestCaseError> {
    let mut templates: Vec<RoleTemplate> = (1u8..=4)
        .map(|n| build_template(n, case.templates[usize::from(n - 1)]))
        .collect();
    let mut users = vec![build_user(1, &case.actor)];
    for (i, spec) in case.others.iter().enumerate() {
        users.push(build_user(u8::try_from(i).unwrap() + 2, spec));
    }
    let actor = users[0].clone();
    let raw_actor_template = templates
        .iter()
        .find(|t| Some(t.id) == actor.template_id)
        .cloned();
    let holds = Acting {
        user: &actor,
        template: raw_actor_template.as_ref(),
    }
    .holds();
    // Cutting templates down to what the actor holds leaves the actor's own unchanged (it is
    // within `holds` already); cutting other users' grants lets reactivations pass too.
    if case.tame_templates {
        for t in &mut templates {
            t.permissions &= holds;
        }
    }
    if case.tame {
        for u in users.iter_mut().skip(1) {
            u.grants &= holds;
        }
    }
    let before = World { users, templates };
    let actor_template = before.template(actor.template_id).cloned();
    let acting = Acting {
        user: &actor,
        template: actor_template.as_ref(),
    };
    prop_assert_eq!(acting.holds(), holds);
    let tame = |p: Permissions| if case.tame { p & holds } else { p };
    let active_admins = u32::try_from(before.users.iter().filter(|u| u.is_active_admin()).count())
        .unwrap()
        .max(1);
    let state = TenantState {
        tenant: Tenant {
            id: tenant_id(),
            name: "Acme".into(),
            user_limit: None,
            created_at: now() - Duration::days(30),
        },
        counters: Counters {
            version: 7,
            seats_used: u32::try_from(before.users.len()).unwrap(),
            active_admins,
        },
    };
    let policy = Policy::default();
    let ctx = Ctx {
        state: &state,
        now: now(),
        policy: &policy,
    };

    let result: Result<Change, tenantry_core::Error> = match &case.op {
        Op::Invite {
            role,
            template,
            crm,
            grants,
        } => {
            let request = InviteRequest {
                email: Email::parse("new@example.com").unwrap(),
                role: *role,
                template_id: *template,
                crm_access: *crm,
                grants: tame(*grants),
            };
            decide::invite(
                ctx,
                &acting,
                &request,
                before.template(*template),
                false,
                NewInvite {
                    user_id: uid(200),
                    token_hash: TokenHash([200; 32]),
                },
            )
        }
        Op::BulkInvite {
            role,
            template,
            crm,
            grants,
        } => {
            let request = BulkInvite {
                emails: vec![
                    "b1@example.com".into(),
                    "b2@example.com".into(),
                    "u1@example.com".into(),
                ],
                role: *role,
                template_id: *template,
                crm_access: *crm,
                grants: tame(*grants),
            };
            let mut next = 200u8;
            decide::invite_many(
                ctx,
                &acting,
                &request,
                before.template(*template),
                &|key| key == "u1@example.com",
                &mut || {
                    next += 1;
                    NewInvite {
                        user_id: uid(next),
                        token_hash: TokenHash([next; 32]),
                    }
                },
            )
            .map(|(c, _)| c)
        }
        Op::Edit { target, edit } => {
            let Some(target) = before.users.get(*target) else {
                return Ok(false);
            };
            let user_edit = UserEdit {
                email: edit
                    .email
                    .then(|| Email::parse("renamed@example.com").unwrap()),
                role: edit.role,
                status: edit.status,
                template_id: edit.template,
                crm_access: edit.crm,
                grants: edit.grants.map(tame),
            };
            let new_ref = user_edit.template_id.unwrap_or(target.template_id);
            decide::edit(
                ctx,
                &acting,
                target,
                before.template(target.template_id),
                before.template(new_ref),
                &user_edit,
                false,
            )
        }
        Op::AssignTemplate { target, template } => {
            let Some(target) = before.users.get(*target) else {
                return Ok(false);
            };
            let user_edit = UserEdit {
                template_id: Some(*template),
                ..UserEdit::default()
            };
            decide::edit(
                ctx,
                &acting,
                target,
                before.template(target.template_id),
                before.template(*template),
                &user_edit,
                false,
            )
        }
        Op::EditTemplate {
            template,
            permissions,
            rename,
        } => {
            let Some(t) = before.template(Some(tid(*template))) else {
                return Ok(false);
            };
            let edit = TemplateEdit {
                name: rename.then(|| TemplateName::parse("Renamed").unwrap()),
                permissions: permissions.map(|p| {
                    if case.tame {
                        // keep what is there, add only what the actor holds
                        t.permissions | (p & holds)
                    } else {
                        p
                    }
                }),
            };
            decide::edit_template(ctx, &acting, t, &edit, false, &[])
        }
        Op::DeleteTemplate { template, reassign } => {
            let Some(t) = before.template(Some(tid(*template))) else {
                return Ok(false);
            };
            let referencing = u64::try_from(
                before
                    .users
                    .iter()
                    .filter(|u| u.template_id == Some(t.id))
                    .count(),
            )
            .unwrap();
            let (mode, to) = match reassign {
                None => (TemplateDeletion::Detach, None),
                Some(n) => (
                    TemplateDeletion::Reassign(tid(*n)),
                    before.template(Some(tid(*n))),
                ),
            };
            decide::delete_template(ctx, &acting, t, referencing, mode, to, &[])
        }
    };

    let Ok(change) = result else {
        return Ok(false);
    };
    let mut after = before.clone();
    after.apply(&change);

    let actor_crm = effective_crm(&actor);
    for u in &after.users {
        let (eff_before, pot_before, crm_eff_before, crm_pot_before) = match before.user(u.id) {
            Some(p) => (
                before.effective(p),
                before.potential(p),
                effective_crm(p),
                potential_crm(p),
            ),
            None => (Permissions::empty(), Permissions::empty(), false, false),
        };
        let gained = (after.effective(u) - eff_before) | (after.potential(u) - pot_before);
        prop_assert!(
            holds.contains(gained),
            "{:?} gained {} which actor {:?} (holding {}) lacks; op {:?}",
            u.id,
            gained - holds,
            actor.id,
            holds,
            case.op
        );
        let crm_gained =
            (effective_crm(u) && !crm_eff_before) || (potential_crm(u) && !crm_pot_before);
        prop_assert!(
            !crm_gained || actor_crm,
            "{:?} gained CRM access from an actor without it; op {:?}",
            u.id,
            case.op
        );
        // D7: a non-admin never creates or makes an admin
        if u.role == Role::Admin {
            prop_assert!(before.user(u.id).is_some_and(|p| p.role == Role::Admin));
        }
    }
    // the actor's own access never changes (D7 self-change)
    if let Some(me) = after.user(actor.id) {
        prop_assert_eq!(after.effective(me), holds);
        prop_assert_eq!(effective_crm(me), actor_crm);
    }
    Ok(true)
}

// D7: whatever a non-admin manager attempts, a successful change never gives anyone a
// permission or CRM access the manager does not hold itself. One property per path, each
// with the default number of cases.
proptest! {
    #[test]
    fn d7_no_escalation_by_invite(case in arb_case(arb_invite_op())) {
        run_case(&case)?;
    }

    #[test]
    fn d7_no_escalation_by_bulk_invite(case in arb_case(arb_bulk_invite_op())) {
        run_case(&case)?;
    }

    #[test]
    fn d7_no_escalation_by_edit(case in arb_case(arb_edit_op())) {
        run_case(&case)?;
    }

    #[test]
    fn d7_no_escalation_by_template_assignment(case in arb_case(arb_assign_template_op())) {
        run_case(&case)?;
    }

    /// Every user that references the edited template is checked.
    #[test]
    fn d7_no_escalation_by_template_edit(case in arb_case(arb_edit_template_op())) {
        run_case(&case)?;
    }

    /// Every user moved off the deleted template (detached or reassigned) is checked.
    #[test]
    fn d7_no_escalation_by_template_delete(case in arb_case(arb_delete_template_op())) {
        run_case(&case)?;
    }
}

/// Guards the property above against vacuity: a fair share of generated attempts succeed.
#[test]
fn d7_escalation_property_is_not_vacuous() {
    let mut runner = TestRunner::deterministic();
    let strategy = arb_case(arb_op());
    let mut ok = 0usize;
    let mut per_kind = [0usize; 6];
    for _ in 0..2000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        if run_case(&case).unwrap() {
            ok += 1;
            let k = match case.op {
                Op::Invite { .. } => 0,
                Op::BulkInvite { .. } => 1,
                Op::Edit { .. } => 2,
                Op::AssignTemplate { .. } => 3,
                Op::EditTemplate { .. } => 4,
                Op::DeleteTemplate { .. } => 5,
            };
            per_kind[k] += 1;
        }
    }
    assert!(ok >= 200, "only {ok} of 2000 attempts succeeded");
    assert!(
        per_kind.iter().all(|&n| n >= 10),
        "too few successes per kind: {per_kind:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) D3: email
// ---------------------------------------------------------------------------------------------

const ATEXT: &str = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";

fn valid_address_regex() -> String {
    format!(
        r"{ATEXT}{{1,12}}(\.{ATEXT}{{1,8}}){{0,2}}@([A-Za-z0-9]([A-Za-z0-9-]{{0,8}}[A-Za-z0-9])?\.){{0,3}}(xn--[a-z0-9]{{2,8}}|[A-Za-z]{{2,8}})"
    )
}

fn arb_valid_address() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&valid_address_regex()).unwrap()
}

fn arb_email() -> impl Strategy<Value = Email> {
    arb_valid_address().prop_filter_map("valid address", |s| Email::parse(&s).ok())
}

/// Characters that case-map or fold into ASCII letters, or look like `@` and `.`.
const TRAPS: &[char] = &[
    '\u{212A}',  // KELVIN SIGN -> k
    '\u{212B}',  // ANGSTROM SIGN -> å
    '\u{0131}',  // LATIN SMALL LETTER DOTLESS I -> I
    '\u{0130}',  // LATIN CAPITAL LETTER I WITH DOT ABOVE -> i̇
    '\u{017F}',  // LATIN SMALL LETTER LONG S -> S
    '\u{FB01}',  // fi ligature
    '\u{FB00}',  // ff ligature
    '\u{FB06}',  // st ligature
    '\u{00DF}',  // sharp s -> ss
    '\u{1E9E}',  // capital sharp s
    '\u{FF21}',  // FULLWIDTH A
    '\u{FF41}',  // FULLWIDTH a
    '\u{FF3A}',  // FULLWIDTH Z
    '\u{FF10}',  // FULLWIDTH 0
    '\u{FF20}',  // FULLWIDTH @
    '\u{FF0E}',  // FULLWIDTH .
    '\u{2024}',  // ONE DOT LEADER
    '\u{0301}',  // COMBINING ACUTE ACCENT
    '\u{200B}',  // ZERO WIDTH SPACE
    '\u{200D}',  // ZERO WIDTH JOINER
    '\u{FEFF}',  // ZERO WIDTH NO-BREAK SPACE (BOM)
    '\u{0399}',  // GREEK CAPITAL IOTA
    '\u{03C2}',  // GREEK SMALL FINAL SIGMA
    '\u{0430}',  // CYRILLIC a (homoglyph)
    '\u{1D41A}', // MATHEMATICAL BOLD SMALL A
    '\u{24B6}',  // CIRCLED LATIN CAPITAL A -> ⓐ
];

proptest! {
    /// D3: every address built from the accepted syntax is accepted, stored trimmed and
    /// keyed by its ASCII lowercase form.
    #[test]
    fn d3_valid_addresses_are_accepted(addr in arb_valid_address(), pad_l in "[ \t]{0,3}", pad_r in "[ \t\r\n]{0,3}") {
        let e = Email::parse(&format!("{pad_l}{addr}{pad_r}"));
        prop_assert!(e.is_ok(), "{addr:?}: {e:?}");
        let e = e.unwrap();
        prop_assert_eq!(e.as_str(), addr.as_str());
        prop_assert_eq!(e.key(), addr.to_ascii_lowercase());
        let upper = Email::parse(&addr.to_ascii_uppercase()).unwrap();
        prop_assert!(upper.same_as(&e));
    }

    /// D3: parsing is idempotent on the canonical key, and accepted addresses are ASCII, at
    /// most 254 bytes and free of CR, LF and NUL. Checked on arbitrary strings and on valid
    /// addresses with random edits.
    #[test]
    fn d3_accepted_addresses_are_canonical_and_plain(
        input in prop_oneof![
            any::<String>(),
            "\\PC{0,80}",
            arb_valid_address(),
            (arb_valid_address(), any::<char>(), any::<prop::sample::Index>()).prop_map(|(a, c, i)| {
                let mut chars: Vec<char> = a.chars().collect();
                let at = i.index(chars.len() + 1);
                chars.insert(at, c);
                chars.into_iter().collect()
            }),
            (arb_valid_address(), select(vec!['\r', '\n', '\0', ' ', '\t', '"', '\\', '@', '.']), any::<prop::sample::Index>()).prop_map(|(a, c, i)| {
                let mut chars: Vec<char> = a.chars().collect();
                let at = i.index(chars.len() + 1);
                chars.insert(at, c);
                chars.into_iter().collect()
            }),
        ]
    ) {
        if let Ok(e) = Email::parse(&input) {
            prop_assert!(e.as_str().is_ascii());
            prop_assert!(e.key().is_ascii());
            prop_assert!(e.as_str().len() <= 254);
            for bad in ['\r', '\n', '\0'] {
                prop_assert!(!e.as_str().contains(bad));
            }
            prop_assert_eq!(e.as_str().matches('@').count(), 1);
            prop_assert_eq!(e.as_str(), input.trim());
            let again = Email::parse(e.key());
            prop_assert!(again.is_ok());
            let again = again.unwrap();
            prop_assert_eq!(again.key(), e.key());
            prop_assert_eq!(again.as_str(), e.key());
            let redisplay = Email::parse(e.as_str()).unwrap();
            prop_assert_eq!(&redisplay, &e);
        }
    }

    /// D3: case-mapping traps (Kelvin sign, dotless i, long s, ligatures, fullwidth forms, …)
    /// anywhere in an otherwise valid address are refused as non-ASCII, never folded.
    #[test]
    fn d3_case_mapping_traps_are_refused(
        addr in arb_valid_address(),
        traps in vec((select(TRAPS.to_vec()), any::<prop::sample::Index>()), 1..3),
        replace in any::<bool>(),
    ) {
        let mut chars: Vec<char> = addr.chars().collect();
        for (trap, at) in &traps {
            if replace {
                let i = at.index(chars.len());
                chars[i] = *trap;
            } else {
                let i = at.index(chars.len() + 1);
                chars.insert(i, *trap);
            }
        }
        let input: String = chars.iter().collect();
        let first = chars.iter().position(|c| !c.is_ascii()).unwrap();
        let result = Email::parse(&input);
        prop_assert_eq!(
            result,
            Err(EmailError::NonAscii { ch: chars[first], position: first }),
            "{:?}", input
        );
        // the ASCII-lowercased or Unicode-lowercased form of the trap string is not accepted
        // either (a folded form must never be produced by the core itself)
        prop_assert!(Email::parse(&input.to_lowercase()).is_err() || input.to_lowercase().is_ascii());
    }
}

// ---------------------------------------------------------------------------------------------
// (c) serde round trips and the D4 wire format
// ---------------------------------------------------------------------------------------------

fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(value)
        .map_err(|e| TestCaseError::fail(format!("serialize {value:?}: {e}")))?;
    let back: T = serde_json::from_str(&json)
        .map_err(|e| TestCaseError::fail(format!("deserialize {json}: {e}")))?;
    prop_assert_eq!(&back, value, "through {}", json);
    // and through serde_json::Value
    let v = serde_json::to_value(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = serde_json::from_value(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn arb_tenant_id() -> impl Strategy<Value = TenantId> {
    prop_oneof![
        arb_uuid().prop_map(TenantId::from_uuid),
        (0u64..(1 << 48), any::<[u8; 10]>()).prop_map(|(ms, r)| TenantId::from_parts(ms, r)),
    ]
}

fn arb_user_id() -> impl Strategy<Value = UserId> {
    prop_oneof![
        arb_uuid().prop_map(UserId::from_uuid),
        (0u64..(1 << 48), any::<[u8; 10]>()).prop_map(|(ms, r)| UserId::from_parts(ms, r)),
    ]
}

fn arb_template_id() -> impl Strategy<Value = TemplateId> {
    arb_uuid().prop_map(TemplateId::from_uuid)
}

fn arb_message_id() -> impl Strategy<Value = MessageId> {
    arb_uuid().prop_map(MessageId::from_uuid)
}

fn arb_time() -> impl Strategy<Value = OffsetDateTime> {
    (
        -62_135_596_800i64..253_402_300_799, // 0001-01-01 ..= 9999-12-31
        0i64..1_000_000_000,
        -12i8..=14,
        prop_oneof![Just(0i8), Just(30), Just(45)],
    )
        .prop_map(|(secs, nanos, h, m)| {
            let t =
                OffsetDateTime::from_unix_timestamp(secs).unwrap() + Duration::nanoseconds(nanos);
            let m = if h < 0 { -m } else { m };
            let offset = UtcOffset::from_hms(h, m, 0).unwrap();
            let local = t.to_offset(offset);
            // stay within the four-digit years RFC 3339 can write
            if (1..=9999).contains(&local.year()) {
                local
            } else {
                t
            }
        })
}

fn arb_opt_time() -> impl Strategy<Value = Option<OffsetDateTime>> {
    proptest::option::of(arb_time())
}

fn arb_template_name() -> impl Strategy<Value = TemplateName> {
    prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9 _.-]{0,40}",
        "\\PC{1,64}",
        " {0,2}[A-Za-z]{1,10} {0,2}",
    ]
    .prop_filter_map("valid template name", |s| TemplateName::parse(&s).ok())
}

fn arb_email_error() -> impl Strategy<Value = EmailError> {
    prop_oneof![
        any::<String>(),
        select(vec![
            String::new(),
            "no-at.example.com".into(),
            "a@b@c.com".into(),
            "@example.com".into(),
            "a".repeat(65) + "@example.com",
            "a b@example.com".into(),
            "a..b@example.com".into(),
            "ab@".into(),
            "ab@example..com".into(),
            format!("ab@{}.com", "x".repeat(64)),
            "ab@ex_ample.com".into(),
            "ab@-example.com".into(),
            "\u{212A}@example.com".into(),
            format!("a@{}", "b".repeat(300)),
        ]),
        (arb_valid_address(), any::<char>()).prop_map(|(a, c)| format!("{c}{a}{c}")),
    ]
    .prop_filter_map("invalid address", |s| Email::parse(&s).err())
}

fn arb_user() -> impl Strategy<Value = User> {
    (
        arb_user_id(),
        arb_tenant_id(),
        arb_email(),
        arb_role(),
        arb_status(),
        proptest::option::of(arb_template_id()),
        any::<bool>(),
        arb_perms(),
        arb_time(),
        arb_opt_time(),
        arb_opt_time(),
    )
        .prop_map(
            |(
                id,
                tenant_id,
                email,
                role,
                status,
                template_id,
                crm_access,
                grants,
                created_at,
                last_login,
                invite_expires_at,
            )| User {
                id,
                tenant_id,
                email,
                role,
                status,
                template_id,
                crm_access,
                grants,
                created_at,
                last_login,
                invite_expires_at,
                identity: None,
            },
        )
}

fn arb_role_template() -> impl Strategy<Value = RoleTemplate> {
    (
        arb_template_id(),
        arb_tenant_id(),
        arb_template_name(),
        arb_perms(),
        arb_time(),
        arb_time(),
    )
        .prop_map(
            |(id, tenant_id, name, permissions, created_at, updated_at)| RoleTemplate {
                id,
                tenant_id,
                name,
                permissions,
                created_at,
                updated_at,
            },
        )
}

fn arb_tenant() -> impl Strategy<Value = Tenant> {
    (
        arb_tenant_id(),
        any::<String>(),
        proptest::option::of(any::<u32>()),
        arb_time(),
    )
        .prop_map(|(id, name, user_limit, created_at)| Tenant {
            id,
            name,
            user_limit,
            created_at,
        })
}

fn arb_counters() -> impl Strategy<Value = Counters> {
    (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(version, seats_used, active_admins)| {
        Counters {
            version,
            seats_used,
            active_admins,
        }
    })
}

fn arb_tenant_state() -> impl Strategy<Value = TenantState> {
    (arb_tenant(), arb_counters()).prop_map(|(tenant, counters)| TenantState { tenant, counters })
}

fn arb_seat_usage() -> impl Strategy<Value = SeatUsage> {
    (any::<u32>(), proptest::option::of(any::<u32>()))
        .prop_map(|(used, limit)| SeatUsage::new(used, limit))
}

fn arb_token_hash() -> impl Strategy<Value = TokenHash> {
    any::<[u8; 32]>().prop_map(TokenHash)
}

fn arb_invitation() -> impl Strategy<Value = Invitation> {
    (
        arb_token_hash(),
        arb_tenant_id(),
        arb_user_id(),
        prop_oneof![Just(InvitationKind::Initial), Just(InvitationKind::Resend)],
        prop_oneof![
            Just(InvitationState::Pending),
            Just(InvitationState::Used),
            Just(InvitationState::Revoked)
        ],
        arb_time(),
        arb_time(),
        any::<u32>(),
    )
        .prop_map(
            |(
                token_hash,
                tenant_id,
                user_id,
                kind,
                state,
                created_at,
                expires_at,
                failed_attempts,
            )| Invitation {
                token_hash,
                tenant_id,
                user_id,
                kind,
                state,
                created_at,
                expires_at,
                failed_attempts,
            },
        )
}

fn arb_actor_ref() -> impl Strategy<Value = ActorRef> {
    prop_oneof![
        Just(ActorRef::System),
        arb_user_id().prop_map(ActorRef::User)
    ]
}

fn arb_tombstone() -> impl Strategy<Value = Tombstone> {
    (
        arb_user_id(),
        arb_tenant_id(),
        arb_email(),
        arb_time(),
        arb_actor_ref(),
    )
        .prop_map(
            |(user_id, tenant_id, email, deleted_at, deleted_by)| Tombstone {
                user_id,
                tenant_id,
                email,
                deleted_at,
                deleted_by,
            },
        )
}

fn all_rules() -> Vec<Rule> {
    Rule::ALL.to_vec()
}

fn arb_audit_action() -> impl Strategy<Value = AuditAction> {
    select(vec![
        AuditAction::TenantCreated,
        AuditAction::UserLimitChanged,
        AuditAction::TenantRenamed,
        AuditAction::UserInvited,
        AuditAction::InvitationResent,
        AuditAction::InvitationAccepted,
        AuditAction::AcceptAttemptFailed,
        AuditAction::SignedIn,
        AuditAction::UserEdited,
        AuditAction::UserDeleted,
        AuditAction::TemplateCreated,
        AuditAction::TemplateEdited,
        AuditAction::TemplateDeleted,
        AuditAction::WebhookEndpointAdded,
        AuditAction::WebhookEndpointChanged,
        AuditAction::WebhookEndpointRemoved,
    ])
}

fn arb_audit_target() -> impl Strategy<Value = AuditTarget> {
    prop_oneof![
        Just(AuditTarget::Tenant),
        arb_user_id().prop_map(AuditTarget::User),
        arb_template_id().prop_map(AuditTarget::Template),
    ]
}

fn arb_field() -> impl Strategy<Value = Field> {
    select(vec![
        Field::Email,
        Field::Role,
        Field::Status,
        Field::Template,
        Field::CrmAccess,
        Field::Grants,
        Field::LastLogin,
        Field::UserLimit,
        Field::Name,
        Field::Permissions,
        Field::AffectedUsers,
        Field::ChangedUsers,
        Field::FailedAttempts,
        Field::InvitationState,
        Field::UnrecordedRefusals,
        Field::WebhookEndpoint,
        Field::WebhookUrl,
        Field::WebhookEvents,
        Field::WebhookSecret,
        Field::WebhookEnabled,
    ])
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<String>().prop_map(Value::Text),
        arb_role().prop_map(Value::Role),
        arb_status().prop_map(Value::Status),
        arb_template_id().prop_map(Value::Template),
        any::<bool>().prop_map(Value::Bool),
        arb_perms().prop_map(Value::Permissions),
        any::<u64>().prop_map(Value::Number),
        arb_time().prop_map(Value::Time),
        vec(arb_user_id(), 0..4).prop_map(Value::Users),
    ]
}

fn arb_field_change() -> impl Strategy<Value = FieldChange> {
    (arb_field(), arb_value(), arb_value()).prop_map(|(field, before, after)| FieldChange {
        field,
        before,
        after,
    })
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Success),
        (select(all_rules()), any::<String>())
            .prop_map(|(rule, message)| Outcome::Refused { rule, message }),
    ]
}

fn arb_audit_event() -> impl Strategy<Value = AuditEvent> {
    (
        arb_tenant_id(),
        arb_actor_ref(),
        arb_audit_action(),
        arb_audit_target(),
        arb_time(),
        arb_outcome(),
        vec(arb_field_change(), 0..4),
    )
        .prop_map(
            |(tenant_id, actor, action, target, at, outcome, changes)| AuditEvent {
                tenant_id,
                actor,
                action,
                target,
                at,
                outcome,
                changes,
            },
        )
}

fn arb_write() -> impl Strategy<Value = Write> {
    prop_oneof![
        arb_tenant().prop_map(Write::InsertTenant),
        arb_tenant().prop_map(Write::UpdateTenant),
        arb_user().prop_map(Write::InsertUser),
        arb_user().prop_map(Write::UpdateUser),
        arb_tombstone().prop_map(Write::DeleteUser),
        arb_role_template().prop_map(Write::InsertTemplate),
        arb_role_template().prop_map(Write::UpdateTemplate),
        arb_template_id().prop_map(Write::DeleteTemplate),
        (arb_template_id(), proptest::option::of(arb_template_id()))
            .prop_map(|(from, to)| Write::MoveTemplateUsers { from, to }),
        arb_invitation().prop_map(Write::InsertInvitation),
        arb_user_id().prop_map(Write::RevokeInvitations),
        arb_token_hash().prop_map(Write::UseInvitation),
        (arb_token_hash(), any::<u32>(), any::<bool>()).prop_map(
            |(token_hash, failed_attempts, revoke)| Write::FailAcceptAttempt {
                token_hash,
                failed_attempts,
                revoke
            }
        ),
    ]
}

fn arb_change() -> impl Strategy<Value = Change> {
    (
        arb_tenant_id(),
        any::<u64>(),
        arb_counters(),
        vec(arb_write(), 0..4),
        vec(arb_audit_event(), 0..3),
    )
        .prop_map(
            |(tenant_id, expected_version, counters, writes, events)| Change {
                tenant_id,
                expected_version,
                counters,
                writes,
                events,
            },
        )
}

fn arb_reason() -> impl Strategy<Value = Reason> {
    prop_oneof![
        Just(Reason::Admin),
        Just(Reason::DirectGrant),
        arb_template_id().prop_map(|template_id| Reason::Template { template_id }),
        Just(Reason::CrmAccess),
        Just(Reason::Invited),
        Just(Reason::Suspended),
        Just(Reason::UnknownUser),
        arb_permission().prop_map(|permission| Reason::MissingPermission { permission }),
        Just(Reason::NoCrmAccess),
    ]
}

fn arb_decision() -> impl Strategy<Value = Decision> {
    arb_reason().prop_map(Decision::new)
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Crm),
        arb_permission().prop_map(Request::Permission)
    ]
}

fn arb_user_edit() -> impl Strategy<Value = UserEdit> {
    (
        proptest::option::of(arb_email()),
        proptest::option::of(arb_role()),
        proptest::option::of(arb_status()),
        proptest::option::of(proptest::option::of(arb_template_id())),
        proptest::option::of(any::<bool>()),
        proptest::option::of(arb_perms()),
    )
        .prop_map(
            |(email, role, status, template_id, crm_access, grants)| UserEdit {
                email,
                role,
                status,
                template_id,
                crm_access,
                grants,
            },
        )
}

fn arb_template_edit() -> impl Strategy<Value = TemplateEdit> {
    (
        proptest::option::of(arb_template_name()),
        proptest::option::of(arb_perms()),
    )
        .prop_map(|(name, permissions)| TemplateEdit { name, permissions })
}

fn arb_template_deletion() -> impl Strategy<Value = TemplateDeletion> {
    prop_oneof![
        Just(TemplateDeletion::Refuse),
        Just(TemplateDeletion::Detach),
        arb_template_id().prop_map(TemplateDeletion::Reassign),
    ]
}

fn arb_bulk_invite() -> impl Strategy<Value = BulkInvite> {
    (
        vec(any::<String>(), 0..5),
        proptest::option::of(arb_role()),
        proptest::option::of(arb_template_id()),
        any::<bool>(),
        arb_perms(),
    )
        .prop_map(
            |(emails, role, template_id, crm_access, grants)| BulkInvite {
                emails,
                role,
                template_id,
                crm_access,
                grants,
            },
        )
}

fn arb_bulk_outcome() -> impl Strategy<Value = BulkOutcome> {
    prop_oneof![
        arb_user_id().prop_map(|user_id| BulkOutcome::Invited { user_id }),
        Just(BulkOutcome::Duplicate),
        arb_email_error().prop_map(|reason| BulkOutcome::Invalid { reason }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(used, limit)| BulkOutcome::LimitReached { used, limit }),
    ]
}

fn arb_invite_request() -> impl Strategy<Value = InviteRequest> {
    (
        arb_email(),
        arb_role(),
        proptest::option::of(arb_template_id()),
        any::<bool>(),
        arb_perms(),
    )
        .prop_map(
            |(email, role, template_id, crm_access, grants)| InviteRequest {
                email,
                role,
                template_id,
                crm_access,
                grants,
            },
        )
}

fn arb_duration() -> impl Strategy<Value = Duration> {
    (-10_000_000_000i64..10_000_000_000, 0i64..1_000_000_000)
        .prop_map(|(s, n)| Duration::seconds(s) + Duration::nanoseconds(n))
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (arb_duration(), any::<u32>(), arb_duration()).prop_map(
        |(invite_ttl, resend_limit, resend_window)| Policy {
            invite_ttl,
            resend_limit,
            resend_window,
        },
    )
}

proptest! {
    #[test]
    fn serde_ids(t in arb_tenant_id(), u in arb_user_id(), p in arb_template_id(), m in arb_message_id()) {
        round_trip(&t)?;
        round_trip(&u)?;
        round_trip(&p)?;
        round_trip(&m)?;
        // on the wire an id is its UUID string, and Display/FromStr agree
        prop_assert_eq!(serde_json::to_value(u).unwrap(), serde_json::Value::String(u.to_string()));
        prop_assert_eq!(u.to_string().parse::<UserId>().unwrap(), u);
        prop_assert_eq!(t.to_string().parse::<TenantId>().unwrap(), t);
        prop_assert_eq!(p.to_string().parse::<TemplateId>().unwrap(), p);
        prop_assert_eq!(m.to_string().parse::<MessageId>().unwrap(), m);
    }

    #[test]
    fn serde_email(e in arb_email()) {
        round_trip(&e)?;
        prop_assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::Value::String(e.as_str().to_owned()));
    }

    #[test]
    fn serde_template_name(n in arb_template_name()) {
        round_trip(&n)?;
    }

    /// D4: a set is a sorted list of valid "category:action" strings, never raw bits.
    #[test]
    fn d4_permissions_wire_format(p in arb_perms()) {
        round_trip(&p)?;
        let v = serde_json::to_value(p).unwrap();
        let items = v.as_array().unwrap();
        prop_assert_eq!(items.len(), usize::try_from(p.bits().count_ones()).unwrap());
        let strings: Vec<&str> = items.iter().map(|i| i.as_str().unwrap()).collect();
        let mut sorted = strings.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(&strings, &sorted);
        for s in &strings {
            let perm: Permission = s.parse().unwrap();
            prop_assert!(p.has(perm));
            let (c, a) = s.split_once(':').unwrap();
            prop_assert_eq!(c, perm.category.as_str());
            prop_assert_eq!(a, perm.action.as_str());
        }
        prop_assert_eq!(p.to_string().parse::<Permissions>().unwrap(), p);
    }

    /// D4: order and repeats on input do not matter.
    #[test]
    fn d4_permissions_parse_any_order(mut list in vec(arb_permission(), 0..40)) {
        let expected: Permissions = list.iter().copied().collect();
        list.reverse();
        let json = serde_json::to_string(&list).unwrap();
        let back: Permissions = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, expected);
    }

    /// D4: an unknown permission string is an error, never silently dropped.
    #[test]
    fn d4_unknown_permission_strings_are_errors(
        good in vec(arb_permission(), 0..5),
        bad in prop_oneof![
            any::<String>(),
            "[a-z]{1,12}:[a-z]{1,8}",
            (arb_permission(), select(vec!["", " ", "s", "X"])).prop_map(|(p, s)| format!("{p}{s}")),
            arb_permission().prop_map(|p| p.to_string().to_uppercase()),
        ].prop_filter("unknown", |s| s.parse::<Permission>().is_err()),
        at in any::<prop::sample::Index>(),
    ) {
        let mut list: Vec<String> = good.iter().map(ToString::to_string).collect();
        list.insert(at.index(list.len() + 1), bad.clone());
        let json = serde_json::to_string(&list).unwrap();
        prop_assert!(serde_json::from_str::<Permissions>(&json).is_err(), "{}", json);
        prop_assert!(Permissions::parse_list(&list).is_err());
        let one = serde_json::to_string(&bad).unwrap();
        prop_assert!(serde_json::from_str::<Permission>(&one).is_err());
    }

    #[test]
    fn serde_permission(p in arb_permission()) {
        round_trip(&p)?;
        prop_assert_eq!(serde_json::to_value(p).unwrap(), serde_json::Value::String(p.to_string()));
        prop_assert_eq!(p.to_string().parse::<Permission>().unwrap(), p);
        prop_assert_eq!(Permissions::from(p).iter_permissions().collect::<Vec<_>>(), vec![p]);
    }

    #[test]
    fn serde_role_status(r in arb_role(), s in arb_status()) {
        round_trip(&r)?;
        round_trip(&s)?;
        prop_assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        prop_assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        prop_assert_eq!(serde_json::to_value(r).unwrap(), serde_json::Value::String(r.as_str().into()));
        prop_assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
    }

    #[test]
    fn serde_user(u in arb_user()) {
        round_trip(&u)?;
    }

    #[test]
    fn serde_role_template(t in arb_role_template()) {
        round_trip(&t)?;
    }

    #[test]
    fn serde_tenant_and_state(t in arb_tenant(), s in arb_tenant_state(), c in arb_counters()) {
        round_trip(&t)?;
        round_trip(&s)?;
        round_trip(&c)?;
    }

    #[test]
    fn serde_seat_usage(s in arb_seat_usage()) {
        round_trip(&s)?;
    }

    #[test]
    fn serde_invitation(i in arb_invitation()) {
        round_trip(&i)?;
        round_trip(&i.token_hash)?;
    }

    #[test]
    fn serde_tombstone(t in arb_tombstone(), a in arb_actor_ref()) {
        round_trip(&t)?;
        round_trip(&a)?;
    }

    #[test]
    fn serde_audit(e in arb_audit_event(), seq in any::<u64>()) {
        round_trip(&e)?;
        round_trip(&AuditRecord { seq, event: e.clone() })?;
        round_trip(&e.outcome)?;
        round_trip(&e.action)?;
        round_trip(&e.target)?;
        for c in &e.changes {
            round_trip(c)?;
            round_trip(&c.field)?;
            round_trip(&c.before)?;
        }
    }

    #[test]
    fn serde_rule(r in select(all_rules())) {
        round_trip(&r)?;
    }

    #[test]
    fn serde_change(c in arb_change()) {
        round_trip(&c)?;
        for w in &c.writes {
            round_trip(w)?;
        }
    }

    #[test]
    fn serde_decision_request(d in arb_decision(), r in arb_request()) {
        round_trip(&d)?;
        round_trip(&d.reason())?;
        round_trip(&r)?;
    }

    #[test]
    fn serde_user_edit(e in arb_user_edit()) {
        round_trip(&e)?;
    }

    #[test]
    fn serde_template_edit_and_deletion(e in arb_template_edit(), d in arb_template_deletion()) {
        round_trip(&e)?;
        round_trip(&d)?;
    }

    #[test]
    fn serde_bulk(b in arb_bulk_invite(), o in arb_bulk_outcome(), input in any::<String>()) {
        round_trip(&b)?;
        round_trip(&o)?;
        round_trip(&BulkItem { input, outcome: o.clone() })?;
        if let BulkOutcome::Invalid { reason } = &o {
            round_trip(reason)?;
        }
    }

    #[test]
    fn serde_email_error(e in arb_email_error()) {
        round_trip(&e)?;
    }

    #[test]
    fn serde_invite_request_and_policy(r in arb_invite_request(), p in arb_policy()) {
        round_trip(&r)?;
        round_trip(&p)?;
    }
}

#[test]
fn serde_user_edit_distinguishes_clear_from_leave() {
    // `template_id: Some(None)` (clear the template) must survive the wire, and must not be
    // confused with `None` (leave it as it is).
    let clear = UserEdit {
        template_id: Some(None),
        ..UserEdit::default()
    };
    let json = serde_json::to_string(&clear).unwrap();
    let back: UserEdit = serde_json::from_str(&json).unwrap();
    assert_eq!(back, clear, "through {json}");
    let leave: UserEdit = serde_json::from_str("{}").unwrap();
    assert_eq!(leave, UserEdit::default());
    let explicit_null: UserEdit = serde_json::from_str(r#"{"template_id":null}"#).unwrap();
    assert_eq!(explicit_null.template_id, Some(None));
}

// ---------------------------------------------------------------------------------------------
// (d) authorize agrees with a naive reference model
// ---------------------------------------------------------------------------------------------

type Cell = (usize, usize);

fn cell_permission((c, a): Cell) -> Permission {
    Permission::new(Category::ALL[c], Action::ALL[a])
}

fn cells_to_set(cells: &HashSet<Cell>) -> Permissions {
    cells.iter().map(|&c| cell_permission(c)).collect()
}

#[derive(Debug, Clone)]
enum TemplateRelation {
    /// No template passed.
    Absent,
    /// The template the user references.
    Matching,
    /// A template with another id.
    OtherId,
    /// The referenced id, but another tenant's.
    OtherTenant,
}

#[derive(Debug, Clone)]
struct ModelCase {
    role: Role,
    status: Status,
    crm: bool,
    grants: HashSet<Cell>,
    references_template: bool,
    template_cells: HashSet<Cell>,
    relation: TemplateRelation,
    request: Option<Cell>,
}

fn arb_cells() -> impl Strategy<Value = HashSet<Cell>> {
    proptest::collection::hash_set((0usize..6, 0usize..5), 0..30)
}

fn arb_model_case() -> impl Strategy<Value = ModelCase> {
    (
        arb_role(),
        arb_status(),
        any::<bool>(),
        arb_cells(),
        any::<bool>(),
        arb_cells(),
        prop_oneof![
            1 => Just(TemplateRelation::Absent),
            3 => Just(TemplateRelation::Matching),
            1 => Just(TemplateRelation::OtherId),
            1 => Just(TemplateRelation::OtherTenant),
        ],
        proptest::option::weighted(0.9, (0usize..6, 0usize..5)),
    )
        .prop_map(
            |(
                role,
                status,
                crm,
                grants,
                references_template,
                template_cells,
                relation,
                request,
            )| ModelCase {
                role,
                status,
                crm,
                grants,
                references_template,
                template_cells,
                relation,
                request,
            },
        )
}

/// The reference evaluator: D1 admins hold all, D6 only active users hold anything, a user
/// holds its grants plus the template it references (same id, same tenant), D5 CRM by flag.
fn reference(case: &ModelCase, user: &User) -> Decision {
    let deny = |reason| Decision::new(reason);
    let allow = |reason| Decision::new(reason);
    match case.status {
        Status::Invited => return deny(Reason::Invited),
        Status::Suspended => return deny(Reason::Suspended),
        Status::Active => {}
    }
    if case.role == Role::Admin {
        return allow(Reason::Admin);
    }
    let Some(cell) = case.request else {
        return if case.crm {
            allow(Reason::CrmAccess)
        } else {
            deny(Reason::NoCrmAccess)
        };
    };
    if case.grants.contains(&cell) {
        return allow(Reason::DirectGrant);
    }
    let template_counts =
        case.references_template && matches!(case.relation, TemplateRelation::Matching);
    if template_counts && case.template_cells.contains(&cell) {
        return allow(Reason::Template {
            template_id: user.template_id.unwrap(),
        });
    }
    deny(Reason::MissingPermission {
        permission: cell_permission(cell),
    })
}

fn model_user(case: &ModelCase) -> (User, Option<RoleTemplate>) {
    let referenced = tid(1);
    let user = User {
        id: uid(1),
        tenant_id: tenant_id(),
        email: Email::parse("model@example.com").unwrap(),
        role: case.role,
        status: case.status,
        template_id: case.references_template.then_some(referenced),
        crm_access: case.crm,
        grants: cells_to_set(&case.grants),
        created_at: now(),
        last_login: None,
        invite_expires_at: None,
        identity: None,
    };
    let template = |id, tenant_id| RoleTemplate {
        id,
        tenant_id,
        name: TemplateName::parse("Model").unwrap(),
        permissions: cells_to_set(&case.template_cells),
        created_at: now(),
        updated_at: now(),
    };
    let t = match case.relation {
        TemplateRelation::Absent => None,
        TemplateRelation::Matching => Some(template(referenced, tenant_id())),
        TemplateRelation::OtherId => Some(template(tid(2), tenant_id())),
        TemplateRelation::OtherTenant => Some(template(referenced, other_tenant_id())),
    };
    (user, t)
}

proptest! {
    /// D1, D5, D6: `authorize` and `effective_permissions` agree with the reference model,
    /// including templates that are not the user's (which contribute nothing).
    #[test]
    fn d6_authorize_matches_reference(case in arb_model_case()) {
        let (user, template) = model_user(&case);
        let request = match case.request {
            Some(cell) => Request::Permission(cell_permission(cell)),
            None => Request::Crm,
        };
        let got = authorize(&user, template.as_ref(), request);
        let want = reference(&case, &user);
        prop_assert_eq!(got, want);

        // effective_permissions is exactly the set of permissions the model allows
        let mut model_set = Permissions::empty();
        for c in 0..6 {
            for a in 0..5 {
                let probe = ModelCase { request: Some((c, a)), ..case.clone() };
                if reference(&probe, &user).is_allowed() {
                    model_set |= cell_permission((c, a)).flag();
                }
            }
        }
        let effective = effective_permissions(&user, template.as_ref());
        prop_assert_eq!(effective, model_set);
        for p in Permission::all() {
            prop_assert_eq!(authorize(&user, template.as_ref(), p.into()).is_allowed(), effective.has(p));
        }
        let crm_probe = ModelCase { request: None, ..case.clone() };
        prop_assert_eq!(effective_crm(&user), reference(&crm_probe, &user).is_allowed());
        prop_assert_eq!(authorize(&user, template.as_ref(), Request::Crm).is_allowed(), effective_crm(&user));
        // potential ⊇ effective, and equal when active
        let potential = potential_permissions(&user, template.as_ref());
        prop_assert!(potential.contains(effective));
        if case.status == Status::Active {
            prop_assert_eq!(potential, effective);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (e) D21: a non-admin manages only users within its own access
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum D21Op {
    /// `target` indexes the world's users (0 is the actor itself).
    Edit {
        target: usize,
        edit: EditSpec,
    },
    Resend {
        target: usize,
    },
    Delete {
        target: usize,
    },
    /// Purge every user's expired invitation (all invitations are made expired).
    Purge,
}

fn arb_d21_edit() -> BoxedStrategy<D21Op> {
    (0usize..6, arb_edit_spec())
        .prop_map(|(target, edit)| D21Op::Edit { target, edit })
        .boxed()
}

fn arb_d21_resend() -> BoxedStrategy<D21Op> {
    (0usize..6)
        .prop_map(|target| D21Op::Resend { target })
        .boxed()
}

fn arb_d21_delete() -> BoxedStrategy<D21Op> {
    (0usize..6)
        .prop_map(|target| D21Op::Delete { target })
        .boxed()
}

fn arb_d21_op() -> BoxedStrategy<D21Op> {
    prop_oneof![
        3 => arb_d21_edit(),
        2 => arb_d21_resend(),
        2 => arb_d21_delete(),
        1 => Just(D21Op::Purge),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct D21Case {
    actor: UserSpec,
    others: Vec<UserSpec>,
    templates: [Permissions; 4],
    op: D21Op,
    /// Cut the other users' grants and CRM down to what the actor holds.
    tame: bool,
    /// Cut the world's templates down to what the actor holds.
    tame_templates: bool,
}

fn arb_d21_case(op: BoxedStrategy<D21Op>) -> impl Strategy<Value = D21Case> {
    (
        arb_actor_spec(),
        vec(arb_user_spec(), 1..6),
        [arb_perms(), arb_perms(), arb_perms(), arb_perms()],
        op,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(actor, others, templates, op, tame, tame_templates)| D21Case {
                actor,
                others,
                templates,
                op,
                tame,
                tame_templates,
            },
        )
}

/// The test's own reading of D1/D6: what `u` holds once active (a superset of what it holds
/// now), and whether it has CRM access now or once active.
fn oracle_access(world: &World, u: &User) -> (Permissions, bool) {
    let template = match u.template_id {
        Some(id) => world
            .templates
            .iter()
            .find(|t| t.id == id && t.tenant_id == u.tenant_id)
            .map_or(Permissions::empty(), |t| t.permissions),
        None => Permissions::empty(),
    };
    let perms = match u.role {
        Role::Admin => Permissions::all(),
        Role::User => u.grants | template,
    };
    (perms, u.role == Role::Admin || u.crm_access)
}

/// What the (non-admin) actor holds now, by the same reading.
fn oracle_actor_holds(world: &World, actor: &User) -> (Permissions, bool) {
    if actor.status != Status::Active {
        return (Permissions::empty(), false);
    }
    oracle_access(world, actor)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D21Result {
    Accepted,
    Beyond,
    OtherRefusal,
}

fn run_d21_case(case: &D21Case) -> Result<D21Result, TestCaseError> {
    let mut templates: Vec<RoleTemplate> = (1u8..=4)
        .map(|n| build_template(n, case.templates[usize::from(n - 1)]))
        .collect();
    let mut users = vec![build_user(1, &case.actor)];
    for (i, spec) in case.others.iter().enumerate() {
        users.push(build_user(u8::try_from(i).unwrap() + 2, spec));
    }
    let actor = users[0].clone();
    let (holds, actor_crm) = oracle_actor_holds(
        &World {
            users: users.clone(),
            templates: templates.clone(),
        },
        &actor,
    );
    if case.tame_templates {
        for t in &mut templates {
            t.permissions &= holds;
        }
    }
    if case.tame {
        for u in users.iter_mut().skip(1) {
            u.grants &= holds;
            u.crm_access &= actor_crm || u.role == Role::Admin;
        }
    }
    if matches!(case.op, D21Op::Purge) {
        for u in &mut users {
            if u.status == Status::Invited {
                u.invite_expires_at = Some(now() - Duration::hours(1));
            }
        }
    }
    let before = World { users, templates };
    let actor_template = before.template(actor.template_id).cloned();
    let acting = Acting {
        user: &actor,
        template: actor_template.as_ref(),
    };
    // the decide functions and the oracle agree on what the actor holds
    prop_assert_eq!(acting.holds(), holds);
    prop_assert_eq!(effective_crm(&actor), actor_crm);
    let state = TenantState {
        tenant: Tenant {
            id: tenant_id(),
            name: "Acme".into(),
            user_limit: None,
            created_at: now() - Duration::days(30),
        },
        counters: Counters {
            version: 7,
            seats_used: u32::try_from(before.users.len()).unwrap(),
            active_admins: u32::try_from(
                before.users.iter().filter(|u| u.is_active_admin()).count(),
            )
            .unwrap()
            .max(1),
        },
    };
    let policy = Policy::default();
    let ctx = Ctx {
        state: &state,
        now: now(),
        policy: &policy,
    };
    let within = |world: &World, u: &User| {
        let (p, crm) = oracle_access(world, u);
        holds.contains(p) && (!crm || actor_crm)
    };
    let check_refusal = |err: &tenantry_core::Error, target: &User| -> Result<(), TestCaseError> {
        if let tenantry_core::Error::BeyondOwnAccess { missing, crm } = err {
            // the refusal names exactly what the target holds (or would hold) beyond the actor
            let (p, target_crm) = oracle_access(&before, target);
            prop_assert_eq!(*missing, p - holds);
            prop_assert_eq!(*crm, target_crm && !actor_crm);
            prop_assert!(!missing.is_empty() || *crm);
            prop_assert_eq!(err.rule(), Rule::WithinOwnAccess);
        }
        Ok(())
    };

    let (target, result) = match &case.op {
        D21Op::Edit { target, edit } => {
            let Some(target) = before.users.get(*target) else {
                return Ok(D21Result::OtherRefusal);
            };
            let user_edit = UserEdit {
                email: edit
                    .email
                    .then(|| Email::parse("renamed@example.com").unwrap()),
                role: edit.role,
                status: edit.status,
                template_id: edit.template,
                crm_access: edit.crm,
                grants: edit.grants.map(|g| if case.tame { g & holds } else { g }),
            };
            let new_ref = user_edit.template_id.unwrap_or(target.template_id);
            let r = decide::edit(
                ctx,
                &acting,
                target,
                before.template(target.template_id),
                before.template(new_ref),
                &user_edit,
                false,
            );
            (target, r)
        }
        D21Op::Resend { target } => {
            let Some(target) = before.users.get(*target) else {
                return Ok(D21Result::OtherRefusal);
            };
            let r = decide::resend(
                ctx,
                &acting,
                target,
                before.template(target.template_id),
                &[],
                TokenHash([99; 32]),
            );
            (target, r)
        }
        D21Op::Delete { target } => {
            let Some(target) = before.users.get(*target) else {
                return Ok(D21Result::OtherRefusal);
            };
            let r = decide::delete(ctx, &acting, target, before.template(target.template_id));
            (target, r)
        }
        D21Op::Purge => {
            let Ok((change, deleted)) =
                decide::purge_expired(ctx, &acting, &before.users, &before.templates)
            else {
                return Ok(D21Result::OtherRefusal);
            };
            for id in &deleted {
                let u = before.user(*id).unwrap();
                prop_assert!(
                    within(&before, u),
                    "purge deleted {:?} holding {:?} beyond actor holding {} (crm {})",
                    id,
                    oracle_access(&before, u),
                    holds,
                    actor_crm
                );
            }
            // every expired invitation within the actor's access, not an admin's, is purged
            for u in before.users.iter().filter(|u| u.invitation_expired(now())) {
                if u.role == Role::User && u.id != actor.id && within(&before, u) {
                    prop_assert!(deleted.contains(&u.id), "{:?} was not purged", u.id);
                }
            }
            let mut after = before.clone();
            after.apply(&change);
            for id in &deleted {
                prop_assert!(after.user(*id).is_none());
            }
            return Ok(if deleted.is_empty() {
                D21Result::OtherRefusal
            } else {
                D21Result::Accepted
            });
        }
    };
    let change = match result {
        Ok(change) => change,
        Err(err) => {
            check_refusal(&err, target)?;
            // the contrapositive: whatever refused, a target beyond the actor is never
            // accepted; and a D21 refusal only ever hits a target beyond the actor
            if matches!(err, tenantry_core::Error::BeyondOwnAccess { .. }) {
                prop_assert!(!within(&before, target));
                return Ok(D21Result::Beyond);
            }
            return Ok(D21Result::OtherRefusal);
        }
    };
    // accepted: the target was within the actor's access before the change …
    prop_assert!(
        within(&before, target),
        "{:?} accepted on {:?} holding {:?} beyond actor holding {} (crm {})",
        case.op,
        target.id,
        oracle_access(&before, target),
        holds,
        actor_crm
    );
    // … and is after it (if it still exists)
    let mut after = before.clone();
    after.apply(&change);
    if let Some(t) = after.user(target.id) {
        prop_assert!(
            within(&after, t),
            "{:?} left {:?} holding {:?} beyond actor holding {} (crm {})",
            case.op,
            t.id,
            oracle_access(&after, t),
            holds,
            actor_crm
        );
    }
    // the actor's own access is unchanged
    if let Some(me) = after.user(actor.id) {
        prop_assert_eq!(oracle_actor_holds(&after, me), (holds, actor_crm));
    }
    Ok(D21Result::Accepted)
}

proptest! {
    /// D21: an accepted edit (any field) by a non-admin only ever touches a user whose access
    /// now and once active, CRM included, is within the actor's, before and after the edit.
    #[test]
    fn d21_edit_only_within_own_access(case in arb_d21_case(arb_d21_edit())) {
        run_d21_case(&case)?;
    }

    /// D21: the same for resending an invitation.
    #[test]
    fn d21_resend_only_within_own_access(case in arb_d21_case(arb_d21_resend())) {
        run_d21_case(&case)?;
    }

    /// D21: the same for deleting a user.
    #[test]
    fn d21_delete_only_within_own_access(case in arb_d21_case(arb_d21_delete())) {
        run_d21_case(&case)?;
    }

    /// D21: a purge of expired invitations deletes exactly those within the actor's access.
    #[test]
    fn d21_purge_only_within_own_access(case in arb_d21_case(Just(D21Op::Purge).boxed())) {
        run_d21_case(&case)?;
    }
}

/// Guards the D21 properties against vacuity: each operation is both accepted and refused
/// by D21 a fair number of times.
#[test]
fn d21_property_is_not_vacuous() {
    let mut runner = TestRunner::deterministic();
    let strategy = arb_d21_case(arb_d21_op());
    // per op kind: [accepted, refused by D21]
    let mut seen = [[0usize; 2]; 4];
    for _ in 0..3000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let k = match case.op {
            D21Op::Edit { .. } => 0,
            D21Op::Resend { .. } => 1,
            D21Op::Delete { .. } => 2,
            D21Op::Purge => 3,
        };
        match run_d21_case(&case).unwrap() {
            D21Result::Accepted => seen[k][0] += 1,
            D21Result::Beyond => seen[k][1] += 1,
            D21Result::OtherRefusal => {}
        }
    }
    // a purge has no D21 refusal of its own (it skips); only its acceptances count
    assert!(
        seen[..3].iter().all(|s| s[0] >= 20 && s[1] >= 20) && seen[3][0] >= 20,
        "too few accepted / D21-refused per kind (edit, resend, delete, purge): {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (f) D22: names
// ---------------------------------------------------------------------------------------------

/// Unicode general category Cf as of Unicode 16.0 (from `DerivedGeneralCategory.txt`), the
/// test's own copy.
const ORACLE_CF: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn oracle_cf(c: char) -> bool {
    let c = u32::from(c);
    ORACLE_CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Unicode general category Cc: C0, DEL and C1.
fn oracle_cc(c: char) -> bool {
    matches!(u32::from(c), 0x00..=0x1F | 0x7F..=0x9F)
}

fn oracle_forbidden(c: char) -> bool {
    oracle_cc(c) || oracle_cf(c)
}

#[test]
fn d22_cf_and_cc_tables_match_the_oracle_for_every_code_point() {
    // 170 code points are Cf in Unicode 16
    let total: u32 = ORACLE_CF.iter().map(|&(lo, hi)| hi - lo + 1).sum();
    assert_eq!(total, 170);
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        assert_eq!(
            tenantry_core::is_format_char(c),
            oracle_cf(c),
            "U+{:04X}",
            u32::from(c)
        );
        assert_eq!(c.is_control(), oracle_cc(c), "U+{:04X}", u32::from(c));
    }
    // a few by name, both ways
    for c in [
        '\u{ad}',
        '\u{200b}',
        '\u{200d}',
        '\u{202e}',
        '\u{2066}',
        '\u{feff}',
        '\u{e0041}',
    ] {
        assert!(oracle_cf(c) && tenantry_core::is_format_char(c));
    }
    for c in [
        'a', ' ', '\u{a0}', '\u{2028}', '\u{034f}', '\u{fe0f}', '\u{3164}',
    ] {
        assert!(!oracle_cf(c) && !tenantry_core::is_format_char(c));
    }
}

/// White space that trimming removes at the ends (some of it Cc, refused inside).
const WHITE_SPACE: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}', '\u{85}', '\u{b}', '\u{c}',
];

/// Non-ASCII characters a name may hold, among them default-ignorable ones that are not Cf.
const HARMLESS: &[char] = &[
    'é', '株', '😀', '\u{0301}', '\u{034f}', '\u{fe0f}', 'ß', '\u{3164}',
];

/// Characters to seed names with: forbidden ones (Cc, Cf), white space that trimming
/// removes, and harmless non-ASCII letters and symbols.
fn arb_name_char() -> impl Strategy<Value = char> {
    let cf: Vec<char> = ORACLE_CF
        .iter()
        .flat_map(|&(lo, hi)| (lo..=hi).filter_map(char::from_u32))
        .collect();
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => select(WHITE_SPACE.to_vec()),
        2 => select(cf),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        1 => select(HARMLESS.to_vec()),
        1 => any::<char>(),
    ]
}

fn arb_name_input() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => "\\PC{0,120}",
        3 => vec(arb_name_char(), 0..120).prop_map(|v| v.into_iter().collect::<String>()),
        // around the length limits: white space, a run of letters, white space, maybe a
        // forbidden character somewhere
        3 => (
            "[ \t\n]{0,3}",
            "[a-z]{60,105}",
            "[ \t\r\n]{0,3}",
            proptest::option::of((arb_name_char(), any::<prop::sample::Index>())),
        )
            .prop_map(|(l, body, r, seed)| {
                let mut chars: Vec<char> = format!("{l}{body}{r}").chars().collect();
                if let Some((c, at)) = seed {
                    let i = at.index(chars.len() + 1);
                    chars.insert(i, c);
                }
                chars.into_iter().collect()
            }),
    ]
}

/// Checks one parse result against the oracle: trimmed of surrounding white space, 1..=max
/// characters, no Cc or Cf character; a forbidden character reported where it is.
fn check_name_result(
    input: &str,
    max: usize,
    got: Result<String, tenantry_core::NameError>,
) -> Result<(), TestCaseError> {
    use tenantry_core::NameError;
    let chars: Vec<char> = input.chars().collect();
    let start = chars
        .iter()
        .position(|c| !c.is_whitespace())
        .unwrap_or(chars.len());
    let end = chars
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(start, |i| i + 1);
    let trimmed: String = chars[start..end].iter().collect();
    let len = end - start;
    let first_forbidden = (start..end).find(|&i| oracle_forbidden(chars[i]));
    let acceptable = first_forbidden.is_none() && (1..=max).contains(&len);
    prop_assert_eq!(got.is_ok(), acceptable, "{:?} -> {:?}", input, got);
    match got {
        Ok(name) => prop_assert_eq!(name, trimmed),
        Err(NameError::ForbiddenCharacter {
            character,
            position,
        }) => {
            prop_assert_eq!(chars.get(position).copied(), Some(character), "{:?}", input);
            prop_assert!(oracle_forbidden(character));
            prop_assert_eq!(Some(position), first_forbidden, "{:?}", input);
            let msg = NameError::ForbiddenCharacter {
                character,
                position,
            }
            .to_string();
            let code = format!("U+{:04X}", u32::from(character));
            prop_assert!(msg.contains(&code), "{}", msg);
            prop_assert!(!msg.contains(character), "{:?}", msg);
        }
        Err(NameError::Empty) => prop_assert_eq!(len, 0),
        Err(NameError::TooLong { len: l, max: m }) => {
            prop_assert_eq!(l, len);
            prop_assert_eq!(m, max);
            prop_assert!(len > max);
        }
        Err(other) => prop_assert!(false, "unexpected {:?}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// D22: tenant and template names are accepted iff, trimmed, they have 1..=max
    /// characters (100, 64) and no Cc or Cf character; a refused character is reported by
    /// the index of exactly that character in the input as given.
    #[test]
    fn d22_names_are_accepted_iff_the_oracle_says_so(input in arb_name_input()) {
        check_name_result(
            &input,
            100,
            TenantName::parse(&input).map(TenantName::into_string),
        )?;
        check_name_result(
            &input,
            64,
            TemplateName::parse(&input).map(|n| n.as_str().to_owned()),
        )?;
        // the shared checker agrees with both
        check_name_result(&input, 100, tenantry_core::check_name(&input, 100).map(str::to_owned))?;
        for c in input.chars() {
            prop_assert_eq!(tenantry_core::is_format_char(c), oracle_cf(c));
        }
    }

    /// D22: a name round-trips on the wire, and only valid names deserialize.
    #[test]
    fn serde_tenant_name(input in arb_name_input()) {
        let json = serde_json::to_string(&input).unwrap();
        match TenantName::parse(&input) {
            Ok(n) => {
                round_trip(&n)?;
                prop_assert_eq!(serde_json::from_str::<TenantName>(&json).unwrap(), n);
            }
            Err(_) => prop_assert!(serde_json::from_str::<TenantName>(&json).is_err()),
        }
    }
}
