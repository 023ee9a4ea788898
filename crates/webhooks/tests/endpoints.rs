#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Step 2: endpoints per tenant, admin-only, audited without the secret.

mod support;

use std::sync::Arc;

use tenantry_service::{
    ActorRef, AuditAction, Email, Field, InviteRequest, Permissions, Role, Status, UserEdit, Value,
};
use tenantry_webhooks::{
    EndpointId, EndpointStore, EndpointUpdate, InMemoryEndpointStore, WebhookError, Webhooks,
};

const T0: time::OffsetDateTime = time::macros::datetime!(2026-03-02 09:00 UTC);

#[tokio::test]
async fn only_an_active_admin_of_the_tenant_manages_endpoints() {
    let (app, _clock, tenant, admin) = support::service(T0).await;
    let hooks = Webhooks::new(app.clone(), Arc::new(InMemoryEndpointStore::new()));
    let invite = |email: &str, role| InviteRequest {
        email: Email::parse(email).unwrap(),
        role,
        template_id: None,
        crm_access: true,
        grants: Permissions::all(),
    };
    // A user with every permission, an invited admin, a suspended admin, the system, and an
    // admin of another tenant: all refused.
    let user = app
        .invite(tenant, admin, &invite("u@acme.test", Role::User))
        .await
        .unwrap();
    let invited = app
        .invite(tenant, admin, &invite("i@acme.test", Role::Admin))
        .await
        .unwrap();
    let (other_tenant, other_admin) = app
        .create_tenant("Other", None, Email::parse("o@other.test").unwrap())
        .await
        .unwrap();
    let refused = [
        ActorRef::User(user.user.id),
        ActorRef::User(invited.user.id),
        ActorRef::System,
        ActorRef::User(other_admin),
    ];
    for actor in refused {
        let r = hooks
            .register(tenant, actor, "https://h.test/in", &[])
            .await;
        assert!(
            matches!(r, Err(WebhookError::NotAllowed)),
            "{actor:?}: {r:?}"
        );
        assert!(matches!(
            hooks.list(tenant, actor).await,
            Err(WebhookError::NotAllowed)
        ));
    }
    let made = hooks
        .register(tenant, ActorRef::User(admin), "https://h.test/in", &[])
        .await
        .unwrap();
    for actor in refused {
        let id = made.endpoint.id;
        let upd = EndpointUpdate {
            enabled: Some(false),
            ..EndpointUpdate::default()
        };
        assert!(matches!(
            hooks.update(tenant, actor, id, &upd).await,
            Err(WebhookError::NotAllowed)
        ));
        let grace = time::Duration::ZERO;
        assert!(matches!(
            hooks.rotate_secret(tenant, actor, id, grace).await,
            Err(WebhookError::NotAllowed)
        ));
        assert!(matches!(
            hooks.remove(tenant, actor, id).await,
            Err(WebhookError::NotAllowed)
        ));
    }
    // Refused changes by known users of the tenant are recorded (D13); reads and the
    // system are not; a stranger's are sampled: its first one is recorded, the rest within
    // the minute only counted.
    let log = app
        .audit_log(tenant, ActorRef::System, 0, 100)
        .await
        .unwrap();
    let refused_log: Vec<_> = log
        .iter()
        .filter(|r| matches!(&r.event.outcome, tenantry_service::Outcome::Refused { rule, .. } if *rule == tenantry_service::Rule::ManagementAuthority))
        .map(|r| (r.event.actor, r.event.action))
        .collect();
    assert_eq!(refused_log.len(), 9, "{refused_log:?}");
    assert_eq!(
        refused_log
            .iter()
            .filter(|(a, _)| *a == ActorRef::User(other_admin))
            .count(),
        1,
        "the stranger's refusals are sampled"
    );
    for actor in [user.user.id, invited.user.id] {
        let mine: Vec<_> = refused_log
            .iter()
            .filter(|(a, _)| *a == ActorRef::User(actor))
            .map(|(_, x)| *x)
            .collect();
        assert_eq!(
            mine,
            [
                AuditAction::WebhookEndpointAdded,
                AuditAction::WebhookEndpointChanged,
                AuditAction::WebhookEndpointChanged,
                AuditAction::WebhookEndpointRemoved
            ]
        );
    }
    // Another tenant's admin does not see or reach this tenant's endpoint (D15).
    assert!(
        hooks
            .list(other_tenant, ActorRef::User(other_admin))
            .await
            .unwrap()
            .is_empty()
    );
    let r = hooks
        .remove(other_tenant, ActorRef::User(other_admin), made.endpoint.id)
        .await;
    assert!(matches!(r, Err(WebhookError::NotFound)), "{r:?}");
    // A suspended admin is refused too.
    let second = app
        .invite(tenant, admin, &invite("b@acme.test", Role::Admin))
        .await
        .unwrap();
    let token = second.accept_link.token().unwrap();
    let b = app.accept_invitation(&token, "b@acme.test").await.unwrap();
    hooks.list(tenant, ActorRef::User(b.id)).await.unwrap();
    let suspend = UserEdit {
        status: Some(Status::Suspended),
        ..UserEdit::default()
    };
    app.edit_user(tenant, admin, b.id, &suspend).await.unwrap();
    assert!(matches!(
        hooks.list(tenant, ActorRef::User(b.id)).await,
        Err(WebhookError::NotAllowed)
    ));
}

