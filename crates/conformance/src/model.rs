//! Model-based test of the [`tenantry_service::Tenantry`] service on a storage backend.
//!
//! Random sequences of every use case (create tenant with good and bad names and limits,
//! set user limit, invite, bulk invite, resend, accept with right, wrong and invalid sign-up
//! addresses — also several wrong ones in a row, [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts) — and with used, superseded, forged and
//! foreign tokens, sign-in, edit of every field, delete, purge of expired invitations,
//! template create (names with control and format characters too, [names (D22)](tenantry_core::Rule::Names)) / edit / delete with
//! refuse, detach and reassign, the clock moving, listing with filters and sort orders) are
//! run by several actors (the first admin, other
//! admins, non-admin users with various grants and templates, invited, suspended and deleted
//! users, users of the other tenant, ids that never existed) in two tenants, against the
//! service on the backend and against a plain reference model written in this file from
//! `DECISIONS.md` alone (it never calls `tenantry_core::decide`).
//!
//! Every result must agree: `Ok` against `Ok` with the same returned data, `Err` against
//! `Err` with the same [`tenantry_core::Error`] (so the same rule, [roles (D1)](tenantry_core::Rule::Roles)…[accept attempts (D24)](tenantry_core::Rule::AcceptAttempts), and the same
//! details). The accept links that invite, bulk invite and resend return ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)) must be the
//! ones mailed. After every step the visible state must agree as well: the user table of each
//! tenant (paged through with [`ActorRef::System`]), seat usage and the tenant's counters,
//! the role templates and who references them, expired invitations, tombstones ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)), the
//! audit events the step appended ([audit log (D13)](tenantry_core::Rule::AuditLog): with the address a refused invite tried, the users
//! a template change reached, the failed accept attempts of [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)), that neither the outbox
//! nor the audit log shows a live link ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)), the invitation mail sent ([seat limit (D9)](tenantry_core::Rule::SeatLimit), [invitations (D10)](tenantry_core::Rule::Invitations), [mail delivery (D17)](tenantry_core::Rule::MailDelivery)) and
//! `authorize` / `effective_permissions` for every user ever created, in its own tenant and
//! in the other one ([current access (D6)](tenantry_core::Rule::CurrentAccess), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)). Invariants checked at every step: at least one active admin
//! per tenant ([last admin (D8)](tenantry_core::Rule::LastAdmin)), seats used equal the number of rows ([seat limit (D9)](tenantry_core::Rule::SeatLimit)), and seats used never exceed
//! the limit right after a successful invite ([seat limit (D9)](tenantry_core::Rule::SeatLimit)).
//!
//! Invitation tokens are captured from the [`InMemoryMailer`]'s messages with
//! [`tenantry_service::token_from_link`] (and checked against the links the calls returned); the
//! clock is a [`ManualClock`].
//!
//! Each case starts with two tenants (random seat limits), a few templates and a few users
//! onboarded by the first admins (some of them suspended), so that non-admin managers act
//! from the first step. Set `TENANTRY_MODEL_STATS=1` to print how often each use case ended
//! in each outcome, and by which kind of actor.
//!
//! Where `DECISIONS.md` leaves a detail open (which refusal wins when several rules refuse,
//! what an admin's direct grants are), the model follows the service's documented choice;
//! such places are marked "choice" below.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tenantry_core::Error as CoreError;
use tenantry_core::TemplateNameError;
use tenantry_core::{Field, FieldChange, Outcome, Value};
use tenantry_service::{
    Action, ActorRef, AuditAction, AuditTarget, BulkInvite, BulkItem, BulkOutcome, Category,
    Decision, Email, InMemoryMailer, InviteRequest, ManualClock, Permission, Permissions, Policy,
    QueryError, Reason, Request, Role, RoleTemplate, Rule, SeatUsage, SortBy, Status,
    TemplateDeletion, TemplateEdit, TemplateId, TemplateName, TenantId, Tenantry, Tombstone, User,
    UserEdit, UserId, UserQuery,
};
use time::{Duration, OffsetDateTime};

// ------------------------------------------------------------------------------ constants

/// The clock's start: not a whole microsecond (nor millisecond), so that every time the
/// service stores (created at, expiry, last login, audit time) must survive the backend to
/// the nanosecond for model and service to agree, at the [invitations (D10)](tenantry_core::Rule::Invitations) expiry boundary too.
const START: OffsetDateTime = time::macros::datetime!(2026-01-01 09:00:00.123_456_789 UTC);
/// [invitations (D10)](tenantry_core::Rule::Invitations): invitation lifetime (the default, set explicitly).
const TTL: Duration = Duration::days(7);
/// [invitations (D10)](tenantry_core::Rule::Invitations): at most this many resends …
const RESEND_LIMIT: usize = 3;
/// … in this window.
const RESEND_WINDOW: Duration = Duration::minutes(10);
/// The accept page.
const BASE_URL: &str = "https://app.example.test/accept";

/// The address pool; index 0 is every tenant's first admin.
const EMAILS: [&str; 7] = [
    "root@x.test",
    "ann@x.test",
    "bob@x.test",
    "cy@y.test",
    "dee@y.test",
    "ed@z.test",
    "flo@z.test",
];
/// Addresses [unique email (D3)](tenantry_core::Rule::UniqueEmail) refuses.
const BAD_EMAILS: [&str; 6] = [
    "",
    "nobody",
    "a@@x.test",
    "é@x.test",
    ".a@x.test",
    "a@-x.test",
];
/// Template names; 1 and 4 collide with 0 and 3 ignoring case ([role templates (D12)](tenantry_core::Rule::RoleTemplates)); 5 is blank and 6
/// stands for a 65-character name (see `name_text`), both refused ([role templates (D12)](tenantry_core::Rule::RoleTemplates)); 7 to 10 hold
/// control or format characters (look-alikes of 0, 3 and 2), refused ([names (D22)](tenantry_core::Rule::Names)). Only 0 to 4
/// are used for renames (a rename takes a parsed name).
const NAMES: [&str; 11] = [
    "Agent",
    " agent ",
    "Manager",
    "Ops",
    "OPS",
    "  ",
    "",
    "Agent\u{200B}",
    " \u{202E}Ops",
    "Man\r\nager",
    "\u{FEFF}Agent",
];
/// Tenant names tried by `Step::CreateTenant` ([names (D22)](tenantry_core::Rule::Names)): good ones, ones with control or format
/// characters, blank, and (see `tenant_name_text`) 100 and 101 characters.
const TENANT_NAMES: [&str; 9] = [
    "Gamma",
    "  Delta Corp ",
    "Acme\u{202E}",
    "Zero\u{200B}Width",
    "Line\r\nBreak",
    " \u{2066}Iso",
    "   ",
    "",
    "",
];
/// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): failed accept attempts after which a token dies.
const MAX_ATTEMPTS: u32 = 5;
/// The permissions grants and templates are drawn from, and that checks ask for.
const CHECKED: [Permission; 8] = [
    Permission::new(Category::Users, Action::View),
    Permission::new(Category::Users, Action::Create),
    Permission::new(Category::Users, Action::Edit),
    Permission::new(Category::Users, Action::Delete),
    Permission::new(Category::Users, Action::Manage),
    Permission::new(Category::Conversations, Action::View),
    Permission::new(Category::Analytics, Action::Edit),
    Permission::new(Category::Settings, Action::Manage),
];
/// Clock moves, in minutes.
const ADVANCES: [i64; 8] = [1, 5, 10, 11, 60, 2 * 1440, 7 * 1440, 8 * 1440];

fn ghost_user() -> UserId {
    UserId::from_parts(1, [0xEE; 10])
}

fn ghost_template() -> TemplateId {
    TemplateId::from_parts(1, [0xEE; 10])
}

fn name_text(i: usize) -> String {
    match i % NAMES.len() {
        6 => "x".repeat(65),
        n => NAMES[n].to_owned(),
    }
}

fn tenant_name_text(i: usize) -> String {
    match i % TENANT_NAMES.len() {
        7 => "t".repeat(100),
        8 => "t".repeat(101),
        n => TENANT_NAMES[n].to_owned(),
    }
}

/// An address of the pool in one of four spellings of the same address ([unique email (D3)](tenantry_core::Rule::UniqueEmail)).
fn email_text(i: usize, variant: u8) -> String {
    let base = EMAILS[i % EMAILS.len()];
    match variant % 4 {
        0 => base.to_owned(),
        1 => {
            let mut c = base.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or('x');
            format!("{first}{}", c.as_str())
        }
        2 => base.to_ascii_uppercase(),
        _ => format!("  {base}\t"),
    }
}

/// [unique email (D3)](tenantry_core::Rule::UniqueEmail), independently of `Email::key`: trimmed and ASCII-lowercased.
fn key_of(text: &str) -> String {
    text.trim().to_ascii_lowercase()
}

fn perms_of(mask: u8) -> Permissions {
    CHECKED
        .iter()
        .take(7)
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .fold(Permissions::empty(), |acc, (_, p)| acc | p.flag())
}

fn not_allowed(action: Action) -> CoreError {
    CoreError::NotAllowed {
        needed: Permission::new(Category::Users, action),
    }
}

// ------------------------------------------------------------------------------ steps

/// Picks a user id at run time (ids are only known once the service made them).
#[derive(Debug, Clone, Copy)]
enum Who {
    /// The tenant's first admin.
    First,
    /// The newest user ever created in the tenant (maybe deleted).
    Last,
    /// Any user ever created in the tenant (maybe deleted).
    Slot(usize),
    /// A user of the other tenant ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)).
    Other(usize),
    /// A currently active non-admin user of the tenant (the first admin if there is none).
    Active(usize),
    /// A currently active non-admin user holding `users:<action>` (else as `Active`).
    Manager(Action, usize),
    /// A currently suspended user of the tenant (the first admin if none).
    Suspended(usize),
    /// A currently invited or suspended user of the tenant (the first admin if none).
    Inactive(usize),
    /// An id that never existed.
    Ghost,
}

/// Picks a template id at run time.
#[derive(Debug, Clone, Copy)]
enum Tpl {
    /// A template that exists now (a never-existing id when there is none).
    Live(usize),
    /// Any template ever created in the tenant (maybe deleted).
    Slot(usize),
    /// The newest template ever created in the tenant (maybe deleted).
    Last,
    /// A template of the other tenant ([tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)).
    Other(usize),
    /// An id that never existed.
    Ghost,
}

#[derive(Debug, Clone, Copy)]
enum TokenPick {
    /// The newest token mailed to this user.
    Latest(Who),
    /// Any token ever mailed (used, superseded, expired or current).
    Any(usize),
    /// A token that is live now (pending and unexpired; any token if none is).
    Live(usize),
    /// A well-formed token that was never issued.
    Forged(usize),
    /// A real token's secret under the other tenant's id.
    OtherTenant(usize),
    /// Not a token at all.
    Garbage,
}

#[derive(Debug, Clone, Copy)]
enum Signup {
    /// The invited address as stored.
    Right,
    /// The invited address in capitals with white space around (same address, [unique email (D3)](tenantry_core::Rule::UniqueEmail)).
    Variant,
    /// An address of the pool.
    Wrong(usize),
    /// An address [unique email (D3)](tenantry_core::Rule::UniqueEmail) refuses.
    Invalid(usize),
}

#[derive(Debug, Clone, Copy)]
enum BulkEmail {
    Valid(usize, u8),
    Invalid(usize),
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Refuse,
    Detach,
    Reassign(Tpl),
}

#[derive(Debug, Clone)]
struct EditSpec {
    email: Option<(usize, u8)>,
    role: Option<Role>,
    status: Option<Status>,
    template: Option<Option<Tpl>>,
    crm: Option<bool>,
    grants: Option<Permissions>,
}

#[derive(Debug, Clone)]
struct QuerySpec {
    status: Option<Status>,
    role: Option<Role>,
    template: Option<Tpl>,
    crm: Option<bool>,
    contains: Option<&'static str>,
    inactive_days: Option<i64>,
    expired: bool,
    sort: SortBy,
    descending: bool,
    limit: u32,
}

#[derive(Debug, Clone)]
enum Step {
    /// The host creates a third tenant ([names (D22)](tenantry_core::Rule::Names) names, [first seat (D23)](tenantry_core::Rule::FirstSeat) first seat); checked on its own, not
    /// used by later steps.
    CreateTenant {
        name: usize,
        limit: Option<u32>,
    },
    SetLimit {
        t: usize,
        limit: Option<u32>,
    },
    Invite {
        t: usize,
        actor: Who,
        email: (usize, u8),
        role: Role,
        template: Option<Tpl>,
        crm: bool,
        grants: Permissions,
    },
    InviteMany {
        t: usize,
        actor: Who,
        emails: Vec<BulkEmail>,
        role: Option<Role>,
        template: Option<Tpl>,
        crm: bool,
        grants: Permissions,
    },
    /// The first admin invites a user and the person accepts at once (with the right
    /// address); with `suspend` the first admin then suspends the new user.
    Onboard {
        t: usize,
        email: (usize, u8),
        template: Option<Tpl>,
        crm: bool,
        grants: Permissions,
        suspend: bool,
    },
    Resend {
        t: usize,
        actor: Who,
        target: Who,
        times: u8,
    },
    Accept {
        t: usize,
        token: TokenPick,
        email: Signup,
    },
    /// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): `wrong` sign-ups with addresses of the pool (wrong unless one happens to be the
    /// invited one), then one with `then`.
    AcceptAttempts {
        t: usize,
        token: TokenPick,
        wrong: Vec<usize>,
        then: Signup,
    },
    SignIn {
        t: usize,
        user: Who,
    },
    /// `target: None` edits the actor itself.
    Edit {
        t: usize,
        actor: Who,
        target: Option<Who>,
        edit: EditSpec,
    },
    /// `target: None` deletes the actor itself.
    Delete {
        t: usize,
        actor: Who,
        target: Option<Who>,
    },
    Purge {
        t: usize,
        actor: Who,
    },
    CreateTemplate {
        t: usize,
        actor: Who,
        name: usize,
        perms: Permissions,
    },
    EditTemplate {
        t: usize,
        actor: Who,
        tpl: Tpl,
        name: Option<usize>,
        perms: Option<Permissions>,
    },
    DeleteTemplate {
        t: usize,
        actor: Who,
        tpl: Tpl,
        mode: Mode,
    },
    Advance {
        minutes: i64,
    },
    List {
        t: usize,
        viewer: Option<Who>,
        query: QuerySpec,
    },
}

