//! Managing endpoints: register, list, update, rotate, remove; admin-only and audited.

use std::sync::Arc;

use tenantry_core::{
    ActorRef, AuditAction, AuditEvent, AuditTarget, Field, FieldChange, Outcome, Role, Rule,
    Status, TenantId, Value,
};
use tenantry_service::Tenantry;
use tenantry_store::StoreError;
use time::{Duration, OffsetDateTime};

use crate::{
    DeliveryStatus, Endpoint, EndpointId, EndpointStore, EndpointStoreError, Secret, SecretError,
    Secrets, StoredEndpoint, event_kind,
};

/// Why a webhook operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The actor is not an active admin of the tenant (or the tenant is unknown).
    #[error("only an active admin of the tenant manages its webhooks")]
    NotAllowed,
    /// The tenant has no endpoint with this id.
    #[error("no such webhook endpoint")]
    NotFound,
    /// The URL is not an absolute `http` or `https` URL with a host and without credentials.
    #[error("invalid webhook URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rotation's grace period is negative.
    #[error("a rotation's grace period cannot be negative")]
    NegativeGrace,
    /// A secret could not be generated.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The tenantry store (users, audit log) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The endpoint store failed.
    #[error(transparent)]
    Endpoints(#[from] EndpointStoreError),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built")]
    Client,
}

/// A registered endpoint and its secret, which is shown this once.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its signing secret (`whsec_…`): give it to the receiver now, it is never shown again.
    pub secret: Secret,
}

/// What [`Webhooks::update`] changes; `None` keeps a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointUpdate {
    /// A new URL.
    pub url: Option<String>,
    /// New event kinds (empty: all).
    pub events: Option<Vec<AuditAction>>,
    /// Enable or disable. Enabling a disabled endpoint clears its failures; it resumes after
    /// the last event it received.
    pub enabled: Option<bool>,
}

/// The webhook admin use cases over a [`Tenantry`] service and an [`EndpointStore`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenantry_service::{ActorRef, AuditAction, Email, InMemoryStore, Tenantry};
/// use tenantry_webhooks::{EndpointUpdate, InMemoryEndpointStore, Webhooks, WebhookError};
///
/// let app = Tenantry::builder(InMemoryStore::new()).build()?;
/// let (tenant, admin) = app.create_tenant("Acme", None, Email::parse("ada@acme.test")?).await?;
/// let hooks = Webhooks::new(app.clone(), Arc::new(InMemoryEndpointStore::new()));
/// let admin = ActorRef::User(admin);
///
/// let made = hooks.register(tenant, admin, "https://hooks.acme.test/in", &[AuditAction::UserInvited]).await?;
/// assert!(made.secret.expose().starts_with("whsec_")); // shown once
/// let listed = hooks.list(tenant, admin).await?;
/// assert_eq!(listed, [made.endpoint.clone()]);
///
/// let off = EndpointUpdate { enabled: Some(false), ..EndpointUpdate::default() };
/// assert!(!hooks.update(tenant, admin, made.endpoint.id, &off).await?.enabled);
/// assert!(matches!(
///     hooks.register(tenant, admin, "ftp://hooks.acme.test", &[]).await,
///     Err(WebhookError::InvalidUrl { .. })
/// ));
/// assert!(matches!(hooks.list(tenant, ActorRef::System).await, Err(WebhookError::NotAllowed)));
/// hooks.remove(tenant, admin, made.endpoint.id).await?;
/// assert!(hooks.list(tenant, admin).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Webhooks {
    app: Tenantry,
    endpoints: Arc<dyn EndpointStore>,
}

/// Checks a webhook URL: absolute, `http` or `https`, with a host, without credentials.
///
/// # Errors
/// [`WebhookError::InvalidUrl`] saying what is wrong.
pub fn check_url(url: &str) -> Result<(), WebhookError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| WebhookError::InvalidUrl {
        reason: "not an absolute URL",
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::InvalidUrl {
            reason: "the scheme must be http or https",
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::InvalidUrl { reason: "no host" });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::InvalidUrl {
            reason: "credentials in the URL are not allowed",
        });
    }
    Ok(())
}

