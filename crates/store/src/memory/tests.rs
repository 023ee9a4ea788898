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

use super::{HeldCheck, InMemoryStore};
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

/// CRM and every permission.
fn requests() -> Vec<tenantry_core::Request> {
    let mut all = vec![tenantry_core::Request::Crm];
    all.extend(tenantry_core::Permission::all().map(tenantry_core::Request::Permission));
    all
}

/// Every id ever used (and a few never used) answers the same on both paths.
fn agree(store: &InMemoryStore, t: TenantId, users: usize) {
    for n in 0..users + 3 {
        let fast = store.subject_now(t, user_id(n)).expect("answered");
        let locked = store.subject_locked(t, user_id(n));
        assert_eq!(fast.unwrap(), locked, "user {n}");
        // The check decided in one piece decides as the evaluator does on the locked row.
        for request in requests() {
            let want = locked
                .as_ref()
                .map_or_else(tenantry_core::Decision::unknown_user, |s| {
                    tenantry_core::authorize_subject(s, request)
                });
            let got = store.decide_now(t, user_id(n), request).expect("answered");
            assert_eq!(got.unwrap(), want, "user {n}, {request:?}");
        }
    }
    let other = tenant_id(99);
    assert!(
        store
            .subject_now(other, user_id(0))
            .unwrap()
            .unwrap()
            .is_none()
    );
    // A tenant that does not exist decides an unknown user, on the decided path too.
    let d = store.decide_now(other, user_id(0), tenantry_core::Request::Crm);
    assert_eq!(
        d.expect("answered").unwrap(),
        tenantry_core::Decision::unknown_user()
    );
}

/// Every held check answers as the locked rows do now, or not at all (its user's word moved
/// as the table grew); those taken since the last change always answer. Returns how many
/// answered.
fn held_agree(store: &InMemoryStore, helds: &[HeldCheck], fresh_from: usize) -> usize {
    let mut answered = 0;
    for (k, held) in helds.iter().enumerate() {
        let locked = store.subject_locked(held.tenant(), held.user());
        for request in requests() {
            let want = locked
                .as_ref()
                .map_or_else(tenantry_core::Decision::unknown_user, |s| {
                    tenantry_core::authorize_subject(s, request)
                });
            match held.decide_now(request) {
                Some(got) => {
                    assert_eq!(got, want, "held {k}, {request:?}");
                    answered += 1;
                }
                None => assert!(k < fresh_from, "a check held since the last change answers"),
            }
        }
    }
    answered
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn d6_the_check_index_agrees_with_the_rows(ops in proptest::collection::vec(op(), 1..40)) {
        let store = InMemoryStore::new();
        let t = tenant_id(1);
        new_tenant(&store, t);
        // A second tenant with the same user ids in its own rows never leaks into the first.
        new_tenant(&store, tenant_id(2));
        let mut users = 1;
        let mut templates = 0;
        let mut helds: Vec<HeldCheck> = Vec::new();
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
            // D6 through held checks: those taken at every earlier step, and new ones of
            // every user the index holds now (a deleted user's place still answers: unknown).
            let fresh_from = helds.len();
            helds.extend((0..users + 1).filter_map(|n| store.hold_now(t, user_id(n))));
            prop_assert!(held_agree(&store, &helds, fresh_from) >= (helds.len() - fresh_from) * requests().len());
        }
    }
}

