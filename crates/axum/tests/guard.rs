//! The guard driven through a router with `tower::ServiceExt::oneshot`: allow, 401, 403 with
//! the reason as JSON, D6 (a template edit applies at the very next request), suspended
//! users denied, as an extractor and as a layer, on a service built over `Arc<dyn Store>`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::request::Parts;
use axum::http::{Request as HttpRequest, StatusCode};
use axum::routing::get;
use tenantry_axum::{
    Authorized, Guard, GuardRejection, Identified, Identify, Require, RequireLayer, async_trait,
    perm,
};
use tenantry_service::prelude::*;
use tenantry_service::{Store, TemplateId, TenantId, UserId};
use tower::ServiceExt;

/// The test's "authentication": the `x-user` header names the user of one tenant.
struct HeaderIdentity {
    tenant: TenantId,
}

#[async_trait]
impl Identify for HeaderIdentity {
    async fn identify(&self, parts: &mut Parts) -> Option<(TenantId, UserId)> {
        let text = parts.headers.get("x-user")?.to_str().ok()?;
        Some((self.tenant, text.parse().ok()?))
    }
}

#[derive(Clone)]
struct AppState {
    guard: Guard,
    app: Tenantry,
}

impl FromRef<AppState> for Guard {
    fn from_ref(state: &AppState) -> Guard {
        state.guard.clone()
    }
}

struct World {
    app: Tenantry,
    tenant: TenantId,
    router: Router,
    admin: UserId,
    bob: UserId,
    agent: TemplateId,
}

async fn users(auth: Require<perm::UsersView>, State(state): State<AppState>) -> String {
    let seats = state.app.seat_usage(auth.tenant).await.unwrap();
    format!("users page for {} ({} seats used)", auth.user, seats.used)
}

async fn analytics(auth: Require<perm::AnalyticsView>) -> String {
    serde_json::to_string(&auth.decision).unwrap()
}

async fn crm(_: Require<perm::Crm>) -> &'static str {
    "crm records"
}

async fn me(who: Identified) -> String {
    who.user.to_string()
}

async fn report(auth: Authorized) -> String {
    serde_json::to_string(&auth.decision).unwrap()
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let mailer = InMemoryMailer::new();
    let app = Tenantry::builder(store)
        .mailer(mailer.clone())
        .base_url("https://app.test/accept")
        .build()
        .unwrap();
    let (tenant, admin) = app
        .create_tenant("Acme", Some(10), Email::parse("ada@acme.test").unwrap())
        .await
        .unwrap();
    let agent = app
        .create_template(tenant, admin, "Agent", Permissions::ANALYTICS_VIEW)
        .await
        .unwrap();
    app.invite(
        tenant,
        admin,
        &InviteRequest {
            email: Email::parse("bob@acme.test").unwrap(),
            role: Role::User,
            template_id: Some(agent.id),
            crm_access: false,
            grants: Permissions::CONVERSATIONS_VIEW,
        },
    )
    .await
    .unwrap();
    let token = tenantry_service::token_from_link(&mailer.sent()[0].text).unwrap();
    let bob = app
        .accept_invitation(&token, "bob@acme.test")
        .await
        .unwrap();

    let guard = Guard::new(app.clone(), HeaderIdentity { tenant });
    let layered = Router::new()
        .route("/layered/report", get(report))
        .route_layer(RequireLayer::of::<perm::AnalyticsView>(guard.clone()));
    let router = Router::new()
        .route("/users", get(users))
        .route("/analytics", get(analytics))
        .route("/crm", get(crm))
        .route("/me", get(me))
        .with_state(AppState {
            guard,
            app: app.clone(),
        })
        .merge(layered);
    World {
        app,
        tenant,
        router,
        admin,
        bob: bob.id,
        agent: agent.id,
    }
}