/// The changes of an endpoint's removal: its id and URL, gone.
fn removed(id: EndpointId, url: &str) -> Vec<FieldChange> {
    vec![
        change(
            Field::WebhookEndpoint,
            Value::Text(id.to_string()),
            Value::None,
        ),
        change(Field::WebhookUrl, Value::Text(url.to_owned()), Value::None),
    ]
}

fn events_text(events: &[AuditAction]) -> String {
    events
        .iter()
        .map(|a| event_kind(*a))
        .collect::<Vec<_>>()
        .join(",")
}

fn change(field: Field, before: Value, after: Value) -> FieldChange {
    FieldChange {
        field,
        before,
        after,
    }
}

impl Webhooks {
    /// The use cases over `app` (its store holds the audit log) and `endpoints`.
    #[must_use]
    pub fn new(app: Tenantry, endpoints: Arc<dyn EndpointStore>) -> Self {
        Self { app, endpoints }
    }

    /// The endpoint store.
    #[must_use]
    pub fn endpoints(&self) -> &Arc<dyn EndpointStore> {
        &self.endpoints
    }

    /// Lets an active admin of the tenant through. A known user of the tenant who is not
    /// one is refused, and a refused change (`attempted`) is recorded, as the audit log
    /// records refused management attempts ([audit log (D13)](tenantry_core::Rule::AuditLog)).
    async fn require_admin(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        attempted: Option<AuditAction>,
    ) -> Result<(), WebhookError> {
        let ActorRef::User(id) = actor else {
            return Err(WebhookError::NotAllowed);
        };
        let Some(user) = self.app.store().user(tenant, id).await? else {
            // Not a user of the tenant: recorded as the service records such refusals,
            // sampled (D13), so naming any tenant cannot grow its log without bound.
            if let Some(action) = attempted {
                self.app
                    .record_foreign_refusal(
                        tenant,
                        id,
                        action,
                        &tenantry_service::RuleError::AdminOnly,
                    )
                    .await;
            }
            return Err(WebhookError::NotAllowed);
        };
        if user.role == Role::Admin && user.status == Status::Active {
            return Ok(());
        }
        if let Some(action) = attempted {
            let event = AuditEvent {
                tenant_id: tenant,
                actor,
                action,
                target: AuditTarget::Tenant,
                at: self.app.now(),
                outcome: Outcome::Refused {
                    rule: Rule::ManagementAuthority,
                    message: WebhookError::NotAllowed.to_string(),
                },
                changes: Vec::new(),
            };
            self.app.store().append_audit(&event).await?;
        }
        Err(WebhookError::NotAllowed)
    }

    async fn audit(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        action: AuditAction,
        at: OffsetDateTime,
        changes: Vec<FieldChange>,
    ) -> Result<u64, WebhookError> {
        let event = AuditEvent {
            tenant_id: tenant,
            actor,
            action,
            target: AuditTarget::Tenant,
            at,
            outcome: Outcome::Success,
            changes,
        };
        Ok(self.app.store().append_audit(&event).await?)
    }