#[tokio::test]
async fn urls_are_http_or_https_with_a_host_and_no_credentials() {
    let (app, _clock, tenant, admin) = support::service(T0).await;
    let hooks = Webhooks::new(app, Arc::new(InMemoryEndpointStore::new()));
    let admin = ActorRef::User(admin);
    for bad in [
        "ftp://h.test/in",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "h.test/in",
        "",
        "https://user:pw@h.test/in",
        "http://",
    ] {
        let r = hooks.register(tenant, admin, bad, &[]).await;
        assert!(
            matches!(r, Err(WebhookError::InvalidUrl { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let ok = hooks
        .register(tenant, admin, "http://127.0.0.1:8080/in", &[])
        .await
        .unwrap();
    let upd = EndpointUpdate {
        url: Some("gopher://h.test".into()),
        ..EndpointUpdate::default()
    };
    let r = hooks.update(tenant, admin, ok.endpoint.id, &upd).await;
    assert!(matches!(r, Err(WebhookError::InvalidUrl { .. })), "{r:?}");
    assert_eq!(
        hooks.list(tenant, admin).await.unwrap()[0].url,
        "http://127.0.0.1:8080/in"
    );
    let r = hooks
        .update(tenant, admin, EndpointId::new(), &EndpointUpdate::default())
        .await;
    assert!(matches!(r, Err(WebhookError::NotFound)), "{r:?}");
}

#[tokio::test]
async fn every_change_is_audited_and_no_secret_reaches_the_log_or_a_listing() {
    let (app, _clock, tenant, admin) = support::service(T0).await;
    let store = Arc::new(InMemoryEndpointStore::new());
    let hooks = Webhooks::new(app.clone(), store.clone());
    let actor = ActorRef::User(admin);
    let made = hooks
        .register(
            tenant,
            actor,
            "https://h.test/in",
            &[AuditAction::UserInvited, AuditAction::UserEdited],
        )
        .await
        .unwrap();
    let id = made.endpoint.id;
    assert_eq!(
        made.endpoint.events,
        [AuditAction::UserInvited, AuditAction::UserEdited]
    );
    let upd = EndpointUpdate {
        url: Some("https://h2.test/in".into()),
        events: Some(vec![]),
        enabled: Some(false),
    };
    let changed = hooks.update(tenant, actor, id, &upd).await.unwrap();
    assert_eq!(
        (changed.url.as_str(), changed.events.len(), changed.enabled),
        ("https://h2.test/in", 0, false)
    );
    let rotated = hooks
        .rotate_secret(tenant, actor, id, time::Duration::hours(1))
        .await
        .unwrap();
    assert_ne!(rotated, made.secret);
    let neg = hooks
        .rotate_secret(tenant, actor, id, time::Duration::seconds(-1))
        .await;
    assert!(matches!(neg, Err(WebhookError::NegativeGrace)));
    let listed = hooks.list(tenant, actor).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&changed));
    let (_, status) = hooks.endpoint_status(tenant, id).await.unwrap();
    assert_eq!(status.attempts, 0);
    hooks.remove(tenant, actor, id).await.unwrap();
    assert!(matches!(
        hooks.remove(tenant, actor, id).await,
        Err(WebhookError::NotFound)
    ));
    assert!(store.get(tenant, id).await.unwrap().is_none());

    let log = app
        .audit_log(tenant, ActorRef::System, 0, 100)
        .await
        .unwrap();
    let ours: Vec<_> = log
        .iter()
        .filter(|r| r.event.action.to_string_lossy().starts_with("webhook"))
        .collect();
    let actions: Vec<_> = ours.iter().map(|r| r.event.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::WebhookEndpointAdded,
            AuditAction::WebhookEndpointChanged,
            AuditAction::WebhookEndpointChanged,
            AuditAction::WebhookEndpointRemoved,
        ]
    );
    assert!(ours.iter().all(|r| r.event.actor == actor));
    let added = &ours[0].event.changes;
    assert_eq!(added[0].after, Value::Text(id.to_string()));
    assert_eq!(added[1].after, Value::Text("https://h.test/in".into()));
    assert_eq!(
        added[2].after,
        Value::Text("user_invited,user_edited".into())
    );
    let fields: Vec<_> = ours[1].event.changes.iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        [
            Field::WebhookEndpoint,
            Field::WebhookUrl,
            Field::WebhookEvents,
            Field::WebhookEnabled
        ]
    );
    let rotation = &ours[2].event.changes[1];
    assert_eq!(
        (rotation.field, &rotation.before, &rotation.after),
        (Field::WebhookSecret, &Value::None, &Value::None)
    );

    let text = serde_json::to_string(&log).unwrap()
        + &serde_json::to_string(&listed).unwrap()
        + &format!("{listed:?}{made:?}{rotated:?}");
    for secret in [made.secret.expose(), rotated.expose()] {
        let b64 = secret.trim_start_matches("whsec_");
        assert!(!text.contains(b64), "a secret leaked");
    }
    assert!(text.contains("https://h.test/in"));
}

/// The serde name, for filtering.
trait Lossy {
    fn to_string_lossy(&self) -> String;
}

impl Lossy for AuditAction {
    fn to_string_lossy(&self) -> String {
        tenantry_webhooks::event_kind(*self)
    }
}

/// An endpoint store whose inserts fail, the rest forwarded to the in-memory store.
#[derive(Debug, Default)]
struct FailingInserts(InMemoryEndpointStore);

#[async_trait::async_trait]
impl EndpointStore for FailingInserts {
    async fn insert(
        &self,
        _endpoint: &tenantry_webhooks::StoredEndpoint,
    ) -> Result<(), tenantry_webhooks::EndpointStoreError> {
        Err(tenantry_webhooks::EndpointStoreError::Duplicate)
    }
    async fn get(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
    ) -> Result<Option<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError>
    {
        self.0.get(tenant, id).await
    }
    async fn list(
        &self,
        tenant: tenantry_service::TenantId,
    ) -> Result<Vec<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError> {
        self.0.list(tenant).await
    }
    async fn all(
        &self,
    ) -> Result<Vec<tenantry_webhooks::StoredEndpoint>, tenantry_webhooks::EndpointStoreError> {
        self.0.all().await
    }
    async fn update(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
        url: &str,
        events: &[AuditAction],
        enabled: bool,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        self.0.update(tenant, id, url, events, enabled).await
    }
    async fn set_secrets(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
        secrets: &tenantry_webhooks::Secrets,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        self.0.set_secrets(tenant, id, secrets).await
    }
    async fn save_status(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
        status: &tenantry_webhooks::DeliveryStatus,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        self.0.save_status(tenant, id, status).await
    }
    async fn disable(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
        at: time::OffsetDateTime,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        self.0.disable(tenant, id, at).await
    }
    async fn remove(
        &self,
        tenant: tenantry_service::TenantId,
        id: EndpointId,
    ) -> Result<bool, tenantry_webhooks::EndpointStoreError> {
        self.0.remove(tenant, id).await
    }
}

/// A registration whose insert fails answers the store's error, and the audit log, which
/// recorded the endpoint as added first, records it as removed right after: the log never
/// leaves an endpoint that does not exist looking registered.
#[tokio::test]
async fn a_failed_registration_is_recorded_as_removed_again() {
    let (app, _clock, tenant, admin) = support::service(T0).await;
    let hooks = Webhooks::new(app.clone(), Arc::new(FailingInserts::default()));
    let before = app
        .audit_log(tenant, ActorRef::System, 0, 100)
        .await
        .unwrap()
        .len();
    let err = hooks
        .register(
            tenant,
            ActorRef::User(admin),
            "https://hooks.example.test/in",
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WebhookError::Endpoints(_)), "{err:?}");
    let log = app
        .audit_log(tenant, ActorRef::System, 0, 100)
        .await
        .unwrap();
    let new: Vec<_> = log[before..].iter().map(|r| r.event.action).collect();
    assert_eq!(
        new,
        [
            AuditAction::WebhookEndpointAdded,
            AuditAction::WebhookEndpointRemoved
        ]
    );
    let id_of = |i: usize| {
        log[before + i]
            .event
            .changes
            .iter()
            .find(|c| c.field == Field::WebhookEndpoint)
            .map(|c| (c.before.clone(), c.after.clone()))
            .unwrap()
    };
    let (Value::None, Value::Text(added)) = id_of(0) else {
        panic!("added: {:?}", id_of(0))
    };
    assert_eq!(id_of(1), (Value::Text(added), Value::None));
    assert!(
        hooks
            .list(tenant, ActorRef::User(admin))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A user id that is not a user of the tenant is refused, and its refusals are recorded as
/// the service records refusals by non-users (D13): sampled, one event per tenant per
/// minute, the next one carrying how many were only counted.
#[tokio::test]
async fn d13_refusals_by_non_users_are_recorded_sampled() {
    let (app, clock, tenant, _admin) = support::service(T0).await;
    let hooks = Webhooks::new(app.clone(), Arc::new(InMemoryEndpointStore::new()));
    let stranger = tenantry_service::UserId::from_parts(1, [7; 10]);
    let log_len = || async {
        app.audit_log(tenant, ActorRef::System, 0, 500)
            .await
            .unwrap()
            .len()
    };
    let before = log_len().await;
    for _ in 0..50 {
        let err = hooks
            .register(
                tenant,
                ActorRef::User(stranger),
                "https://x.example.test/",
                &[],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::NotAllowed));
    }
    assert_eq!(log_len().await, before + 1, "one recorded, 49 counted");
    clock.advance(time::Duration::minutes(2));
    hooks
        .register(
            tenant,
            ActorRef::User(stranger),
            "https://x.example.test/",
            &[],
        )
        .await
        .unwrap_err();
    let log = app
        .audit_log(tenant, ActorRef::System, 0, 500)
        .await
        .unwrap();
    assert_eq!(log.len(), before + 2);
    let last = &log[log.len() - 1].event;
    assert_eq!(last.actor, ActorRef::User(stranger));
    assert_eq!(last.action, AuditAction::WebhookEndpointAdded);
    assert!(matches!(
        last.outcome,
        tenantry_service::Outcome::Refused {
            rule: tenantry_service::Rule::ManagementAuthority,
            ..
        }
    ));
    assert!(
        last.changes
            .iter()
            .any(|c| c.field == Field::UnrecordedRefusals && c.after == Value::Number(49))
    );
    assert!(hooks.list(tenant, ActorRef::System).await.is_err());
}
