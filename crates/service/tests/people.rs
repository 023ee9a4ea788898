#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! One person across tenants (D28) at the service: pages of memberships, the identity
//! uniqueness refusal (by the rule, audited, and by the store's index in a race), and the
//! host's one-read user listing (issue 14, D15).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use tenantry_core::{Invitation, TokenHash};
use tenantry_mail::Message;
use tenantry_service::prelude::*;
use tenantry_service::{
    AuditAction, AuditEvent, AuditRecord, AuditTarget, Error, IdentityId, MessageId, OutboxRecord,
    Outcome, Page, RoleTemplate, Rule, RuleError, Store, StoreError, TemplateId, TenantCursor,
    TenantId, TenantState, Tombstone, User, UserId,
};
use tenantry_store::DeliveryUpdate;

/// The in-memory store, counting tenant reads, and optionally hiding who holds an
/// identity id (as a racing writer would: the check passes, the commit's index refuses).
#[derive(Debug, Default)]
struct Probe {
    inner: InMemoryStore,
    tenant_reads: AtomicUsize,
    hide_identities: AtomicBool,
}

#[async_trait]
impl Store for Probe {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.tenant_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.inner.user(tenant, id).await
    }
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_email(tenant, key).await
    }
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
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
    async fn commit(
        &self,
        change: &tenantry_core::Change,
        outbox: &[Message],
    ) -> Result<(), StoreError> {
        self.inner.commit(change, outbox).await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.inner.append_audit(event).await
    }
    async fn tenants(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        self.inner.tenants(after, limit).await
    }
    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        if self.hide_identities.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.user_by_identity(tenant, identity).await
    }
    async fn memberships(
        &self,
        person: &tenantry_service::Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<tenantry_service::Membership>, StoreError> {
        self.inner.memberships(person, after, limit).await
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
        now: time::OffsetDateTime,
        lease_until: time::OffsetDateTime,
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
        now: time::OffsetDateTime,
        lease_until: time::OffsetDateTime,
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
        now: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.inner.tenants_with_due_mail(now, limit).await
    }
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn ident(s: &str) -> IdentityId {
    IdentityId::parse(s).unwrap()
}

fn request(address: &str) -> InviteRequest {
    InviteRequest {
        email: email(address),
        role: Role::User,
        template_id: None,
        crm_access: false,
        grants: Permissions::empty(),
    }
}

#[tokio::test]
async fn d28_membership_pages_name_the_next_page_only_when_there_is_one() {
    let app = Tenantry::builder(InMemoryStore::new()).build().unwrap();
    let pat = email("pat@example.test");
    let mut tenants = Vec::new();
    for name in ["Gamma", "Alpha", "Beta"] {
        tenants.push(app.create_tenant(name, None, pat.clone()).await.unwrap().0);
    }
    let names = |p: &Page<tenantry_service::Membership, TenantCursor>| {
        p.items
            .iter()
            .map(|m| m.tenant_name.clone())
            .collect::<Vec<_>>()
    };
    let first = app.memberships_by_email(&pat, None, 2).await.unwrap();
    assert_eq!(names(&first), ["Alpha", "Beta"]);
    assert_eq!(first.next, Some(first.items[1].cursor()));
    let rest = app
        .memberships_by_email(&pat, first.next.as_ref(), 2)
        .await
        .unwrap();
    assert_eq!(names(&rest), ["Gamma"]);
    assert_eq!(rest.items[0].tenant_id, tenants[0]);
    assert!(rest.next.is_none());
    // Exactly a page: no next page.
    let exact = app.memberships_by_email(&pat, None, 3).await.unwrap();
    assert_eq!(names(&exact), ["Alpha", "Beta", "Gamma"]);
    assert!(exact.next.is_none());
    // Limit 0 is clamped to 1.
    let one = app.memberships_by_email(&pat, None, 0).await.unwrap();
    assert_eq!(names(&one), ["Alpha"]);
    assert_eq!(one.next, Some(one.items[0].cursor()));
    // Nobody: an empty last page.
    let none = app
        .memberships_by_email(&email("nobody@example.test"), None, 10)
        .await
        .unwrap();
    assert!(none.items.is_empty() && none.next.is_none());
    // By identity, the same paging.
    for (t, _) in [(tenants[0], ()), (tenants[2], ())] {
        let me = app
            .memberships_by_email(&pat, None, 10)
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|m| m.tenant_id == t)
            .unwrap()
            .user_id;
        app.set_identity(t, me, me, Some(ident("oidc|pat")))
            .await
            .unwrap();
    }
    let page = app
        .memberships_by_identity(&ident("oidc|pat"), None, 1)
        .await
        .unwrap();
    assert_eq!(names(&page), ["Beta"]);
    let page = app
        .memberships_by_identity(&ident("oidc|pat"), page.next.as_ref(), 1)
        .await
        .unwrap();
    assert_eq!(names(&page), ["Gamma"]);
    assert!(page.next.is_none());
}

#[tokio::test]
async fn d28_membership_pages_hold_at_most_500() {
    let app = Tenantry::builder(InMemoryStore::new()).build().unwrap();
    let pat = email("pat@example.test");
    for i in 0..502 {
        app.create_tenant(&format!("T{i:03}"), None, pat.clone())
            .await
            .unwrap();
    }
    let page = app
        .memberships_by_email(&pat, None, u32::MAX)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 500);
    let next = page.next.expect("two more follow");
    assert_eq!(next.name, "T499");
    let rest = app
        .memberships_by_email(&pat, Some(&next), 500)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next.is_none());
    let full = app.memberships_by_email(&pat, None, 500).await.unwrap();
    assert_eq!(full.items.len(), 500);
    assert!(full.next.is_some());
}

