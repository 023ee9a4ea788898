//! The check at the floor (issue 15): `Tenantry::authorize` answered from memory beside the
//! bitmask floor, in one run, on one workload: 10,000 users per tenant, 20 templates, 1%
//! admins, 5% suspended; 1 tenant and 100 tenants.
//!
//! - `check/<n>_tenant(s)/floor`: an 8-byte struct per user in a `Vec` (by index) and a
//!   template bitmask table, deciding the same `Decision` (with its reason).
//! - `…/keyed_floor`: the same 8 bytes found by the ids a host has in hand, in plain
//!   open-addressing tables laid out as the in-memory store's check index (24 bytes per user,
//!   the same hash and load): the least a check by (tenant id, user id) reads.
//! - `…/memory_authorize`: `Tenantry::authorize` on `InMemoryStore`, the future polled once.
//! - `…/memory_authorize_now`: `Tenantry::authorize_now`, the synchronous path.
//! - `…/memory_authorize_held_now`: `Tenantry::authorize_held_now`, through checks the host
//!   took hold of (`Tenantry::hold`), one per pick, in hand as the ids are.
//! - `…/sqlite_authorize`: an owning `SqliteStore`, every subject in its cache;
//!   `…/sqlite_authorize_now` and `…/sqlite_authorize_held_now` its synchronous and held
//!   paths (the cache's subjects sit in the same lock-free check index).
//! - `check/threads/…`: checks per second of one and of two threads at once
//!   (throughput in elements: one element is one check).
//! - `check/template_edit/…`: committing an edit of a template 500 users reference, and the
//!   next check seeing it.
//!
//! Each check picks the next of 2^20 (tenant, user, request) triples drawn at random over
//! every user, the same sequence for every engine; every engine's answers are compared
//! with the floor's over the whole sequence before timing.
//!
//! `cargo bench --bench check -- --warm-up-time 1 --measurement-time 3`
//!
//! Instructions per check, whatever the load: `CHECK_IR=1 CHECK_TENANTS=1 valgrind
//! --tool=callgrind --toggle-collect='*ir_*' <the bench binary> --bench` (then
//! `callgrind_annotate --inclusive=yes`: each `ir_*` function ran 2^20 times).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tenantry::prelude::*;
use tenantry::{HeldCheck, Store, TenantId, UserId};
use tenantry_core::decide;
use tenantry_core::{
    Change, Counters, Decision, Reason, RoleTemplate, TemplateId, TemplateName, Tenant, User, Write,
};

const USERS: usize = 10_000;
const TEMPLATES: usize = 20;
const PICKS: usize = 1 << 20;

/// splitmix64: a small deterministic generator, so every run draws the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self) -> [u8; 10] {
        let a = self.next().to_le_bytes();
        let b = self.next().to_le_bytes();
        [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]]
    }
}

/// The floor: 8 bytes per user, found by index.
#[derive(Clone, Copy)]
#[repr(C)]
struct Packed {
    /// bit 0 active, bit 1 suspended, bit 2 admin, bit 3 crm, bit 4 has template.
    flags: u8,
    template: u8,
    _pad: u16,
    grants: u32,
}

struct FloorTenant {
    users: Vec<Packed>,
    templates: Vec<(TemplateId, u32)>,
}

#[inline]
fn floor_check(t: &FloorTenant, user: usize, request: Request) -> Decision {
    let Some(u) = t.users.get(user) else {
        return Decision::unknown_user();
    };
    floor_decide(u, &t.templates, request)
}

/// The floor's decision on one user's 8 bytes.
#[inline(always)]
fn floor_decide(u: &Packed, templates: &[(TemplateId, u32)], request: Request) -> Decision {
    if u.flags & 1 == 0 {
        return Decision::new(if u.flags & 2 != 0 {
            Reason::Suspended
        } else {
            Reason::Invited
        });
    }
    if u.flags & 4 != 0 {
        return Decision::new(Reason::Admin);
    }
    match request {
        Request::Crm if u.flags & 8 != 0 => Decision::new(Reason::CrmAccess),
        Request::Crm => Decision::new(Reason::NoCrmAccess),
        Request::Permission(p) => {
            let bit = Permissions::from(p).bits();
            if u.grants & bit != 0 {
                return Decision::new(Reason::DirectGrant);
            }
            if u.flags & 16 != 0
                && let Some((id, perms)) = templates.get(usize::from(u.template))
                && perms & bit != 0
            {
                return Decision::new(Reason::Template { template_id: *id });
            }
            Decision::new(Reason::MissingPermission { permission: p })
        }
    }
}

