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
//! service on the backend and against a plain reference model (`model/reference.rs`)
//! written from the rules of `docs/rules.md` alone (it never calls `tenantry_core::decide`).
//!
//! Every result must agree: `Ok` against `Ok` with the same returned data, `Err` against
//! `Err` with the same [`tenantry_core::Error`] (so the same rule, [roles (D1)](tenantry_core::Rule::Roles)…[accept attempts (D24)](tenantry_core::Rule::AcceptAttempts), and the same
//! details). The accept links that invite, bulk invite and resend return ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)) must be the
//! ones mailed. After every step the visible state must agree as well: the user table of each
//! tenant (paged through with [`ActorRef::System`](tenantry_service::ActorRef::System)), seat usage and the tenant's counters,
//! the role templates and who references them, expired invitations, tombstones ([permanent delete (D11)](tenantry_core::Rule::PermanentDelete)), the
//! audit events the step appended ([audit log (D13)](tenantry_core::Rule::AuditLog): with the address a refused invite tried, the users
//! a template change reached, the failed accept attempts of [accept attempts (D24)](tenantry_core::Rule::AcceptAttempts)), that neither the outbox
//! nor the audit log shows a live link ([live links are secrets (D26)](tenantry_core::Rule::LiveLinksAreSecrets)), the invitation mail sent ([seat limit (D9)](tenantry_core::Rule::SeatLimit), [invitations (D10)](tenantry_core::Rule::Invitations), [mail delivery (D17)](tenantry_core::Rule::MailDelivery)) and
//! `authorize` / `effective_permissions` for every user ever created, in its own tenant and
//! in the other one ([current access (D6)](tenantry_core::Rule::CurrentAccess), [tenant isolation (D15)](tenantry_core::Rule::TenantIsolation)). Invariants checked at every step: at least one active admin
//! per tenant ([last admin (D8)](tenantry_core::Rule::LastAdmin)), seats used equal the number of rows ([seat limit (D9)](tenantry_core::Rule::SeatLimit)), and seats used never exceed
//! the limit right after a successful invite ([seat limit (D9)](tenantry_core::Rule::SeatLimit)).
//!
//! Invitation tokens are captured from the [`InMemoryMailer`](tenantry_service::InMemoryMailer)'s messages with
//! [`tenantry_service::token_from_link`] (and checked against the links the calls returned); the
//! clock is a [`ManualClock`](tenantry_service::ManualClock).
//!
//! Each case starts with two tenants (random seat limits), a few templates and a few users
//! onboarded by the first admins (some of them suspended), so that non-admin managers act
//! from the first step. Set `TENANTRY_MODEL_STATS=1` to print how often each use case ended
//! in each outcome, and by which kind of actor.
//!
//! Where `docs/rules.md` leaves a detail open (which refusal wins when several rules refuse,
//! what an admin's direct grants are), the model follows the service's documented choice;
//! such places are marked "choice" in the reference model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tenantry_core::Error as CoreError;
use tenantry_core::TemplateNameError;
use tenantry_core::{Field, FieldChange, Value};
use tenantry_service::{
    Action, Category, Permission, Permissions, Role, Status, TemplateId, User, UserId,
};
use time::{Duration, OffsetDateTime};

mod harness;
mod reference;
mod strategies;

use harness::{describe, run_case};
use strategies::{Setup, limit_s, onboard_s, perms_s, step_s, tenant_s};

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

// ---------------------------------------------- shared by the reference model and the harness

thread_local! {
    /// Outcome counts, printed when `TENANTRY_MODEL_STATS` is set (to see what a run covers).
    static STATS: std::cell::RefCell<BTreeMap<String, u64>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

fn note(key: String) {
    STATS.with(|s| *s.borrow_mut().entry(key).or_default() += 1);
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

/// Runs the model-based test: `cases` random sequences of up to `max_steps` steps.
///
/// Each case gets a fresh store from `factory`, two tenants and a [`ManualClock`](tenantry_service::ManualClock); on the
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
