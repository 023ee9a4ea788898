//! The JSON API through its router on SQLite: every endpoint, its main refusals with their
//! problem fields, the HTTP layer's own refusals (401, 404, 405, 413, 415, 400/422), that no
//! response carries an invitation token (D26), and that a store failure answers 503 with
//! the generic text.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request as HttpRequest, header};
use serde_json::{Value, json};
use tenantry_axum::{Guard, Identify, async_trait};
use tenantry_core::{Change, Invitation, Subject, TokenHash};
use tenantry_service::prelude::*;
use tenantry_service::{
    AuditEvent, AuditRecord, IdentityId, ManualClock, Membership, Message, MessageId, OutboxRecord,
    Page, Person, Policy, RoleTemplate, Store, StoreError, TemplateId, TenantCursor, TenantId,
    TenantState, Tombstone, User, UserId,
};
use tenantry_sqlite::SqliteStore;
use tenantry_store::DeliveryUpdate;
use time::OffsetDateTime;
use tower::ServiceExt;

/// The test's authentication: `x-identity: <tenant>/<user>`.
struct HeaderIdentity;

#[async_trait]
impl Identify for HeaderIdentity {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        let text = parts.headers.get("x-identity")?.to_str().ok()?;
        let (t, u) = text.split_once('/')?;
        Some((t.parse().ok()?, u.parse().ok()?))
    }
}

/// A store that fails every call while `broken` is set, as a lost database would.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Store>,
    broken: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Lost;
impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk I/O error: SECRET-BACKEND-DETAIL")
    }
}
impl std::error::Error for Lost {}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Backend {
                backend: "sqlite",
                source: Box::new(Lost),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Flaky {
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantState>, StoreError> {
        self.check()?;
        self.inner.tenant(tenant).await
    }
    async fn user(&self, tenant: TenantId, id: UserId) -> Result<Option<User>, StoreError> {
        self.check()?;
        self.inner.user(tenant, id).await
    }
    async fn subject(&self, tenant: TenantId, id: UserId) -> Result<Option<Subject>, StoreError> {
        self.check()?;
        self.inner.subject(tenant, id).await
    }
    async fn user_by_email(&self, tenant: TenantId, key: &str) -> Result<Option<User>, StoreError> {
        self.check()?;
        self.inner.user_by_email(tenant, key).await
    }
    async fn template(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.check()?;
        self.inner.template(tenant, id).await
    }
    async fn template_by_name(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.check()?;
        self.inner.template_by_name(tenant, key).await
    }
    async fn templates(&self, tenant: TenantId) -> Result<Vec<RoleTemplate>, StoreError> {
        self.check()?;
        self.inner.templates(tenant).await
    }
    async fn count_template_users(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count_template_users(tenant, template).await
    }
    async fn invitation(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.check()?;
        self.inner.invitation(tenant, hash).await
    }
    async fn invitations_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.check()?;
        self.inner.invitations_of(tenant, user).await
    }
    async fn list_users(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        self.check()?;
        self.inner.list_users(tenant, query).await
    }
    async fn tombstone(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.check()?;
        self.inner.tombstone(tenant, user).await
    }
    async fn audit(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.audit(tenant, after, limit).await
    }
    async fn commit(&self, change: &Change, outbox: &[Message]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.commit(change, outbox).await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.append_audit(event).await
    }
    async fn outbox(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.check()?;
        self.inner.outbox(tenant, pending_only, limit).await
    }
    async fn outbox_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        self.check()?;
        self.inner.outbox_message(tenant, id).await
    }
    async fn claim_due_mail(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.check()?;
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
        self.check()?;
        self.inner.claim_message(tenant, id, now, lease_until).await
    }
    async fn record_delivery(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_delivery(tenant, id, update).await
    }
    async fn tenants_with_due_mail(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        self.check()?;
        self.inner.tenants_with_due_mail(now, limit).await
    }
    async fn user_by_identity(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        self.check()?;
        self.inner.user_by_identity(tenant, identity).await
    }
    async fn memberships(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        self.check()?;
        self.inner.memberships(person, after, limit).await
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

struct World {
    app: Tenantry,
    router: Router,
    tenant: TenantId,
    admin: UserId,
    mailer: InMemoryMailer,
    clock: ManualClock,
    broken: Arc<AtomicBool>,
    bodies: Mutex<Vec<String>>,
}

async fn world(limit: Option<u32>) -> World {
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let broken = Arc::new(AtomicBool::new(false));
    let store = Flaky {
        inner: sqlite,
        broken: broken.clone(),
    };
    let mailer = InMemoryMailer::new();
    let clock = ManualClock::new(time::macros::datetime!(2026-03-01 9:00 UTC));
    let policy = Policy {
        resend_limit: 1,
        ..Policy::default()
    };
    let app = Tenantry::builder(store)
        .mailer(mailer.clone())
        .clock(clock.clone())
        .policy(policy)
        .base_url("https://app.example.test/accept")
        .build()
        .unwrap();
    let (tenant, admin) = app
        .create_tenant("Acme", limit, Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let router = tenantry_axum::api::router(Guard::new(app.clone(), HeaderIdentity));
    World {
        app,
        router,
        tenant,
        admin,
        mailer,
        clock,
        broken,
        bodies: Mutex::new(Vec::new()),
    }
}

impl World {
    async fn send(&self, request: HttpRequest<Body>) -> Resp {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        assert_eq!(
            headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "every response is no-store ({status})"
        );
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        if status >= 400 {
            assert_eq!(
                headers.get(header::CONTENT_TYPE).unwrap(),
                "application/problem+json",
                "{status}: {text}"
            );
            assert_eq!(body["status"], status, "{text}");
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:tenantry:problem:")
            );
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        who: Option<UserId>,
    ) -> axum::http::request::Builder {
        let mut b = HttpRequest::builder().method(method).uri(path);
        if let Some(user) = who {
            b = b.header("x-identity", format!("{}/{}", self.tenant, user));
        }
        b
    }

    /// A call as `who`; a JSON body when one is given, and for every change the JSON
    /// content type (the CSRF rule).
    async fn call(
        &self,
        method: &str,
        path: &str,
        who: Option<UserId>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = self.request(method, path, who);
        if method != "GET" {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(self.admin), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(self.admin), Some(body)).await
    }

    /// An active user holding `grants` (and nothing else).
    async fn member(&self, email: &str, grants: Permissions) -> UserId {
        let invited = self
            .app
            .invite(
                self.tenant,
                self.admin,
                &InviteRequest {
                    email: Email::parse(email).unwrap(),
                    role: Role::User,
                    template_id: None,
                    crm_access: false,
                    grants,
                },
            )
            .await
            .unwrap();
        let token = invited.accept_link.token().unwrap();
        self.app.accept_invitation(&token, email).await.unwrap();
        invited.user.id
    }

    fn tokens(&self) -> Vec<String> {
        self.mailer
            .sent()
            .iter()
            .filter_map(|m| tenantry_service::token_from_link(&m.text))
            .collect()
    }
}

fn unknown_id() -> uuid::Uuid {
    UserId::from_parts(1_700_000_000_000, [7; 10]).as_uuid()
}

#[tokio::test]
async fn nobody_identified_is_401_and_a_deleted_user_too() {
    let w = world(None).await;
    let r = w.call("GET", "/users", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["kind"], "unauthenticated");

    let bob = w.member("bob@acme.test", Permissions::USERS_VIEW).await;
    assert_eq!(w.call("GET", "/me", Some(bob), None).await.status, 200);
    w.app.delete_user(w.tenant, w.admin, bob).await.unwrap();
    let r = w.call("GET", "/me", Some(bob), None).await;
    assert_eq!(r.status, 401);
    // A change by nobody changes nothing.
    let r = w
        .call(
            "POST",
            "/invitations",
            None,
            Some(json!({"email": "eve@acme.test"})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 1);
}

#[tokio::test]
async fn me_reports_the_callers_effective_permissions_now() {
    let w = world(None).await;
    let r = w.get("/me").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["role"], "admin");
    assert_eq!(r.body["permissions"].as_array().unwrap().len(), 30);
    assert_eq!(r.body["crm_access"], true);

    let support = w
        .app
        .create_template(
            w.tenant,
            w.admin,
            "Support",
            Permissions::CONVERSATIONS_VIEW,
        )
        .await
        .unwrap();
    let bob = w.member("bob@acme.test", Permissions::USERS_VIEW).await;
    let r = w.call("GET", "/me", Some(bob), None).await;
    assert_eq!(r.body["permissions"], json!(["users:view"]));
    let edit = UserEdit {
        template_id: Some(Some(support.id)),
        ..UserEdit::default()
    };
    w.app
        .edit_user(w.tenant, w.admin, bob, &edit)
        .await
        .unwrap();
    let r = w.call("GET", "/me", Some(bob), None).await;
    assert_eq!(
        r.body["permissions"],
        json!(["conversations:view", "users:view"])
    );
    assert_eq!(r.body["crm_access"], false);
    assert_eq!(r.body["user_id"], bob.to_string());
}

#[tokio::test]
async fn invite_get_and_list_with_filters_sorts_and_cursor_pages() {
    let w = world(None).await;
    for email in ["cy@acme.test", "bob@acme.test", "dee@partner.test"] {
        w.clock.advance(time::Duration::minutes(1));
        let r = w
            .post(
                "/invitations",
                json!({"email": email, "grants": ["users:view"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["user"]["status"], "invited");
        assert_eq!(r.body["user"]["grants"], json!(["users:view"]));
        assert!(r.body["message_id"].is_string());
        assert!(r.body.get("accept_link").is_none());
    }
    let r = w.get("/users").await;
    let emails: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        emails,
        [
            "ada@acme.test",
            "bob@acme.test",
            "cy@acme.test",
            "dee@partner.test"
        ]
    );
    assert!(r.body["next_cursor"].is_null());

    let r = w.get("/users?status=invited&q=%40acme").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = w.get("/users?role=admin").await;
    assert_eq!(r.body["items"][0]["email"], "ada@acme.test");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    // Newest first, two a page, following next_cursor.
    let mut seen = Vec::new();
    let mut path = "/users?sort=created_at&order=desc&limit=2".to_owned();
    loop {
        let r = w.get(&path).await;
        assert_eq!(r.status, 200);
        for u in r.body["items"].as_array().unwrap() {
            seen.push(u["email"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/users?sort=created_at&order=desc&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3], "ada@acme.test");

    // One user by id.
    let id = w.get("/users?q=bob").await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = w.get(&format!("/users/{id}")).await;
    assert_eq!(
        (r.status, r.body["email"].as_str()),
        (200, Some("bob@acme.test"))
    );
}

#[tokio::test]
async fn a_cursor_of_another_sort_order_or_a_bad_one_is_refused_not_500() {
    let w = world(None).await;
    for email in ["bob@acme.test", "cy@acme.test"] {
        w.post("/invitations", json!({"email": email})).await;
    }
    let r = w.get("/users?limit=1").await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = w
        .get(&format!("/users?sort=created_at&cursor={cursor}"))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["rule"], "listing");
    let r = w.get("/users?cursor=not-a-cursor").await;
    assert_eq!(r.status, 400);
    let r = w.get("/users?limit=0").await;
    assert_eq!(r.status, 422);
    let r = w.get("/users?limit=lots").await;
    assert_eq!(r.status, 400);
    let r = w.get("/users?status=sleeping").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn seat_limit_refusal_carries_seats_used_and_limit() {
    let w = world(Some(2)).await;
    let r = w.get("/seats").await;
    assert_eq!(
        r.body,
        json!({"used": 1, "limit": 2, "remaining": 1, "at_limit": false})
    );
    assert_eq!(
        w.post("/invitations", json!({"email": "bob@acme.test"}))
            .await
            .status,
        201
    );
    let r = w
        .post("/invitations", json!({"email": "cy@acme.test"}))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["rule"], "seat_limit");
    assert_eq!(r.body["kind"], "limit_reached");
    assert_eq!(
        (r.body["seats_used"].as_u64(), r.body["seat_limit"].as_u64()),
        (Some(2), Some(2))
    );

    // An admin raises the limit; null is unlimited.
    let r = w
        .call(
            "PUT",
            "/seats/limit",
            Some(w.admin),
            Some(json!({"limit": 3})),
        )
        .await;
    assert_eq!((r.status, r.body["limit"].as_u64()), (200, Some(3)));
    let r = w
        .call(
            "PUT",
            "/seats/limit",
            Some(w.admin),
            Some(json!({"limit": null})),
        )
        .await;
    assert_eq!((r.status, r.body["limit"].is_null()), (200, true));
    let r = w
        .call("PUT", "/seats/limit", Some(w.admin), Some(json!({})))
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn the_tenant_is_read_by_viewers_and_renamed_by_an_admin_only() {
    let w = world(Some(5)).await;
    let r = w.get("/tenant").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Acme");
    assert_eq!(r.body["id"], w.tenant.to_string());
    assert_eq!(
        (r.body["limit"].as_u64(), r.body["seats_used"].as_u64()),
        (Some(5), Some(1))
    );
    let r = w
        .call(
            "PUT",
            "/tenant/name",
            Some(w.admin),
            Some(json!({"name": "  Acme Support "})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["name"].as_str()),
        (200, Some("Acme Support"))
    );
    assert_eq!(
        w.app.tenant(w.tenant).await.unwrap().tenant.name,
        "Acme Support"
    );
    // A manager holding users:edit is not an admin.
    let manager = w
        .member(
            "max@acme.test",
            Permissions::USERS_VIEW | Permissions::USERS_EDIT,
        )
        .await;
    let r = w
        .call(
            "PUT",
            "/tenant/name",
            Some(manager),
            Some(json!({"name": "Max Ltd"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["rule"].as_str()),
        (403, Some("management_authority"))
    );
    // An invisible character is refused under D22, and nothing changes.
    let r = w
        .call(
            "PUT",
            "/tenant/name",
            Some(w.admin),
            Some(json!({"name": "Acme\u{200b}"})),
        )
        .await;
    assert_eq!((r.status, r.body["rule"].as_str()), (422, Some("names")));
    let r = w
        .call(
            "PUT",
            "/tenant/name",
            Some(w.admin),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(r.status, 422, "unknown fields are refused");
    assert_eq!(
        w.app.tenant(w.tenant).await.unwrap().tenant.name,
        "Acme Support"
    );
    let renames = w
        .app
        .audit_log(w.tenant, tenantry_service::ActorRef::User(w.admin), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.action == tenantry_core::AuditAction::TenantRenamed)
        .count();
    assert_eq!(renames, 3, "the rename and both refusals are audited");
}

#[tokio::test]
async fn a_missing_permission_is_403_naming_it_and_changes_nothing() {
    let w = world(None).await;
    let viewer = w.member("vic@acme.test", Permissions::USERS_VIEW).await;
    let r = w
        .call(
            "POST",
            "/invitations",
            Some(viewer),
            Some(json!({"email": "eve@acme.test"})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["needed_permission"], "users:create");
    assert_eq!(r.body["rule"], "management_authority");
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 2);
    // Seat limit: only an admin.
    let r = w
        .call(
            "PUT",
            "/seats/limit",
            Some(viewer),
            Some(json!({"limit": 9})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().limit, None);
    // Without users:view, nothing to read.
    let nobody = w.member("nat@acme.test", Permissions::empty()).await;
    for path in ["/users", "/seats", "/audit", "/templates"] {
        let r = w.call("GET", path, Some(nobody), None).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.body["needed_permission"], "users:view");
    }
    let r = w
        .call(
            "GET",
            &format!("/users/{}/attribution", w.admin),
            Some(nobody),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn resend_is_rate_limited_with_retry_after() {
    let w = world(None).await;
    let r = w
        .post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    let bob = r.body["user"]["id"].as_str().unwrap().to_owned();
    let r = w
        .call("POST", &format!("/users/{bob}/resend"), Some(w.admin), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["expires_at"].is_string());
    assert_eq!(w.mailer.sent().len(), 2);
    let r = w
        .call(
            "POST",
            &format!("/users/{bob}/resend"),
            Some(w.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["rule"], "invitations");
    let seconds = r.body["retry_after_seconds"].as_u64().unwrap();
    assert!(seconds > 0 && seconds <= 600, "{seconds}");
    assert_eq!(
        r.headers
            .get(header::RETRY_AFTER)
            .unwrap()
            .to_str()
            .unwrap(),
        seconds.to_string()
    );
    assert!(r.body["retry_at"].is_string());
    // An active user cannot be resent.
    let r = w
        .call(
            "POST",
            &format!("/users/{}/resend", w.admin),
            Some(w.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn the_last_admin_stays() {
    let w = world(None).await;
    let path = format!("/users/{}", w.admin);
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["rule"], "last_admin");
    let r = w.call("DELETE", &path, Some(w.admin), None).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["rule"], "last_admin");
    assert_eq!(w.get(&path).await.body["status"], "active");
}

#[tokio::test]
async fn changes_without_the_json_content_type_are_415_and_change_nothing() {
    let w = world(None).await;
    let bob = w.member("bob@acme.test", Permissions::empty()).await;
    let cases = [
        (
            "POST",
            "/invitations".to_owned(),
            r#"{"email":"eve@acme.test"}"#,
        ),
        ("DELETE", format!("/users/{bob}"), ""),
        ("PATCH", format!("/users/{bob}"), r#"{"crm_access":true}"#),
        ("POST", format!("/users/{bob}/resend"), ""),
        ("POST", "/invitations/expired/purge".to_owned(), ""),
        (
            "PUT",
            format!("/users/{bob}/identity"),
            r#"{"identity":"oidc|bob"}"#,
        ),
        (
            "POST",
            "/invitations/accept".to_owned(),
            r#"{"token":"x","email":"a@b.c"}"#,
        ),
    ];
    for (method, path, body) in cases {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut b = w.request(method, &path, Some(w.admin));
            if let Some(ct) = content_type {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            let r = w.send(b.body(Body::from(body)).unwrap()).await;
            assert_eq!(r.status, 415, "{method} {path} {content_type:?}");
            assert_eq!(r.body["kind"], "unsupported_media_type");
        }
    }
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 2);
    let row = w.app.user(w.tenant, ActorRef::System, bob).await.unwrap();
    assert!(!row.crm_access);
    assert!(
        row.identity.is_none(),
        "a forged identity PUT changed nothing"
    );
}

#[tokio::test]
async fn malformed_or_misshapen_bodies_are_400_or_422_and_large_ones_413() {
    let w = world(None).await;
    let mut b = w.request("POST", "/invitations", Some(w.admin));
    b = b.header(header::CONTENT_TYPE, "application/json");
    let r = w.send(b.body(Body::from("{\"email\": ")).unwrap()).await;
    assert_eq!(r.status, 400);
    let r = w
        .post(
            "/invitations",
            json!({"email": "bob@acme.test", "admin": true}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body["detail"].as_str().unwrap().contains("admin"));
    let r = w.post("/invitations", json!({"email": 5})).await;
    assert_eq!(r.status, 422);
    let r = w
        .post("/invitations", json!({"email": "not an address"}))
        .await;
    assert_eq!(
        (r.status, r.body["rule"].as_str()),
        (422, Some("unique_email"))
    );
    let r = w
        .post(
            "/invitations",
            json!({"email": "bob@acme.test", "grants": ["users:fly"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["rule"].as_str()),
        (422, Some("permission_set"))
    );
    let big = "x".repeat(70 * 1024);
    let r = w.post("/invitations", json!({"email": big})).await;
    assert_eq!(r.status, 413);
    let r = w
        .call(
            "DELETE",
            &format!("/users/{}", unknown_id()),
            Some(w.admin),
            Some(json!({"force": 1})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 1);
}

#[tokio::test]
async fn unknown_ids_routes_and_methods() {
    let w = world(None).await;
    let r = w.get(&format!("/users/{}", unknown_id())).await;
    assert_eq!(
        (r.status, r.body["kind"].as_str()),
        (404, Some("not_found"))
    );
    let r = w.get(&format!("/templates/{}", unknown_id())).await;
    assert_eq!(r.status, 404);
    let r = w.get("/users/not-a-uuid").await;
    assert_eq!(r.status, 400);
    let r = w.get("/no/such/route").await;
    assert_eq!(r.status, 404);
    let r = w
        .call("PUT", "/users", Some(w.admin), Some(json!({})))
        .await;
    assert_eq!(r.status, 405);
    let allow = r
        .headers
        .get(header::ALLOW)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("GET"), "{allow}");
    let r = w.get(&format!("/users/{}/attribution", unknown_id())).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn patch_absent_keeps_null_clears_and_value_sets() {
    let w = world(None).await;
    let support = w
        .app
        .create_template(
            w.tenant,
            w.admin,
            "Support",
            Permissions::CONVERSATIONS_VIEW,
        )
        .await
        .unwrap();
    let bob = w.member("bob@acme.test", Permissions::empty()).await;
    let path = format!("/users/{bob}");
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"template_id": support.id.to_string()})),
        )
        .await;
    assert_eq!(r.body["template_id"], support.id.to_string());
    // Absent: unchanged.
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"crm_access": true})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["template_id"], support.id.to_string());
    assert_eq!(r.body["crm_access"], true);
    let r = w.call("PATCH", &path, Some(w.admin), Some(json!({}))).await;
    assert_eq!(r.body["template_id"], support.id.to_string());
    // Null: cleared.
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"template_id": null})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["template_id"].is_null());
    assert_eq!(r.body["crm_access"], true);
    // Null where nothing can be cleared: refused, nothing changes.
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"email": null, "crm_access": false})),
        )
        .await;
    assert_eq!(r.status, 422);
    let row = w.app.user(w.tenant, ActorRef::System, bob).await.unwrap();
    assert!(row.crm_access);
    // Values set; unknown fields refused.
    let r = w
        .call("PATCH", &path, Some(w.admin), Some(json!({"email": "Robert@acme.test", "grants": ["analytics:view"], "status": "suspended"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["email"], "Robert@acme.test");
    assert_eq!(r.body["grants"], json!(["analytics:view"]));
    assert_eq!(r.body["status"], "suspended");
    let r = w
        .call(
            "PATCH",
            &path,
            Some(w.admin),
            Some(json!({"nickname": "rob"})),
        )
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn templates_create_edit_and_delete_by_refuse_detach_or_reassign() {
    let w = world(None).await;
    let r = w
        .post(
            "/templates",
            json!({"name": "Support", "permissions": ["conversations:view"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let support = r.body["id"].as_str().unwrap().to_owned();
    let r = w.post("/templates", json!({"name": "support"})).await;
    assert_eq!(
        (r.status, r.body["rule"].as_str()),
        (409, Some("role_templates"))
    );
    let r = w
        .post("/templates", json!({"name": "bad\u{200b}name"}))
        .await;
    assert_eq!((r.status, r.body["rule"].as_str()), (422, Some("names")));
    let sales = w.post("/templates", json!({"name": "Sales"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = w.get("/templates").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = w
        .call(
            "PATCH",
            &format!("/templates/{support}"),
            Some(w.admin),
            Some(json!({"name": "Helpdesk"})),
        )
        .await;
    assert_eq!(r.body["name"], "Helpdesk");
    assert_eq!(r.body["permissions"], json!(["conversations:view"]));
    let r = w
        .call(
            "PATCH",
            &format!("/templates/{support}"),
            Some(w.admin),
            Some(json!({"permissions": null})),
        )
        .await;
    assert_eq!(r.status, 422);

    for email in ["bob@acme.test", "cy@acme.test"] {
        let r = w
            .post(
                "/invitations",
                json!({"email": email, "template_id": support}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let r = w.get(&format!("/templates/{support}/users")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);

    let path = format!("/templates/{support}");
    let r = w.call("DELETE", &path, Some(w.admin), None).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["users"], 2);
    let r = w
        .call(
            "DELETE",
            &format!("{path}?mode=reassign"),
            Some(w.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    let r = w
        .call(
            "DELETE",
            &format!("{path}?mode=reassign&target={sales}"),
            Some(w.admin),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["affected_users"].as_u64()),
        (200, Some(2))
    );
    assert_eq!(w.get(&path).await.status, 404);
    let r = w.get(&format!("/templates/{sales}/users")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = w
        .call(
            "DELETE",
            &format!("/templates/{sales}?mode=detach"),
            Some(w.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["affected_users"].as_u64()),
        (200, Some(2))
    );
    let r = w.get("/users?q=bob").await;
    assert!(r.body["items"][0]["template_id"].is_null());
}

#[tokio::test]
async fn bulk_invite_answers_per_address() {
    let w = world(Some(3)).await;
    w.post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    let r = w
        .post(
            "/invitations/bulk",
            json!({"emails": ["cy@acme.test", "BOB@acme.test", "not-an-address", "dee@acme.test"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    let outcomes: Vec<_> = results
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["invited", "duplicate", "invalid", "limit_reached"]
    );
    assert!(results[0]["user_id"].is_string());
    assert!(results[2]["reason"].is_string());
    assert_eq!(
        (
            results[3]["seats_used"].as_u64(),
            results[3]["seat_limit"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

#[tokio::test]
async fn expired_invitations_inactive_users_and_the_purge() {
    let w = world(Some(5)).await;
    w.post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    assert!(
        w.get("/invitations/expired").await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    w.clock.advance(time::Duration::days(8));
    let r = w.get("/invitations/expired").await;
    assert_eq!(r.body["items"][0]["email"], "bob@acme.test");
    let r = w.get("/users/inactive?since=2026-03-05T00:00:00Z").await;
    let emails: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["ada@acme.test", "bob@acme.test"]);
    assert_eq!(w.get("/users/inactive?since=yesterday").await.status, 400);
    assert_eq!(w.get("/users/inactive").await.status, 400);

    let r = w
        .call("POST", "/invitations/expired/purge", Some(w.admin), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["deleted"].as_array().unwrap().len(), 1);
    assert_eq!(w.get("/seats").await.body["used"], 1);
}

#[tokio::test]
async fn the_audit_log_pages_and_the_feed_continues_from_its_cursor() {
    let w = world(None).await;
    let r = w.get("/audit?limit=1").await;
    assert_eq!(r.body["items"][0]["action"], "tenant_created");
    assert_eq!(r.body["items"][0]["seq"], 1);
    assert_eq!(r.body["next_after"], 1);
    let r = w.get("/audit?after=1").await;
    assert_eq!(r.body["items"][0]["action"], "user_invited");
    assert!(r.body["next_after"].is_null());

    let r = w.get("/audit/feed").await;
    let cursor = r.body["cursor"].as_u64().unwrap();
    assert_eq!(cursor, 2);
    let r = w.get(&format!("/audit/feed?after={cursor}")).await;
    assert!(r.body["items"].as_array().unwrap().is_empty());
    assert_eq!(r.body["cursor"], cursor);
    // A refused invite shows up, with its rule.
    let viewer = w.member("vic@acme.test", Permissions::USERS_VIEW).await;
    w.call(
        "POST",
        "/invitations",
        Some(viewer),
        Some(json!({"email": "eve@acme.test"})),
    )
    .await;
    let r = w.get(&format!("/audit/feed?after={cursor}")).await;
    let items = r.body["items"].as_array().unwrap();
    let refused = items.iter().find(|i| i["outcome"] == "refused").unwrap();
    assert_eq!(refused["rule"], "management_authority");
    assert_eq!(refused["actor"]["id"], viewer.to_string());
    assert_eq!(r.body["cursor"], items.last().unwrap()["seq"]);
    assert_eq!(w.get("/audit?limit=501").await.status, 422);
}

#[tokio::test]
async fn a_deleted_user_is_gone_but_still_attributed() {
    let w = world(None).await;
    let bob = w.member("bob@acme.test", Permissions::empty()).await;
    let r = w.get(&format!("/users/{bob}/attribution")).await;
    assert_eq!(
        (r.body["kind"].as_str(), r.body["user"]["email"].as_str()),
        (Some("user"), Some("bob@acme.test"))
    );
    let r = w
        .call("DELETE", &format!("/users/{bob}"), Some(w.admin), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["email"], "bob@acme.test");
    assert_eq!(r.body["deleted_by"]["id"], w.admin.to_string());
    assert_eq!(w.get(&format!("/users/{bob}")).await.status, 404);
    let r = w.get(&format!("/users/{bob}/attribution")).await;
    assert_eq!(r.body["kind"], "deleted");
    assert_eq!(r.body["deleted"]["email"], "bob@acme.test");
    assert_eq!(w.get("/seats").await.body["used"], 1);
}

#[tokio::test]
async fn accept_is_public_counts_wrong_addresses_and_works_once() {
    let w = world(None).await;
    w.post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    let token = w.tokens().pop().unwrap();
    let r = w
        .call(
            "POST",
            "/invitations/accept",
            None,
            Some(json!({"token": token, "email": "rob@acme.test"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["attempts_left"], 4);
    let r = w
        .call(
            "POST",
            "/invitations/accept",
            None,
            Some(json!({"token": token, "email": "Bob@acme.test"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    let r = w
        .call(
            "POST",
            "/invitations/accept",
            None,
            Some(json!({"token": token, "email": "bob@acme.test"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = w
        .call(
            "POST",
            "/invitations/accept",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn no_response_carries_an_invitation_token_or_link() {
    let w = world(None).await;
    let r = w
        .post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    let bob = r.body["user"]["id"].as_str().unwrap().to_owned();
    w.post(
        "/invitations/bulk",
        json!({"emails": ["cy@acme.test", "dee@acme.test"]}),
    )
    .await;
    w.call("POST", &format!("/users/{bob}/resend"), Some(w.admin), None)
        .await;
    w.call("POST", &format!("/users/{bob}/resend"), Some(w.admin), None)
        .await; // 429
    for path in [
        "/users",
        "/invitations/expired",
        "/audit",
        "/audit/feed",
        "/me",
        "/seats",
        "/outbox",
        "/openapi.json",
        "/me/memberships",
    ] {
        assert_eq!(w.get(path).await.status, 200, "{path}");
    }
    let r = w
        .call(
            "PUT",
            &format!("/users/{bob}/identity"),
            Some(w.admin),
            Some(json!({"identity": "oidc|bob"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    w.get(&format!("/users/{bob}")).await;
    w.get(&format!("/users/{bob}/attribution")).await;
    let tokens = w.tokens();
    assert_eq!(tokens.len(), 4);
    let bodies = w.bodies.lock().unwrap();
    assert!(bodies.len() >= 12);
    for body in bodies.iter() {
        assert!(!body.contains("token="), "a link in {body}");
        assert!(!body.contains("app.example.test"), "a link in {body}");
        for token in &tokens {
            assert!(!body.contains(token.as_str()), "a token in {body}");
            let secret = token.split_once('.').unwrap().1;
            assert!(!body.contains(secret), "a token's secret in {body}");
        }
    }
}

#[tokio::test]
async fn a_store_failure_is_503_with_the_generic_text() {
    let w = world(None).await;
    w.broken.store(true, Ordering::SeqCst);
    for (method, path, body) in [
        ("GET", "/users", None),
        ("GET", "/me", None),
        (
            "POST",
            "/invitations",
            Some(json!({"email": "bob@acme.test"})),
        ),
    ] {
        let r = w.call(method, path, Some(w.admin), body).await;
        assert_eq!(r.status, 503, "{method} {path}");
        assert_eq!(r.body["kind"], "unavailable");
        assert_eq!(
            r.body["detail"],
            "the service is temporarily unavailable; try again shortly"
        );
        assert!(!r.body.to_string().contains("SECRET-BACKEND-DETAIL"));
        assert!(!r.body.to_string().contains("sqlite"));
        assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
    }
    w.broken.store(false, Ordering::SeqCst);
    assert_eq!(w.get("/users").await.status, 200);
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 1);
}

#[tokio::test]
async fn the_router_serves_its_own_document() {
    let w = world(None).await;
    let r = w.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["openapi"], "3.1.0");
    assert_eq!(
        r.body,
        serde_json::to_value(tenantry_axum::api::openapi()).unwrap()
    );
}

#[tokio::test]
async fn findings_of_the_schemathesis_run_stay_fixed() {
    let w = world(None).await;
    // An empty cursor is the first page.
    let r = w.get("/users?cursor=").await;
    assert_eq!(
        (r.status, r.body["items"].as_array().unwrap().len()),
        (200, 1)
    );
    // The users of a deleted template: 404, not an empty page.
    let t = w.post("/templates", json!({"name": "Gone"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(w.get(&format!("/templates/{t}/users")).await.status, 200);
    let r = w
        .call("DELETE", &format!("/templates/{t}"), Some(w.admin), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.get(&format!("/templates/{t}/users")).await.status, 404);
    // A body-less change takes `{}` or nothing, not `null`.
    let bob = w.member("bob@acme.test", Permissions::empty()).await;
    let mut b = w.request("DELETE", &format!("/users/{bob}"), Some(w.admin));
    b = b.header(header::CONTENT_TYPE, "application/json");
    assert_eq!(
        w.send(b.body(Body::from("null")).unwrap()).await.status,
        422
    );
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 2);
    // The seat limit is the documented int32.
    let r = w
        .call(
            "PUT",
            "/seats/limit",
            Some(w.admin),
            Some(json!({"limit": 2_147_483_648_u64})),
        )
        .await;
    assert_eq!(r.status, 422);
    // An audit cursor beyond any sequence number.
    assert_eq!(w.get("/audit?after=9223372036854775808").await.status, 422);
}

#[tokio::test]
async fn the_outbox_shows_delivery_state_and_never_a_body() {
    let w = world(None).await;
    let r = w
        .post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    let message = r.body["message_id"].as_str().unwrap().to_owned();
    let r = w.get("/outbox").await;
    assert_eq!(r.status, 200);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], message);
    assert_eq!(items[0]["to"], "bob@acme.test");
    assert_eq!(items[0]["state"], "sent");
    assert!(items[0].get("text").is_none() && items[0].get("html").is_none());
    assert!(
        w.get("/outbox?pending=true").await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = w.get(&format!("/outbox/{message}")).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("sent")));
    assert_eq!(
        w.get(&format!("/outbox/{}", unknown_id())).await.status,
        404
    );
    assert_eq!(w.get("/outbox?limit=0").await.status, 422);
    let nobody = w.member("nat@acme.test", Permissions::empty()).await;
    let r = w.call("GET", "/outbox", Some(nobody), None).await;
    assert_eq!(r.status, 403);
    for token in w.tokens() {
        assert!(!w.bodies.lock().unwrap().iter().any(|b| b.contains(&token)));
    }
}

#[tokio::test]
async fn nested_under_a_prefix_it_keeps_its_routes_and_problems() {
    let w = world(None).await;
    let api = tenantry_axum::api::router(Guard::new(w.app.clone(), HeaderIdentity));
    let host = Router::new().nest("/api/users", api);
    let who = format!("{}/{}", w.tenant, w.admin);
    let me = HttpRequest::get("/api/users/me")
        .header("x-identity", &who)
        .body(Body::empty())
        .unwrap();
    let response = host.clone().oneshot(me).await.unwrap();
    assert_eq!(response.status(), 200);
    let missing = HttpRequest::get("/api/users/nope")
        .header("x-identity", &who)
        .body(Body::empty())
        .unwrap();
    let response = host.oneshot(missing).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
}

#[tokio::test]
async fn every_operation_but_the_public_ones_is_401_for_nobody() {
    let w = world(None).await;
    let doc = serde_json::to_value(tenantry_axum::api::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &unknown_id().to_string());
            let concrete = if concrete.ends_with("/inactive") {
                format!("{concrete}?since=2026-01-01T00:00:00Z")
            } else {
                concrete
            };
            let body = (method != "get").then(|| json!({}));
            let r = w.call(&method.to_uppercase(), &concrete, None, body).await;
            if path == "/openapi.json" {
                assert_eq!(r.status, 200);
            } else if path == "/invitations/accept" {
                assert_eq!(r.status, 422, "an accept without token and address");
            } else {
                assert_eq!(r.status, 401, "{method} {path}");
                assert_eq!(r.body["kind"], "unauthenticated");
            }
            checked += 1;
        }
    }
    assert!(checked >= 26, "{checked}");
    assert_eq!(w.app.seat_usage(w.tenant).await.unwrap().used, 1);
}

#[tokio::test]
async fn d28_an_admin_sets_replaces_and_clears_an_identity_id_others_are_refused() {
    let w = world(None).await;
    let w = &w;
    let editor = Permissions::parse_list(["users:view", "users:edit"]).unwrap();
    let eve = w.member("eve@acme.test", editor).await;
    let bob = w.member("bob@acme.test", Permissions::empty()).await;
    let put = |who: UserId, user: UserId, body: Value| {
        let path = format!("/users/{user}/identity");
        async move { w.call("PUT", &path, Some(who), Some(body)).await }
    };

    let r = put(w.admin, bob, json!({"identity": "oidc|bob"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["identity"], "oidc|bob");
    assert_eq!(r.body["id"], bob.to_string());
    let r = w.get(&format!("/users/{bob}")).await;
    assert_eq!(r.body["identity"], "oidc|bob");
    let r = put(w.admin, bob, json!({"identity": "oidc|robert"})).await;
    assert_eq!(r.body["identity"], "oidc|robert");

    // Unique per tenant: 409, and nothing changes.
    let r = put(w.admin, eve, json!({"identity": "oidc|robert"})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["kind"], "conflict");
    assert_eq!(r.body["rule_id"], "D28");
    let row = w.app.user(w.tenant, ActorRef::System, eve).await.unwrap();
    assert!(row.identity.is_none());

    // Admin-only: a non-admin holding users:edit is refused (403), changing nothing.
    let r = put(eve, bob, json!({"identity": "oidc|eve-was-here"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = put(eve, eve, json!({"identity": "oidc|eve"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = put(bob, bob, json!({"identity": "oidc|mine"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let row = w.app.user(w.tenant, ActorRef::System, bob).await.unwrap();
    assert_eq!(row.identity.unwrap().as_str(), "oidc|robert");

    // Invalid ids are the rule's 422; a missing field or an unknown one is 422 too.
    for bad in [
        json!({"identity": ""}),
        json!({"identity": " oidc|bob"}),
        json!({"identity": "a\u{200b}b"}),
        json!({"identity": "x".repeat(256)}),
        json!({}),
        json!({"identity": "oidc|x", "email": "x@acme.test"}),
    ] {
        let r = put(w.admin, bob, bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    let r = put(w.admin, bob, json!({"identity": 7})).await;
    assert!(matches!(r.status, 400 | 422), "{}", r.body);
    let r = put(w.admin, bob, json!({"identity": " x"})).await;
    assert_eq!(r.body["rule_id"], "D28");

    // An unknown user is 404; null clears.
    let r = w
        .call(
            "PUT",
            &format!("/users/{}/identity", unknown_id()),
            Some(w.admin),
            Some(json!({"identity": "oidc|ghost"})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = put(w.admin, bob, json!({"identity": null})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("identity").is_none(), "{}", r.body);
    let row = w.app.user(w.tenant, ActorRef::System, bob).await.unwrap();
    assert!(row.identity.is_none());

    // Every attempt is audited, the refusals too.
    let log = w
        .app
        .audit_log(w.tenant, ActorRef::System, 0, 500)
        .await
        .unwrap();
    let identity_events = log
        .iter()
        .filter(|r| {
            r.event
                .changes
                .iter()
                .any(|c| c.field == tenantry_service::Field::Identity)
        })
        .count();
    assert!(identity_events >= 3, "{identity_events}");
}

#[tokio::test]
async fn d28_accept_takes_an_optional_identity_id() {
    let w = world(None).await;
    let w = &w;
    w.post("/invitations", json!({"email": "bob@acme.test"}))
        .await;
    w.post("/invitations", json!({"email": "cy@acme.test"}))
        .await;
    let tokens = w.tokens();
    let (bob_token, cy_token) = (tokens[0].clone(), tokens[1].clone());
    let accept = |body: Value| async move {
        w.call("POST", "/invitations/accept", None, Some(body))
            .await
    };

    // An invalid id is refused before the token is looked at: no attempt is used.
    let r = accept(json!({"token": bob_token, "email": "bob@acme.test", "identity": ""})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["rule_id"], "D28");
    let r =
        accept(json!({"token": bob_token, "email": "bob@acme.test", "identity": "oidc|bob"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["identity"], "oidc|bob");

    // The same id in the same tenant is taken: 409, and the invitation stays open.
    let r =
        accept(json!({"token": cy_token, "email": "cy@acme.test", "identity": "oidc|bob"})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["rule_id"], "D28");
    // Without one (or with null), the accept is as before.
    let r = accept(json!({"token": cy_token, "email": "cy@acme.test", "identity": null})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("identity").is_none(), "{}", r.body);
}

/// Invites `email` into `tenant` as `by`; the user and the accept token.
async fn invite_into(
    app: &Tenantry,
    tenant: TenantId,
    by: UserId,
    email: &str,
) -> (UserId, String) {
    let invited = app
        .invite(
            tenant,
            by,
            &InviteRequest {
                email: Email::parse(email).unwrap(),
                role: Role::User,
                template_id: None,
                crm_access: false,
                grants: Permissions::empty(),
            },
        )
        .await
        .unwrap();
    (invited.user.id, invited.accept_link.token().unwrap())
}

#[tokio::test]
async fn d28_me_memberships_lists_the_callers_own_address_only_in_pages() {
    let w = world(None).await;
    let (beta, ada_b) = w
        .app
        .create_tenant("Beta", None, Email::parse("Ada@Acme.test").unwrap())
        .await
        .unwrap();
    let (zenith, zed) = w
        .app
        .create_tenant("Zenith", None, Email::parse("zed@zenith.test").unwrap())
        .await
        .unwrap();
    let (ada_z, token) = invite_into(&w.app, zenith, zed, "ada@acme.test").await;
    w.app
        .accept_invitation(&token, "ada@acme.test")
        .await
        .unwrap();
    let (gamma, gus) = w
        .app
        .create_tenant("Gamma", None, Email::parse("gus@gamma.test").unwrap())
        .await
        .unwrap();
    let (ada_g, _) = invite_into(&w.app, gamma, gus, "ADA@acme.test").await;
    let bob = w.member("bob@acme.test", Permissions::empty()).await;

    let r = w.get("/me/memberships").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["tenant_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Acme", "Beta", "Gamma", "Zenith"],
        "by name in byte order"
    );
    assert!(r.body["next_cursor"].is_null());
    let first = &r.body["items"][0];
    assert_eq!(first["tenant_id"], w.tenant.to_string());
    assert_eq!(first["user_id"], w.admin.to_string());
    assert_eq!(first["role"], "admin");
    assert_eq!(first["status"], "active");
    assert_eq!(r.body["items"][1]["tenant_id"], beta.to_string());
    assert_eq!(r.body["items"][1]["user_id"], ada_b.to_string());
    assert_eq!(r.body["items"][2]["user_id"], ada_g.to_string());
    assert_eq!(r.body["items"][2]["status"], "invited");
    assert_eq!(r.body["items"][3]["user_id"], ada_z.to_string());
    assert_eq!(r.body["items"][3]["role"], "user");

    // Pages, each after the last.
    let r = w.get("/me/memberships?limit=3").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = w
        .get(&format!("/me/memberships?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["tenant_id"], zenith.to_string());
    assert!(r.body["next_cursor"].is_null());

    // A suspended user shows as suspended; a deleted one is gone.
    w.app
        .edit_user(
            zenith,
            zed,
            ada_z,
            &UserEdit {
                status: Some(Status::Suspended),
                ..UserEdit::default()
            },
        )
        .await
        .unwrap();
    w.app.delete_user(gamma, gus, ada_g).await.unwrap();
    let r = w.get("/me/memberships").await;
    let items = r.body["items"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = items
        .iter()
        .map(|m| {
            (
                m["tenant_name"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Acme", "active"),
            ("Beta", "active"),
            ("Zenith", "suspended")
        ]
    );

    // The caller's own address only: Bob sees Acme, nothing of Ada's.
    let r = w.call("GET", "/me/memberships", Some(bob), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["user_id"], bob.to_string());
    assert_eq!(items[0]["role"], "user");
    // No parameter names another person: an address or id in the query is refused.
    for query in ["email=ada@acme.test", "identity=oidc%7Cada", "user=x"] {
        let r = w
            .call("GET", &format!("/me/memberships?{query}"), Some(bob), None)
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }

    // Bad paging: a cursor not handed out is 400, a size out of range 422.
    let r = w.get("/me/memberships?cursor=nonsense").await;
    assert_eq!(r.status, 400, "{}", r.body);
    for limit in ["0", "501"] {
        let r = w.get(&format!("/me/memberships?limit={limit}")).await;
        assert_eq!(r.status, 422, "{limit}: {}", r.body);
    }
    let r = w.call("GET", "/me/memberships", None, None).await;
    assert_eq!(r.status, 401);
}