/// The keyed floor: the least any engine answering by (tenant id, user id), the ids a host
/// has in hand, must do. The tenant and then the user are found by their 16-byte ids in plain
/// open-addressing tables (no atomics, no sequence check, nothing a concurrent writer would
/// need), laid out as the in-memory store's check index is: 24 bytes per user (the key beside
/// the floor's 8 bytes), a power-of-two table at most three quarters full (16,384 slots for
/// 10,000 users), the same hash; then the floor's decision. It reads the same stream of ids as
/// tenantry (`asks`), where the floor reads indexes (`picks`).
struct KeyedFloor {
    tenants: Vec<(u64, u64, usize)>,
    tenant_mask: usize,
    tables: Vec<KeyedTable>,
}

struct KeyedTable {
    slots: Vec<(u64, u64, Packed)>,
    mask: usize,
    templates: Vec<(TemplateId, u32)>,
}

/// The id's 16 bytes as two words, as the check index splits them.
#[inline(always)]
fn id_halves(id: uuid::Uuid) -> (u64, u64) {
    let v = u128::from_ne_bytes(*id.as_bytes());
    (v as u64, (v >> 64) as u64)
}

/// The check index's hash of an id's halves.
#[inline(always)]
fn id_hash(hi: u64, lo: u64) -> usize {
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h ^ (h >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93)) as usize
}

/// Slots for `n` keys: the power of two at which they fill at most three quarters.
fn keyed_slots(n: usize) -> usize {
    let mut len = 16;
    while n > len / 4 * 3 {
        len *= 2;
    }
    len
}

impl KeyedFloor {
    fn new(w: &World) -> Self {
        let len = keyed_slots(w.tenants.len());
        let mut tenants = vec![(0, 0, usize::MAX); len];
        let mut tables = Vec::new();
        for (k, t) in w.tenants.iter().enumerate() {
            let (hi, lo) = id_halves(t.as_uuid());
            let mut i = id_hash(hi, lo) & (len - 1);
            while tenants[i].2 != usize::MAX {
                i = (i + 1) & (len - 1);
            }
            tenants[i] = (hi, lo, k);
            let n = keyed_slots(w.users[k].len());
            let mut slots = vec![
                (
                    0,
                    0,
                    Packed {
                        flags: 0,
                        template: 0,
                        _pad: 0,
                        grants: 0
                    }
                );
                n
            ];
            for (u, id) in w.users[k].iter().enumerate() {
                let (hi, lo) = id_halves(id.as_uuid());
                let mut i = id_hash(hi, lo) & (n - 1);
                while slots[i].0 != 0 || slots[i].1 != 0 {
                    i = (i + 1) & (n - 1);
                }
                slots[i] = (hi, lo, w.floor[k].users[u]);
            }
            tables.push(KeyedTable {
                slots,
                mask: n - 1,
                templates: w.floor[k].templates.clone(),
            });
        }
        Self {
            tenants,
            tenant_mask: len - 1,
            tables,
        }
    }

    #[inline]
    fn check(&self, tenant: TenantId, user: UserId, request: Request) -> Decision {
        let (hi, lo) = id_halves(tenant.as_uuid());
        let mut i = id_hash(hi, lo) & self.tenant_mask;
        let t = loop {
            let &(h, l, k) = &self.tenants[i];
            if h == hi && l == lo {
                break &self.tables[k];
            }
            if k == usize::MAX {
                return Decision::unknown_user();
            }
            i = (i + 1) & self.tenant_mask;
        };
        let (hi, lo) = id_halves(user.as_uuid());
        let mut i = id_hash(hi, lo) & t.mask;
        loop {
            let (h, l, u) = &t.slots[i];
            if *h == hi && *l == lo {
                return floor_decide(u, &t.templates, request);
            }
            if *h == 0 && *l == 0 {
                return Decision::unknown_user();
            }
            i = (i + 1) & t.mask;
        }
    }
}