    async fn stored(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<StoredEndpoint, WebhookError> {
        self.endpoints
            .get(tenant, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// Registers an endpoint for `events` (empty: all kinds) and returns it with its new
    /// secret. The endpoint receives the events from its own `webhook_endpoint_added` on.
    ///
    /// # Errors
    /// [`WebhookError::NotAllowed`], [`WebhookError::InvalidUrl`], or a store's failure.
    pub async fn register(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        url: &str,
        events: &[AuditAction],
    ) -> Result<Registered, WebhookError> {
        self.require_admin(tenant, actor, Some(AuditAction::WebhookEndpointAdded))
            .await?;
        check_url(url)?;
        let secret = Secret::generate()?;
        let now = self.app.now();
        let endpoint = Endpoint {
            id: EndpointId::new(),
            tenant_id: tenant,
            url: url.to_owned(),
            events: events.to_vec(),
            enabled: true,
            created_at: now,
        };
        let seq = self
            .audit(
                tenant,
                actor,
                AuditAction::WebhookEndpointAdded,
                now,
                vec![
                    change(
                        Field::WebhookEndpoint,
                        Value::None,
                        Value::Text(endpoint.id.to_string()),
                    ),
                    change(Field::WebhookUrl, Value::None, Value::Text(url.to_owned())),
                    change(
                        Field::WebhookEvents,
                        Value::None,
                        Value::Text(events_text(events)),
                    ),
                ],
            )
            .await?;
        let stored = StoredEndpoint {
            endpoint: endpoint.clone(),
            secrets: Secrets {
                current: secret.clone(),
                previous: None,
            },
            status: DeliveryStatus {
                delivered_seq: seq.saturating_sub(1),
                ..DeliveryStatus::default()
            },
        };
        if let Err(e) = self.endpoints.insert(&stored).await {
            // The log already says the endpoint was added (its record is the endpoint's
            // first event, so it comes first); say that it is gone again, so the log never
            // names an endpoint that does not exist. Best effort: the insert's error is the
            // answer either way.
            let undo = self
                .audit(
                    tenant,
                    actor,
                    AuditAction::WebhookEndpointRemoved,
                    now,
                    removed(endpoint.id, url),
                )
                .await;
            if let Err(undo) = undo {
                tracing::warn!(tenant = %tenant, endpoint = %endpoint.id, error = %undo,
                    "the failed registration's removal could not be audited");
            }
            return Err(e.into());
        }
        Ok(Registered { endpoint, secret })
    }

    /// The tenant's endpoints, oldest first, without their secrets.
    ///
    /// # Errors
    /// [`WebhookError::NotAllowed`] or a store's failure.
    pub async fn list(
        &self,
        tenant: TenantId,
        actor: ActorRef,
    ) -> Result<Vec<Endpoint>, WebhookError> {
        self.require_admin(tenant, actor, None).await?;
        let mut rows: Vec<Endpoint> = self
            .endpoints
            .list(tenant)
            .await?
            .into_iter()
            .map(|r| r.endpoint)
            .collect();
        rows.sort_by_key(|e| (e.created_at, e.id));
        Ok(rows)
    }

    /// Changes an endpoint's URL, kinds or enabled flag; records what changed.
    ///
    /// # Errors
    /// [`WebhookError::NotAllowed`], [`WebhookError::NotFound`], [`WebhookError::InvalidUrl`],
    /// or a store's failure.
    pub async fn update(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        id: EndpointId,
        update: &EndpointUpdate,
    ) -> Result<Endpoint, WebhookError> {
        self.require_admin(tenant, actor, Some(AuditAction::WebhookEndpointChanged))
            .await?;
        if let Some(url) = &update.url {
            check_url(url)?;
        }
        let old = self.stored(tenant, id).await?;
        let mut new = old.endpoint.clone();
        let mut changes = vec![change(
            Field::WebhookEndpoint,
            Value::Text(id.to_string()),
            Value::Text(id.to_string()),
        )];
        if let Some(url) = update.url.as_ref().filter(|u| **u != old.endpoint.url) {
            changes.push(change(
                Field::WebhookUrl,
                Value::Text(old.endpoint.url.clone()),
                Value::Text(url.clone()),
            ));
            new.url.clone_from(url);
        }
        if let Some(events) = update
            .events
            .as_ref()
            .filter(|e| **e != old.endpoint.events)
        {
            changes.push(change(
                Field::WebhookEvents,
                Value::Text(events_text(&old.endpoint.events)),
                Value::Text(events_text(events)),
            ));
            new.events.clone_from(events);
        }
        if let Some(enabled) = update.enabled.filter(|e| *e != old.endpoint.enabled) {
            changes.push(change(
                Field::WebhookEnabled,
                Value::Bool(old.endpoint.enabled),
                Value::Bool(enabled),
            ));
            new.enabled = enabled;
        }
        if changes.len() == 1 {
            return Ok(new);
        }
        if !self
            .endpoints
            .update(tenant, id, &new.url, &new.events, new.enabled)
            .await?
        {
            return Err(WebhookError::NotFound);
        }
        if new.enabled && !old.endpoint.enabled {
            // Back on: the failures are forgiven, the cursor is kept.
            let status = DeliveryStatus {
                delivered_seq: old.status.delivered_seq,
                ..DeliveryStatus::default()
            };
            self.endpoints.save_status(tenant, id, &status).await?;
        }
        let now = self.app.now();
        self.audit(
            tenant,
            actor,
            AuditAction::WebhookEndpointChanged,
            now,
            changes,
        )
        .await?;
        Ok(new)
    }

    /// Gives the endpoint a new secret, returned this once. The old one keeps signing
    /// beside it for `grace` (both signatures in `webhook-signature`), so the receiver can
    /// switch without losing a delivery. A zero grace drops the old secret at once.
    ///
    /// # Errors
    /// [`WebhookError::NotAllowed`], [`WebhookError::NotFound`],
    /// [`WebhookError::NegativeGrace`], or a store's failure.
    pub async fn rotate_secret(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        id: EndpointId,
        grace: Duration,
    ) -> Result<Secret, WebhookError> {
        self.require_admin(tenant, actor, Some(AuditAction::WebhookEndpointChanged))
            .await?;
        if grace.is_negative() {
            return Err(WebhookError::NegativeGrace);
        }
        let old = self.stored(tenant, id).await?;
        let now = self.app.now();
        let secret = Secret::generate()?;
        let secrets = Secrets {
            current: secret.clone(),
            previous: (grace.is_positive()).then(|| (old.secrets.current, now + grace)),
        };
        if !self.endpoints.set_secrets(tenant, id, &secrets).await? {
            return Err(WebhookError::NotFound);
        }
        self.audit(
            tenant,
            actor,
            AuditAction::WebhookEndpointChanged,
            now,
            vec![
                change(
                    Field::WebhookEndpoint,
                    Value::Text(id.to_string()),
                    Value::Text(id.to_string()),
                ),
                change(Field::WebhookSecret, Value::None, Value::None),
            ],
        )
        .await?;
        Ok(secret)
    }

    /// Removes an endpoint; nothing more is sent to it.
    ///
    /// # Errors
    /// [`WebhookError::NotAllowed`], [`WebhookError::NotFound`], or a store's failure.
    pub async fn remove(
        &self,
        tenant: TenantId,
        actor: ActorRef,
        id: EndpointId,
    ) -> Result<(), WebhookError> {
        self.require_admin(tenant, actor, Some(AuditAction::WebhookEndpointRemoved))
            .await?;
        let old = self.stored(tenant, id).await?;
        if !self.endpoints.remove(tenant, id).await? {
            return Err(WebhookError::NotFound);
        }
        let now = self.app.now();
        self.audit(
            tenant,
            actor,
            AuditAction::WebhookEndpointRemoved,
            now,
            removed(id, &old.endpoint.url),
        )
        .await?;
        Ok(())
    }

    /// The endpoint and its delivery status, for the host (its own access: no actor check).
    ///
    /// # Errors
    /// [`WebhookError::NotFound`] or a store's failure.
    pub async fn endpoint_status(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<(Endpoint, DeliveryStatus), WebhookError> {
        let row = self.stored(tenant, id).await?;
        Ok((row.endpoint, row.status))
    }
}