async fn call(router: &Router, path: &str, user: Option<UserId>) -> (StatusCode, String) {
    let mut req = HttpRequest::builder().uri(path);
    if let Some(u) = user {
        req = req.header("x-user", u.to_string());
    }
    let response = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn admin_is_allowed_with_the_deciding_reason() {
    let w = world().await;
    let (status, body) = call(&w.router, "/users", Some(w.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("2 seats used"), "{body}");
    let (status, body) = call(&w.router, "/analytics", Some(w.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["reason"]["reason"], "admin");
}

#[tokio::test]
async fn nobody_signed_in_is_401_with_json() {
    let w = world().await;
    for path in ["/users", "/crm", "/me", "/layered/report"] {
        let (status, body) = call(&w.router, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(json(&body)["error"], "unauthenticated", "{path}");
    }
}

#[tokio::test]
async fn unknown_or_deleted_user_is_401() {
    let w = world().await;
    let stranger = UserId::from_parts(1, [9; 10]);
    let (status, _) = call(&w.router, "/users", Some(stranger)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let tenant = w.tenant;
    w.app.delete_user(tenant, w.admin, w.bob).await.unwrap();
    let (status, body) = call(&w.router, "/analytics", Some(w.bob)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn missing_permission_is_403_with_the_reason_as_json() {
    let w = world().await;
    let (status, body) = call(&w.router, "/users", Some(w.bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v = json(&body);
    assert_eq!(v["error"], "forbidden");
    assert_eq!(v["required"], "users:view");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reason"]["reason"], "missing_permission");
    assert_eq!(v["reason"]["permission"], "users:view");

    // D5: CRM access is its own flag.
    let (status, body) = call(&w.router, "/crm", Some(w.bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["reason"]["reason"], "no_crm_access");
}

#[tokio::test]
async fn template_edit_applies_at_the_very_next_request_d6() {
    let w = world().await;
    let tenant = w.tenant;
    let (status, body) = call(&w.router, "/analytics", Some(w.bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["reason"]["reason"], "template");
    let (status, _) = call(&w.router, "/layered/report", Some(w.bob)).await;
    assert_eq!(status, StatusCode::OK);

    w.app
        .edit_template(
            tenant,
            w.admin,
            w.agent,
            &TemplateEdit {
                name: None,
                permissions: Some(Permissions::CONVERSATIONS_VIEW),
            },
        )
        .await
        .unwrap();
    let (status, body) = call(&w.router, "/analytics", Some(w.bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(json(&body)["reason"]["permission"], "analytics:view");
    let (status, _) = call(&w.router, "/layered/report", Some(w.bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    w.app
        .edit_template(
            tenant,
            w.admin,
            w.agent,
            &TemplateEdit {
                name: None,
                permissions: Some(Permissions::ANALYTICS_VIEW),
            },
        )
        .await
        .unwrap();
    let (status, _) = call(&w.router, "/analytics", Some(w.bob)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn suspended_user_is_denied_and_reactivated_user_allowed() {
    let w = world().await;
    let tenant = w.tenant;
    let suspend = |status| UserEdit {
        status: Some(status),
        ..UserEdit::default()
    };
    w.app
        .edit_user(tenant, w.admin, w.bob, &suspend(Status::Suspended))
        .await
        .unwrap();
    for path in ["/analytics", "/layered/report"] {
        let (status, body) = call(&w.router, path, Some(w.bob)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(json(&body)["reason"]["reason"], "suspended", "{path}");
    }
    w.app
        .edit_user(tenant, w.admin, w.bob, &suspend(Status::Active))
        .await
        .unwrap();
    let (status, _) = call(&w.router, "/analytics", Some(w.bob)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn layer_passes_the_decision_to_the_handler() {
    let w = world().await;
    let (status, body) = call(&w.router, "/layered/report", Some(w.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["allowed"], true);
    assert_eq!(json(&body)["reason"]["reason"], "admin");
}

#[tokio::test]
async fn identified_needs_no_permission() {
    let w = world().await;
    let (status, body) = call(&w.router, "/me", Some(w.bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, w.bob.to_string());
}

#[tokio::test]
async fn authorized_without_the_layer_is_a_500_not_an_allow() {
    let w = world().await;
    let router = Router::new().route("/report", get(report));
    let (status, body) = call(&router, "/report", Some(w.admin)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(&body)["error"], "unavailable");
}

#[test]
fn rejections_render_their_status() {
    assert_eq!(
        GuardRejection::Unauthenticated.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        GuardRejection::NotGuarded.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