#[derive(Clone, Copy)]
struct Pick {
    tenant: u32,
    user: u32,
    request: Request,
}

struct World {
    tenants: Vec<TenantId>,
    users: Vec<Vec<UserId>>,
    floor: Vec<FloorTenant>,
    picks: Vec<Pick>,
    /// The same picks as the ids a host has in hand (from its session), read in order.
    asks: Vec<(TenantId, UserId, Request)>,
    /// Per tenant, the changes that create it and fill it.
    changes: Vec<(Change, Change)>,
}

fn all_requests() -> Vec<Request> {
    let mut all: Vec<Request> = Permission::all().map(Request::from).collect();
    all.push(Request::Crm);
    all
}

fn world(tenants: usize) -> World {
    let mut rng = Rng(0x15 + tenants as u64);
    let requests = all_requests();
    let now = time::macros::datetime!(2026-01-01 0:00 UTC);
    let mut w = World {
        tenants: Vec::new(),
        users: Vec::new(),
        floor: Vec::new(),
        picks: Vec::new(),
        asks: Vec::new(),
        changes: Vec::new(),
    };
    for ti in 0..tenants {
        let tenant = TenantId::from_parts(1_767_225_600_000 + ti as u64, rng.bytes());
        let admin = UserId::from_parts(1_767_225_600_000, rng.bytes());
        let create = decide::create_tenant(
            Tenant {
                id: tenant,
                name: format!("Tenant {ti}"),
                user_limit: None,
                created_at: now,
            },
            admin,
            Email::parse(&format!("admin@t{ti}.test")).unwrap(),
        )
        .unwrap();
        let mut writes = Vec::new();
        let mut templates = Vec::new();
        for k in 0..TEMPLATES {
            let perms = (rng.next() as u32) & Permissions::all().bits() & (rng.next() as u32);
            let t = RoleTemplate {
                id: TemplateId::from_parts(1_767_225_600_000 + k as u64, rng.bytes()),
                tenant_id: tenant,
                name: TemplateName::parse(&format!("Template {k}")).unwrap(),
                permissions: Permissions::from_bits_truncate(perms),
                created_at: now,
                updated_at: now,
            };
            templates.push((t.id, t.permissions.bits()));
            writes.push(Write::InsertTemplate(t));
        }
        let mut ids = vec![admin];
        let mut packed = vec![Packed {
            flags: 1 | 4 | 8,
            template: 0,
            _pad: 0,
            grants: 0,
        }];
        let mut active_admins = 1u32;
        for i in 1..USERS {
            let id = UserId::from_parts(1_767_225_600_001 + i as u64, rng.bytes());
            let role = if i % 100 == 0 {
                Role::Admin
            } else {
                Role::User
            };
            let status = if i % 20 == 1 {
                Status::Suspended
            } else {
                Status::Active
            };
            let template = (rng.below(10) < 7).then(|| rng.below(TEMPLATES));
            let crm = role == Role::Admin || rng.below(2) == 0;
            let grants = (rng.next() as u32) & (rng.next() as u32) & (rng.next() as u32);
            let grants = Permissions::from_bits_truncate(grants);
            if role == Role::Admin && status == Status::Active {
                active_admins += 1;
            }
            let flags = u8::from(status == Status::Active)
                | (u8::from(status == Status::Suspended) << 1)
                | (u8::from(role == Role::Admin) << 2)
                | (u8::from(crm) << 3)
                | (u8::from(template.is_some()) << 4);
            packed.push(Packed {
                flags,
                template: template.unwrap_or(0) as u8,
                _pad: 0,
                grants: grants.bits(),
            });
            ids.push(id);
            writes.push(Write::InsertUser(User {
                id,
                tenant_id: tenant,
                email: Email::parse(&format!("user{i}@t{ti}.test")).unwrap(),
                role,
                status,
                template_id: template.map(|k| templates[k].0),
                crm_access: crm,
                grants,
                created_at: now,
                last_login: None,
                invite_expires_at: None,
                identity: None,
            }));
        }
        let fill = Change {
            tenant_id: tenant,
            expected_version: create.counters.version,
            counters: Counters {
                version: create.counters.version + 1,
                seats_used: USERS as u32,
                active_admins,
            },
            writes,
            events: Vec::new(),
        };
        w.tenants.push(tenant);
        w.users.push(ids);
        w.floor.push(FloorTenant {
            users: packed,
            templates,
        });
        w.changes.push((create, fill));
    }
    for _ in 0..PICKS {
        let p = Pick {
            tenant: rng.below(tenants) as u32,
            user: rng.below(USERS) as u32,
            request: requests[rng.below(requests.len())],
        };
        w.asks.push((
            w.tenants[p.tenant as usize],
            w.users[p.tenant as usize][p.user as usize],
            p.request,
        ));
        w.picks.push(p);
    }
    w
}