#[derive(Debug, Clone)]
struct Setup {
    limits: [Option<u32>; 2],
    /// Templates the first admins create before the random steps: (tenant, name, permissions).
    templates: Vec<(usize, usize, Permissions)>,
    /// Then users they onboard (invite and accept), to have non-admin managers about.
    onboard: Vec<Step>,
}

fn tenant_s() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(0usize), 1 => Just(1usize)]
}

/// Actors of an operation that needs `users:<needed>` ([management authority (D7)](tenantry_core::Rule::ManagementAuthority)).
fn actor_s(needed: Action) -> impl Strategy<Value = Who> {
    prop_oneof![
        6 => Just(Who::First),
        3 => (0usize..6).prop_map(Who::Active),
        6 => (0usize..6).prop_map(move |i| Who::Manager(needed, i)),
        2 => (0usize..6).prop_map(Who::Inactive),
        6 => (0usize..12).prop_map(Who::Slot),
        4 => Just(Who::Last),
        2 => (0usize..12).prop_map(Who::Other),
        1 => Just(Who::Ghost),
    ]
}

/// Targets of edits, deletes and resends: mostly non-admin users.
fn target_s() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => Just(Who::First),
        6 => (0usize..6).prop_map(Who::Active),
        4 => (0usize..6).prop_map(Who::Inactive),
        4 => (0usize..12).prop_map(Who::Slot),
        3 => Just(Who::Last),
        1 => (0usize..12).prop_map(Who::Other),
        1 => Just(Who::Ghost),
    ]
}

fn tpl_s() -> impl Strategy<Value = Tpl> {
    prop_oneof![
        6 => (0usize..6).prop_map(Tpl::Live),
        3 => (0usize..6).prop_map(Tpl::Slot),
        3 => Just(Tpl::Last),
        1 => (0usize..6).prop_map(Tpl::Other),
        1 => Just(Tpl::Ghost),
    ]
}

fn perms_s() -> impl Strategy<Value = Permissions> {
    prop_oneof![
        8 => any::<u8>().prop_map(perms_of),
        1 => Just(Permissions::empty()),
        1 => Just(Permissions::all()),
    ]
}

fn email_s() -> impl Strategy<Value = (usize, u8)> {
    (
        0usize..EMAILS.len(),
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
    )
}

fn role_s() -> impl Strategy<Value = Role> {
    prop_oneof![3 => Just(Role::User), 1 => Just(Role::Admin)]
}

fn status_s() -> impl Strategy<Value = Status> {
    prop_oneof![
        2 => Just(Status::Active),
        2 => Just(Status::Suspended),
        1 => Just(Status::Invited)
    ]
}

fn edit_s() -> impl Strategy<Value = EditSpec> {
    use proptest::option::weighted;
    (
        weighted(0.25, email_s()),
        weighted(0.3, role_s()),
        weighted(0.35, status_s()),
        weighted(0.3, proptest::option::of(tpl_s())),
        weighted(0.3, any::<bool>()),
        weighted(0.4, perms_s()),
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

fn query_s() -> impl Strategy<Value = QuerySpec> {
    use proptest::option::weighted;
    (
        weighted(0.3, status_s()),
        weighted(0.2, role_s()),
        weighted(0.2, tpl_s()),
        weighted(0.2, any::<bool>()),
        weighted(
            0.2,
            prop_oneof![Just("x.test"), Just("ANN"), Just("o"), Just("@")],
        ),
        weighted(0.2, prop_oneof![Just(0i64), Just(1i64)]),
        proptest::bool::weighted(0.15),
        prop_oneof![
            Just(SortBy::Email),
            Just(SortBy::CreatedAt),
            Just(SortBy::LastLogin)
        ],
        any::<bool>(),
        prop_oneof![10 => 1u32..5, 1 => Just(0u32), 1 => Just(501u32)],
    )
        .prop_map(
            |(
                status,
                role,
                template,
                crm,
                contains,
                inactive_days,
                expired,
                sort,
                descending,
                limit,
            )| {
                QuerySpec {
                    status,
                    role,
                    template,
                    crm,
                    contains,
                    inactive_days,
                    expired,
                    sort,
                    descending,
                    limit,
                }
            },
        )
}

fn bulk_email_s() -> impl Strategy<Value = BulkEmail> {
    prop_oneof![
        5 => email_s().prop_map(|(i, v)| BulkEmail::Valid(i, v)),
        1 => (0usize..BAD_EMAILS.len()).prop_map(BulkEmail::Invalid),
    ]
}

fn token_s() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        8 => prop_oneof![Just(Who::Last), (0usize..12).prop_map(Who::Slot)].prop_map(TokenPick::Latest),
        3 => (0usize..32).prop_map(TokenPick::Any),
        3 => (0usize..32).prop_map(TokenPick::Live),
        1 => (0usize..32).prop_map(TokenPick::Forged),
        1 => (0usize..32).prop_map(TokenPick::OtherTenant),
        1 => Just(TokenPick::Garbage),
    ]
}

fn signup_s() -> impl Strategy<Value = Signup> {
    prop_oneof![
        6 => Just(Signup::Right),
        2 => Just(Signup::Variant),
        2 => (0usize..EMAILS.len()).prop_map(Signup::Wrong),
        1 => (0usize..BAD_EMAILS.len()).prop_map(Signup::Invalid),
    ]
}

fn limit_s() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![1 => Just(None), 3 => (1u32..7).prop_map(Some)]
}

fn onboard_s() -> impl Strategy<Value = Step> {
    (
        tenant_s(),
        email_s(),
        proptest::option::weighted(0.4, tpl_s()),
        any::<bool>(),
        perms_s(),
        proptest::bool::weighted(0.25),
    )
        .prop_map(|(t, email, template, crm, grants, suspend)| Step::Onboard {
            t,
            email,
            template,
            crm,
            grants,
            suspend,
        })
}

fn step_s() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0usize..TENANT_NAMES.len(), prop_oneof![Just(None), Just(Some(0u32)), Just(Some(1u32)), Just(Some(3u32))])
            .prop_map(|(name, limit)| Step::CreateTenant { name, limit }),
        3 => (tenant_s(), limit_s()).prop_map(|(t, limit)| Step::SetLimit { t, limit }),
        14 => (tenant_s(), actor_s(Action::Create), email_s(), role_s(), proptest::option::weighted(0.3, tpl_s()), any::<bool>(), perms_s())
            .prop_map(|(t, actor, email, role, template, crm, grants)| Step::Invite { t, actor, email, role, template, crm, grants }),
        4 => (tenant_s(), actor_s(Action::Create), vec(bulk_email_s(), 0..5), proptest::option::of(role_s()), proptest::option::weighted(0.3, tpl_s()), any::<bool>(), perms_s())
            .prop_map(|(t, actor, emails, role, template, crm, grants)| Step::InviteMany { t, actor, emails, role, template, crm, grants }),
        5 => (tenant_s(), actor_s(Action::Create), prop_oneof![Just(Who::Last), (0usize..6).prop_map(Who::Inactive), target_s()], 1u8..5)
            .prop_map(|(t, actor, target, times)| Step::Resend { t, actor, target, times }),
        8 => onboard_s(),
        12 => (tenant_s(), token_s(), signup_s()).prop_map(|(t, token, email)| Step::Accept { t, token, email }),
        // D24: runs of wrong addresses on one token, then one more sign-up.
        6 => (tenant_s(), prop_oneof![3 => (0usize..32).prop_map(TokenPick::Live), 1 => token_s()], vec(0usize..EMAILS.len(), 1..8), signup_s())
            .prop_map(|(t, token, wrong, then)| Step::AcceptAttempts { t, token, wrong, then }),
        3 => (tenant_s(), target_s()).prop_map(|(t, user)| Step::SignIn { t, user }),
        14 => (tenant_s(), actor_s(Action::Edit), target_s(), edit_s(), proptest::bool::weighted(0.15))
            .prop_map(|(t, actor, target, edit, own)| Step::Edit { t, actor, target: if own { None } else { Some(target) }, edit }),
        // Suspending and reactivating (D2, D6, D7, D8).
        6 => (tenant_s(), actor_s(Action::Edit), prop_oneof![
                2 => (0usize..6).prop_map(|i| (Who::Suspended(i), Status::Active)),
                2 => (0usize..6).prop_map(|i| (Who::Active(i), Status::Suspended)),
                1 => (target_s(), prop_oneof![Just(Status::Active), Just(Status::Suspended)]),
            ])
            .prop_map(|(t, actor, (target, status))| Step::Edit {
                t,
                actor,
                target: Some(target),
                edit: EditSpec { email: None, role: None, status: Some(status), template: None, crm: None, grants: None },
            }),
        // D21: managers retargeting (address only) or otherwise editing users who may hold
        // more than they do.
        5 => (tenant_s(), (0usize..6).prop_map(|i| Who::Manager(Action::Edit, i)), target_s(), email_s())
            .prop_map(|(t, actor, target, email)| Step::Edit {
                t,
                actor,
                target: Some(target),
                edit: EditSpec { email: Some(email), role: None, status: None, template: None, crm: None, grants: None },
            }),
        5 => (tenant_s(), actor_s(Action::Delete), target_s(), proptest::bool::weighted(0.1))
            .prop_map(|(t, actor, target, own)| Step::Delete { t, actor, target: if own { None } else { Some(target) } }),
        4 => (tenant_s(), actor_s(Action::Delete)).prop_map(|(t, actor)| Step::Purge { t, actor }),
        7 => (tenant_s(), actor_s(Action::Manage), 0usize..NAMES.len(), perms_s())
            .prop_map(|(t, actor, name, perms)| Step::CreateTemplate { t, actor, name, perms }),
        4 => (tenant_s(), actor_s(Action::Manage), tpl_s(), proptest::option::weighted(0.4, 0usize..5), proptest::option::weighted(0.7, perms_s()))
            .prop_map(|(t, actor, tpl, name, perms)| Step::EditTemplate { t, actor, tpl, name, perms }),
        4 => (tenant_s(), actor_s(Action::Manage), tpl_s(), prop_oneof![Just(Mode::Refuse), Just(Mode::Detach), tpl_s().prop_map(Mode::Reassign)])
            .prop_map(|(t, actor, tpl, mode)| Step::DeleteTemplate { t, actor, tpl, mode }),
        5 => proptest::sample::select(ADVANCES.to_vec()).prop_map(|minutes| Step::Advance { minutes }),
        3 => (tenant_s(), proptest::option::weighted(0.5, actor_s(Action::View)), query_s())
            .prop_map(|(t, viewer, query)| Step::List { t, viewer, query }),
    ]
}

// ------------------------------------------------------------------------------ the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokState {
    Pending,
    Used,
    Revoked,
}

#[derive(Debug, Clone)]
struct MToken {
    text: String,
    t: usize,
    user: UserId,
    expires_at: OffsetDateTime,
    state: TokState,
    /// [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts): sign-ups tried on it with a wrong address.
    failed: u32,
}

/// An audit event as the model predicts it ([audit log (D13)](tenantry_core::Rule::AuditLog)).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpEvent {
    actor: ActorRef,
    action: AuditAction,
    target: AuditTarget,
    refused: Option<Rule>,
    /// For user and template edits: the fields that changed (permission sets with their
    /// before/after values).
    detail: Vec<String>,
}

#[derive(Debug)]
struct MTenant {
    id: TenantId,
    limit: Option<u32>,
    users: BTreeMap<UserId, User>,
    ever: Vec<UserId>,
    resends: HashMap<UserId, Vec<OffsetDateTime>>,
    templates: BTreeMap<TemplateId, RoleTemplate>,
    ever_templates: Vec<TemplateId>,
    tombstones: HashMap<UserId, Tombstone>,
}

/// The reference model: plain maps and the rules of `DECISIONS.md`.
#[derive(Debug)]
struct Model {
    now: OffsetDateTime,
    t: Vec<MTenant>,
    tokens: Vec<MToken>,
    /// Audit events the current step should append, per tenant.
    audit: [Vec<ExpEvent>; 2],
    /// Invitation mail the current call should send: (tenant, user).
    mail: Vec<(usize, UserId)>,
}

