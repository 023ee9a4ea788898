#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `read_snapshot`, the trait's default `Store::snapshot` ([concurrency (D16)](tenantry_core::Rule::Concurrency)):
//! it reads exactly the rows a request names, after the tenant, one read per row, and
//! nothing else once the tenant is missing.

use std::sync::Mutex;

use async_trait::async_trait;
use tenantry_core::{
    AuditEvent, AuditRecord, Change, Email, Invitation, MessageId, Permissions, Role, RoleTemplate,
    Status, TemplateId, TemplateName, Tenant, TenantId, TenantState, TokenHash, Tombstone, User,
    UserId, Write, decide,
};
use tenantry_mail::Message;
use tenantry_store::{
    DeliveryUpdate, InMemoryStore, OutboxRecord, Page, Snapshot, SnapshotRequest, Store,
    StoreError, UserQuery, read_snapshot,
};
use time::OffsetDateTime;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The in-memory store, recording every row read `read_snapshot` may make.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemoryStore,
    reads: Mutex<Vec<String>>,
}

impl Counting {
    fn log(&self, what: String) {
        self.reads.lock().unwrap().push(what);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

#[async_trait]
impl Store for Counting {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.log("tenant".into());
        self.inner.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.log(format!("user {id}"));
        self.inner.user(tenant, id).await
    }
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.log(format!("email {key}"));
        self.inner.user_by_email(tenant, key).await
    }
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.log(format!("template {id}"));
        self.inner.template(tenant, id).await
    }
    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.inner.template_by_name(tenant, key).await
    }
    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        self.inner.templates(tenant).await
    }
    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        self.inner.count_template_users(tenant, template).await
    }
    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.inner.invitation(tenant, hash).await
    }
    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.inner.invitations_of(tenant, user).await
    }
    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        self.inner.list_users(tenant, query).await
    }
    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.inner.tombstone(tenant, user).await
    }
    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit(tenant, after, limit).await
    }
    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.inner.commit(change, outbox).await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.inner.append_audit(event).await
    }
    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.outbox(tenant, pending_only, limit).await
    }
    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.inner.outbox_message(tenant, id).await
    }
    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner
            .claim_due_mail(tenant, now, lease_until, limit)
            .await
    }
    async fn claim_message(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.inner.claim_message(tenant, id, now, lease_until).await
    }
    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.inner.record_delivery(tenant, id, update).await
    }
    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.inner.tenants_with_due_mail(now, limit).await
    }
}

const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

fn tenant_id(n: u8) -> TenantId {
    TenantId::from_parts(1_767_225_600_000, [n; 10])
}

fn user_id(n: u64) -> UserId {
    UserId::from_parts(1_767_225_600_000 + n, [7; 10])
}

fn template_id(n: u64) -> TemplateId {
    TemplateId::from_parts(1_767_225_700_000 + n, [9; 10])
}

fn user(t: TenantId, n: u64, template: Option<TemplateId>) -> User {
    User {
        id: user_id(n),
        tenant_id: t,
        email: Email::parse(&format!("u{n}@acme.test")).unwrap(),
        role: Role::User,
        status: Status::Active,
        template_id: template,
        crm_access: false,
        grants: Permissions::empty(),
        created_at: NOW,
        last_login: None,
        invite_expires_at: None,
        identity: None,
    }
}

fn template(t: TenantId, n: u64) -> RoleTemplate {
    RoleTemplate {
        id: template_id(n),
        tenant_id: t,
        name: TemplateName::parse(&format!("Template {n}")).unwrap(),
        permissions: Permissions::USERS_VIEW,
        created_at: NOW,
        updated_at: NOW,
    }
}

/// A tenant (admin user 0) with templates 1, 2 and 3, user 1 on template 1, user 2 on
/// template 2 and user 3 on none.
fn fixture() -> (Counting, TenantId, Vec<User>, Vec<RoleTemplate>) {
    let store = Counting::default();
    let t = tenant_id(1);
    let tenant = Tenant {
        id: t,
        name: "Acme".into(),
        user_limit: None,
        created_at: NOW,
    };
    let c =
        decide::create_tenant(tenant, user_id(0), Email::parse("ada@acme.test").unwrap()).unwrap();
    block_on(store.commit(&c, &[])).unwrap();
    let templates: Vec<RoleTemplate> = (1..=3).map(|n| template(t, n)).collect();
    let users = vec![
        user(t, 1, Some(template_id(1))),
        user(t, 2, Some(template_id(2))),
        user(t, 3, None),
    ];
    let state = block_on(store.tenant(t)).unwrap().unwrap();
    let mut counters = state.counters;
    counters.version += 1;
    let writes = templates
        .iter()
        .cloned()
        .map(Write::InsertTemplate)
        .chain(users.iter().cloned().map(Write::InsertUser))
        .collect();
    let c = Change {
        tenant_id: t,
        expected_version: state.counters.version,
        counters,
        writes,
        events: Vec::new(),
    };
    block_on(store.commit(&c, &[])).unwrap();
    store.take();
    (store, t, users, templates)
}

