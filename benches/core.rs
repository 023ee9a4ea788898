//! Benchmarks of the hot paths of `tenantry-core`: the policy evaluator (`authorize`), the
//! effective permission set (D6) and email parsing (D3).
//!
//! Run with `cargo bench --bench core -- --warm-up-time 1 --measurement-time 3`; the results
//! are recorded in `BENCHMARKS.md`.

// `criterion_group!` generates an undocumented `pub fn`; the fixtures use `expect` on constants.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tenantry_core::{
    Action, Category, Email, Permission, Permissions, Request, Role, RoleTemplate, Status,
    TemplateId, TemplateName, TenantId, User, UserId, authorize, effective_permissions,
};
use time::OffsetDateTime;

const MS: u64 = 1_700_000_000_000;

/// A "loaded" active user: many direct grants, CRM access and a role template.
fn loaded_user(template: &RoleTemplate, role: Role) -> User {
    User {
        id: UserId::from_parts(MS, [2; 10]),
        tenant_id: template.tenant_id,
        email: Email::parse("agent.smith@example.com").expect("valid address"),
        role,
        status: Status::Active,
        template_id: Some(template.id),
        crm_access: true,
        grants: Permissions::category(Category::Conversations)
            | Permissions::ANALYTICS_VIEW
            | Permissions::SETTINGS_VIEW
            | Permissions::USERS_VIEW,
        created_at: OffsetDateTime::UNIX_EPOCH,
        last_login: Some(OffsetDateTime::UNIX_EPOCH),
        invite_expires_at: None,
        identity: None,
    }
}

/// A template with a dozen permissions, none of which overlap the user's direct grants.
fn loaded_template() -> RoleTemplate {
    RoleTemplate {
        id: TemplateId::from_parts(MS, [3; 10]),
        tenant_id: TenantId::from_parts(MS, [1; 10]),
        name: TemplateName::parse("Support lead").expect("valid name"),
        permissions: Permissions::category(Category::Integrations)
            | Permissions::category(Category::Experiments)
            | Permissions::ANALYTICS_EDIT
            | Permissions::ANALYTICS_CREATE,
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn bench_authorize(c: &mut Criterion) {
    let template = loaded_template();
    let user = loaded_user(&template, Role::User);
    let admin = loaded_user(&template, Role::Admin);
    let direct: Request = Permission::new(Category::Conversations, Action::Edit).into();
    let via_template: Request = Permission::new(Category::Experiments, Action::Manage).into();
    let denied: Request = Permission::new(Category::Users, Action::Manage).into();

    // Sanity: each case takes the path its name says.
    assert!(authorize(&user, Some(&template), direct).is_allowed());
    assert!(authorize(&user, Some(&template), via_template).is_allowed());
    assert!(!authorize(&user, Some(&template), denied).is_allowed());
    assert!(authorize(&admin, Some(&template), denied).is_allowed());

    let mut group = c.benchmark_group("authorize");
    group.bench_function("allow_direct_grant", |b| {
        b.iter(|| {
            authorize(
                black_box(&user),
                black_box(Some(&template)),
                black_box(direct),
            )
        });
    });
    group.bench_function("allow_via_template", |b| {
        b.iter(|| {
            authorize(
                black_box(&user),
                black_box(Some(&template)),
                black_box(via_template),
            )
        });
    });
    group.bench_function("deny", |b| {
        b.iter(|| {
            authorize(
                black_box(&user),
                black_box(Some(&template)),
                black_box(denied),
            )
        });
    });
    group.bench_function("admin", |b| {
        b.iter(|| {
            authorize(
                black_box(&admin),
                black_box(Some(&template)),
                black_box(denied),
            )
        });
    });
    group.bench_function("crm", |b| {
        b.iter(|| {
            authorize(
                black_box(&user),
                black_box(Some(&template)),
                black_box(Request::Crm),
            )
        });
    });
    group.finish();
}

fn bench_effective_permissions(c: &mut Criterion) {
    let template = loaded_template();
    let user = loaded_user(&template, Role::User);
    assert_eq!(
        effective_permissions(&user, Some(&template)),
        user.grants | template.permissions
    );
    c.bench_function("effective_permissions/user_with_template", |b| {
        b.iter(|| effective_permissions(black_box(&user), black_box(Some(&template))));
    });
}

fn bench_email_parse(c: &mut Criterion) {
    let typical = "  Ada.Lovelace+billing@Mail.Example.co.uk ";
    assert!(Email::parse(typical).is_ok());
    c.bench_function("email_parse/typical", |b| {
        b.iter(|| Email::parse(black_box(typical)));
    });
}

criterion_group!(
    benches,
    bench_authorize,
    bench_effective_permissions,
    bench_email_parse
);
criterion_main!(benches);