#[derive(Debug)]
enum ListErr {
    Rule(CoreError),
    Query(QueryError),
}

fn is_admin(u: &User) -> bool {
    u.role == Role::Admin && u.status == Status::Active
}

/// [CRM access (D5)](tenantry_core::Rule::CrmAccess), [current access (D6)](tenantry_core::Rule::CurrentAccess): CRM access now.
fn crm_now(u: &User) -> bool {
    u.status == Status::Active && (u.role == Role::Admin || u.crm_access)
}

/// Unicode general category Cf (format characters), from the Unicode Character Database
/// (`DerivedGeneralCategory.txt`, Unicode 15.1/16.0), typed here independently of the core.
fn is_format(c: char) -> bool {
    const CF: [(u32, u32); 21] = [
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
    let c = u32::from(c);
    CF.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// [role templates (D12)](tenantry_core::Rule::RoleTemplates), [names (D22)](tenantry_core::Rule::Names) name rules, independently of `TemplateName::parse` and `TenantName::parse`:
/// counted after trimming surrounding white space, 1..=`max` characters, no control (Cc)
/// or format (Cf) character. Choice (the service's documented one): a refused character is
/// reported before the length, with its 0-based position among the characters as given.
fn check_name(input: &str, max: usize) -> Result<String, TemplateNameError> {
    let lead = input.chars().take_while(|c| c.is_whitespace()).count();
    let trimmed = input.trim();
    if let Some((i, c)) = trimmed
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || is_format(*c))
    {
        return Err(TemplateNameError::ForbiddenCharacter {
            character: c,
            position: lead + i,
        });
    }
    let len = trimmed.chars().count();
    if len == 0 {
        Err(TemplateNameError::Empty)
    } else if len > max {
        Err(TemplateNameError::TooLong { len, max })
    } else {
        Ok(trimmed.to_owned())
    }
}

/// [audit log (D13)](tenantry_core::Rule::AuditLog): how the model and the service render one recorded change. `Value::Users` lists are
/// compared as sets (their order is not a rule).
fn change_text(c: &FieldChange) -> String {
    let norm = |v: &Value| match v {
        Value::Users(ids) => {
            let mut ids = ids.clone();
            ids.sort();
            Value::Users(ids)
        }
        other => other.clone(),
    };
    format!(
        "{:?}",
        FieldChange {
            field: c.field,
            before: norm(&c.before),
            after: norm(&c.after),
        }
    )
}

/// [audit log (D13)](tenantry_core::Rule::AuditLog): a change of `field` from `before` to `after`, as [`change_text`] renders it.
fn change_of(field: Field, before: Value, after: Value) -> String {
    change_text(&FieldChange {
        field,
        before,
        after,
    })
}

fn user_fields(before: &User, after: &User) -> Vec<String> {
    let mut out = Vec::new();
    if before.email.as_str() != after.email.as_str() {
        out.push(format!("{:?}", Field::Email));
    }
    if before.role != after.role {
        out.push(format!("{:?}", Field::Role));
    }
    if before.status != after.status {
        out.push(format!("{:?}", Field::Status));
    }
    if before.template_id != after.template_id {
        out.push(format!("{:?}", Field::Template));
    }
    if before.crm_access != after.crm_access {
        out.push(format!("{:?}", Field::CrmAccess));
    }
    if before.grants != after.grants {
        out.push(change_of(
            Field::Grants,
            Value::Permissions(before.grants),
            Value::Permissions(after.grants),
        ));
    }
    out.sort();
    out
}

impl Model {
    fn user(&self, t: usize, id: UserId) -> Option<&User> {
        self.t[t].users.get(&id)
    }

    fn template_perms(&self, t: usize, u: &User) -> Permissions {
        u.template_id
            .and_then(|id| self.t[t].templates.get(&id))
            .map_or(Permissions::empty(), |x| x.permissions)
    }

    /// [roles (D1)](tenantry_core::Rule::Roles), [current access (D6)](tenantry_core::Rule::CurrentAccess): what the user would hold if active.
    fn potential(&self, t: usize, u: &User) -> Permissions {
        match u.role {
            Role::Admin => Permissions::all(),
            Role::User => u.grants | self.template_perms(t, u),
        }
    }

    /// [current access (D6)](tenantry_core::Rule::CurrentAccess): what the user holds now.
    fn holds(&self, t: usize, u: &User) -> Permissions {
        if u.status == Status::Active {
            self.potential(t, u)
        } else {
            Permissions::empty()
        }
    }

    fn active_admins(&self, t: usize) -> usize {
        self.t[t].users.values().filter(|u| is_admin(u)).count()
    }

    fn seats(&self, t: usize) -> SeatUsage {
        let used = u32::try_from(self.t[t].users.len()).unwrap();
        let limit = self.t[t].limit;
        SeatUsage {
            used,
            limit,
            remaining: limit.map(|l| l.saturating_sub(used)),
            at_limit: limit.is_some_and(|l| used >= l),
        }
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority): the operation needs `users:<action>`.
    fn need(&self, t: usize, actor: &User, action: Action) -> Result<(), CoreError> {
        if self
            .holds(t, actor)
            .contains(Permission::new(Category::Users, action).flag())
        {
            Ok(())
        } else {
            Err(not_allowed(action))
        }
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority): no granting what the actor does not hold itself.
    fn check_gain(
        &self,
        t: usize,
        actor: &User,
        gained: Permissions,
        crm_gained: bool,
    ) -> Result<(), CoreError> {
        let missing = gained - self.holds(t, actor);
        let crm = crm_gained && !crm_now(actor);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::Escalation { missing, crm })
        }
    }

    fn success(&mut self, t: usize, actor: ActorRef, action: AuditAction, target: AuditTarget) {
        self.detailed(t, actor, action, target, Vec::new());
    }

    fn detailed(
        &mut self,
        t: usize,
        actor: ActorRef,
        action: AuditAction,
        target: AuditTarget,
        detail: Vec<String>,
    ) {
        self.audit[t].push(ExpEvent {
            actor,
            action,
            target,
            refused: None,
            detail,
        });
    }

    /// [audit log (D13)](tenantry_core::Rule::AuditLog): a refused attempt by an actor of the tenant is audited.
    fn refuse(
        &mut self,
        t: usize,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        e: &CoreError,
    ) {
        self.refuse_with(t, actor, action, target, e, Vec::new());
    }

    /// As `refuse`, recording what the attempt tried (`detail`, rendered by `change_of`).
    fn refuse_with(
        &mut self,
        t: usize,
        actor: UserId,
        action: AuditAction,
        target: AuditTarget,
        e: &CoreError,
        detail: Vec<String>,
    ) {
        if self.t[t].users.contains_key(&actor) {
            self.audit[t].push(ExpEvent {
                actor: ActorRef::User(actor),
                action,
                target,
                refused: Some(e.rule()),
                detail,
            });
        }
    }

    /// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess): a non-admin manages only users whose access — what they hold now and what they
    /// would hold once active, CRM included — is within its own; the refusal names the
    /// excess. Admins are not limited.
    fn check_within(&self, t: usize, actor: &User, target: &User) -> Result<(), CoreError> {
        if is_admin(actor) {
            return Ok(());
        }
        let missing = (self.potential(t, target) | self.holds(t, target)) - self.holds(t, actor);
        let crm = (target.crm_access || target.role == Role::Admin) && !crm_now(actor);
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::BeyondOwnAccess { missing, crm })
        }
    }

    /// [within own access (D21)](tenantry_core::Rule::WithinOwnAccess) for the users of template `id` (a non-admin changing their template's
    /// permissions, or detaching or reassigning them): the refusal names everything any of
    /// them holds beyond the actor.
    fn check_all_within(&self, t: usize, actor: &User, id: TemplateId) -> Result<(), CoreError> {
        let (mut missing, mut crm) = (Permissions::empty(), false);
        for u in self.t[t]
            .users
            .values()
            .filter(|u| u.template_id == Some(id))
        {
            if let Err(CoreError::BeyondOwnAccess { missing: m, crm: c }) =
                self.check_within(t, actor, u)
            {
                missing |= m;
                crm |= c;
            }
        }
        if missing.is_empty() && !crm {
            Ok(())
        } else {
            Err(CoreError::BeyondOwnAccess { missing, crm })
        }
    }

    /// [audit log (D13)](tenantry_core::Rule::AuditLog) (template edits and deletions): the users referencing template `from` whose
    /// access, now or once active, differs when it gives `to` instead of `from`'s
    /// permissions; admins hold everything either way.
    fn changed_users(
        &self,
        t: usize,
        from: TemplateId,
        before: Permissions,
        to: Permissions,
    ) -> Vec<String> {
        let ids: Vec<UserId> = self.t[t]
            .users
            .values()
            .filter(|u| {
                u.template_id == Some(from)
                    && u.role == Role::User
                    && (u.grants | before) != (u.grants | to)
            })
            .map(|u| u.id)
            .collect();
        if ids.is_empty() {
            // Choice: no entry when nobody's access changed.
            Vec::new()
        } else {
            vec![change_of(
                Field::ChangedUsers,
                Value::None,
                Value::Users(ids),
            )]
        }
    }

    /// [invitations (D10)](tenantry_core::Rule::Invitations): every pending token of the user dies.
    fn revoke(&mut self, user: UserId) {
        for tok in &mut self.tokens {
            if tok.user == user && tok.state == TokState::Pending {
                tok.state = TokState::Revoked;
            }
        }
    }

    fn who(&self, t: usize, who: Who) -> UserId {
        let pick = |list: &Vec<UserId>, i: usize| list[i % list.len()];
        match who {
            Who::First => self.t[t].ever[0],
            Who::Last => *self.t[t].ever.last().unwrap(),
            Who::Slot(i) => pick(&self.t[t].ever, i),
            Who::Other(i) => pick(&self.t[1 - t].ever, i),
            Who::Active(i) => {
                self.pick_user(t, i, |u| u.status == Status::Active && u.role == Role::User)
            }
            Who::Manager(action, i) => {
                let managers = self.pick_user(t, i, |u| {
                    u.role == Role::User && self.need(t, u, action).is_ok()
                });
                if managers == self.t[t].ever[0] {
                    self.who(t, Who::Active(i))
                } else {
                    managers
                }
            }
            Who::Inactive(i) => self.pick_user(t, i, |u| u.status != Status::Active),
            Who::Suspended(i) => self.pick_user(t, i, |u| u.status == Status::Suspended),
            Who::Ghost => ghost_user(),
        }
    }

    /// The `i`-th (cyclically) user of the tenant that passes `filter`, else the first admin.
    fn pick_user(&self, t: usize, i: usize, filter: impl Fn(&User) -> bool) -> UserId {
        let ids: Vec<UserId> = self.t[t]
            .ever
            .iter()
            .copied()
            .filter(|id| self.user(t, *id).is_some_and(&filter))
            .collect();
        if ids.is_empty() {
            self.t[t].ever[0]
        } else {
            ids[i % ids.len()]
        }
    }

    fn tpl(&self, t: usize, tpl: Tpl) -> TemplateId {
        let pick = |list: &Vec<TemplateId>, i: usize| {
            if list.is_empty() {
                ghost_template()
            } else {
                list[i % list.len()]
            }
        };
        match tpl {
            Tpl::Live(i) => pick(&self.t[t].templates.keys().copied().collect(), i),
            Tpl::Slot(i) => pick(&self.t[t].ever_templates, i),
            Tpl::Last => pick(
                &self.t[t].ever_templates,
                self.t[t].ever_templates.len().saturating_sub(1),
            ),
            Tpl::Other(i) => pick(&self.t[1 - t].ever_templates, i),
            Tpl::Ghost => ghost_template(),
        }
    }

    fn known(&self, id: UserId) -> bool {
        self.t.iter().any(|t| t.ever.contains(&id))
    }

    // -------------------------------------------------------------------------- use cases

    fn add_tenant(&mut self, id: TenantId, limit: Option<u32>, admin: UserId, email: Email) {
        let user = User {
            id: admin,
            tenant_id: id,
            email,
            role: Role::Admin,
            status: Status::Active,
            template_id: None,
            crm_access: true,
            grants: Permissions::empty(),
            created_at: self.now,
            last_login: None,
            invite_expires_at: None,
        };
        self.t.push(MTenant {
            id,
            limit,
            users: BTreeMap::from([(admin, user)]),
            ever: vec![admin],
            resends: HashMap::new(),
            templates: BTreeMap::new(),
            ever_templates: Vec::new(),
            tombstones: HashMap::new(),
        });
        let t = self.t.len() - 1;
        self.success(
            t,
            ActorRef::System,
            AuditAction::TenantCreated,
            AuditTarget::Tenant,
        );
        self.success(
            t,
            ActorRef::System,
            AuditAction::UserInvited,
            AuditTarget::User(admin),
        );
    }

    /// [seat limit (D9)](tenantry_core::Rule::SeatLimit): the billing side sets the limit; it may go below usage.
    fn set_limit(&mut self, t: usize, limit: Option<u32>) -> SeatUsage {
        if self.t[t].limit != limit {
            self.t[t].limit = limit;
            self.success(
                t,
                ActorRef::System,
                AuditAction::UserLimitChanged,
                AuditTarget::Tenant,
            );
        }
        self.seats(t)
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority) checks of an invite that do not depend on the address.
    fn invite_authority(
        &self,
        t: usize,
        a: &User,
        role: Role,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    ) -> Result<(), CoreError> {
        self.need(t, a, Action::Create)?;
        if role == Role::Admin && !is_admin(a) {
            return Err(CoreError::AdminOnly);
        }
        let tpl_perms = match template {
            None => Permissions::empty(),
            Some(id) => match self.t[t].templates.get(&id) {
                Some(x) => x.permissions,
                None => return Err(CoreError::TemplateNotFound),
            },
        };
        let potential = match role {
            Role::Admin => Permissions::all(),
            Role::User => grants | tpl_perms,
        };
        self.check_gain(t, a, potential, crm || role == Role::Admin)
    }

    fn taken(&self, t: usize, key: &str, except: Option<UserId>) -> bool {
        self.t[t]
            .users
            .values()
            .any(|u| Some(u.id) != except && key_of(u.email.as_str()) == key)
    }

    /// Adds an invited user ([seat limit (D9)](tenantry_core::Rule::SeatLimit) checked by the caller) and expects its mail.
    #[allow(clippy::too_many_arguments)]
    fn add_invited(
        &mut self,
        t: usize,
        actor: UserId,
        id: UserId,
        email: Email,
        role: Role,
        template: Option<TemplateId>,
        crm: bool,
        grants: Permissions,
    ) -> User {
        let user = User {
            id,
            tenant_id: self.t[t].id,
            email,
            role,
            status: Status::Invited,
            template_id: template,
            // D5: admins always have CRM access.
            crm_access: crm || role == Role::Admin,
            // Choice: an admin's direct grants are stored empty (D1 makes them moot).
            grants: if role == Role::Admin {
                Permissions::empty()
            } else {
                grants
            },
            created_at: self.now,
            last_login: None,
            invite_expires_at: Some(self.now + TTL),
        };
        self.t[t].users.insert(id, user.clone());
        self.t[t].ever.push(id);
        self.mail.push((t, id));
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::UserInvited,
            AuditTarget::User(id),
        );
        user
    }

    fn seat_free(&self, t: usize) -> Result<(), CoreError> {
        let used = u32::try_from(self.t[t].users.len()).unwrap();
        match self.t[t].limit {
            Some(limit) if used >= limit => Err(CoreError::SeatLimitReached { used, limit }),
            _ => Ok(()),
        }
    }

    fn invite(
        &mut self,
        t: usize,
        actor: UserId,
        req: &InviteRequest,
        new_id: Option<UserId>,
    ) -> Result<User, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Create));
        };
        let decided = self
            .invite_authority(t, &a, req.role, req.template_id, req.crm_access, req.grants)
            .and_then(|()| {
                if self.taken(t, &key_of(req.email.as_str()), None) {
                    return Err(CoreError::EmailTaken {
                        email: req.email.as_str().to_owned(),
                    });
                }
                self.seat_free(t)
            });
        if let Err(e) = decided {
            // D13: the refusal records the address that was tried.
            let tried = vec![change_of(
                Field::Email,
                Value::None,
                Value::Text(req.email.as_str().to_owned()),
            )];
            self.refuse_with(
                t,
                actor,
                AuditAction::UserInvited,
                AuditTarget::Tenant,
                &e,
                tried,
            );
            return Err(e);
        }
        Ok(self.add_invited(
            t,
            actor,
            new_id.unwrap_or_else(ghost_user),
            req.email.clone(),
            req.role,
            req.template_id,
            req.crm_access,
            req.grants,
        ))
    }

    /// [bulk invite (D19)](tenantry_core::Rule::BulkInvite): `ids[i]` is the id the service gave item `i`, if it invited it.
    fn invite_many(
        &mut self,
        t: usize,
        actor: UserId,
        req: &BulkInvite,
        ids: &[Option<UserId>],
    ) -> Result<Vec<BulkItem>, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Create));
        };
        let role = req.role.unwrap_or(Role::User);
        if let Err(e) =
            self.invite_authority(t, &a, role, req.template_id, req.crm_access, req.grants)
        {
            self.refuse(t, actor, AuditAction::UserInvited, AuditTarget::Tenant, &e);
            return Err(e);
        }
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for (i, input) in req.emails.iter().enumerate() {
            let outcome = match Email::parse(input) {
                Err(reason) => BulkOutcome::Invalid { reason },
                Ok(email) => {
                    let key = key_of(input);
                    if self.taken(t, &key, None) || !seen.insert(key) {
                        BulkOutcome::Duplicate
                    } else {
                        match self.seat_free(t) {
                            Err(CoreError::SeatLimitReached { used, limit }) => {
                                BulkOutcome::LimitReached { used, limit }
                            }
                            _ => {
                                let id = ids.get(i).copied().flatten().unwrap_or_else(ghost_user);
                                self.add_invited(
                                    t,
                                    actor,
                                    id,
                                    email,
                                    role,
                                    req.template_id,
                                    req.crm_access,
                                    req.grants,
                                );
                                BulkOutcome::Invited { user_id: id }
                            }
                        }
                    }
                }
            };
            items.push(BulkItem {
                input: input.clone(),
                outcome,
            });
        }
        Ok(items)
    }

    fn resend(&mut self, t: usize, actor: UserId, target: UserId) -> Result<(), CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Create));
        };
        let decided = (|| {
            // D7 before D15: an actor without the permission learns nothing about ids.
            self.need(t, &a, Action::Create)?;
            let Some(u) = self.user(t, target) else {
                return Err(CoreError::UserNotFound);
            };
            if u.role == Role::Admin && !is_admin(&a) {
                return Err(CoreError::AdminOnly);
            }
            // D21. Choice: before D10's own checks.
            self.check_within(t, &a, u)?;
            if u.status != Status::Invited {
                return Err(CoreError::NotInvited { status: u.status });
            }
            let since = self.now - RESEND_WINDOW;
            let mut recent: Vec<OffsetDateTime> = self.t[t]
                .resends
                .get(&target)
                .map(|v| v.iter().copied().filter(|r| *r > since).collect())
                .unwrap_or_default();
            recent.sort();
            if recent.len() >= RESEND_LIMIT {
                return Err(CoreError::ResendRateLimited {
                    retry_at: recent[recent.len() - RESEND_LIMIT] + RESEND_WINDOW,
                });
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::InvitationResent,
                AuditTarget::User(target),
                &e,
            );
            return Err(e);
        }
        self.revoke(target);
        self.t[t].resends.entry(target).or_default().push(self.now);
        let now = self.now;
        if let Some(u) = self.t[t].users.get_mut(&target) {
            u.invite_expires_at = Some(now + TTL);
        }
        self.mail.push((t, target));
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::InvitationResent,
            AuditTarget::User(target),
        );
        Ok(())
    }

    /// [invitations (D10)](tenantry_core::Rule::Invitations), [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts). A wrong address on a live token is a failed attempt, counted (and audited
    /// as a refusal by the host) even though the call fails; the fifth kills the token.
    fn accept(&mut self, token: &str, signup: &str) -> Result<User, CoreError> {
        let signup_key = match Email::parse(signup) {
            Ok(_) => key_of(signup),
            Err(e) => return Err(CoreError::InvalidEmail(e)),
        };
        let Some(ti) = self.tokens.iter().position(|x| x.text == token) else {
            return Err(CoreError::InvalidInvitation);
        };
        let tok = self.tokens[ti].clone();
        if tok.state == TokState::Pending && self.now == tok.expires_at {
            // D10: exactly at the expiry the token is already refused (coverage statistic).
            note("~boundary accept_invitation at the exact expiry".to_owned());
        }
        if tok.state != TokState::Pending
            || self.now >= tok.expires_at
            || tok.failed >= MAX_ATTEMPTS
        {
            return Err(CoreError::InvalidInvitation);
        }
        let Some(u) = self.user(tok.t, tok.user).cloned() else {
            return Err(CoreError::InvalidInvitation);
        };
        if u.status != Status::Invited {
            return Err(CoreError::InvalidInvitation);
        }
        if key_of(u.email.as_str()) != signup_key {
            let failed = tok.failed + 1;
            self.tokens[ti].failed = failed;
            // Choice (the service's rendering): the count, and the token's end.
            let mut detail = vec![change_of(
                Field::FailedAttempts,
                Value::Number(u64::from(tok.failed)),
                Value::Number(u64::from(failed)),
            )];
            if failed >= MAX_ATTEMPTS {
                self.tokens[ti].state = TokState::Revoked;
                detail.push(change_of(
                    Field::InvitationState,
                    Value::Text("pending".to_owned()),
                    Value::Text("revoked".to_owned()),
                ));
                note(
                    "~boundary accept_invitation: the fifth wrong address kills the token"
                        .to_owned(),
                );
            }
            self.audit[tok.t].push(ExpEvent {
                actor: ActorRef::System,
                action: AuditAction::AcceptAttemptFailed,
                target: AuditTarget::User(u.id),
                refused: Some(Rule::AcceptAttempts),
                detail,
            });
            return Err(CoreError::InvitationEmailMismatch {
                attempts_left: MAX_ATTEMPTS - failed,
            });
        }
        self.revoke(u.id);
        self.tokens[ti].state = TokState::Used;
        let accepted = User {
            status: Status::Active,
            last_login: Some(self.now),
            invite_expires_at: None,
            ..u
        };
        self.t[tok.t].users.insert(accepted.id, accepted.clone());
        self.success(
            tok.t,
            ActorRef::User(accepted.id),
            AuditAction::InvitationAccepted,
            AuditTarget::User(accepted.id),
        );
        Ok(accepted)
    }

    fn sign_in(&mut self, t: usize, id: UserId) -> Result<User, CoreError> {
        let Some(u) = self.user(t, id).cloned() else {
            return Err(CoreError::UserNotFound);
        };
        if u.status != Status::Active {
            return Err(CoreError::SignInRefused { status: u.status });
        }
        let u = User {
            last_login: Some(self.now),
            ..u
        };
        self.t[t].users.insert(id, u.clone());
        self.success(
            t,
            ActorRef::User(id),
            AuditAction::SignedIn,
            AuditTarget::User(id),
        );
        Ok(u)
    }

    fn edit_decide(
        &self,
        t: usize,
        a: &User,
        target: UserId,
        e: &UserEdit,
    ) -> Result<(User, User), CoreError> {
        // D7 before D15: an actor without the permission learns nothing about ids.
        self.need(t, a, Action::Edit)?;
        let Some(before) = self.user(t, target).cloned() else {
            return Err(CoreError::UserNotFound);
        };
        let mut after = before.clone();
        if let Some(email) = &e.email {
            after.email = email.clone();
        }
        if let Some(role) = e.role {
            after.role = role;
        }
        if let Some(to) = e.status {
            // D2: an edit only moves active <-> suspended (or leaves the status alone).
            let ok = to == before.status
                || matches!(
                    (before.status, to),
                    (Status::Active, Status::Suspended) | (Status::Suspended, Status::Active)
                );
            if !ok {
                return Err(CoreError::InvalidTransition {
                    from: before.status,
                    to,
                });
            }
            after.status = to;
        }
        if let Some(tpl) = e.template_id {
            after.template_id = tpl;
        }
        if let Some(id) = after.template_id
            && !self.t[t].templates.contains_key(&id)
        {
            return Err(CoreError::TemplateNotFound);
        }
        if let Some(g) = e.grants {
            after.grants = g;
        }
        if let Some(crm) = e.crm_access {
            // D5: an admin's CRM access cannot be turned off.
            if !crm && after.role == Role::Admin {
                return Err(CoreError::AdminCrmRequired);
            }
            after.crm_access = crm;
        }
        if after.role == Role::Admin {
            // D5: promoting turns CRM access on; demoting keeps it.
            after.crm_access = true;
        }
        if !is_admin(a) {
            // D7: a non-admin may not edit or create an admin, nor change its own access.
            if before.role == Role::Admin || after.role == Role::Admin {
                return Err(CoreError::AdminOnly);
            }
            let access_changed = before.role != after.role
                || before.status != after.status
                || before.template_id != after.template_id
                || before.grants != after.grants
                || before.crm_access != after.crm_access;
            if before.id == a.id && access_changed {
                return Err(CoreError::SelfChange);
            }
            // D21: whatever the edit (the address alone too), only within the actor's own
            // access. Choice: after the admin and self-change checks.
            self.check_within(t, a, &before)?;
        }
        // D7: what the target may hold (now, or once reactivated) must not grow beyond
        // what the actor holds.
        let gained = (self.potential(t, &after) - self.potential(t, &before))
            | (self.holds(t, &after) - self.holds(t, &before));
        let crm_gained =
            (after.crm_access && !before.crm_access) || (crm_now(&after) && !crm_now(&before));
        self.check_gain(t, a, gained, crm_gained)?;
        // D8.
        if is_admin(&before) && !is_admin(&after) && self.active_admins(t) <= 1 {
            return Err(CoreError::LastAdmin);
        }
        // D3.
        let key = key_of(after.email.as_str());
        if key != key_of(before.email.as_str()) && self.taken(t, &key, Some(before.id)) {
            return Err(CoreError::EmailTaken {
                email: after.email.as_str().to_owned(),
            });
        }
        Ok((before, after))
    }

    fn edit(
        &mut self,
        t: usize,
        actor: UserId,
        target: UserId,
        e: &UserEdit,
    ) -> Result<User, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Edit));
        };
        let (before, mut after) = match self.edit_decide(t, &a, target, e) {
            Ok(v) => v,
            Err(err) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::UserEdited,
                    AuditTarget::User(target),
                    &err,
                );
                return Err(err);
            }
        };
        let detail = user_fields(&before, &after);
        if detail.is_empty() {
            return Ok(before);
        }
        if key_of(before.email.as_str()) != key_of(after.email.as_str())
            && before.status == Status::Invited
        {
            // D10: a new address invalidates the tokens; the user stays invited without a
            // usable link (not an expired invitation, D20) until the invitation is resent.
            self.revoke(target);
            after.invite_expires_at = None;
        }
        self.t[t].users.insert(target, after.clone());
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::UserEdited,
            AuditTarget::User(target),
            detail,
        );
        Ok(after)
    }

    /// [permanent delete (D11)](tenantry_core::Rule::PermanentDelete): the row goes, its tokens die, its seat is freed, a tombstone remains.
    fn remove(&mut self, t: usize, id: UserId, by: UserId) -> Tombstone {
        let u = self.t[t].users.remove(&id).unwrap();
        self.revoke(id);
        let tomb = Tombstone {
            user_id: id,
            tenant_id: self.t[t].id,
            email: u.email,
            deleted_at: self.now,
            deleted_by: ActorRef::User(by),
        };
        self.t[t].tombstones.insert(id, tomb.clone());
        self.success(
            t,
            ActorRef::User(by),
            AuditAction::UserDeleted,
            AuditTarget::User(id),
        );
        tomb
    }

    fn delete(&mut self, t: usize, actor: UserId, target: UserId) -> Result<Tombstone, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Delete));
        };
        let decided = (|| {
            self.need(t, &a, Action::Delete)?;
            let Some(u) = self.user(t, target) else {
                return Err(CoreError::UserNotFound);
            };
            if u.role == Role::Admin && !is_admin(&a) {
                return Err(CoreError::AdminOnly);
            }
            if target == actor && !is_admin(&a) {
                // D7: a non-admin manager may not remove itself.
                return Err(CoreError::SelfChange);
            }
            // D21.
            self.check_within(t, &a, u)?;
            if is_admin(u) && self.active_admins(t) <= 1 {
                return Err(CoreError::LastAdmin);
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::UserDeleted,
                AuditTarget::User(target),
                &e,
            );
            return Err(e);
        }
        Ok(self.remove(t, target, actor))
    }

    /// [expired invitations (D20)](tenantry_core::Rule::ExpiredInvitations): every expired invitation the actor may delete goes in one call.
    fn purge(&mut self, t: usize, actor: UserId) -> Result<Vec<UserId>, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Delete));
        };
        if let Err(e) = self.need(t, &a, Action::Delete) {
            self.refuse(t, actor, AuditAction::UserDeleted, AuditTarget::Tenant, &e);
            return Err(e);
        }
        let now = self.now;
        let ids: Vec<UserId> = self.t[t]
            .users
            .values()
            .filter(|u| {
                u.status == Status::Invited
                    && u.invite_expires_at.is_some_and(|x| x <= now)
                    && (u.role != Role::Admin || is_admin(&a))
                    // D21: a non-admin's purge skips invitations beyond its own access.
                    && self.check_within(t, &a, u).is_ok()
            })
            .map(|u| u.id)
            .collect();
        for id in &ids {
            self.remove(t, *id, actor);
        }
        Ok(ids)
    }

    fn create_template(
        &mut self,
        t: usize,
        actor: UserId,
        name: &str,
        perms: Permissions,
        new_id: Option<TemplateId>,
    ) -> Result<RoleTemplate, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Manage));
        };
        let display = match check_name(name, 64) {
            Ok(d) => d,
            Err(e) => {
                // D7 before the name's own rule.
                let e = match self.need(t, &a, Action::Manage) {
                    Err(n) => n,
                    Ok(()) => CoreError::InvalidTemplateName(e),
                };
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateCreated,
                    AuditTarget::Tenant,
                    &e,
                );
                return Err(e);
            }
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            self.check_gain(t, &a, perms, false)?;
            let key = display.to_lowercase();
            if self.t[t]
                .templates
                .values()
                .any(|x| x.name.as_str().to_lowercase() == key)
            {
                return Err(CoreError::TemplateNameTaken {
                    name: display.clone(),
                });
            }
            Ok(())
        })();
        if let Err(e) = decided {
            self.refuse(
                t,
                actor,
                AuditAction::TemplateCreated,
                AuditTarget::Tenant,
                &e,
            );
            return Err(e);
        }
        let id = new_id.unwrap_or_else(ghost_template);
        let tpl = RoleTemplate {
            id,
            tenant_id: self.t[t].id,
            name: TemplateName::parse(&display).unwrap(),
            permissions: perms,
            created_at: self.now,
            updated_at: self.now,
        };
        self.t[t].templates.insert(id, tpl.clone());
        self.t[t].ever_templates.push(id);
        self.success(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateCreated,
            AuditTarget::Template(id),
        );
        Ok(tpl)
    }

    fn edit_template(
        &mut self,
        t: usize,
        actor: UserId,
        id: TemplateId,
        edit: &TemplateEdit,
    ) -> Result<RoleTemplate, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Manage));
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            let Some(before) = self.t[t].templates.get(&id).cloned() else {
                return Err(CoreError::TemplateNotFound);
            };
            self.need(t, &a, Action::Manage)?;
            let mut after = before.clone();
            if let Some(name) = &edit.name {
                let key = name.as_str().to_lowercase();
                if key != before.name.as_str().to_lowercase()
                    && self.t[t]
                        .templates
                        .values()
                        .any(|x| x.id != id && x.name.as_str().to_lowercase() == key)
                {
                    return Err(CoreError::TemplateNameTaken {
                        name: name.as_str().to_owned(),
                    });
                }
                after.name = name.clone();
            }
            if let Some(p) = edit.permissions {
                after.permissions = p;
            }
            // D7: a non-admin may not change its own permissions through its template.
            if !is_admin(&a) && a.template_id == Some(id) && after.permissions != before.permissions
            {
                return Err(CoreError::SelfChange);
            }
            self.check_gain(t, &a, after.permissions - before.permissions, false)?;
            if after.permissions != before.permissions {
                self.check_all_within(t, &a, id)?;
            }
            Ok((before, after))
        })();
        let (before, mut after) = match decided {
            Ok(v) => v,
            Err(e) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateEdited,
                    AuditTarget::Template(id),
                    &e,
                );
                return Err(e);
            }
        };
        let mut detail = Vec::new();
        if before.name.as_str() != after.name.as_str() {
            detail.push(format!("{:?}", Field::Name));
        }
        if before.permissions != after.permissions {
            detail.push(change_of(
                Field::Permissions,
                Value::Permissions(before.permissions),
                Value::Permissions(after.permissions),
            ));
            // D13: the users whose access the edit changes.
            detail.extend(self.changed_users(t, id, before.permissions, after.permissions));
        }
        if detail.is_empty() {
            return Ok(before);
        }
        detail.sort();
        after.updated_at = self.now;
        self.t[t].templates.insert(id, after.clone());
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateEdited,
            AuditTarget::Template(id),
            detail,
        );
        Ok(after)
    }

    fn delete_template(
        &mut self,
        t: usize,
        actor: UserId,
        id: TemplateId,
        mode: TemplateDeletion,
    ) -> Result<u64, CoreError> {
        let Some(a) = self.user(t, actor).cloned() else {
            return Err(not_allowed(Action::Manage));
        };
        let decided = (|| {
            self.need(t, &a, Action::Manage)?;
            let Some(tpl) = self.t[t].templates.get(&id).cloned() else {
                return Err(CoreError::TemplateNotFound);
            };
            let users = self.t[t]
                .users
                .values()
                .filter(|u| u.template_id == Some(id))
                .count() as u64;
            self.need(t, &a, Action::Manage)?;
            let to = match mode {
                TemplateDeletion::Refuse if users > 0 => {
                    return Err(CoreError::TemplateInUse { users });
                }
                TemplateDeletion::Reassign(to) => match self.t[t].templates.get(&to) {
                    Some(x) if to != id => Some(x.clone()),
                    _ => return Err(CoreError::TemplateNotFound),
                },
                _ => None,
            };
            if users > 0 && !is_admin(&a) {
                if a.template_id == Some(id) {
                    return Err(CoreError::SelfChange);
                }
                if let Some(to) = &to {
                    self.check_gain(t, &a, to.permissions - tpl.permissions, false)?;
                }
                self.check_all_within(t, &a, id)?;
            }
            Ok((users, to))
        })();
        let (users, to) = match decided {
            Ok(v) => v,
            Err(e) => {
                self.refuse(
                    t,
                    actor,
                    AuditAction::TemplateDeleted,
                    AuditTarget::Template(id),
                    &e,
                );
                return Err(e);
            }
        };
        let mut detail = vec![format!("{:?}", Field::Name)];
        if users > 0 {
            // D12, D13: how many users moved, and which of them now hold something else.
            let from = self.t[t].templates[&id].permissions;
            detail.push(change_of(
                Field::AffectedUsers,
                Value::Number(users),
                Value::Number(0),
            ));
            detail.push(format!("{:?}", Field::Template));
            let to_perms = to.as_ref().map_or(Permissions::empty(), |x| x.permissions);
            detail.extend(self.changed_users(t, id, from, to_perms));
        }
        detail.sort();
        let to = to.map(|x| x.id);
        for u in self.t[t].users.values_mut() {
            if u.template_id == Some(id) {
                u.template_id = to;
            }
        }
        self.t[t].templates.remove(&id);
        self.detailed(
            t,
            ActorRef::User(actor),
            AuditAction::TemplateDeleted,
            AuditTarget::Template(id),
            detail,
        );
        Ok(users)
    }

    /// [management authority (D7)](tenantry_core::Rule::ManagementAuthority), [listing (D18)](tenantry_core::Rule::Listing): the user table as a viewer may read it.
    fn list(&self, t: usize, viewer: ActorRef, q: &UserQuery) -> Result<Vec<User>, ListErr> {
        if q.limit == 0 || q.limit > 500 {
            return Err(ListErr::Query(QueryError::LimitOutOfRange {
                limit: q.limit,
            }));
        }
        if let ActorRef::User(id) = viewer {
            let ok = self
                .user(t, id)
                .is_some_and(|v| self.need(t, v, Action::View).is_ok());
            if !ok {
                return Err(ListErr::Rule(not_allowed(Action::View)));
            }
        }
        let mut rows: Vec<User> = self.t[t]
            .users
            .values()
            .filter(|u| {
                q.status.is_none_or(|s| u.status == s)
                    && q.role.is_none_or(|r| u.role == r)
                    && q.template_id.is_none_or(|x| u.template_id == Some(x))
                    && q.crm_access.is_none_or(|c| u.crm_access == c)
                    && q.email_contains.as_deref().is_none_or(|needle| {
                        key_of(u.email.as_str()).contains(&needle.to_ascii_lowercase())
                    })
                    && q.inactive_since
                        .is_none_or(|s| u.last_login.is_none_or(|l| l < s))
                    && q.invitation_expired_at.is_none_or(|at| {
                        u.status == Status::Invited && u.invite_expires_at.is_some_and(|x| x <= at)
                    })
            })
            .cloned()
            .collect();
        match q.sort {
            SortBy::Email => rows.sort_by_key(|u| (key_of(u.email.as_str()), u.id)),
            SortBy::CreatedAt => rows.sort_by_key(|u| (u.created_at, u.id)),
            SortBy::LastLogin => rows.sort_by_key(|u| (u.last_login, u.id)),
        }
        if q.descending {
            rows.reverse();
        }
        Ok(rows)
    }

    /// [roles (D1)](tenantry_core::Rule::Roles), [CRM access (D5)](tenantry_core::Rule::CrmAccess), [current access (D6)](tenantry_core::Rule::CurrentAccess), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation): the decision `authorize` must give.
    fn decision(&self, t: usize, id: UserId, req: Request) -> Decision {
        let deny = |reason| Decision::new(reason);
        let allow = |reason| Decision::new(reason);
        let Some(u) = self.user(t, id) else {
            return deny(Reason::UnknownUser);
        };
        match u.status {
            Status::Invited => return deny(Reason::Invited),
            Status::Suspended => return deny(Reason::Suspended),
            Status::Active => {}
        }
        if u.role == Role::Admin {
            return allow(Reason::Admin);
        }
        match req {
            Request::Crm if u.crm_access => allow(Reason::CrmAccess),
            Request::Crm => deny(Reason::NoCrmAccess),
            Request::Permission(p) if u.grants.contains(p.flag()) => allow(Reason::DirectGrant),
            Request::Permission(p) => match u.template_id {
                Some(tid) if self.template_perms(t, u).contains(p.flag()) => {
                    allow(Reason::Template { template_id: tid })
                }
                _ => deny(Reason::MissingPermission { permission: p }),
            },
        }
    }
}

