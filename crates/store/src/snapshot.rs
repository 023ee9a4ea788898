//! The snapshot a use case decides on, read at once ([concurrency (D16)](tenantry_core::Rule::Concurrency)).

use tenantry_core::{RoleTemplate, TemplateId, TenantId, TenantState, User, UserId};

use crate::{Store, StoreError};

/// What a use case needs to read before it decides: the tenant always, and whichever of
/// the acting user, the target user, a named template and the holder of an address key it
/// names.
///
/// ```
/// use tenantry_store::SnapshotRequest;
/// let request = SnapshotRequest::default().email_key("bob@acme.test");
/// assert_eq!(request.email_key.as_deref(), Some("bob@acme.test"));
/// assert!(request.actor.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotRequest {
    /// The acting user (its row and its template are read).
    pub actor: Option<UserId>,
    /// The user acted on (its row and its template are read).
    pub target: Option<UserId>,
    /// A template the use case names (for example the one an invite assigns).
    pub template: Option<TemplateId>,
    /// An address key whose holder in the tenant is read ([unique email (D3)](tenantry_core::Rule::UniqueEmail)).
    pub email_key: Option<String>,
}

impl SnapshotRequest {
    /// Reads the acting user too.
    #[must_use]
    pub fn actor(mut self, id: UserId) -> Self {
        self.actor = Some(id);
        self
    }

    /// Reads the target user too.
    #[must_use]
    pub fn target(mut self, id: UserId) -> Self {
        self.target = Some(id);
        self
    }

    /// Reads this template too (none with `None`).
    #[must_use]
    pub fn template(mut self, id: Option<TemplateId>) -> Self {
        self.template = id;
        self
    }

    /// Reads the holder of this address key too.
    #[must_use]
    pub fn email_key(mut self, key: &str) -> Self {
        self.email_key = Some(key.to_owned());
        self
    }
}

/// The rows a [`SnapshotRequest`] asked for, as the store holds them. A row asked for that
/// does not exist (or a template no user references) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The tenant with its counters; `None` when it does not exist (then nothing else is
    /// read).
    pub state: Option<TenantState>,
    /// The acting user.
    pub actor: Option<User>,
    /// The acting user's template.
    pub actor_template: Option<RoleTemplate>,
    /// The target user.
    pub target: Option<User>,
    /// The target user's template.
    pub target_template: Option<RoleTemplate>,
    /// The template asked for.
    pub template: Option<RoleTemplate>,
    /// The user of the tenant holding the address key asked for.
    pub email_user: Option<User>,
}

/// [`Store::snapshot`] by one read per row, which is what the trait's default does: right
/// for stores whose reads cost no round trip. Every row is read after the tenant, and the
/// use case's commit checks the tenant's version, so a decision is never taken on rows
/// mixed from before and after a change that committed.
///
/// # Errors
/// The first read that failed.
pub async fn read_snapshot<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    request: &SnapshotRequest,
) -> Result<Snapshot, StoreError> {
    let Some(state) = store.tenant(tenant).await? else {
        return Ok(Snapshot::default());
    };
    let mut out = Snapshot {
        state: Some(state),
        ..Snapshot::default()
    };
    if let Some(id) = request.actor {
        out.actor = store.user(tenant, id).await?;
        if let Some(t) = out.actor.as_ref().and_then(|u| u.template_id) {
            out.actor_template = store.template(tenant, t).await?;
        }
    }
    if let Some(id) = request.target {
        out.target = if request.actor == Some(id) {
            out.actor.clone()
        } else {
            store.user(tenant, id).await?
        };
        if let Some(t) = out.target.as_ref().and_then(|u| u.template_id) {
            out.target_template = store.template(tenant, t).await?;
        }
    }
    if let Some(id) = request.template {
        out.template = store.template(tenant, id).await?;
    }
    if let Some(key) = &request.email_key {
        out.email_user = store.user_by_email(tenant, key).await?;
    }
    Ok(out)
}