/// Runs a future that is expected to finish without waiting.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Polls once: the check must be answered at the first poll.
fn once<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("not answered at the first poll"),
    }
}

fn memory_app(w: &World) -> (Tenantry, InMemoryStore) {
    let store = InMemoryStore::new();
    for (create, fill) in &w.changes {
        ready(store.commit(create, &[])).unwrap();
        ready(store.commit(fill, &[])).unwrap();
    }
    (Tenantry::builder(store.clone()).build().unwrap(), store)
}

fn sqlite_app(rt: &tokio::runtime::Runtime, w: &World) -> Tenantry {
    rt.block_on(async {
        let store = tenantry::sqlite::SqliteStore::in_memory().await.unwrap();
        for (create, fill) in &w.changes {
            store.commit(create, &[]).await.unwrap();
            store.commit(fill, &[]).await.unwrap();
        }
        let app = Tenantry::builder(store).build().unwrap();
        // Every subject read once: the checks below are answered from the cache.
        for (t, ids) in w.tenants.iter().zip(&w.users) {
            for id in ids {
                app.authorize(*t, *id, Request::Crm).await.unwrap();
            }
        }
        app
    })
}

/// One check per call, never inlined, so `valgrind --tool=callgrind
/// --toggle-collect='*ir_*'` counts the instructions of exactly one check per call (see
/// `CHECK_IR` in `checks`): a figure the machine's load does not move.
#[inline(never)]
fn ir_floor(w: &World, k: usize) -> Decision {
    let p = w.picks[k];
    floor_check(&w.floor[p.tenant as usize], p.user as usize, p.request)
}

#[inline(never)]
fn ir_keyed_floor(keyed: &KeyedFloor, w: &World, k: usize) -> Decision {
    let (t, u, r) = w.asks[k];
    keyed.check(t, u, r)
}

#[inline(never)]
fn ir_memory_authorize_now(app: &Tenantry, w: &World, k: usize) -> Decision {
    let (t, u, r) = w.asks[k];
    app.authorize_now(t, u, r).unwrap().unwrap()
}

#[inline(never)]
fn ir_sqlite_authorize_now(app: &Tenantry, w: &World, k: usize) -> Decision {
    let (t, u, r) = w.asks[k];
    app.authorize_now(t, u, r).unwrap().unwrap()
}

#[inline(never)]
fn ir_sqlite_authorize_held_now(
    app: &Tenantry,
    held: &[(HeldCheck, Request)],
    k: usize,
) -> Decision {
    let (h, r) = &held[k];
    app.authorize_held_now(h, *r).unwrap().unwrap()
}

#[inline(never)]
fn ir_memory_authorize_held_now(
    app: &Tenantry,
    held: &[(HeldCheck, Request)],
    k: usize,
) -> Decision {
    let (h, r) = &held[k];
    app.authorize_held_now(h, *r).unwrap().unwrap()
}