// ------------------------------------------------------------------------------ harness

type R<T = ()> = Result<T, String>;

thread_local! {
    /// Outcome counts, printed when `TENANTRY_MODEL_STATS` is set (to see what a run covers).
    static STATS: std::cell::RefCell<BTreeMap<String, u64>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

thread_local! {
    static ACTOR_KIND: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn note(key: String) {
    STATS.with(|s| *s.borrow_mut().entry(key).or_default() += 1);
}

fn label<T>(r: &Result<T, CoreError>) -> String {
    match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => {
            let d = format!("{e:?}");
            d.split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn show<T: Debug>(r: Result<&T, &tenantry_service::Error>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?}) [rule {:?}: {e}]", e.rule()),
    }
}

fn show_expected<T: Debug>(r: &Result<T, CoreError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?}) [rule {:?}: {e}]", e.rule()),
    }
}

/// The service's answer must be the model's: same data, or the same rule error.
fn agree<T: PartialEq + Debug>(
    what: &str,
    expected: &Result<T, CoreError>,
    actual: Result<&T, &tenantry_service::Error>,
) -> R {
    let same = match (expected, actual) {
        (Ok(e), Ok(a)) => e == a,
        (Err(e), Err(a)) => a.as_rule() == Some(e),
        _ => false,
    };
    note(format!(
        "{}: {}{}",
        what.split('(').next().unwrap_or_default(),
        label(expected),
        ACTOR_KIND.with(|k| k.borrow().clone())
    ));
    ensure!(
        same,
        "{what}: disagreement\n  model:   {}\n  service: {}",
        show_expected(expected),
        show(actual)
    );
    Ok(())
}

