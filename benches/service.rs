//! Service benches on the in-memory store at 1k, 10k and 100k users per tenant: invite,
//! authorize, and one page of 50. (Memory per user: `benches/memory.rs`.)
//!
//! `cargo bench --bench service`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tenantry::prelude::*;
use tenantry::{Store, TenantId, UserId};
use tenantry_core::decide::{self, Acting, Ctx, NewInvite};
use tenantry_core::{Policy, TokenHash};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Seeds `n` users straight through the store (as decided by the core), no outbox, so the
/// seeding is fast; returns the service, tenant, admin and one active user.
async fn seeded(n: u32) -> (Tenantry, InMemoryStore, TenantId, UserId, UserId) {
    let store = InMemoryStore::new();
    let app = Tenantry::builder(store.clone())
        .delivery(tenantry::DeliverySettings {
            inline: false,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (tenant, admin_id) = app
        .create_tenant("Bench", None, Email::parse("admin@bench.test").unwrap())
        .await
        .unwrap();
    let admin = store.user(tenant, admin_id).await.unwrap().unwrap();
    let policy = Policy::default();
    for i in 0..n {
        let state = store.tenant(tenant).await.unwrap().unwrap();
        let ctx = Ctx {
            state: &state,
            now: app.now(),
            policy: &policy,
        };
        let req = InviteRequest {
            email: Email::parse(&format!("user{i:07}@bench.test")).unwrap(),
            role: Role::User,
            template_id: None,
            crm_access: i % 2 == 0,
            grants: Permissions::CONVERSATIONS_VIEW | Permissions::ANALYTICS_VIEW,
        };
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&i.to_le_bytes());
        let new = NewInvite {
            user_id: UserId::from_parts(1_700_000_000_000 + u64::from(i), [(i % 251) as u8; 10]),
            token_hash: TokenHash(hash),
        };
        let change = decide::invite(
            ctx,
            &Acting {
                user: &admin,
                template: None,
            },
            &req,
            None,
            false,
            new,
        )
        .unwrap();
        store.commit(&change, &[]).await.unwrap();
    }
    // One active user with a template, to authorize.
    let t = app
        .create_template(tenant, admin_id, "Agents", Permissions::CONVERSATIONS_EDIT)
        .await
        .unwrap();
    let inv = app
        .invite(
            tenant,
            admin_id,
            &InviteRequest {
                email: Email::parse("agent@bench.test").unwrap(),
                role: Role::User,
                template_id: Some(t.id),
                crm_access: true,
                grants: Permissions::USERS_VIEW,
            },
        )
        .await
        .unwrap();
    let mut u = inv.user.clone();
    u.status = Status::Active;
    let state = store.tenant(tenant).await.unwrap().unwrap();
    let change = tenantry_core::Change {
        tenant_id: tenant,
        expected_version: state.counters.version,
        counters: tenantry_core::Counters {
            version: state.counters.version + 1,
            ..state.counters
        },
        writes: vec![tenantry_core::Write::UpdateUser(u)],
        events: vec![],
    };
    store.commit(&change, &[]).await.unwrap();
    (app, store, tenant, admin_id, inv.user.id)
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    let sizes = [1_000u32, 10_000, 100_000];
    let mut auth = c.benchmark_group("memory/authorize");
    for &n in &sizes {
        let (app, _store, tenant, _admin, user) = rt.block_on(seeded(n));
        let p = Permission::new(Category::Conversations, Action::Edit).into();
        auth.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                app.authorize(black_box(tenant), black_box(user), black_box(p))
                    .await
                    .unwrap()
            })
        });
    }
    auth.finish();

    let mut page = c.benchmark_group("memory/list_page_50");
    for &n in &sizes {
        let (app, _store, tenant, admin, _user) = rt.block_on(seeded(n));
        // A page from the middle of the table, by email.
        let first = rt
            .block_on(app.list_users(
                tenant,
                ActorRef::User(admin),
                &UserQuery {
                    limit: 500,
                    ..UserQuery::default()
                },
            ))
            .unwrap();
        let q = UserQuery {
            after: first.next.clone(),
            ..UserQuery::default()
        };
        page.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                app.list_users(tenant, ActorRef::User(admin), black_box(&q))
                    .await
                    .unwrap()
            })
        });
        let qf = UserQuery {
            crm_access: Some(true),
            sort: SortBy::CreatedAt,
            descending: true,
            ..UserQuery::default()
        };
        page.bench_with_input(
            BenchmarkId::new("crm_filter_created_desc", n),
            &n,
            |b, _| {
                b.to_async(&rt).iter(|| async {
                    app.list_users(tenant, ActorRef::User(admin), black_box(&qf))
                        .await
                        .unwrap()
                })
            },
        );
    }
    page.finish();

    let mut inv = c.benchmark_group("memory/invite");
    for &n in &sizes {
        let (app, _store, tenant, admin, _user) = rt.block_on(seeded(n));
        let mut i = 0u64;
        inv.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                let req = InviteRequest {
                    email: Email::parse(&format!("new{i}@bench.test")).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants: Permissions::empty(),
                };
                rt.block_on(app.invite(tenant, admin, &req)).unwrap()
            })
        });
    }
    inv.finish();
}

criterion_group!(service, benches);
criterion_main!(service);
