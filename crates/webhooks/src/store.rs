//! Persistence of endpoints: the [`EndpointStore`] trait and its in-memory implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tenantry_core::{AuditAction, TenantId};
use time::OffsetDateTime;

use crate::{DeliveryStatus, EndpointId, Secrets, StoredEndpoint};

/// An endpoint store's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointStoreError {
    /// An endpoint with this id exists.
    #[error("an endpoint with this id exists")]
    Duplicate,
    /// A stored row could not be read back (a value out of range or of an unknown kind).
    #[error("{backend}: a stored endpoint row is invalid ({what})")]
    Corrupt {
        /// Which backend.
        backend: &'static str,
        /// Which column.
        what: &'static str,
    },
    /// The backend failed.
    #[error("{backend} endpoint store error: {source}")]
    Backend {
        /// Which backend (`"sqlite"`, `"postgres"`, `"memory"`).
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Where endpoints, their secrets and their delivery status are kept. Every method but
/// [`EndpointStore::all`] names the tenant; another tenant's endpoint is not found.
///
/// Writers touch disjoint parts of a row, so the dispatcher's status writes never undo an
/// admin's change: [`EndpointStore::update`] the URL, kinds and enabled flag,
/// [`EndpointStore::set_secrets`] the secrets, [`EndpointStore::save_status`] the status,
/// [`EndpointStore::disable`] the enabled flag and the status's `disabled_at`.
#[async_trait]
pub trait EndpointStore: Send + Sync + fmt::Debug + 'static {
    /// Adds an endpoint.
    ///
    /// # Errors
    /// [`EndpointStoreError::Duplicate`] when its id exists.
    async fn insert(&self, endpoint: &StoredEndpoint) -> Result<(), EndpointStoreError>;

    /// One endpoint of the tenant.
    async fn get(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<StoredEndpoint>, EndpointStoreError>;

    /// The tenant's endpoints, oldest first.
    async fn list(&self, tenant: TenantId) -> Result<Vec<StoredEndpoint>, EndpointStoreError>;

    /// Every enabled endpoint of every tenant, for the dispatcher.
    async fn all(&self) -> Result<Vec<StoredEndpoint>, EndpointStoreError>;

    /// Sets the URL, kinds and enabled flag. `false` when there is no such endpoint.
    async fn update(
        &self,
        tenant: TenantId,
        id: EndpointId,
        url: &str,
        events: &[AuditAction],
        enabled: bool,
    ) -> Result<bool, EndpointStoreError>;

    /// Replaces the secrets. `false` when there is no such endpoint.
    async fn set_secrets(
        &self,
        tenant: TenantId,
        id: EndpointId,
        secrets: &Secrets,
    ) -> Result<bool, EndpointStoreError>;

    /// Replaces the delivery status. `false` when there is no such endpoint.
    async fn save_status(
        &self,
        tenant: TenantId,
        id: EndpointId,
        status: &DeliveryStatus,
    ) -> Result<bool, EndpointStoreError>;

    /// Disables the endpoint and records when. `false` when there is no such endpoint or it
    /// was disabled already.
    async fn disable(
        &self,
        tenant: TenantId,
        id: EndpointId,
        at: OffsetDateTime,
    ) -> Result<bool, EndpointStoreError>;

    /// Removes the endpoint. `false` when there was none.
    async fn remove(&self, tenant: TenantId, id: EndpointId) -> Result<bool, EndpointStoreError>;
}

/// Endpoints in memory: for tests and single-process hosts (lost on restart).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tenantry_webhooks::{EndpointStore, InMemoryEndpointStore};
/// let store = InMemoryEndpointStore::new();
/// assert!(store.all().await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryEndpointStore {
    rows: Mutex<BTreeMap<EndpointId, StoredEndpoint>>,
}

impl InMemoryEndpointStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<EndpointId, StoredEndpoint>) -> R) -> R {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut rows)
    }

    fn edit(
        &self,
        tenant: TenantId,
        id: EndpointId,
        f: impl FnOnce(&mut StoredEndpoint) -> bool,
    ) -> bool {
        self.with(|rows| match rows.get_mut(&id) {
            Some(row) if row.endpoint.tenant_id == tenant => f(row),
            _ => false,
        })
    }
}

#[async_trait]
impl EndpointStore for InMemoryEndpointStore {
    async fn insert(&self, endpoint: &StoredEndpoint) -> Result<(), EndpointStoreError> {
        self.with(|rows| {
            if rows.contains_key(&endpoint.endpoint.id) {
                return Err(EndpointStoreError::Duplicate);
            }
            rows.insert(endpoint.endpoint.id, endpoint.clone());
            Ok(())
        })
    }

    async fn get(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<StoredEndpoint>, EndpointStoreError> {
        Ok(self.with(|rows| {
            rows.get(&id)
                .filter(|r| r.endpoint.tenant_id == tenant)
                .cloned()
        }))
    }

    async fn list(&self, tenant: TenantId) -> Result<Vec<StoredEndpoint>, EndpointStoreError> {
        Ok(self.with(|rows| {
            rows.values()
                .filter(|r| r.endpoint.tenant_id == tenant)
                .cloned()
                .collect()
        }))
    }

    async fn all(&self) -> Result<Vec<StoredEndpoint>, EndpointStoreError> {
        Ok(self.with(|rows| {
            rows.values()
                .filter(|r| r.endpoint.enabled)
                .cloned()
                .collect()
        }))
    }

    async fn update(
        &self,
        tenant: TenantId,
        id: EndpointId,
        url: &str,
        events: &[AuditAction],
        enabled: bool,
    ) -> Result<bool, EndpointStoreError> {
        Ok(self.edit(tenant, id, |row| {
            row.endpoint.url = url.to_owned();
            row.endpoint.events = events.to_vec();
            row.endpoint.enabled = enabled;
            true
        }))
    }

    async fn set_secrets(
        &self,
        tenant: TenantId,
        id: EndpointId,
        secrets: &Secrets,
    ) -> Result<bool, EndpointStoreError> {
        Ok(self.edit(tenant, id, |row| {
            row.secrets = secrets.clone();
            true
        }))
    }

    async fn save_status(
        &self,
        tenant: TenantId,
        id: EndpointId,
        status: &DeliveryStatus,
    ) -> Result<bool, EndpointStoreError> {
        Ok(self.edit(tenant, id, |row| {
            row.status = status.clone();
            true
        }))
    }

    async fn disable(
        &self,
        tenant: TenantId,
        id: EndpointId,
        at: OffsetDateTime,
    ) -> Result<bool, EndpointStoreError> {
        Ok(self.edit(tenant, id, |row| {
            if !row.endpoint.enabled {
                return false;
            }
            row.endpoint.enabled = false;
            row.status.disabled_at = Some(at);
            true
        }))
    }

    async fn remove(&self, tenant: TenantId, id: EndpointId) -> Result<bool, EndpointStoreError> {
        Ok(self.with(|rows| {
            if rows
                .get(&id)
                .is_some_and(|r| r.endpoint.tenant_id == tenant)
            {
                rows.remove(&id);
                true
            } else {
                false
            }
        }))
    }
}