/// [live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the token of an accept link a call returned; the link is built from the base URL and
/// its `Debug` does not show it.
fn link_token(link: &tenantry_service::AcceptLink) -> R<String> {
    let token = link
        .token()
        .ok_or_else(|| "D26: an accept link without a token".to_owned())?;
    ensure!(
        link.expose() == format!("{BASE_URL}?token={token}"),
        "D10: the link {:?} is not built from the base URL",
        link.expose()
    );
    ensure!(
        !format!("{link:?}").contains(&token),
        "D26: the accept link's Debug shows the token"
    );
    Ok(token)
}

fn forge(token: &str) -> String {
    match token.split_once('.') {
        Some((tenant, secret)) => {
            let mut chars: Vec<char> = secret.chars().collect();
            if let Some(c) = chars.first_mut() {
                *c = if *c == 'A' { 'B' } else { 'A' };
            }
            format!("{tenant}.{}", chars.into_iter().collect::<String>())
        }
        None => format!("{token}x"),
    }
}

struct Harness {
    app: Tenantry,
    clock: ManualClock,
    mailer: InMemoryMailer,
    mail_seen: usize,
    /// Message ids the service returned, with the user each must have gone to and the token
    /// of the accept link returned with it ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets): the link mailed is the link returned).
    expect_msgs: Vec<(tenantry_core::MessageId, UserId, String)>,
    /// Accept links a bulk invite returned, by user ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)).
    expect_links: Vec<(UserId, String)>,
    audit_seen: [u64; 2],
    tids: [TenantId; 2],
    m: Model,
    /// Whether `TENANTRY_MODEL_STATS` asks for coverage statistics.
    stats: bool,
}

