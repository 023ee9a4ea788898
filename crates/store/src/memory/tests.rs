//! The check index agrees with the rows after every kind of change, and readers never see a
//! torn or stale answer while a writer changes the rows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use tenantry_core::{
    ActorRef, Change, Email, Permissions, Role, RoleTemplate, Status, TemplateId, TemplateName,
    Tenant, TenantId, Tombstone, User, UserId, Write, decide,
};
use time::OffsetDateTime;

use super::InMemoryStore;
use crate::{Store, StoreError};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

fn tenant_id(n: u8) -> TenantId {
    TenantId::from_parts(1_767_225_600_000, [n; 10])
}

fn user_id(n: usize) -> UserId {
    UserId::from_parts(1_767_225_600_000 + n as u64, [7; 10])
}

fn template_id(n: usize) -> TemplateId {
    TemplateId::from_parts(1_767_225_700_000 + n as u64, [9; 10])
}

fn new_tenant(store: &InMemoryStore, t: TenantId) {
    let tenant = Tenant {
        id: t,
        name: "Acme".into(),
        user_limit: None,
        created_at: NOW,
    };
    let change =
        decide::create_tenant(tenant, user_id(0), Email::parse("ada@acme.test").unwrap()).unwrap();
    block_on(store.commit(&change, &[])).unwrap();
}