#[inline(never)]
fn ir_memory_authorize(app: &Tenantry, w: &World, k: usize) -> Decision {
    let (t, u, r) = w.asks[k];
    once(app.authorize(t, u, r)).unwrap()
}

/// Every engine decides the whole sequence as the floor does.
fn same_answers(w: &World, engine: &str, check: impl Fn(TenantId, UserId, Request) -> Decision) {
    for p in &w.picks {
        let (t, u) = (p.tenant as usize, p.user as usize);
        let want = floor_check(&w.floor[t], u, p.request);
        let got = check(w.tenants[t], w.users[t][u], p.request);
        assert_eq!(got, want, "{engine} disagrees with the floor");
    }
}

fn checks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `CHECK_TENANTS=<n>`: only that workload (1 or 100), e.g. under a profiler.
    let only: Option<usize> = std::env::var("CHECK_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok());
    for tenants in [1usize, 100] {
        if only.is_some_and(|n| n != tenants) {
            continue;
        }
        let w = world(tenants);
        let (app, store) = memory_app(&w);
        let keyed = KeyedFloor::new(&w);
        same_answers(&w, "keyed floor", |t, u, r| keyed.check(t, u, r));
        same_answers(&w, "memory authorize", |t, u, r| {
            once(app.authorize(t, u, r)).unwrap()
        });
        same_answers(&w, "memory authorize_now", |t, u, r| {
            app.authorize_now(t, u, r).unwrap().unwrap()
        });
        // The same picks through checks held by the host (one per pick, in hand as the ids
        // are), answered as the floor answers them.
        let held: Vec<(HeldCheck, Request)> = w
            .asks
            .iter()
            .map(|&(t, u, r)| (app.hold(t, u).expect("held"), r))
            .collect();
        for (p, (h, r)) in w.picks.iter().zip(&held) {
            let want = floor_check(&w.floor[p.tenant as usize], p.user as usize, p.request);
            let got = app.authorize_held_now(h, *r).unwrap().unwrap();
            assert_eq!(
                got, want,
                "memory authorize_held_now disagrees with the floor"
            );
        }
        // `CHECK_NO_SQLITE=1`: without the owning SQLite store (its database takes a while
        // to fill at 100 tenants).
        let sqlite = std::env::var_os("CHECK_NO_SQLITE")
            .is_none()
            .then(|| sqlite_app(&rt, &w));
        if let Some(sqlite) = &sqlite {
            same_answers(&w, "sqlite authorize", |t, u, r| {
                ready(sqlite.authorize(t, u, r)).unwrap()
            });
            same_answers(&w, "sqlite authorize_now", |t, u, r| {
                sqlite.authorize_now(t, u, r).expect("cached").unwrap()
            });
        }
        // The same picks through the owning SQLite store's held checks (its cache holds
        // every subject), compared with the floor first.
        let sqlite_held: Vec<(HeldCheck, Request)> = match &sqlite {
            Some(sqlite) => w
                .asks
                .iter()
                .map(|&(t, u, r)| (sqlite.hold(t, u).expect("held from the cache"), r))
                .collect(),
            None => Vec::new(),
        };
        if let Some(sqlite) = &sqlite {
            for (p, (h, r)) in w.picks.iter().zip(&sqlite_held) {
                let got = sqlite.authorize_held_now(h, *r).unwrap().unwrap();
                assert_eq!(
                    got,
                    floor_check(&w.floor[p.tenant as usize], p.user as usize, p.request),
                    "sqlite authorize_held_now disagrees with the floor"
                );
            }
        }
        // `CHECK_IR=1`: each engine once over every pick, through the `ir_*` functions, and
        // no timing (for callgrind's instruction counts).
        if std::env::var_os("CHECK_IR").is_some() {
            for k in 0..PICKS {
                black_box(ir_floor(&w, k));
                black_box(ir_keyed_floor(&keyed, &w, k));
                black_box(ir_memory_authorize_now(&app, &w, k));
                black_box(ir_memory_authorize_held_now(&app, &held, k));
                black_box(ir_memory_authorize(&app, &w, k));
                if let Some(sqlite) = &sqlite {
                    black_box(ir_sqlite_authorize_now(sqlite, &w, k));
                    black_box(ir_sqlite_authorize_held_now(sqlite, &sqlite_held, k));
                }
            }
            continue;
        }
        let name = if tenants == 1 {
            "check/1_tenant".to_owned()
        } else {
            format!("check/{tenants}_tenants")
        };
        let mut g = c.benchmark_group(name);
        // `CHECK_HOT=<bits>`: cycle over the first 2^bits picks only (default 12: 4,096; a
        // cache-resident working set), to tell the cost of the instructions from the cost of
        // the memory.
        let mask = if let Some(hot) = std::env::var_os("CHECK_HOT") {
            let bits: u32 = hot.to_str().and_then(|h| h.parse().ok()).unwrap_or(12);
            (1usize << bits.min(20)) - 1
        } else {
            PICKS - 1
        };
        let mut i = 0usize;
        g.bench_function("floor", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let p = w.picks[i & mask];
                black_box(floor_check(
                    &w.floor[p.tenant as usize],
                    p.user as usize,
                    p.request,
                ))
            });
        });
        g.bench_function("keyed_floor", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let (t, u, r) = w.asks[i & mask];
                black_box(keyed.check(t, u, r))
            });
        });
        g.bench_function("memory_authorize_held_now", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let (h, r) = &held[i & mask];
                black_box(app.authorize_held_now(h, *r))
            });
        });
        g.bench_function("memory_authorize", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let (t, u, r) = w.asks[i & mask];
                black_box(once(app.authorize(t, u, r)).unwrap())
            });
        });
        g.bench_function("memory_store_subject_now", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let (t, u, _) = w.asks[i & mask];
                black_box(store.subject_now(t, u))
            });
        });
        g.bench_function("memory_authorize_now", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let (t, u, r) = w.asks[i & mask];
                black_box(app.authorize_now(t, u, r))
            });
        });
        if let Some(sqlite) = &sqlite {
            g.bench_function("sqlite_authorize", |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let (t, u, r) = w.asks[i & mask];
                    black_box(ready(sqlite.authorize(t, u, r)).unwrap())
                });
            });
            g.bench_function("sqlite_authorize_now", |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let (t, u, r) = w.asks[i & mask];
                    black_box(sqlite.authorize_now(t, u, r))
                });
            });
            g.bench_function("sqlite_authorize_held_now", |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let (h, r) = &sqlite_held[i & mask];
                    black_box(sqlite.authorize_held_now(h, *r))
                });
            });
        }
        g.finish();

        // Checks per second of one thread and of two at once.
        let mut g = c.benchmark_group(format!("check/threads_{tenants}"));
        for threads in [1usize, 2] {
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_with_input(
                BenchmarkId::new("memory_authorize_now", threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        parallel(threads, iters, |k| {
                            let (t, u, r) = w.asks[k & mask];
                            black_box(app.authorize_now(t, u, r));
                        })
                    });
                },
            );
            g.bench_with_input(
                BenchmarkId::new("memory_authorize_held_now", threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        parallel(threads, iters, |k| {
                            let (h, r) = &held[k & mask];
                            black_box(app.authorize_held_now(h, *r));
                        })
                    });
                },
            );
            if let Some(sqlite) = &sqlite {
                g.bench_with_input(
                    BenchmarkId::new("sqlite_authorize_now", threads),
                    &threads,
                    |b, &threads| {
                        b.iter_custom(|iters| {
                            parallel(threads, iters, |k| {
                                let (t, u, r) = w.asks[k & mask];
                                black_box(sqlite.authorize_now(t, u, r));
                            })
                        });
                    },
                );
            }
            g.bench_with_input(
                BenchmarkId::new("floor", threads),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        parallel(threads, iters, |k| {
                            let p = w.picks[k & mask];
                            black_box(floor_check(
                                &w.floor[p.tenant as usize],
                                p.user as usize,
                                p.request,
                            ));
                        })
                    });
                },
            );
        }
        g.finish();
    }
}