fn email(i: usize, v: u8) -> R<Email> {
    let text = email_text(i, v);
    let e = Email::parse(&text).map_err(|e| format!("pool address {text:?} refused: {e}"))?;
    ensure!(
        e.as_str() == text.trim(),
        "D3: {text:?} must be stored trimmed, as typed; got {:?}",
        e.as_str()
    );
    Ok(e)
}

impl Harness {
    async fn new(factory: &crate::StoreFactory, setup: &Setup) -> R<Self> {
        let store = factory().await;
        let clock = ManualClock::new(START);
        let mailer = InMemoryMailer::new();
        let app = Tenantry::builder(store)
            .mailer(mailer.clone())
            .clock(clock.clone())
            .base_url(BASE_URL)
            .policy(Policy {
                invite_ttl: TTL,
                resend_limit: u32::try_from(RESEND_LIMIT).unwrap(),
                resend_window: RESEND_WINDOW,
            })
            .build()
            .map_err(|e| format!("building the service: {e}"))?;
        let mut m = Model {
            now: START,
            t: Vec::new(),
            tokens: Vec::new(),
            audit: [Vec::new(), Vec::new()],
            mail: Vec::new(),
        };
        let mut tids = Vec::new();
        for (i, limit) in setup.limits.iter().enumerate() {
            let admin = email(0, 0)?;
            let (tid, admin_id) = app
                .create_tenant(&format!("Tenant {i}"), *limit, admin.clone())
                .await
                .map_err(|e| format!("create_tenant: {e}"))?;
            ensure!(!m.known(admin_id), "D11: id {admin_id} reused");
            m.add_tenant(tid, *limit, admin_id, admin);
            tids.push(tid);
        }
        Ok(Self {
            app,
            clock,
            mailer,
            mail_seen: 0,
            expect_msgs: Vec::new(),
            expect_links: Vec::new(),
            audit_seen: [0, 0],
            tids: [tids[0], tids[1]],
            m,
            stats: std::env::var_os("TENANTRY_MODEL_STATS").is_some(),
        })
    }

    /// Checks the mail the last call sent ([seat limit (D9)](tenantry_core::Rule::SeatLimit): none on refusal; [invitations (D10)](tenantry_core::Rule::Invitations): one per invite and
    /// resend, to the stored address) and records the tokens it carries.
    fn settle_mail(&mut self) -> R {
        let sent = self.mailer.sent();
        let new = &sent[self.mail_seen..];
        let mut got: Vec<(usize, UserId)> = Vec::new();
        for msg in new {
            let t = self
                .tids
                .iter()
                .position(|x| *x == msg.tenant_id)
                .ok_or_else(|| format!("mail for an unknown tenant: {msg:?}"))?;
            got.push((t, msg.user_id));
        }
        let mut want = std::mem::take(&mut self.m.mail);
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        ensure!(
            got_sorted == want,
            "D9/D10: invitation mail: model expected mail to {want:?}, service sent to {got_sorted:?}"
        );
        for (msg, (t, _)) in new.iter().zip(got) {
            let user = self
                .m
                .user(t, msg.user_id)
                .ok_or_else(|| format!("mail to a user the model does not have: {msg:?}"))?;
            ensure!(
                msg.to == user.email.as_str(),
                "mail to {:?}, but the user's address is {:?}",
                msg.to,
                user.email.as_str()
            );
            ensure!(
                msg.text.contains(BASE_URL),
                "D10: the link must be built from the base URL: {:?}",
                msg.text
            );
            let token = tenantry_service::token_from_link(&msg.text)
                .ok_or_else(|| format!("no token in the mail: {:?}", msg.text))?;
            ensure!(
                !self.m.tokens.iter().any(|x| x.text == token),
                "D10: a token was issued twice"
            );
            let expires_at = user
                .invite_expires_at
                .ok_or_else(|| format!("invited user without an expiry: {user:?}"))?;
            self.m.tokens.push(MToken {
                text: token,
                t,
                user: msg.user_id,
                expires_at,
                state: TokState::Pending,
                failed: 0,
            });
        }
        let token_of = |m: &tenantry_service::Message| tenantry_service::token_from_link(&m.text);
        for (id, user, token) in std::mem::take(&mut self.expect_msgs) {
            ensure!(
                new.iter().any(|m| m.id == id && m.user_id == user),
                "the returned message id {id} was not delivered to {user}"
            );
            ensure!(
                new.iter()
                    .any(|m| m.id == id && token_of(m).as_deref() == Some(token.as_str())),
                "D26: the accept link returned with message {id} is not the one mailed"
            );
        }
        for (user, token) in std::mem::take(&mut self.expect_links) {
            ensure!(
                new.iter()
                    .any(|m| m.user_id == user && token_of(m).as_deref() == Some(token.as_str())),
                "D26: the accept link a bulk invite returned for {user} is not the one mailed"
            );
        }
        self.mail_seen = sent.len();
        Ok(())
    }

    /// [seat limit (D9)](tenantry_core::Rule::SeatLimit): right after a successful invite the tenant is within its limit.
    async fn within_limit(&self, t: usize) -> R {
        let s = self
            .app
            .seat_usage(self.tids[t])
            .await
            .map_err(|e| format!("seat_usage: {e}"))?;
        ensure!(
            s.limit.is_none_or(|l| s.used <= l),
            "D9: an invite succeeded but {} seats are used of {:?}",
            s.used,
            s.limit
        );
        Ok(())
    }

    fn token_text(&self, t: usize, pick: TokenPick) -> (String, Option<UserId>) {
        let toks = &self.m.tokens;
        let nth = |i: usize| toks.get(i % toks.len().max(1));
        let (text, user) = match pick {
            TokenPick::Latest(who) => {
                let uid = self.m.who(t, who);
                match toks.iter().rev().find(|x| x.user == uid).or(toks.last()) {
                    Some(x) => (x.text.clone(), Some(x.user)),
                    None => ("garbage".to_owned(), None),
                }
            }
            TokenPick::Any(i) => match nth(i) {
                Some(x) => (x.text.clone(), Some(x.user)),
                None => ("garbage".to_owned(), None),
            },
            TokenPick::Live(i) => {
                let live: Vec<&MToken> = toks
                    .iter()
                    .filter(|x| x.state == TokState::Pending && self.m.now < x.expires_at)
                    .collect();
                match live.get(i % live.len().max(1)).copied().or_else(|| nth(i)) {
                    Some(x) => (x.text.clone(), Some(x.user)),
                    None => ("garbage".to_owned(), None),
                }
            }
            TokenPick::Forged(i) => match nth(i) {
                Some(x) => (forge(&x.text), Some(x.user)),
                None => ("garbage".to_owned(), None),
            },
            TokenPick::OtherTenant(i) => match nth(i) {
                Some(x) => {
                    let other = self.tids[1 - x.t].as_uuid().simple().to_string();
                    let secret = x.text.split_once('.').map_or("", |(_, s)| s);
                    (format!("{other}.{secret}"), Some(x.user))
                }
                None => ("garbage".to_owned(), None),
            },
            TokenPick::Garbage => ("not-a-token".to_owned(), None),
        };
        (text, user)
    }

    fn signup_text(&self, user: Option<UserId>, pick: Signup) -> String {
        let stored = user
            .and_then(|id| {
                self.m
                    .t
                    .iter()
                    .find_map(|t| t.users.get(&id).map(|u| u.email.as_str().to_owned()))
            })
            .unwrap_or_else(|| EMAILS[1].to_owned());
        match pick {
            Signup::Right => stored,
            Signup::Variant => format!(" {} ", stored.to_ascii_uppercase()),
            Signup::Wrong(i) => EMAILS[i % EMAILS.len()].to_owned(),
            Signup::Invalid(i) => BAD_EMAILS[i % BAD_EMAILS.len()].to_owned(),
        }
    }