/// A change of `writes` on the tenant's current version (counters are not checked here).
fn change(store: &InMemoryStore, t: TenantId, writes: Vec<Write>) -> Change {
    let state = block_on(store.tenant(t)).unwrap().unwrap();
    let mut counters = state.counters;
    counters.version += 1;
    Change {
        tenant_id: t,
        expected_version: state.counters.version,
        counters,
        writes,
        events: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Facts {
    role: Role,
    status: Status,
    template: Option<usize>,
    crm: bool,
    grants: u32,
}

fn facts() -> impl Strategy<Value = Facts> {
    (
        prop_oneof![Just(Role::Admin), Just(Role::User)],
        prop_oneof![
            Just(Status::Invited),
            Just(Status::Active),
            Just(Status::Suspended)
        ],
        proptest::option::of(0..6usize),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(|(role, status, template, crm, grants)| Facts {
            role,
            status,
            template,
            crm,
            grants,
        })
}

#[derive(Debug, Clone)]
enum Op {
    AddUser(Facts),
    UpdateUser(usize, Facts),
    DeleteUser(usize),
    AddTemplate(u32),
    UpdateTemplate(usize, u32),
    DeleteTemplate(usize),
    Move(usize, Option<usize>),
    /// A valid update followed by a write the store refuses: nothing may change.
    Refused(usize, Facts),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => facts().prop_map(Op::AddUser),
        4 => (0..12usize, facts()).prop_map(|(u, f)| Op::UpdateUser(u, f)),
        1 => (0..12usize).prop_map(Op::DeleteUser),
        2 => any::<u32>().prop_map(Op::AddTemplate),
        3 => (0..6usize, any::<u32>()).prop_map(|(t, p)| Op::UpdateTemplate(t, p)),
        1 => (0..6usize).prop_map(Op::DeleteTemplate),
        1 => (0..6usize, proptest::option::of(0..6usize)).prop_map(|(a, b)| Op::Move(a, b)),
        1 => (0..12usize, facts()).prop_map(|(u, f)| Op::Refused(u, f)),
    ]
}

fn user(t: TenantId, n: usize, f: &Facts) -> User {
    User {
        id: user_id(n),
        tenant_id: t,
        email: Email::parse(&format!("u{n}@acme.test")).unwrap(),
        role: f.role,
        status: f.status,
        template_id: f.template.map(template_id),
        crm_access: f.crm,
        grants: Permissions::from_bits_truncate(f.grants),
        created_at: NOW,
        last_login: None,
        invite_expires_at: None,
        identity: None,
    }
}

fn template(t: TenantId, n: usize, perms: u32) -> RoleTemplate {
    RoleTemplate {
        id: template_id(n),
        tenant_id: t,
        name: TemplateName::parse(&format!("Template {n}")).unwrap(),
        permissions: Permissions::from_bits_truncate(perms),
        created_at: NOW,
        updated_at: NOW,
    }
}

/// Every id ever used (and a few never used) answers the same on both paths.
fn agree(store: &InMemoryStore, t: TenantId, users: usize) {
    for n in 0..users + 3 {
        let fast = store.subject_now(t, user_id(n)).expect("answered");
        assert_eq!(
            fast.unwrap(),
            store.subject_locked(t, user_id(n)),
            "user {n}"
        );
    }
    let other = tenant_id(99);
    assert!(
        store
            .subject_now(other, user_id(0))
            .unwrap()
            .unwrap()
            .is_none()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_check_index_agrees_with_the_rows(ops in proptest::collection::vec(op(), 1..40)) {
        let store = InMemoryStore::new();
        let t = tenant_id(1);
        new_tenant(&store, t);
        // A second tenant with the same user ids in its own rows never leaks into the first.
        new_tenant(&store, tenant_id(2));
        let mut users = 1;
        let mut templates = 0;
        for op in ops {
            let writes = match &op {
                Op::AddUser(f) => {
                    users += 1;
                    vec![Write::InsertUser(user(t, users - 1, f))]
                }
                Op::UpdateUser(n, f) | Op::Refused(n, f) => {
                    let mut w = vec![Write::UpdateUser(user(t, *n % users, f))];
                    if matches!(op, Op::Refused(..)) {
                        w.push(Write::UpdateUser(user(t, 10_000, f)));
                    }
                    w
                }
                Op::DeleteUser(n) => {
                    let u = user(t, *n % users, &Facts { role: Role::User, status: Status::Active, template: None, crm: false, grants: 0 });
                    vec![Write::DeleteUser(Tombstone {
                        user_id: u.id, tenant_id: t, email: u.email, deleted_at: NOW, deleted_by: ActorRef::System,
                    })]
                }
                Op::AddTemplate(p) => {
                    templates += 1;
                    vec![Write::InsertTemplate(template(t, templates - 1, *p))]
                }
                Op::UpdateTemplate(n, p) => vec![Write::UpdateTemplate(template(t, *n, *p))],
                Op::DeleteTemplate(n) => vec![Write::DeleteTemplate(template_id(*n))],
                Op::Move(a, b) => vec![Write::MoveTemplateUsers { from: template_id(*a), to: b.map(template_id) }],
            };
            let c = change(&store, t, writes);
            let result = block_on(store.commit(&c, &[]));
            if matches!(op, Op::Refused(..)) {
                prop_assert!(matches!(result, Err(StoreError::Conflict { .. })), "refused");
            }
            agree(&store, t, users);
        }
    }
}

#[test]
fn readers_never_see_a_torn_or_stale_subject() {
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let one = Facts {
        role: Role::User,
        status: Status::Active,
        template: Some(0),
        crm: true,
        grants: 0b1010,
    };
    let two = Facts {
        role: Role::User,
        status: Status::Suspended,
        template: Some(1),
        crm: false,
        grants: 0b0101,
    };
    let c = change(
        &store,
        t,
        vec![
            Write::InsertTemplate(template(t, 0, 0b1111_0000)),
            Write::InsertTemplate(template(t, 1, 0b0000_1111)),
            Write::InsertUser(user(t, 1, &one)),
        ],
    );
    block_on(store.commit(&c, &[])).unwrap();
    let a = store.subject_locked(t, user_id(1)).unwrap();
    let c = change(&store, t, vec![Write::UpdateUser(user(t, 1, &two))]);
    block_on(store.commit(&c, &[])).unwrap();
    let b = store.subject_locked(t, user_id(1)).unwrap();
    assert_ne!(a, b);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(answer) = store.subject_now(t, user_id(1)) {
                            let got = answer.unwrap().unwrap();
                            assert!(got == a || got == b, "torn read: {got:?}");
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for i in 0..2_000 {
            let f = if i % 2 == 0 { &one } else { &two };
            let c = change(&store, t, vec![Write::UpdateUser(user(t, 1, f))]);
            block_on(store.commit(&c, &[])).unwrap();
            // Visible at the very next check (D6), from this thread.
            let want = if i % 2 == 0 { &a } else { &b };
            assert_eq!(
                store.subject_now(t, user_id(1)).unwrap().unwrap().as_ref(),
                Some(want)
            );
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0, "the readers read");
        }
    });
}

#[test]
fn a_template_edit_is_one_store_for_all_its_users() {
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let f = Facts {
        role: Role::User,
        status: Status::Active,
        template: Some(0),
        crm: false,
        grants: 0,
    };
    let mut writes = vec![Write::InsertTemplate(template(t, 0, 0b1))];
    writes.extend((1..=500).map(|n| Write::InsertUser(user(t, n, &f))));
    block_on(store.commit(&change(&store, t, writes), &[])).unwrap();
    let c = change(
        &store,
        t,
        vec![Write::UpdateTemplate(template(t, 0, 0b110))],
    );
    block_on(store.commit(&c, &[])).unwrap();
    for n in 1..=500 {
        let s = store.subject_now(t, user_id(n)).unwrap().unwrap().unwrap();
        assert_eq!(
            s.template,
            Some((template_id(0), Permissions::from_bits_truncate(0b110)))
        );
    }
}

#[test]
fn claims_and_pending_listings_read_only_what_they_return() {
    use crate::{DeliveryState, DeliveryUpdate};
    use tenantry_core::MessageId;
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let minute = time::Duration::minutes(1);
    let ids: Vec<MessageId> = (0..3u64)
        .map(|n| MessageId::from_parts(1_767_225_800_000 + n, [5; 10]))
        .collect();
    let messages: Vec<tenantry_mail::Message> = ids
        .iter()
        .map(|id| tenantry_mail::Message {
            id: *id,
            tenant_id: t,
            user_id: user_id(0),
            to: "ada@acme.test".into(),
            subject: "s".into(),
            text: "link".into(),
            html: "<p>link</p>".into(),
            date: None,
        })
        .collect();
    let c = change(&store, t, Vec::new());
    block_on(store.commit(&c, &messages)).unwrap();
    let claim = |now: OffsetDateTime, limit| {
        block_on(store.claim_due_mail(t, now, now + minute, limit))
            .unwrap()
            .into_iter()
            .map(|r| r.message.id)
            .collect::<Vec<_>>()
    };
    // The commit queued them at the epoch (no event carries a time here).
    assert_eq!(claim(NOW, 2), ids[..2].to_vec());
    assert_eq!(
        claim(NOW, 2),
        ids[2..].to_vec(),
        "leased ones are not claimed again"
    );
    assert!(claim(NOW, 2).is_empty());
    block_on(store.record_delivery(t, ids[0], &DeliveryUpdate::Sent { at: NOW })).unwrap();
    let retry_at = NOW + minute * 10;
    block_on(store.record_delivery(
        t,
        ids[1],
        &DeliveryUpdate::Retry {
            reason: "busy".into(),
            retry_at,
        },
    ))
    .unwrap();
    // After the lease: the third again; the retried one only at its time; the sent one never.
    assert_eq!(claim(NOW + minute * 2, 10), ids[2..].to_vec());
    assert_eq!(claim(retry_at, 10), vec![ids[2], ids[1]], "by due time");
    let pending: Vec<MessageId> = block_on(store.outbox(t, true, 10))
        .unwrap()
        .into_iter()
        .map(|r| r.message.id)
        .collect();
    assert_eq!(
        pending,
        vec![ids[2], ids[1]],
        "newest first, the sent one gone"
    );
    let sent = block_on(store.outbox_message(t, ids[0])).unwrap().unwrap();
    assert_eq!(sent.state, DeliveryState::Sent { at: NOW });
    assert!(sent.message.text.is_empty() && sent.message.html.is_empty());
    assert!(
        block_on(store.tenants_with_due_mail(NOW, 10))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        block_on(store.tenants_with_due_mail(retry_at + minute * 2, 10)).unwrap(),
        vec![t]
    );
}
