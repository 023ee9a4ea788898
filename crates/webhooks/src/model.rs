//! Endpoints, their secrets and their delivery state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenantry_core::{AuditAction, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Secret;

/// A webhook endpoint's id (a UUID v7).
///
/// ```
/// use tenantry_webhooks::EndpointId;
/// let id = EndpointId::new();
/// assert_eq!(id.to_string().parse::<EndpointId>().ok(), Some(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(Uuid);

impl EndpointId {
    /// A new id (time-ordered UUID v7).
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id from its UUID.
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    #[must_use]
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EndpointId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for EndpointId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What an admin sees of an endpoint: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its id.
    pub id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Where events are POSTed (`http` or `https`).
    pub url: String,
    /// The event kinds it receives; empty: all.
    pub events: Vec<AuditAction>,
    /// Whether the dispatcher delivers to it.
    pub enabled: bool,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Endpoint {
    /// Whether the endpoint wants events of this kind.
    #[must_use]
    pub fn wants(&self, action: AuditAction) -> bool {
        self.events.is_empty() || self.events.contains(&action)
    }
}

/// An endpoint's signing secrets: the current one, and during a rotation's grace period the
/// previous one with the end of its validity. Its `Debug` form shows no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The secret that signs.
    pub current: Secret,
    /// The rotated-out secret that still signs until the given time.
    pub previous: Option<(Secret, OffsetDateTime)>,
}

impl Secrets {
    /// The secrets that sign at `now`: the current, then the previous while it is valid.
    #[must_use]
    pub fn signing_at(&self, now: OffsetDateTime) -> Vec<&Secret> {
        let mut out = vec![&self.current];
        if let Some((old, until)) = &self.previous
            && now < *until
        {
            out.push(old);
        }
        out
    }
}

/// Where an endpoint's delivery stands: its durable cursor and its failures. The host reads
/// it with [`crate::Webhooks::endpoint_status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// The audit seq of the last event delivered (or skipped by the kind filter): the
    /// dispatcher goes on after it.
    pub delivered_seq: u64,
    /// Failed attempts in a row (0 after a success).
    pub attempts: u32,
    /// The last failure, in the dispatcher's words (a status code or a kind of transport
    /// failure; never a body or a secret).
    pub last_error: Option<String>,
    /// When the next attempt is due (after a failure).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Since when the endpoint has been failing without a success in between.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// When the dispatcher disabled the endpoint for failing too long.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

/// An endpoint as an [`crate::EndpointStore`] keeps it: with its secrets and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its secrets.
    pub secrets: Secrets,
    /// Its delivery status.
    pub status: DeliveryStatus,
}