    /// What kind of actor an id is in tenant `t`, for the coverage statistics.
    fn kind(&self, t: usize, id: UserId) -> &'static str {
        match self.m.user(t, id) {
            Some(u) if is_admin(u) => "active admin",
            Some(u) if u.status == Status::Active => "active user",
            Some(u) if u.status == Status::Invited => "invited",
            Some(_) => "suspended",
            None if self.m.t[t].tombstones.contains_key(&id) => "deleted",
            None if self.m.known(id) => "other tenant",
            None => "never existed",
        }
    }

    /// Counts who acts in `step`, for the coverage statistics.
    fn note_actor(&self, step: &Step) {
        let (op, t, actor) = match step {
            Step::Invite { t, actor, .. } => ("invite", *t, Some(*actor)),
            Step::InviteMany { t, actor, .. } => ("invite_many", *t, Some(*actor)),
            Step::Resend { t, actor, .. } => ("resend", *t, Some(*actor)),
            Step::Edit { t, actor, .. } => ("edit", *t, Some(*actor)),
            Step::Delete { t, actor, .. } => ("delete", *t, Some(*actor)),
            Step::Purge { t, actor } => ("purge", *t, Some(*actor)),
            Step::CreateTemplate { t, actor, .. } => ("create_template", *t, Some(*actor)),
            Step::EditTemplate { t, actor, .. } => ("edit_template", *t, Some(*actor)),
            Step::DeleteTemplate { t, actor, .. } => ("delete_template", *t, Some(*actor)),
            _ => ("", 0, None),
        };
        if let Some(actor) = actor {
            let id = self.m.who(t, actor);
            let kind = self.kind(t, id);
            let grants = self
                .m
                .user(t, id)
                .map_or(0, |u| u.grants.bits().count_ones());
            let kind = format!(
                " [by {kind}{}]",
                if kind == "active user" && grants > 0 {
                    " with grants"
                } else {
                    ""
                }
            );
            note(format!("~actor {op} by{kind}"));
            ACTOR_KIND.with(|k| *k.borrow_mut() = kind);
        } else {
            ACTOR_KIND.with(|k| k.borrow_mut().clear());
        }
    }

    async fn step(&mut self, step: &Step) -> R {
        if self.stats {
            self.note_actor(step);
        }
        match step {
            Step::SetLimit { t, limit } => {
                let actual = self.app.set_user_limit(self.tids[*t], *limit).await;
                let expected = Ok(self.m.set_limit(*t, *limit));
                agree("set_user_limit", &expected, actual.as_ref())?;
            }
            Step::Invite {
                t,
                actor,
                email: (ei, ev),
                role,
                template,
                crm,
                grants,
            } => {
                let actor = self.m.who(*t, *actor);
                let req = InviteRequest {
                    email: email(*ei, *ev)?,
                    role: *role,
                    template_id: template.map(|x| self.m.tpl(*t, x)),
                    crm_access: *crm,
                    grants: *grants,
                };
                let actual = self.app.invite(self.tids[*t], actor, &req).await;
                let new_id = actual.as_ref().ok().map(|i| i.user.id);
                if let Some(id) = new_id {
                    ensure!(!self.m.known(id), "D11: id {id} reused");
                }
                let expected = self.m.invite(*t, actor, &req, new_id);
                agree("invite", &expected, actual.as_ref().map(|i| &i.user))?;
                if let Ok(inv) = &actual {
                    let token = link_token(&inv.accept_link)?;
                    self.expect_msgs.push((inv.message_id, inv.user.id, token));
                    self.within_limit(*t).await?;
                }
                self.settle_mail()?;
            }
            Step::InviteMany {
                t,
                actor,
                emails,
                role,
                template,
                crm,
                grants,
            } => {
                let actor = self.m.who(*t, *actor);
                let req = BulkInvite {
                    emails: emails
                        .iter()
                        .map(|e| match e {
                            BulkEmail::Valid(i, v) => email_text(*i, *v),
                            BulkEmail::Invalid(i) => BAD_EMAILS[*i % BAD_EMAILS.len()].to_owned(),
                        })
                        .collect(),
                    role: *role,
                    template_id: template.map(|x| self.m.tpl(*t, x)),
                    crm_access: *crm,
                    grants: *grants,
                };
                let actual = self.app.invite_many(self.tids[*t], actor, &req).await;
                let ids: Vec<Option<UserId>> = match &actual {
                    Ok(items) => items
                        .iter()
                        .map(|i| match i.outcome {
                            BulkOutcome::Invited { user_id } => Some(user_id),
                            _ => None,
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                for id in ids.iter().flatten() {
                    ensure!(!self.m.known(*id), "D11: id {id} reused");
                }
                let expected = self.m.invite_many(*t, actor, &req, &ids);
                let items: Result<Vec<BulkItem>, &tenantry_service::Error> = match &actual {
                    Ok(results) => {
                        for r in results {
                            // D26: a link for each invited address, and only for those.
                            match (&r.outcome, &r.accept_link) {
                                (BulkOutcome::Invited { user_id }, Some(link)) => {
                                    self.expect_links.push((*user_id, link_token(link)?));
                                }
                                (BulkOutcome::Invited { .. }, None) => {
                                    return Err(format!("D26: no accept link for {r:?}"));
                                }
                                (_, Some(_)) => {
                                    return Err(format!("D26: an accept link for {r:?}"));
                                }
                                (_, None) => {}
                            }
                        }
                        Ok(results
                            .iter()
                            .map(|r| BulkItem {
                                input: r.input.clone(),
                                outcome: r.outcome.clone(),
                            })
                            .collect())
                    }
                    Err(e) => Err(e),
                };
                agree("invite_many", &expected, items.as_ref().map_err(|e| *e))?;
                if ids.iter().any(Option::is_some) {
                    self.within_limit(*t).await?;
                }
                self.settle_mail()?;
            }
            Step::Onboard {
                t,
                email: (ei, ev),
                template,
                crm,
                grants,
                suspend,
            } => {
                let invite = Step::Invite {
                    t: *t,
                    actor: Who::First,
                    email: (*ei, *ev),
                    role: Role::User,
                    template: *template,
                    crm: *crm,
                    grants: *grants,
                };
                Box::pin(self.step(&invite)).await?;
                let id = *self.m.t[*t].ever.last().unwrap();
                if self
                    .m
                    .user(*t, id)
                    .is_some_and(|u| u.status == Status::Invited)
                {
                    let accept = Step::Accept {
                        t: *t,
                        token: TokenPick::Latest(Who::Last),
                        email: Signup::Right,
                    };
                    Box::pin(self.step(&accept)).await?;
                }
                if *suspend
                    && self
                        .m
                        .user(*t, id)
                        .is_some_and(|u| u.status == Status::Active)
                {
                    let edit = Step::Edit {
                        t: *t,
                        actor: Who::First,
                        target: Some(Who::Last),
                        edit: EditSpec {
                            email: None,
                            role: None,
                            status: Some(Status::Suspended),
                            template: None,
                            crm: None,
                            grants: None,
                        },
                    };
                    Box::pin(self.step(&edit)).await?;
                }
            }
            Step::Resend {
                t,
                actor,
                target,
                times,
            } => {
                let actor = self.m.who(*t, *actor);
                let target = self.m.who(*t, *target);
                for _ in 0..*times {
                    let actual = self
                        .app
                        .resend_invitation(self.tids[*t], actor, target)
                        .await;
                    let expected = self.m.resend(*t, actor, target);
                    agree("resend_invitation", &expected, actual.as_ref().map(|_| &()))?;
                    if let Ok(resent) = actual {
                        let expires = self.m.user(*t, target).and_then(|u| u.invite_expires_at);
                        ensure!(
                            Some(resent.expires_at) == expires,
                            "D10: the resend says its link expires at {}, the model at {expires:?}",
                            resent.expires_at
                        );
                        let token = link_token(&resent.accept_link)?;
                        self.expect_msgs.push((resent.message_id, target, token));
                    }
                    self.settle_mail()?;
                }
            }
            Step::Accept { t, token, email } => {
                let (text, user) = self.token_text(*t, *token);
                let signup = self.signup_text(user, *email);
                let actual = self.app.accept_invitation(&text, &signup).await;
                let expected = self.m.accept(&text, &signup);
                agree(
                    &format!("accept_invitation({signup:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
                self.settle_mail()?;
            }
            Step::AcceptAttempts {
                t,
                token,
                wrong,
                then,
            } => {
                let (text, user) = self.token_text(*t, *token);
                let signups = wrong
                    .iter()
                    .map(|i| Signup::Wrong(*i))
                    .chain(std::iter::once(*then));
                for pick in signups {
                    let signup = self.signup_text(user, pick);
                    let actual = self.app.accept_invitation(&text, &signup).await;
                    let expected = self.m.accept(&text, &signup);
                    agree(
                        &format!("accept_invitation({signup:?}) in a run"),
                        &expected,
                        actual.as_ref(),
                    )?;
                }
                self.settle_mail()?;
            }
            Step::CreateTenant { name, limit } => {
                let name = tenant_name_text(*name);
                let admin = email(1, 0)?;
                let actual = self.app.create_tenant(&name, *limit, admin).await;
                // D22, D23. Choice: the name is checked before the limit.
                let expected = check_name(&name, 100)
                    .map_err(CoreError::InvalidTenantName)
                    .and_then(|trimmed| match limit {
                        Some(0) => Err(CoreError::FirstSeatRequired),
                        _ => Ok(trimmed),
                    });
                agree(
                    &format!("create_tenant({name:?}, {limit:?})"),
                    &expected.as_ref().map(|_| ()).map_err(Clone::clone),
                    actual.as_ref().map(|_| &()),
                )?;
                if let (Ok((tid, admin_id)), Ok(trimmed)) = (&actual, &expected) {
                    ensure!(!self.m.known(*admin_id), "D11: id {admin_id} reused");
                    let state = self
                        .app
                        .tenant(*tid)
                        .await
                        .map_err(|e| format!("tenant: {e}"))?;
                    ensure!(
                        state.tenant.name == *trimmed && state.tenant.user_limit == *limit,
                        "D22: tenant stored as {:?} with limit {:?}; expected {trimmed:?}, {limit:?}",
                        state.tenant.name,
                        state.tenant.user_limit
                    );
                    let seats = self
                        .app
                        .seat_usage(*tid)
                        .await
                        .map_err(|e| format!("seat_usage: {e}"))?;
                    ensure!(
                        seats
                            == SeatUsage {
                                used: 1,
                                limit: *limit,
                                remaining: limit.map(|l| l - 1),
                                at_limit: *limit == Some(1),
                            },
                        "D9/D23: a new tenant's seats: {seats:?}"
                    );
                }
            }
            Step::SignIn { t, user } => {
                let user = self.m.who(*t, *user);
                let actual = self.app.record_sign_in(self.tids[*t], user).await;
                let expected = self.m.sign_in(*t, user);
                agree("record_sign_in", &expected, actual.as_ref())?;
            }
            Step::Edit {
                t,
                actor,
                target,
                edit,
            } => {
                let actor = self.m.who(*t, *actor);
                let target = target.map_or(actor, |w| self.m.who(*t, w));
                let e = UserEdit {
                    email: match edit.email {
                        Some((i, v)) => Some(email(i, v)?),
                        None => None,
                    },
                    role: edit.role,
                    status: edit.status,
                    template_id: edit.template.map(|o| o.map(|x| self.m.tpl(*t, x))),
                    crm_access: edit.crm,
                    grants: edit.grants,
                };
                let actual = self.app.edit_user(self.tids[*t], actor, target, &e).await;
                let expected = self.m.edit(*t, actor, target, &e);
                agree(&format!("edit_user({e:?})"), &expected, actual.as_ref())?;
            }
            Step::Delete { t, actor, target } => {
                let actor = self.m.who(*t, *actor);
                let target = target.map_or(actor, |w| self.m.who(*t, w));
                let actual = self.app.delete_user(self.tids[*t], actor, target).await;
                let expected = self.m.delete(*t, actor, target);
                agree("delete_user", &expected, actual.as_ref())?;
            }
            Step::Purge { t, actor } => {
                let actor = self.m.who(*t, *actor);
                let mut actual = self
                    .app
                    .purge_expired_invitations(self.tids[*t], actor)
                    .await;
                if let Ok(ids) = &mut actual {
                    ids.sort();
                }
                let expected = self.m.purge(*t, actor);
                agree("purge_expired_invitations", &expected, actual.as_ref())?;
            }
            Step::CreateTemplate {
                t,
                actor,
                name,
                perms,
            } => {
                let actor = self.m.who(*t, *actor);
                let name = name_text(*name);
                let actual = self
                    .app
                    .create_template(self.tids[*t], actor, &name, *perms)
                    .await;
                let new_id = actual.as_ref().ok().map(|x| x.id);
                if let Some(id) = new_id {
                    ensure!(
                        !self.m.t.iter().any(|x| x.ever_templates.contains(&id)),
                        "template id {id} reused"
                    );
                }
                let expected = self.m.create_template(*t, actor, &name, *perms, new_id);
                agree(
                    &format!("create_template({name:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::EditTemplate {
                t,
                actor,
                tpl,
                name,
                perms,
            } => {
                let actor = self.m.who(*t, *actor);
                let id = self.m.tpl(*t, *tpl);
                let edit = TemplateEdit {
                    name: name.map(|n| TemplateName::parse(&name_text(n)).unwrap()),
                    permissions: *perms,
                };
                let actual = self
                    .app
                    .edit_template(self.tids[*t], actor, id, &edit)
                    .await;
                let expected = self.m.edit_template(*t, actor, id, &edit);
                agree(
                    &format!("edit_template({edit:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::DeleteTemplate {
                t,
                actor,
                tpl,
                mode,
            } => {
                let actor = self.m.who(*t, *actor);
                let id = self.m.tpl(*t, *tpl);
                let mode = match mode {
                    Mode::Refuse => TemplateDeletion::Refuse,
                    Mode::Detach => TemplateDeletion::Detach,
                    Mode::Reassign(x) => TemplateDeletion::Reassign(self.m.tpl(*t, *x)),
                };
                let actual = self
                    .app
                    .delete_template(self.tids[*t], actor, id, mode)
                    .await;
                let expected = self.m.delete_template(*t, actor, id, mode);
                agree(
                    &format!("delete_template({mode:?})"),
                    &expected,
                    actual.as_ref(),
                )?;
            }
            Step::Advance { minutes } => {
                self.clock.advance(Duration::minutes(*minutes));
                self.m.now += Duration::minutes(*minutes);
                ensure!(self.app.now() == self.m.now, "the clock did not move");
            }
            Step::List { t, viewer, query } => {
                let viewer = match viewer {
                    Some(w) => ActorRef::User(self.m.who(*t, *w)),
                    None => ActorRef::System,
                };
                let q = UserQuery {
                    status: query.status,
                    role: query.role,
                    template_id: query.template.map(|x| self.m.tpl(*t, x)),
                    crm_access: query.crm,
                    email_contains: query.contains.map(str::to_owned),
                    inactive_since: query.inactive_days.map(|d| self.m.now - Duration::days(d)),
                    invitation_expired_at: query.expired.then_some(self.m.now),
                    sort: query.sort,
                    descending: query.descending,
                    after: None,
                    limit: query.limit,
                };
                let actual = self.list_all(*t, viewer, &q).await;
                let expected = self.m.list(*t, viewer, &q);
                let same = match (&expected, &actual) {
                    (Ok(e), Ok(a)) => e == a,
                    (Err(ListErr::Rule(e)), Err(a)) => a.as_rule() == Some(e),
                    (Err(ListErr::Query(e)), Err(tenantry_service::Error::Query(a))) => e == a,
                    _ => false,
                };
                ensure!(
                    same,
                    "list_users({q:?}) by {viewer:?}: disagreement\n  model:   {expected:?}\n  service: {}",
                    show(actual.as_ref())
                );
            }
        }
        Ok(())
    }

    /// Reads every page of a query ([listing (D18)](tenantry_core::Rule::Listing)), checking page sizes and cursors.
    async fn list_all(
        &self,
        t: usize,
        viewer: ActorRef,
        q: &UserQuery,
    ) -> Result<Vec<User>, tenantry_service::Error> {
        let mut all = Vec::new();
        let mut q = q.clone();
        for _ in 0..200 {
            let page = self.app.list_users(self.tids[t], viewer, &q).await?;
            assert!(
                page.items.len() <= usize::try_from(q.limit).unwrap(),
                "D18: a page of {} rows for a limit of {}",
                page.items.len(),
                q.limit
            );
            all.extend(page.items);
            match page.next {
                Some(c) => q.after = Some(c),
                None => return Ok(all),
            }
        }
        panic!("D18: paging did not end after 200 pages");
    }

    /// The audit events of the step ([audit log (D13)](tenantry_core::Rule::AuditLog)), per tenant, against the model's.
    async fn check_audit(&mut self) -> R {
        for t in 0..2 {
            let recs = self
                .app
                .audit_log(self.tids[t], ActorRef::System, self.audit_seen[t], 500)
                .await
                .map_err(|e| format!("audit_log: {e}"))?;
            let mut got = Vec::new();
            for (i, r) in recs.iter().enumerate() {
                let seq = self.audit_seen[t] + 1 + i as u64;
                ensure!(
                    r.seq == seq,
                    "D13: audit feed of tenant {t} skipped or repeated: seq {} where {seq} was due",
                    r.seq
                );
                ensure!(
                    r.event.tenant_id == self.tids[t] && r.event.at == self.m.now,
                    "D13: event with the wrong tenant or time: {r:?}"
                );
                let refused = match &r.event.outcome {
                    Outcome::Success => None,
                    Outcome::Refused { rule, .. } => Some(*rule),
                };
                // D26: no audit record shows a token the service issued.
                let text = format!("{r:?}");
                if let Some(tok) = self.m.tokens.iter().find(|x| text.contains(&x.text)) {
                    return Err(format!(
                        "D26: the audit record {r:?} shows the token {}",
                        tok.text
                    ));
                }
                // What the model predicts of each event's changes: refusals all of them (the
                // address a refused invite tried, D24's counts); edits and deletions the
                // permission sets and the users reached (D13), other fields by name.
                let mut detail = Vec::new();
                let full: &[Field] = match (refused, r.event.action) {
                    (Some(_), _) => &[],
                    (None, AuditAction::UserEdited) => &[Field::Grants],
                    (None, AuditAction::TemplateEdited) => {
                        &[Field::Permissions, Field::ChangedUsers]
                    }
                    (None, AuditAction::TemplateDeleted) => {
                        &[Field::AffectedUsers, Field::ChangedUsers]
                    }
                    _ => &[],
                };
                let listed = refused.is_some()
                    || matches!(
                        r.event.action,
                        AuditAction::UserEdited
                            | AuditAction::TemplateEdited
                            | AuditAction::TemplateDeleted
                    );
                if listed {
                    for c in &r.event.changes {
                        detail.push(if refused.is_some() || full.contains(&c.field) {
                            change_text(c)
                        } else {
                            format!("{:?}", c.field)
                        });
                    }
                    detail.sort();
                }
                got.push(format!(
                    "{:?}",
                    ExpEvent {
                        actor: r.event.actor,
                        action: r.event.action,
                        target: r.event.target,
                        refused,
                        detail,
                    }
                ));
            }
            if let Some(last) = recs.last() {
                self.audit_seen[t] = last.seq;
            }
            let mut want: Vec<String> = std::mem::take(&mut self.m.audit[t])
                .iter()
                .map(|e| format!("{e:?}"))
                .collect();
            got.sort();
            want.sort();
            ensure!(
                got == want,
                "D13: audit events of tenant {t} disagree\n  model:   {want:#?}\n  service: {got:#?}"
            );
        }
        Ok(())
    }

    /// The visible state of both tenants against the model, and the invariants.
    async fn check_state(&mut self) -> R {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: tenantry_service::Error| format!("{what}: {e:?}")
        };
        for t in 0..2 {
            let tid = self.tids[t];
            // The user table, paged through three rows at a time (D18).
            let q = UserQuery {
                limit: 3,
                ..UserQuery::default()
            };
            let rows = self
                .list_all(t, ActorRef::System, &q)
                .await
                .map_err(err("list_users"))?;
            let want = self.m.list(t, ActorRef::System, &q).unwrap();
            ensure!(
                rows == want,
                "user table of tenant {t} disagrees\n  model:   {want:#?}\n  service: {rows:#?}"
            );
            // D8.
            let admins = rows.iter().filter(|u| is_admin(u)).count();
            ensure!(admins >= 1, "D8: tenant {t} has no active admin left");
            // D9.
            let state = self.app.tenant(tid).await.map_err(err("tenant"))?;
            ensure!(
                state.counters.seats_used as usize == rows.len(),
                "D9: tenant {t} counts {} seats for {} rows",
                state.counters.seats_used,
                rows.len()
            );
            ensure!(
                state.counters.active_admins as usize == admins,
                "D8: tenant {t} counts {} active admins for {admins}",
                state.counters.active_admins
            );
            ensure!(
                state.tenant.user_limit == self.m.t[t].limit,
                "D9: tenant {t} limit {:?}, model {:?}",
                state.tenant.user_limit,
                self.m.t[t].limit
            );
            let seats = self.app.seat_usage(tid).await.map_err(err("seat_usage"))?;
            ensure!(
                seats == self.m.seats(t),
                "D9: seat usage of tenant {t}: service {seats:?}, model {:?}",
                self.m.seats(t)
            );
            // Templates (D12) and who references them.
            let tpls = self
                .app
                .templates(tid, ActorRef::System)
                .await
                .map_err(err("templates"))?;
            let mut want_tpls: Vec<RoleTemplate> =
                self.m.t[t].templates.values().cloned().collect();
            want_tpls.sort_by_key(|x| (x.name.as_str().to_lowercase(), x.id));
            ensure!(
                tpls == want_tpls,
                "D12: templates of tenant {t} disagree\n  model:   {want_tpls:#?}\n  service: {tpls:#?}"
            );
            for tpl in &want_tpls {
                let q = UserQuery {
                    template_id: Some(tpl.id),
                    limit: 500,
                    ..UserQuery::default()
                };
                let got = self
                    .app
                    .template_users(tid, ActorRef::System, tpl.id, &q)
                    .await
                    .map_err(err("template_users"))?;
                let want = self.m.list(t, ActorRef::System, &q).unwrap();
                ensure!(
                    got.items == want && got.next.is_none(),
                    "D12: users of template {:?} disagree\n  model:   {want:?}\n  service: {:?}",
                    tpl.name,
                    got.items
                );
            }
            // D26: the outbox as the service shows it holds no body, and the store has
            // cleared the body of every message sent (the model's mailer never fails).
            let outbox = self
                .app
                .outbox(tid, false, 500)
                .await
                .map_err(err("outbox"))?;
            let stored = self
                .app
                .store()
                .outbox(tid, false, 500)
                .await
                .map_err(|e| format!("store outbox: {e}"))?;
            for r in outbox.iter().chain(&stored) {
                ensure!(
                    r.message.text.is_empty() && r.message.html.is_empty(),
                    "D26: a message body holding a live link is still readable: {r:?}"
                );
            }
            // D20: expired invitations.
            let q = UserQuery {
                limit: 500,
                ..UserQuery::default()
            };
            let got = self
                .app
                .expired_invitations(tid, ActorRef::System, &q)
                .await
                .map_err(err("expired_invitations"))?;
            let want = self
                .m
                .list(
                    t,
                    ActorRef::System,
                    &UserQuery {
                        invitation_expired_at: Some(self.m.now),
                        ..q.clone()
                    },
                )
                .unwrap();
            ensure!(
                got.items == want,
                "D20: expired invitations of tenant {t} disagree\n  model:   {want:?}\n  service: {:?}",
                got.items
            );
            // D6, D15: every user ever created, in its tenant and in the other one.
            for id in self.m.t[t].ever.clone() {
                let requests = CHECKED
                    .iter()
                    .map(|p| Request::Permission(*p))
                    .chain([Request::Crm]);
                for req in requests {
                    let got = self
                        .app
                        .authorize(tid, id, req)
                        .await
                        .map_err(err("authorize"))?;
                    let want = self.m.decision(t, id, req);
                    ensure!(
                        got == want,
                        "D6: authorize({id}, {req:?}) in tenant {t}: service {got:?}, model {want:?}"
                    );
                }
                let other = self
                    .app
                    .authorize(self.tids[1 - t], id, Request::Crm)
                    .await
                    .map_err(err("authorize"))?;
                ensure!(
                    other == Decision::unknown_user(),
                    "D15: a user of tenant {t} is known in the other tenant: {other:?}"
                );
                let eff = self.app.effective_permissions(tid, id).await;
                match (self.m.user(t, id), &eff) {
                    (Some(u), Ok((p, crm))) => {
                        let want = (self.m.holds(t, u), crm_now(u));
                        ensure!(
                            (*p, *crm) == want,
                            "D6: effective permissions of {id}: service {:?}, model {want:?}",
                            (p, crm)
                        );
                    }
                    (None, Err(e)) if e.as_rule() == Some(&CoreError::UserNotFound) => {}
                    (u, _) => {
                        return Err(format!(
                            "effective_permissions({id}): service {}, model user {u:?}",
                            show(eff.as_ref())
                        ));
                    }
                }
                let attr = self
                    .app
                    .attribution(tid, id)
                    .await
                    .map_err(err("attribution"))?;
                let want = match (self.m.user(t, id), self.m.t[t].tombstones.get(&id)) {
                    (Some(u), _) => Some(tenantry_service::Attribution::User(u.clone())),
                    (None, Some(tomb)) => {
                        Some(tenantry_service::Attribution::Deleted(tomb.clone()))
                    }
                    (None, None) => None,
                };
                ensure!(
                    attr == want,
                    "D11: attribution of {id}: service {attr:?}, model {want:?}"
                );
                let foreign = self
                    .app
                    .attribution(self.tids[1 - t], id)
                    .await
                    .map_err(err("attribution"))?;
                ensure!(
                    foreign.is_none(),
                    "D15: attribution of a user of tenant {t} in the other tenant: {foreign:?}"
                );
            }
        }
        Ok(())
    }

    async fn check(&mut self) -> R {
        ensure!(
            self.m.mail.is_empty() && self.expect_msgs.is_empty() && self.expect_links.is_empty(),
            "internal: unsettled mail"
        );
        self.settle_mail()?;
        self.check_audit().await?;
        self.check_state().await
    }
}

fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {i:>2}: {s:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_case(factory: &crate::StoreFactory, setup: &Setup, steps: &[Step]) -> R {
    let mut h = Harness::new(factory, setup).await?;
    for (t, name, perms) in &setup.templates {
        let step = Step::CreateTemplate {
            t: *t,
            actor: Who::First,
            name: *name,
            perms: *perms,
        };
        h.step(&step)
            .await
            .map_err(|e| format!("setup ({step:?}): {e}"))?;
    }
    for step in &setup.onboard {
        h.step(step)
            .await
            .map_err(|e| format!("setup ({step:?}): {e}"))?;
    }
    h.check().await.map_err(|e| format!("after setup: {e}"))?;
    for (i, step) in steps.iter().enumerate() {
        h.step(step)
            .await
            .map_err(|e| format!("step {i} ({step:?}): {e}"))?;
        h.check()
            .await
            .map_err(|e| format!("after step {i} ({step:?}): {e}"))?;
    }
    Ok(())
}

/// Runs the model-based test: `cases` random sequences of up to `max_steps` steps.
///
/// Each case gets a fresh store from `factory`, two tenants and a [`ManualClock`]; on the
/// first disagreement between the service and the reference model proptest shrinks the
/// sequence and this function panics with the minimal failing sequence and the
/// disagreement.
pub fn run(factory: crate::StoreFactory, cases: u32, max_steps: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (
        (
            limit_s(),
            limit_s(),
            vec((tenant_s(), 0usize..5, perms_s()), 0..4),
            vec(onboard_s(), 1..7),
        )
            .prop_map(|(a, b, templates, onboard)| Setup {
                limits: [a, b],
                templates,
                onboard,
            }),
        vec(step_s(), 0..=max_steps),
    );
    let result = runner.run(&strategy, |(setup, steps)| {
        rt.block_on(run_case(&factory, &setup, &steps))
            .map_err(TestCaseError::fail)
    });
    if std::env::var_os("TENANTRY_MODEL_STATS").is_some() {
        STATS.with(|s| {
            for (k, v) in s.borrow().iter() {
                eprintln!("{v:>8}  {k}");
            }
        });
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (setup, steps))) => panic!(
            "model-based test failed: the service disagrees with the model.\n{reason}\n\nminimal failing case: {setup:?}, steps:\n{}",
            describe(&steps)
        ),
        Err(TestError::Abort(reason)) => panic!("model-based test aborted: {reason}"),
    }
}