#[test]
fn d6_a_held_check_follows_every_change_and_stops_answering_once_its_word_moves() {
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    // Neither an unknown tenant nor an unknown user is held.
    assert!(store.hold_now(tenant_id(9), user_id(0)).is_none());
    assert!(store.hold_now(t, user_id(1)).is_none());
    let f = Facts {
        role: Role::User,
        status: Status::Active,
        template: Some(0),
        crm: false,
        grants: 0,
    };
    let c = change(
        &store,
        t,
        vec![
            Write::InsertTemplate(template(t, 0, Permissions::USERS_VIEW.bits())),
            Write::InsertUser(user(t, 1, &f)),
        ],
    );
    block_on(store.commit(&c, &[])).unwrap();
    let held = store.hold_now(t, user_id(1)).expect("held");
    assert_eq!((held.tenant(), held.user()), (t, user_id(1)));
    let view =
        tenantry_core::Permission::new(tenantry_core::Category::Users, tenantry_core::Action::View);
    let reason = |h: &HeldCheck| h.decide_now(view.into()).expect("answered").reason();
    assert_eq!(
        reason(&held),
        tenantry_core::Reason::Template {
            template_id: template_id(0)
        }
    );
    // A template edit, a suspension and a deletion are each seen at the next check.
    let c = change(&store, t, vec![Write::UpdateTemplate(template(t, 0, 0))]);
    block_on(store.commit(&c, &[])).unwrap();
    assert_eq!(
        reason(&held),
        tenantry_core::Reason::MissingPermission { permission: view }
    );
    let suspended = Facts {
        status: Status::Suspended,
        ..f
    };
    let c = change(&store, t, vec![Write::UpdateUser(user(t, 1, &suspended))]);
    block_on(store.commit(&c, &[])).unwrap();
    assert_eq!(reason(&held), tenantry_core::Reason::Suspended);
    // Users added until the table grows: the held place stops answering (the word moved),
    // and a check held again answers.
    let before = store.hold_now(t, user_id(0)).expect("held");
    let mut n = 2;
    while before.decide_now(view.into()).is_some() {
        assert!(n < 1_000, "the table grew");
        let c = change(&store, t, vec![Write::InsertUser(user(t, n, &f))]);
        block_on(store.commit(&c, &[])).unwrap();
        n += 1;
    }
    assert!(
        held.decide_now(view.into()).is_none(),
        "the same table grew under both"
    );
    let again = store.hold_now(t, user_id(1)).expect("held");
    assert_eq!(reason(&again), tenantry_core::Reason::Suspended);
    let c = change(&store, t, vec![delete(t, &user(t, 1, &f))]);
    block_on(store.commit(&c, &[])).unwrap();
    assert_eq!(reason(&again), tenantry_core::Reason::UnknownUser);
    // A deleted user is not held anew.
    assert!(store.hold_now(t, user_id(1)).is_none());
    // Ids with one half all zeros are held like any other (only the nil id is never stored).
    let mut bytes = [0u8; 16];
    bytes[12] = 1;
    let low_zero = UserId::from_uuid(uuid::Uuid::from_bytes(bytes));
    bytes = [0u8; 16];
    bytes[3] = 1;
    let high_zero = UserId::from_uuid(uuid::Uuid::from_bytes(bytes));
    for id in [low_zero, high_zero] {
        let mut u = user(t, 1, &f);
        u.id = id;
        u.email = Email::parse(&format!("{id}@acme.test")).unwrap();
        block_on(store.commit(&change(&store, t, vec![Write::InsertUser(u)]), &[])).unwrap();
        let held = store.hold_now(t, id).expect("held");
        assert_eq!(
            reason(&held),
            store
                .decide_now(t, id, view.into())
                .unwrap()
                .unwrap()
                .reason()
        );
    }
    assert!(
        store
            .hold_now(t, UserId::from_uuid(uuid::Uuid::nil()))
            .is_none()
    );
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

/// Over template slots in more than one chunk (the first holds 16) and many distinct direct
/// grants, the check index answers as the rows do; users moved between templates too, and
/// templates in the later chunk edited.
#[test]
fn d6_templates_in_later_chunks_and_many_grant_sets_agree_with_the_rows() {
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let mut writes: Vec<Write> = (0..40)
        .map(|n| Write::InsertTemplate(template(t, n, 1 << (n % 30))))
        .collect();
    let facts = |n: usize| Facts {
        role: Role::User,
        status: Status::Active,
        template: (!n.is_multiple_of(3)).then_some(n % 40),
        crm: n.is_multiple_of(2),
        grants: (n as u32 * 7919) & ((1 << 30) - 1),
    };
    writes.extend((1..=400).map(|n| Write::InsertUser(user(t, n, &facts(n)))));
    block_on(store.commit(&change(&store, t, writes), &[])).unwrap();
    agree(&store, t, 400);
    // Users change grants and templates; templates in the second chunk are edited.
    let mut writes: Vec<Write> = (1..=400)
        .step_by(7)
        .map(|n| Write::UpdateUser(user(t, n, &facts(n + 1))))
        .collect();
    writes.push(Write::UpdateTemplate(template(t, 39, 0b1010)));
    writes.push(Write::UpdateTemplate(template(t, 33, 0)));
    block_on(store.commit(&change(&store, t, writes), &[])).unwrap();
    agree(&store, t, 400);
    let s = store.subject_now(t, user_id(79)).unwrap().unwrap().unwrap();
    assert_eq!(
        s.template,
        Some((template_id(39), Permissions::from_bits_truncate(0b1010)))
    );
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

// ---------------------------------------------------------------------------------------------
// D28 one person, several tenants: the identity index per tenant and the people index
// ---------------------------------------------------------------------------------------------

use crate::{MAX_PAGE_SIZE, Membership, Person, TenantCursor};
use tenantry_core::IdentityId;

fn ident(s: &str) -> IdentityId {
    IdentityId::parse(s).unwrap()
}

/// A tenant named `name` whose first admin (user 0) has the address `admin`.
fn named_tenant(store: &InMemoryStore, t: TenantId, name: &str, admin: &str) {
    let tenant = Tenant {
        id: t,
        name: name.into(),
        user_limit: None,
        created_at: NOW,
    };
    let c = decide::create_tenant(tenant, user_id(0), Email::parse(admin).unwrap()).unwrap();
    block_on(store.commit(&c, &[])).unwrap();
}

fn plain_user(t: TenantId, n: usize, email: &str, identity: Option<&str>) -> User {
    User {
        email: Email::parse(email).unwrap(),
        identity: identity.map(ident),
        ..user(
            t,
            n,
            &Facts {
                role: Role::User,
                status: Status::Active,
                template: None,
                crm: false,
                grants: 0,
            },
        )
    }
}

fn commit(store: &InMemoryStore, t: TenantId, writes: Vec<Write>) -> Result<(), StoreError> {
    let c = change(store, t, writes);
    block_on(store.commit(&c, &[]))
}

fn delete(t: TenantId, u: &User) -> Write {
    Write::DeleteUser(Tombstone {
        user_id: u.id,
        tenant_id: t,
        email: u.email.clone(),
        deleted_at: NOW,
        deleted_by: ActorRef::System,
    })
}

fn members(
    store: &InMemoryStore,
    p: &Person,
    after: Option<&TenantCursor>,
    limit: u32,
) -> Vec<Membership> {
    block_on(store.memberships(p, after, limit)).unwrap()
}

fn tenants_of(store: &InMemoryStore, p: &Person) -> Vec<TenantId> {
    super::read(&store.shared.people).tenants_of(p).unwrap()
}

fn by_email(e: &str) -> Person {
    Person::Email(Email::parse(e).unwrap())
}

#[test]
fn d28_person_hash_is_fnv_1a() {
    assert_eq!(super::person_hash(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(super::person_hash("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(super::person_hash("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn d28_the_people_index_counts_users_per_tenant_and_forgets_the_last() {
    let mut people = super::People::default();
    let t = tenant_id(1);
    let a = plain_user(t, 1, "pat@x.test", Some("sub"));
    let b = plain_user(t, 2, "pat@x.test", Some("sub"));
    let key = |e: &str| super::People::key(super::person_hash(e), 0);
    people.update(t, None, Some(&a));
    people.update(t, None, Some(&b));
    assert_eq!(people.by_email.get(&key("pat@x.test")), Some(&2));
    assert_eq!(people.by_identity.get(&key("sub")), Some(&2));
    // The same hashes again: nothing moves.
    people.update(t, Some(&a), Some(&a));
    assert_eq!(people.by_email.get(&key("pat@x.test")), Some(&2));
    people.update(t, Some(&a), None);
    assert_eq!(people.by_email.get(&key("pat@x.test")), Some(&1));
    assert_eq!(people.by_identity.get(&key("sub")), Some(&1));
    people.update(t, Some(&b), None);
    assert!(
        people.by_email.is_empty() && people.by_identity.is_empty(),
        "no zero counts are kept"
    );
    // A decrement of a key never counted leaves nothing behind.
    people.update(t, Some(&b), None);
    assert!(people.by_email.is_empty() && people.by_identity.is_empty());
}

#[test]
fn d28_memberships_are_found_through_the_index_across_tenants_in_name_order() {
    let store = InMemoryStore::new();
    let (t1, t2, t3, t4) = (tenant_id(1), tenant_id(2), tenant_id(3), tenant_id(4));
    named_tenant(&store, t1, "Zenith", "pat@x.test");
    named_tenant(&store, t2, "acme", "other@x.test");
    named_tenant(&store, t3, "Acme", "third@x.test");
    named_tenant(&store, t4, "Beta", "fourth@x.test");
    let pat2 = plain_user(t2, 1, "Pat@X.test", Some("sub"));
    let pat3 = plain_user(t3, 1, "pat@x.test", None);
    commit(&store, t2, vec![Write::InsertUser(pat2.clone())]).unwrap();
    commit(&store, t3, vec![Write::InsertUser(pat3.clone())]).unwrap();
    commit(
        &store,
        t4,
        vec![Write::InsertUser(plain_user(
            t4,
            1,
            "quinn@x.test",
            Some("sub"),
        ))],
    )
    .unwrap();
    let pat = by_email("PAT@x.test");
    // The index names exactly the tenants holding the key, never every tenant.
    let mut found = tenants_of(&store, &pat);
    found.sort();
    assert_eq!(found, vec![t1, t2, t3]);
    let mut with_sub = tenants_of(&store, &Person::Identity(ident("sub")));
    with_sub.sort();
    assert_eq!(with_sub, vec![t2, t4]);
    assert!(tenants_of(&store, &by_email("nobody@x.test")).is_empty());
    assert!(tenants_of(&store, &Person::Identity(ident("Sub"))).is_empty());
    // Byte order: "Acme" < "Zenith" < "acme".
    let all = members(&store, &pat, None, 10);
    let names: Vec<(&str, TenantId, UserId)> = all
        .iter()
        .map(|m| (m.tenant_name.as_str(), m.tenant_id, m.user_id))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Acme", t3, user_id(1)),
            ("Zenith", t1, user_id(0)),
            ("acme", t2, user_id(1))
        ]
    );
    assert_eq!(
        all[2],
        Membership::of(&block_on(store.tenant(t2)).unwrap().unwrap().tenant, &pat2)
    );
    // Strictly after the cursor; limit 0 is one; the limit cuts.
    let after = all[0].cursor();
    let rest = members(&store, &pat, Some(&after), 10);
    assert_eq!(rest, all[1..].to_vec());
    assert_eq!(
        members(&store, &pat, Some(&all[2].cursor()), 10),
        Vec::new()
    );
    assert_eq!(members(&store, &pat, None, 2), all[..2].to_vec());
    assert_eq!(members(&store, &pat, None, 0), all[..1].to_vec());
    // Same name, then the id decides (and the cursor's id counts).
    let same = TenantCursor {
        name: "Acme".into(),
        id: tenant_id(0),
    };
    assert_eq!(members(&store, &pat, Some(&same), 10), all);
    let by_id: Vec<TenantId> = members(&store, &Person::Identity(ident("sub")), None, 10)
        .iter()
        .map(|m| m.tenant_id)
        .collect();
    assert_eq!(by_id, vec![t4, t2], "Beta before acme");
    assert_eq!(
        block_on(store.user_by_identity(t2, &ident("sub"))).unwrap(),
        Some(pat2.clone())
    );
    assert_eq!(
        block_on(store.user_by_identity(t3, &ident("sub"))).unwrap(),
        None
    );
    assert_eq!(
        block_on(store.user_by_identity(tenant_id(9), &ident("sub"))).unwrap(),
        None
    );

    // An address change moves the membership; a deleted user leaves both lookups.
    let moved = User {
        email: Email::parse("pat@new.test").unwrap(),
        ..pat2.clone()
    };
    commit(&store, t2, vec![Write::UpdateUser(moved.clone())]).unwrap();
    // The tenant's own address index moved too: the old address is free, the new one found.
    assert_eq!(
        block_on(store.user_by_email(t2, "pat@x.test")).unwrap(),
        None
    );
    assert_eq!(
        block_on(store.user_by_email(t2, "pat@new.test")).unwrap(),
        Some(moved.clone())
    );
    assert_eq!(members(&store, &pat, None, 10).len(), 2);
    assert_eq!(
        members(&store, &by_email("pat@new.test"), None, 10).len(),
        1
    );
    commit(&store, t2, vec![delete(t2, &moved)]).unwrap();
    assert!(members(&store, &by_email("pat@new.test"), None, 10).is_empty());
    assert!(tenants_of(&store, &by_email("pat@new.test")).is_empty());
    assert_eq!(
        members(&store, &Person::Identity(ident("sub")), None, 10)
            .iter()
            .map(|m| m.tenant_id)
            .collect::<Vec<_>>(),
        vec![t4]
    );
    assert_eq!(
        block_on(store.user_by_identity(t2, &ident("sub"))).unwrap(),
        None
    );
    assert_eq!(
        tenants_of(&store, &Person::Identity(ident("sub"))),
        vec![t4]
    );
}

#[test]
fn d28_identity_is_unique_per_tenant_and_its_index_follows_every_change() {
    let store = InMemoryStore::new();
    let (t, other) = (tenant_id(1), tenant_id(2));
    named_tenant(&store, t, "Acme", "ada@acme.test");
    named_tenant(&store, other, "Beta", "ada@acme.test");
    let a = plain_user(t, 1, "a@acme.test", Some("sub"));
    let b = plain_user(t, 2, "b@acme.test", None);
    commit(
        &store,
        t,
        vec![Write::InsertUser(a.clone()), Write::InsertUser(b.clone())],
    )
    .unwrap();
    // The same id elsewhere in the tenant is refused, and nothing of the commit stays.
    let taken = commit(
        &store,
        t,
        vec![Write::UpdateUser(User {
            identity: Some(ident("sub")),
            ..b.clone()
        })],
    );
    assert!(matches!(
        taken,
        Err(StoreError::Conflict {
            constraint: crate::Constraint::UserIdentity
        })
    ));
    assert_eq!(block_on(store.user(t, b.id)).unwrap(), Some(b.clone()));
    // The holder itself may be written again with it (another field changing).
    let renamed = User {
        email: Email::parse("a2@acme.test").unwrap(),
        ..a.clone()
    };
    commit(&store, t, vec![Write::UpdateUser(renamed.clone())]).unwrap();
    assert_eq!(
        block_on(store.user_by_identity(t, &ident("sub"))).unwrap(),
        Some(renamed.clone())
    );
    // In another tenant it is simply that person's user there.
    commit(
        &store,
        other,
        vec![Write::InsertUser(plain_user(
            other,
            1,
            "x@beta.test",
            Some("sub"),
        ))],
    )
    .unwrap();
    // Replaced: the old id is free at once, the new one found.
    let replaced = User {
        identity: Some(ident("sub2")),
        ..renamed.clone()
    };
    commit(&store, t, vec![Write::UpdateUser(replaced.clone())]).unwrap();
    assert_eq!(
        block_on(store.user_by_identity(t, &ident("sub"))).unwrap(),
        None
    );
    assert_eq!(
        block_on(store.user_by_identity(t, &ident("sub2"))).unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(
        tenants_of(&store, &Person::Identity(ident("sub"))),
        vec![other]
    );
    // Now b may take the freed id.
    let b_sub = User {
        identity: Some(ident("sub")),
        ..b.clone()
    };
    commit(&store, t, vec![Write::UpdateUser(b_sub.clone())]).unwrap();
    // A write that keeps the address keeps it findable.
    assert_eq!(
        block_on(store.user_by_email(t, "b@acme.test")).unwrap(),
        Some(b_sub.clone())
    );
    assert_eq!(
        block_on(store.user_by_identity(t, &ident("sub"))).unwrap(),
        Some(b_sub)
    );
    // Cleared: gone from both lookups.
    let cleared = User {
        identity: None,
        ..replaced
    };
    commit(&store, t, vec![Write::UpdateUser(cleared)]).unwrap();
    assert_eq!(
        block_on(store.user_by_identity(t, &ident("sub2"))).unwrap(),
        None
    );
    assert!(members(&store, &Person::Identity(ident("sub2")), None, 10).is_empty());
    assert!(tenants_of(&store, &Person::Identity(ident("sub2"))).is_empty());
}

#[test]
fn d28_memberships_pages_hold_at_most_one_more_than_the_largest_page() {
    let store = InMemoryStore::new();
    let n = usize::try_from(MAX_PAGE_SIZE).unwrap() + 3;
    for i in 0..n {
        let t = TenantId::from_parts(1_767_225_600_000 + i as u64, [3; 10]);
        named_tenant(&store, t, &format!("T{i:04}"), "pat@x.test");
    }
    let pat = by_email("pat@x.test");
    let page = members(&store, &pat, None, u32::MAX);
    assert_eq!(page.len(), n - 2, "clamped to {} + 1", MAX_PAGE_SIZE);
    assert_eq!(page[0].tenant_name, "T0000");
    assert_eq!(members(&store, &pat, None, MAX_PAGE_SIZE + 1).len(), n - 2);
}

#[test]
fn d10_an_accepted_token_is_used_not_revoked_and_its_siblings_are_revoked() {
    use tenantry_core::{Invitation, InvitationKind, InvitationState, TokenHash};
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let invited = User {
        status: Status::Invited,
        ..plain_user(t, 1, "bob@acme.test", None)
    };
    let token = |n: u8, kind| Invitation {
        token_hash: TokenHash([n; 32]),
        tenant_id: t,
        user_id: invited.id,
        kind,
        state: InvitationState::Pending,
        created_at: NOW,
        expires_at: NOW + time::Duration::days(7),
        failed_attempts: 0,
    };
    let (first, second) = (
        token(1, InvitationKind::Initial),
        token(2, InvitationKind::Resend),
    );
    commit(
        &store,
        t,
        vec![
            Write::InsertUser(invited.clone()),
            Write::InsertInvitation(first.clone()),
            Write::InsertInvitation(second.clone()),
        ],
    )
    .unwrap();
    // What an accept writes: every pending token of the user revoked, this one used.
    commit(
        &store,
        t,
        vec![
            Write::RevokeInvitations(invited.id),
            Write::UseInvitation(second.token_hash),
        ],
    )
    .unwrap();
    let state = |h: &TokenHash| block_on(store.invitation(t, h)).unwrap().unwrap().state;
    assert_eq!(state(&second.token_hash), InvitationState::Used);
    assert_eq!(state(&first.token_hash), InvitationState::Revoked);
}

// ---------------------------------------------------------------------------------------------
// The compact rows (`rows.rs`, `users.rs`) against plain models.

use super::rows::{Slab, SlotMap, Sorted};
use crate::{SortBy, UserQuery};
use std::collections::{BTreeSet, HashMap};
use tenantry_core::{Invitation, InvitationKind, InvitationState, TokenHash};

/// Few distinct hashes (long runs, wrapping round the table) or spread ones.
fn slot_hash(k: u32, crowded: bool) -> u64 {
    if crowded {
        (u64::from(k % 5) * 0x3333_3333) << 32
    } else {
        u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_slot_map_agrees_with_a_hash_set(
        crowded in any::<bool>(),
        ops in proptest::collection::vec((0u32..80, any::<bool>()), 1..400),
    ) {
        let mut map = SlotMap::default();
        let mut model = std::collections::HashSet::new();
        for (k, add) in ops {
            if add {
                if model.insert(k) {
                    map.insert(slot_hash(k, crowded), k);
                }
            } else {
                let removed = map.remove(slot_hash(k, crowded), |s| s == k);
                prop_assert_eq!(removed.is_some(), model.remove(&k));
            }
            for k in 0..80 {
                let found = map.find(slot_hash(k, crowded), |s| s == k);
                prop_assert_eq!(found, model.contains(&k).then_some(k), "key {}", k);
            }
        }
    }

    #[test]
    fn the_sorted_index_agrees_with_a_b_tree(
        ops in proptest::collection::vec((0u32..400, 0u32..50, any::<bool>(), any::<bool>()), 1..1500),
        probe in 0u32..50,
    ) {
        // Slot `s` has key `keys[s]`; the index orders by (key, slot), its fences too.
        let mut keys: Vec<Option<u32>> = vec![None; 400];
        let mut sorted: Sorted<(u32, u32)> = Sorted::default();
        let mut model = BTreeSet::new();
        for (slot, key, add, partial) in ops {
            fn before(keys: &[Option<u32>], k: (u32, u32)) -> impl FnMut(u32) -> bool + '_ {
                move |s: u32| keys[s as usize].is_some_and(|x| (x, s) < k)
            }
            let key_of = |keys: &[Option<u32>], s: u32| keys[s as usize].map(|x| (x, s));
            if let Some(old) = keys[slot as usize] {
                let k = (old, slot);
                prop_assert!(sorted.remove(slot, |f| *f < k, before(&keys, k)));
                model.remove(&k);
                keys[slot as usize] = None;
            }
            if add && partial && !keys.contains(&Some(key)) {
                // Found by the first part of the key alone (as the email index is, by
                // address), then inserted there: the fences must still hold.
                let k = (key, slot);
                let at = sorted.seek(|f| f.0 < key, |s| keys[s as usize].is_some_and(|x| x < key));
                sorted.insert_at(at, slot, k, |s| key_of(&keys, s));
                keys[slot as usize] = Some(key);
                model.insert(k);
            } else if add {
                let k = (key, slot);
                sorted.insert(slot, k, before(&keys, k), |s| key_of(&keys, s));
                keys[slot as usize] = Some(key);
                model.insert(k);
            }
        }
        let all: Vec<u32> = sorted.from((0, 0)).collect();
        let want: Vec<u32> = model.iter().map(|(_, s)| *s).collect();
        prop_assert_eq!(&all, &want);
        let at = sorted.seek(|f| f.0 < probe, |s| keys[s as usize].is_some_and(|x| x < probe));
        let after: Vec<u32> = sorted.from(at).collect();
        let want: Vec<u32> = model.range((probe, 0)..).map(|(_, s)| *s).collect();
        prop_assert_eq!(after, want);
        let before: Vec<u32> = sorted.before(at).collect();
        let want: Vec<u32> = model.range(..(probe, 0)).rev().map(|(_, s)| *s).collect();
        prop_assert_eq!(before, want);
        let end = sorted.end();
        prop_assert_eq!(sorted.before(end).count(), model.len());
        prop_assert_eq!(sorted.from(end).count(), 0);
    }
}

#[test]
fn the_slab_reuses_freed_slots_and_iterates_in_slot_order() {
    let mut slab = Slab::default();
    let slots: Vec<u32> = (0..3000u32).map(|v| slab.insert(v).unwrap()).collect();
    assert_eq!(slots, (0..3000).collect::<Vec<_>>());
    assert_eq!(slab.remove(1500), Some(1500));
    assert_eq!(slab.remove(1500), None);
    assert_eq!(slab.get(1500), None);
    assert_eq!(slab.insert(7).unwrap(), 1500);
    assert_eq!(slab.get(1500), Some(&7));
    *slab.get_mut(2999).unwrap() = 1;
    let seen: Vec<(u32, u32)> = slab.iter().map(|(s, v)| (s, *v)).collect();
    assert_eq!(seen.len(), 3000);
    assert_eq!(seen[1500], (1500, 7));
    assert_eq!(seen[2999], (2999, 1));
}

#[derive(Debug, Clone)]
enum ListOp {
    Add {
        email: u8,
        created: u8,
        login: Option<u8>,
    },
    Update {
        user: usize,
        email: u8,
        login: Option<u8>,
    },
    Delete(usize),
    /// An update followed by a refused write: nothing may change.
    Refused {
        user: usize,
        email: u8,
    },
}

fn list_op() -> impl Strategy<Value = ListOp> {
    prop_oneof![
        5 => (0u8..40, 0u8..6, proptest::option::of(0u8..6))
            .prop_map(|(email, created, login)| ListOp::Add { email, created, login }),
        3 => (0usize..40, 0u8..40, proptest::option::of(0u8..6))
            .prop_map(|(user, email, login)| ListOp::Update { user, email, login }),
        1 => (0usize..40).prop_map(ListOp::Delete),
        1 => (0usize..40, 0u8..40).prop_map(|(user, email)| ListOp::Refused { user, email }),
    ]
}

fn at(n: u8) -> OffsetDateTime {
    NOW + time::Duration::seconds(i64::from(n))
}

/// Every page of every order, walked with cursors, both ways.
fn pages(store: &InMemoryStore, t: TenantId, sort: SortBy, descending: bool) -> Vec<UserId> {
    let mut out = Vec::new();
    let mut query = UserQuery {
        sort,
        descending,
        limit: 3,
        ..UserQuery::default()
    };
    loop {
        let page = block_on(store.list_users(t, &query)).unwrap();
        out.extend(page.items.iter().map(|u| u.id));
        match page.next {
            Some(c) => query.after = Some(c),
            None => return out,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn listings_follow_the_rows_in_every_order(ops in proptest::collection::vec(list_op(), 1..60)) {
        let store = InMemoryStore::new();
        let t = tenant_id(1);
        new_tenant(&store, t);
        let mut model: HashMap<UserId, User> = HashMap::new();
        model.insert(user_id(0), block_on(store.user(t, user_id(0))).unwrap().unwrap());
        let mut next = 1;
        for op in ops {
            let ids: Vec<UserId> = { let mut v: Vec<_> = model.keys().copied().collect(); v.sort(); v };
            let pick = |n: usize| ids.get(n % ids.len().max(1)).copied();
            let mut expect: Option<User> = None;
            let writes = match op {
                ListOp::Add { email, created, login } => {
                    next += 1;
                    let mut u = plain_user(t, next, &format!("p{email}@acme.test"), None);
                    u.created_at = at(created);
                    u.last_login = login.map(at);
                    expect = Some(u.clone());
                    vec![Write::InsertUser(u)]
                }
                ListOp::Update { user, email, login } => {
                    let Some(id) = pick(user) else { continue };
                    let mut u = model[&id].clone();
                    u.email = Email::parse(&format!("P{email}@Acme.test")).unwrap();
                    u.last_login = login.map(at);
                    expect = Some(u.clone());
                    vec![Write::UpdateUser(u)]
                }
                ListOp::Delete(user) => {
                    let Some(id) = pick(user) else { continue };
                    vec![delete(t, &model[&id])]
                }
                ListOp::Refused { user, email } => {
                    let Some(id) = pick(user) else { continue };
                    let mut u = model[&id].clone();
                    u.email = Email::parse(&format!("r{email}@acme.test")).unwrap();
                    let ghost = plain_user(t, 10_000, "ghost@acme.test", None);
                    vec![Write::UpdateUser(u), Write::UpdateUser(ghost)]
                }
            };
            let delete_id = match &writes[0] { Write::DeleteUser(d) => Some(d.user_id), _ => None };
            if commit(&store, t, writes).is_ok() {
                if let Some(u) = expect { model.insert(u.id, u); }
                if let Some(id) = delete_id { model.remove(&id); }
            }
            for (id, u) in &model {
                let row = block_on(store.user(t, *id)).unwrap();
                prop_assert_eq!(row.as_ref(), Some(u));
                let by_key = block_on(store.user_by_email(t, u.email.key())).unwrap();
                prop_assert_eq!(by_key.map(|x| x.id), Some(*id));
            }
        }
        let mut all: Vec<&User> = model.values().collect();
        for sort in [SortBy::Email, SortBy::CreatedAt, SortBy::LastLogin] {
            all.sort_by(|a, b| match sort {
                SortBy::Email => (a.email.key(), a.id).cmp(&(b.email.key(), b.id)),
                SortBy::CreatedAt => (a.created_at, a.id).cmp(&(b.created_at, b.id)),
                SortBy::LastLogin => (a.last_login, a.id).cmp(&(b.last_login, b.id)),
            });
            let want: Vec<UserId> = all.iter().map(|u| u.id).collect();
            prop_assert_eq!(pages(&store, t, sort, false), want.clone(), "{:?} ascending", sort);
            let back: Vec<UserId> = want.into_iter().rev().collect();
            prop_assert_eq!(pages(&store, t, sort, true), back, "{:?} descending", sort);
        }
    }
}

fn invitation(t: TenantId, user: usize, n: u8) -> Invitation {
    Invitation {
        token_hash: TokenHash([n; 32]),
        tenant_id: t,
        user_id: user_id(user),
        kind: InvitationKind::Initial,
        state: InvitationState::Pending,
        created_at: NOW,
        expires_at: at(200),
        failed_attempts: 0,
    }
}

#[test]
fn invitations_live_in_their_users_rows_and_outlive_a_deleted_user() {
    let store = InMemoryStore::new();
    let t = tenant_id(1);
    new_tenant(&store, t);
    let u = plain_user(t, 1, "bo@acme.test", None);
    commit(&store, t, vec![Write::InsertUser(u.clone())]).unwrap();
    let (a, b) = (invitation(t, 1, 1), invitation(t, 1, 2));
    commit(&store, t, vec![Write::InsertInvitation(a.clone())]).unwrap();
    commit(&store, t, vec![Write::InsertInvitation(b.clone())]).unwrap();
    // A refused change leaves no invitation behind, and a token is unique.
    let refused = vec![
        Write::InsertInvitation(invitation(t, 1, 3)),
        Write::InsertInvitation(invitation(t, 1, 1)),
    ];
    assert!(commit(&store, t, refused).is_err());
    assert!(
        block_on(store.invitation(t, &TokenHash([3; 32])))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        block_on(store.invitations_of(t, u.id)).unwrap(),
        vec![a.clone(), b.clone()]
    );
    // For a user with no row: refused.
    assert!(
        commit(
            &store,
            t,
            vec![Write::InsertInvitation(invitation(t, 9, 4))]
        )
        .is_err()
    );
    commit(&store, t, vec![Write::UseInvitation(a.token_hash)]).unwrap();
    let used = block_on(store.invitation(t, &a.token_hash))
        .unwrap()
        .unwrap();
    assert_eq!(used.state, InvitationState::Used);
    assert_eq!(block_on(store.invitations_of(t, u.id)).unwrap()[1], b);
    // A refused deletion keeps the user; a deletion keeps its invitations readable.
    let ghost = plain_user(t, 10_000, "ghost@acme.test", None);
    assert!(commit(&store, t, vec![delete(t, &u), Write::UpdateUser(ghost)]).is_err());
    assert_eq!(block_on(store.user(t, u.id)).unwrap(), Some(u.clone()));
    commit(&store, t, vec![delete(t, &u)]).unwrap();
    assert!(block_on(store.user(t, u.id)).unwrap().is_none());
    assert!(
        block_on(store.user_by_email(t, "bo@acme.test"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        block_on(store.invitation(t, &b.token_hash)).unwrap(),
        Some(b.clone())
    );
    assert_eq!(block_on(store.invitations_of(t, u.id)).unwrap().len(), 2);
    // The address is free again for a new user.
    commit(
        &store,
        t,
        vec![Write::InsertUser(plain_user(t, 2, "bo@acme.test", None))],
    )
    .unwrap();
    assert_eq!(
        block_on(store.user_by_email(t, "bo@acme.test"))
            .unwrap()
            .map(|u| u.id),
        Some(user_id(2))
    );
}
