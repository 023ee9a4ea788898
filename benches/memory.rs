//! Heap bytes per user held by the in-memory store at 100k users (issue 15's target: at
//! most 600), counted by the `dhat` heap profiler's allocator: the user rows, every index
//! (the check index too) and the invitation rows; then, separately, the heap bytes one audit
//! event (an invite's) keeps; then what an outbox message keeps queued and once delivered
//! (its bodies, which hold the live link, are freed: D26).
//!
//! `cargo bench --bench memory`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tenantry::prelude::*;
use tenantry::{Store, UserId};
use tenantry_core::decide::{self, Acting, Ctx, NewInvite};
use tenantry_core::{MessageId, Policy, TokenHash};
use tenantry_store::DeliveryUpdate;

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

        // Outbox messages: queued with a body of the size of an invitation mail, then sent.
        const MESSAGES: u32 = 10_000;
        let body = "x".repeat(1500);
        let mut ids = Vec::with_capacity(MESSAGES as usize);
        let before_queue = dhat::HeapStats::get().curr_bytes;
        for i in 0..MESSAGES {
            let id = MessageId::from_parts(1_800_000_000_000 + u64::from(i), [(i % 251) as u8; 10]);
            let message = tenantry_mail::Message {
                id,
                tenant_id: tenant,
                user_id: admin_id,
                to: "admin@bench.test".into(),
                subject: "You are invited".into(),
                text: body.clone(),
                html: body.clone(),
                date: None,
            };
            let state = store.tenant(tenant).await.unwrap().unwrap();
            let ctx = Ctx { state: &state, now: app.now(), policy: &policy };
            let mut change = decide::set_user_limit(ctx, tenantry::ActorRef::System, None);
            change.events.clear(); // the audit log is measured above
            store.commit(&change, &[message]).await.unwrap();
            ids.push(id);
        }
        let queued = dhat::HeapStats::get().curr_bytes;
        for id in &ids {
            store.record_delivery(tenant, *id, &DeliveryUpdate::Sent { at: app.now() }).await.unwrap();
        }
        let sent = dhat::HeapStats::get().curr_bytes;
        let m = f64::from(MESSAGES);
        println!(
            "memory/in_memory_store: {:.0} heap bytes per queued message (3,000 bytes of bodies), {:.0} once sent (bodies freed)",
            (queued as f64 - before_queue as f64) / m,
            (sent as f64 - before_queue as f64) / m
        );
        let record = store.outbox_message(tenant, ids[0]).await.unwrap().unwrap();
        assert!(record.message.text.is_empty() && record.message.html.is_empty());
        assert!(sent < queued, "delivered bodies were freed");
        drop(store);
    });
}