/// `threads` threads each run `iters` checks at once; the wall time of the slowest.
fn parallel(threads: usize, iters: u64, check: impl Fn(usize) + Sync) -> Duration {
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let (start, check) = (&start, &check);
                s.spawn(move || {
                    start.wait();
                    let t0 = Instant::now();
                    let offset = n.wrapping_mul(PICKS / 2 + 12_345);
                    for k in 0..iters as usize {
                        check(offset.wrapping_add(k));
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap_or_default()
    })
}

/// A template 500 users reference: the edit's commit, then the next check sees it.
fn template_edit(c: &mut Criterion) {
    if std::env::var_os("CHECK_IR").is_some() {
        return; // instruction counts only (see `checks`)
    }
    let w = world(1);
    let store = InMemoryStore::new();
    let (create, fill) = &w.changes[0];
    ready(store.commit(create, &[])).unwrap();
    ready(store.commit(fill, &[])).unwrap();
    let tenant = w.tenants[0];
    let now = time::macros::datetime!(2026-01-01 0:00 UTC);
    let t = RoleTemplate {
        id: TemplateId::from_parts(1_767_225_700_000, [42; 10]),
        tenant_id: tenant,
        name: TemplateName::parse("Five hundred").unwrap(),
        permissions: Permissions::USERS_VIEW,
        created_at: now,
        updated_at: now,
    };
    let state = ready(store.tenant(tenant)).unwrap().unwrap();
    let mut writes = vec![Write::InsertTemplate(t.clone())];
    let mut referencing = Vec::new();
    for i in (1..USERS).step_by(USERS / 500).take(500) {
        let id = w.users[0][i];
        let mut u = ready(store.user(tenant, id)).unwrap().unwrap();
        u.template_id = Some(t.id);
        referencing.push(id);
        writes.push(Write::UpdateUser(u));
    }
    assert_eq!(referencing.len(), 500);
    let mut counters = state.counters;
    counters.version += 1;
    let c0 = Change {
        tenant_id: tenant,
        expected_version: state.counters.version,
        counters,
        writes,
        events: Vec::new(),
    };
    ready(store.commit(&c0, &[])).unwrap();
    assert_eq!(
        ready(store.count_template_users(tenant, t.id)).unwrap(),
        500
    );
    let mut g = c.benchmark_group("check/template_edit");
    let mut version = counters.version;
    let mut flip = false;
    let view = Permission::new(Category::Users, Action::View);
    let edit = Permission::new(Category::Users, Action::Edit);
    g.bench_function("commit_500_referencing", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                let mut t = t.clone();
                t.permissions = if flip {
                    Permissions::USERS_EDIT
                } else {
                    Permissions::USERS_VIEW
                };
                let mut counters = counters;
                counters.version = version + 1;
                let change = Change {
                    tenant_id: tenant,
                    expected_version: version,
                    counters,
                    writes: vec![Write::UpdateTemplate(t)],
                    events: Vec::new(),
                };
                version += 1;
                change
            },
            |change| ready(store.commit(&change, &[])).unwrap(),
            criterion::BatchSize::SmallInput,
        );
    });
    g.finish();
    // The next check sees the last edit, for every referencing user (D6).
    let s = store
        .subject_now(tenant, referencing[499])
        .unwrap()
        .unwrap()
        .unwrap();
    let want = if flip {
        Permissions::USERS_EDIT
    } else {
        Permissions::USERS_VIEW
    };
    assert_eq!(s.template, Some((t.id, want)));
    let (yes, no) = if flip { (edit, view) } else { (view, edit) };
    for id in &referencing {
        let s = store.subject_now(tenant, *id).unwrap().unwrap().unwrap();
        let allowed = |p: Permission| tenantry_core::authorize_subject(&s, p.into()).is_allowed();
        assert!(allowed(yes) || s.status != Status::Active || s.grants.has(no));
        if s.status == Status::Active && s.role == Role::User && !s.grants.has(no) {
            assert!(!allowed(no));
        }
    }
}

criterion_group!(benches, checks, template_edit);
criterion_main!(benches);