fn refusals(records: &[AuditRecord]) -> Vec<(AuditAction, AuditTarget, Rule)> {
    records
        .iter()
        .filter_map(|r| match &r.event.outcome {
            Outcome::Refused { rule, .. } => Some((r.event.action, r.event.target, *rule)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn d28_a_taken_identity_is_refused_by_the_rule_and_audited() {
    let app = Tenantry::builder(Probe::default()).build().unwrap();
    let (t, ada) = app
        .create_tenant("Acme", None, email("ada@acme.test"))
        .await
        .unwrap();
    let bob = app
        .invite(t, ada, &request("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let sub = ident("oidc|x");
    let ada_now = app
        .set_identity(t, ada, ada, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(ada_now.identity.as_ref(), Some(&sub));
    let seen = app.audit_log(t, ActorRef::System, 0, 500).await.unwrap();
    let last = seen.last().map_or(0, |r| r.seq);
    // The holder setting its own id again is no refusal (the id it holds is not "taken").
    let again = app
        .set_identity(t, ada, ada, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(again, ada_now);
    assert!(
        app.audit_log(t, ActorRef::System, last, 500)
            .await
            .unwrap()
            .is_empty()
    );
    // Another user: refused by the rule, and the refusal is audited.
    let taken = app.set_identity(t, ada, bob.id, Some(sub.clone())).await;
    assert!(
        matches!(taken, Err(Error::Rule(RuleError::IdentityTaken))),
        "{taken:?}"
    );
    let after = app.audit_log(t, ActorRef::System, last, 500).await.unwrap();
    assert_eq!(
        refusals(&after),
        [(
            AuditAction::UserEdited,
            AuditTarget::User(bob.id),
            Rule::OnePersonSeveralTenants
        )]
    );
    assert_eq!(
        app.user(t, ActorRef::System, bob.id)
            .await
            .unwrap()
            .identity,
        None
    );
}

#[tokio::test]
async fn d28_a_race_the_check_missed_is_refused_at_commit_as_the_rule() {
    let store = std::sync::Arc::new(Probe::default());
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let (t, ada) = app
        .create_tenant("Acme", None, email("ada@acme.test"))
        .await
        .unwrap();
    let bob = app
        .invite(t, ada, &request("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let sub = ident("oidc|x");
    app.set_identity(t, ada, ada, Some(sub.clone()))
        .await
        .unwrap();
    // The check sees no holder (as if Ada's commit landed right after it); the store's
    // unique index refuses, and the host sees the rule, not a store conflict.
    store.hide_identities.store(true, Ordering::SeqCst);
    let raced = app.set_identity(t, ada, bob.id, Some(sub.clone())).await;
    assert!(
        matches!(raced, Err(Error::Rule(RuleError::IdentityTaken))),
        "{raced:?}"
    );
    store.hide_identities.store(false, Ordering::SeqCst);
    assert_eq!(
        app.user(t, ActorRef::System, bob.id)
            .await
            .unwrap()
            .identity,
        None
    );
    // Other refusals pass through unchanged: an unknown user is not found.
    let missing = app
        .set_identity(t, ada, UserId::from_parts(1, [1; 10]), Some(ident("y")))
        .await;
    assert!(
        matches!(missing, Err(Error::Rule(RuleError::UserNotFound))),
        "{missing:?}"
    );
    // A cleared id is free for another user at once.
    app.set_identity(t, ada, ada, None).await.unwrap();
    let bob_now = app
        .set_identity(t, ada, bob.id, Some(sub.clone()))
        .await
        .unwrap();
    assert_eq!(bob_now.identity, Some(sub));
}

#[tokio::test]
async fn d15_the_hosts_user_listing_reads_the_tenant_only_for_an_empty_page() {
    let store = std::sync::Arc::new(Probe::default());
    let app = Tenantry::builder(store.clone()).build().unwrap();
    let (t, ada) = app
        .create_tenant("Acme", None, email("ada@acme.test"))
        .await
        .unwrap();
    let before = store.tenant_reads.load(Ordering::SeqCst);
    let page = app
        .list_users(t, ActorRef::System, &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|u| u.id).collect::<Vec<_>>(), [ada]);
    assert_eq!(
        store.tenant_reads.load(Ordering::SeqCst),
        before,
        "a page with a row proves the tenant exists"
    );
    // An unknown tenant is not an empty one.
    let unknown = TenantId::from_parts(1, [1; 10]);
    let missing = app
        .list_users(unknown, ActorRef::System, &UserQuery::default())
        .await;
    assert!(
        matches!(missing, Err(Error::Rule(RuleError::TenantNotFound))),
        "{missing:?}"
    );
    // A user viewer is checked: one without users:view is refused.
    let bob = app
        .invite(t, ada, &request("bob@acme.test"))
        .await
        .unwrap()
        .user;
    let refused = app
        .list_users(t, ActorRef::User(bob.id), &UserQuery::default())
        .await;
    assert!(
        matches!(refused, Err(Error::Rule(RuleError::NotAllowed { .. }))),
        "{refused:?}"
    );
    let seen = app
        .list_users(t, ActorRef::User(ada), &UserQuery::default())
        .await
        .unwrap();
    assert_eq!(seen.items.len(), 2);
}
