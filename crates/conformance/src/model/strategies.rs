//! The steps of a case (which use case, by whom, on what) and the proptest strategies that
//! generate them.

use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use tenantry_service::{Action, Permissions, Role, SortBy, Status};

use super::{ADVANCES, BAD_EMAILS, EMAILS, NAMES, TENANT_NAMES, perms_of};

// ------------------------------------------------------------------------------ steps

/// Picks a user id at run time (ids are only known once the service made them).
#[derive(Debug, Clone, Copy)]
pub(super) enum Who {
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
pub(super) enum Tpl {
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
pub(super) enum TokenPick {
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
pub(super) enum Signup {
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
pub(super) enum BulkEmail {
    Valid(usize, u8),
    Invalid(usize),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Refuse,
    Detach,
    Reassign(Tpl),
}

#[derive(Debug, Clone)]
pub(super) struct EditSpec {
    pub(super) email: Option<(usize, u8)>,
    pub(super) role: Option<Role>,
    pub(super) status: Option<Status>,
    pub(super) template: Option<Option<Tpl>>,
    pub(super) crm: Option<bool>,
    pub(super) grants: Option<Permissions>,
}

#[derive(Debug, Clone)]
pub(super) struct QuerySpec {
    pub(super) status: Option<Status>,
    pub(super) role: Option<Role>,
    pub(super) template: Option<Tpl>,
    pub(super) crm: Option<bool>,
    pub(super) contains: Option<&'static str>,
    pub(super) inactive_days: Option<i64>,
    pub(super) expired: bool,
    pub(super) sort: SortBy,
    pub(super) descending: bool,
    pub(super) limit: u32,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
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
pub(super) struct Setup {
    pub(super) limits: [Option<u32>; 2],
    /// Templates the first admins create before the random steps: (tenant, name, permissions).
    pub(super) templates: Vec<(usize, usize, Permissions)>,
    /// Then users they onboard (invite and accept), to have non-admin managers about.
    pub(super) onboard: Vec<Step>,
}

pub(super) fn tenant_s() -> impl Strategy<Value = usize> {
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

pub(super) fn perms_s() -> impl Strategy<Value = Permissions> {
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

pub(super) fn limit_s() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![1 => Just(None), 3 => (1u32..7).prop_map(Some)]
}

pub(super) fn onboard_s() -> impl Strategy<Value = Step> {
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

pub(super) fn step_s() -> impl Strategy<Value = Step> {
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