#[test]
fn d16_a_snapshot_of_the_tenant_alone_reads_the_tenant_only() {
    let (store, t, _, _) = fixture();
    let snap = block_on(read_snapshot(&store, t, &SnapshotRequest::default())).unwrap();
    let state = block_on(store.inner.tenant(t)).unwrap();
    let mut expected = Snapshot::default();
    expected.state = state;
    assert_eq!(snap, expected);
    assert_eq!(store.take(), vec!["tenant"]);
}

#[test]
fn d16_a_snapshot_reads_every_row_asked_for_once_after_the_tenant() {
    let (store, t, users, templates) = fixture();
    let request = SnapshotRequest::default()
        .actor(user_id(1))
        .target(user_id(2))
        .template(Some(template_id(3)))
        .email_key("u3@acme.test");
    let snap = block_on(read_snapshot(&store, t, &request)).unwrap();
    assert_eq!(snap.state, block_on(store.inner.tenant(t)).unwrap());
    assert_eq!(snap.actor.as_ref(), Some(&users[0]));
    assert_eq!(snap.actor_template.as_ref(), Some(&templates[0]));
    assert_eq!(snap.target.as_ref(), Some(&users[1]));
    assert_eq!(snap.target_template.as_ref(), Some(&templates[1]));
    assert_eq!(snap.template.as_ref(), Some(&templates[2]));
    assert_eq!(snap.email_user.as_ref(), Some(&users[2]));
    assert_eq!(
        store.take(),
        vec![
            "tenant".to_owned(),
            format!("user {}", user_id(1)),
            format!("template {}", template_id(1)),
            format!("user {}", user_id(2)),
            format!("template {}", template_id(2)),
            format!("template {}", template_id(3)),
            "email u3@acme.test".to_owned(),
        ]
    );
}

#[test]
fn d16_an_actor_acting_on_itself_is_read_once() {
    let (store, t, users, templates) = fixture();
    let request = SnapshotRequest::default()
        .actor(user_id(1))
        .target(user_id(1));
    let snap = block_on(read_snapshot(&store, t, &request)).unwrap();
    assert_eq!(snap.actor.as_ref(), Some(&users[0]));
    assert_eq!(snap.target.as_ref(), Some(&users[0]));
    assert_eq!(snap.actor_template.as_ref(), Some(&templates[0]));
    assert_eq!(snap.target_template.as_ref(), Some(&templates[0]));
    assert_eq!(
        store.take(),
        vec![
            "tenant".to_owned(),
            format!("user {}", user_id(1)),
            format!("template {}", template_id(1)),
            format!("template {}", template_id(1)),
        ]
    );
    // A target alone is read as a target.
    let snap = block_on(read_snapshot(
        &store,
        t,
        &SnapshotRequest::default().target(user_id(3)),
    ))
    .unwrap();
    assert_eq!((snap.actor, snap.target.as_ref()), (None, Some(&users[2])));
    assert_eq!(snap.target_template, None, "user 3 has no template");
    assert_eq!(
        store.take(),
        vec!["tenant".to_owned(), format!("user {}", user_id(3))]
    );
}

#[test]
fn d16_missing_rows_are_none_and_a_missing_tenant_stops_the_reads() {
    let (store, t, _, _) = fixture();
    let everything = SnapshotRequest::default()
        .actor(user_id(8))
        .target(user_id(9))
        .template(Some(template_id(8)))
        .email_key("nobody@acme.test");
    let snap = block_on(read_snapshot(&store, t, &everything)).unwrap();
    assert!(snap.state.is_some());
    assert_eq!(
        (
            snap.actor,
            snap.actor_template,
            snap.target,
            snap.target_template,
            snap.template,
            snap.email_user
        ),
        (None, None, None, None, None, None)
    );
    assert_eq!(
        store.take().len(),
        5,
        "tenant, two users, a template, an address"
    );
    let none = block_on(read_snapshot(&store, tenant_id(9), &everything)).unwrap();
    assert_eq!(none, Snapshot::default());
    assert_eq!(store.take(), vec!["tenant"]);
    // The default Store::snapshot is this function.
    let request = SnapshotRequest::default().actor(user_id(2));
    assert_eq!(
        block_on(store.snapshot(t, &request)).unwrap(),
        block_on(read_snapshot(&store.inner, t, &request)).unwrap()
    );
}
