//! Heap bytes per user held by the in-memory store at 100k users (issue target: under
//! 1 KiB), counted by the `dhat` heap profiler's allocator: the user rows, every index and
//! the invitation rows; then, separately, the heap bytes one audit event (an invite's) keeps.
//!
//! `cargo bench --bench memory`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tenantry::prelude::*;
use tenantry::{Store, UserId};
use tenantry_core::decide::{self, Acting, Ctx, NewInvite};
use tenantry_core::{Policy, TokenHash};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const USERS: u32 = 100_000;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = InMemoryStore::new();
        let app = Tenantry::builder(store.clone()).build().unwrap();
        let (tenant, admin_id) = app
            .create_tenant("Bench", None, Email::parse("admin@bench.test").unwrap())
            .await
            .unwrap();
        let admin = store.user(tenant, admin_id).await.unwrap().unwrap();
        let policy = Policy::default();
        let mut events = Vec::new();
        let before = dhat::HeapStats::get().curr_bytes;
        for i in 0..USERS {
            let state = store.tenant(tenant).await.unwrap().unwrap();
            let ctx = Ctx { state: &state, now: app.now(), policy: &policy };
            let req = InviteRequest {
                email: Email::parse(&format!("firstname.lastname{i}@example-company.test")).unwrap(),
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
            let mut change = decide::invite(ctx, &Acting { user: &admin, template: None }, &req, None, false, new).unwrap();
            if events.is_empty() {
                events.append(&mut change.events);
            }
            change.events.clear();
            store.commit(&change, &[]).await.unwrap();
        }
        let after_users = dhat::HeapStats::get().curr_bytes;
        let sample = events.pop().unwrap();
        let before_events = dhat::HeapStats::get().curr_bytes;
        for _ in 0..USERS {
            store.append_audit(&sample).await.unwrap();
        }
        let after_events = dhat::HeapStats::get().curr_bytes;
        let kept = USERS as usize;
        let per_user = (after_users - before) as f64 / f64::from(USERS);
        let per_event = (after_events as f64 - before_events as f64) / kept as f64;
        println!("memory/in_memory_store: {per_user:.0} heap bytes per user at {USERS} users (row, indexes, invitation)");
        println!("memory/in_memory_store: {per_event:.0} heap bytes per audit event (the invite's event, {kept} events)");
        drop(store);
    });
}
