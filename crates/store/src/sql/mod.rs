//! What the SQL backends share: reading domain values out of rows, once for all of them.
//!
//! A backend implements [`Columns`] for its row type (how a column of each kind is typed in
//! its schema: ids as text or `uuid`, permission sets as JSON text or `text[]`), and the
//! functions here turn rows into [`User`]s, [`RoleTemplate`]s and the rest, refusing any value
//! that is not what the schema promises with a [`Corrupt`] error. Times are Unix nanoseconds
//! in a 64-bit integer everywhere.
//!
//! ```
//! use tenantry_store::sql;
//! use time::OffsetDateTime;
//! let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_867_200_000_000_001).unwrap();
//! assert_eq!(sql::nanos("demo", t).unwrap(), 1_795_867_200_000_000_001);
//! assert_eq!(sql::time_of("demo", "at", 1_795_867_200_000_000_001).unwrap(), t);
//! // After 2262 does not fit: refused, not wrapped.
//! assert!(sql::nanos("demo", OffsetDateTime::UNIX_EPOCH + time::Duration::days(110_000)).is_err());
//! ```

use tenantry_core::{
    ActorRef, AuditRecord, Counters, Email, Invitation, InvitationKind, InvitationState, MessageId,
    Permissions, Role, RoleTemplate, Status, Subject, TemplateId, TemplateName, Tenant, TenantId,
    TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_mail::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{DeliveryState, OutboxRecord, StoreError};

mod listing;
pub use listing::{Dialect, Listing, Param, tenants_listing, users_listing, users_page};

/// A value in the database that is not what the schema promises.
#[derive(Debug, thiserror::Error)]
#[error("corrupt value in column {column}: {detail}")]
pub struct Corrupt {
    /// The column.
    pub column: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

/// Wraps any error as the backend's [`StoreError::Backend`].
pub fn error<E: std::error::Error + Send + Sync + 'static>(
    backend: &'static str,
    e: E,
) -> StoreError {
    StoreError::Backend {
        backend,
        source: Box::new(e),
    }
}

/// A [`Corrupt`] value in `column`.
pub fn corrupt(backend: &'static str, column: &'static str, detail: impl ToString) -> StoreError {
    error(
        backend,
        Corrupt {
            column,
            detail: detail.to_string(),
        },
    )
}

/// A time as Unix nanoseconds; times outside 1677–2262 are refused.
///
/// # Errors
/// [`Corrupt`] for a time out of range.
pub fn nanos(backend: &'static str, t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|e| corrupt(backend, "time", e))
}

/// A time as Unix nanoseconds, clamped into range (for comparisons only).
#[must_use]
pub fn nanos_clamped(t: OffsetDateTime) -> i64 {
    clamp_i128(t.unix_timestamp_nanos())
}

/// An `i128` clamped into `i64`.
#[must_use]
pub fn clamp_i128(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The sort key of a last login: never signed in sorts first ([listing (D18)](tenantry_core::Rule::Listing)).
#[must_use]
pub fn login_key(last_login: Option<i64>) -> i64 {
    last_login.unwrap_or(i64::MIN)
}

/// The time stored as `v` Unix nanoseconds in `column`.
///
/// # Errors
/// [`Corrupt`] for a value out of range.
pub fn time_of(
    backend: &'static str,
    column: &'static str,
    v: i64,
) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v))
        .map_err(|e| corrupt(backend, column, e))
}

/// How an invitation kind is stored.
#[must_use]
pub fn kind_text(k: InvitationKind) -> &'static str {
    match k {
        InvitationKind::Initial => "initial",
        InvitationKind::Resend => "resend",
    }
}

/// How an invitation state is stored.
#[must_use]
pub fn state_text(s: InvitationState) -> &'static str {
    match s {
        InvitationState::Pending => "pending",
        InvitationState::Used => "used",
        InvitationState::Revoked => "revoked",
    }
}

/// A backend's row, read column by column in the types of tenantry's schema.
pub trait Columns {
    /// The backend's name, for errors.
    const BACKEND: &'static str;

    /// A text column.
    ///
    /// # Errors
    /// The driver's error when the column is missing or of another type.
    fn text(&self, column: &'static str) -> Result<String, StoreError>;
    /// A nullable text column.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;
    /// A 64-bit integer column.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn int(&self, column: &'static str) -> Result<i64, StoreError>;
    /// A nullable 64-bit integer column.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError>;
    /// A boolean column.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn flag(&self, column: &'static str) -> Result<bool, StoreError>;
    /// A binary column.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError>;
    /// A nullable id column.
    ///
    /// # Errors
    /// As [`Columns::text`]; [`Corrupt`] for a malformed id.
    fn opt_id(&self, column: &'static str) -> Result<Option<Uuid>, StoreError>;
    /// A nullable permission set column ([permission set (D4)](tenantry_core::Rule::PermissionSet): sorted `"category:action"` strings).
    ///
    /// # Errors
    /// As [`Columns::text`]; [`Corrupt`] for an unknown or unsorted entry.
    fn opt_perms(&self, column: &'static str) -> Result<Option<Permissions>, StoreError>;

    /// An id column.
    ///
    /// # Errors
    /// As [`Columns::opt_id`]; [`Corrupt`] for NULL.
    fn id(&self, column: &'static str) -> Result<Uuid, StoreError> {
        self.opt_id(column)?
            .ok_or_else(|| corrupt(Self::BACKEND, column, "NULL"))
    }
    /// A permission set column.
    ///
    /// # Errors
    /// As [`Columns::opt_perms`]; [`Corrupt`] for NULL.
    fn perms(&self, column: &'static str) -> Result<Permissions, StoreError> {
        self.opt_perms(column)?
            .ok_or_else(|| corrupt(Self::BACKEND, column, "NULL"))
    }
    /// A time column (Unix nanoseconds).
    ///
    /// # Errors
    /// As [`Columns::int`]; [`Corrupt`] out of range.
    fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        time_of(Self::BACKEND, column, self.int(column)?)
    }
    /// A nullable time column.
    ///
    /// # Errors
    /// As [`Columns::time`].
    fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_int(column)?
            .map(|v| time_of(Self::BACKEND, column, v))
            .transpose()
    }
    /// A non-negative count column.
    ///
    /// # Errors
    /// As [`Columns::int`]; [`Corrupt`] outside `u32`.
    fn count(&self, column: &'static str) -> Result<u32, StoreError> {
        u32::try_from(self.int(column)?).map_err(|e| corrupt(Self::BACKEND, column, e))
    }
    /// A column parsed with [`std::str::FromStr`].
    ///
    /// # Errors
    /// As [`Columns::text`]; [`Corrupt`] when it does not parse.
    fn parsed<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.text(column)?
            .parse::<T>()
            .map_err(|e| corrupt(Self::BACKEND, column, e))
    }
    /// An email column ([unique email (D3)](tenantry_core::Rule::UniqueEmail)), taken as
    /// stored ([`Email::from_stored`]): every address was parsed before it was written, and
    /// the schema's unique email key is its lowercase form, so it is not validated again.
    ///
    /// # Errors
    /// As [`Columns::text`].
    fn email(&self, column: &'static str) -> Result<Email, StoreError> {
        Ok(Email::from_stored(self.text(column)?))
    }
}

/// The tenant columns every backend selects.
pub const TENANT_COLUMNS: &str =
    "id, name, user_limit, created_at, version, seats_used, active_admins";

/// Columns: [`TENANT_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn tenant<R: Columns>(row: &R) -> Result<TenantState, StoreError> {
    Ok(TenantState {
        tenant: Tenant {
            id: TenantId::from_uuid(row.id("id")?),
            name: row.text("name")?,
            user_limit: row
                .opt_int("user_limit")?
                .map(|l| u32::try_from(l).map_err(|e| corrupt(R::BACKEND, "user_limit", e)))
                .transpose()?,
            created_at: row.time("created_at")?,
        },
        counters: Counters {
            version: u64::try_from(row.int("version")?)
                .map_err(|e| corrupt(R::BACKEND, "version", e))?,
            seats_used: row.count("seats_used")?,
            active_admins: row.count("active_admins")?,
        },
    })
}

/// The user columns every backend selects.
pub const USER_COLUMNS: &str = "tenant_id, id, email, role, status, template_id, crm_access, grants, created_at, last_login, invite_expires_at, identity";

/// Columns: [`USER_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn user<R: Columns>(row: &R) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from_uuid(row.id("id")?),
        tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
        email: row.email("email")?,
        role: row.parsed::<Role>("role")?,
        status: row.parsed::<Status>("status")?,
        template_id: row.opt_id("template_id")?.map(TemplateId::from_uuid),
        crm_access: row.flag("crm_access")?,
        grants: row.perms("grants")?,
        created_at: row.time("created_at")?,
        last_login: row.opt_time("last_login")?,
        invite_expires_at: row.opt_time("invite_expires_at")?,
        identity: row
            .opt_text("identity")?
            .map(|i| tenantry_core::IdentityId::from_stored(&i)),
    })
}

/// The template columns every backend selects.
pub const TEMPLATE_COLUMNS: &str = "tenant_id, id, name, permissions, created_at, updated_at";

/// Columns: [`TEMPLATE_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn template<R: Columns>(row: &R) -> Result<RoleTemplate, StoreError> {
    Ok(RoleTemplate {
        id: TemplateId::from_uuid(row.id("id")?),
        tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
        name: template_name(R::BACKEND, &row.text("name")?)?,
        permissions: row.perms("permissions")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// A stored template name: one stored before D22 may hold a format character and is still
/// readable; only an empty one is corrupt.
///
/// # Errors
/// [`Corrupt`] for a blank name.
pub fn template_name(backend: &'static str, text: &str) -> Result<TemplateName, StoreError> {
    match TemplateName::parse(text) {
        Ok(n) => Ok(n),
        Err(_) if !text.trim().is_empty() => Ok(TemplateName::stored(text)),
        Err(e) => Err(corrupt(backend, "name", e)),
    }
}

/// The invitation columns every backend selects.
pub const INVITATION_COLUMNS: &str =
    "token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts";

/// Columns: [`INVITATION_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn invitation<R: Columns>(row: &R) -> Result<Invitation, StoreError> {
    let hash: [u8; 32] = row
        .bytes("token_hash")?
        .try_into()
        .map_err(|_| corrupt(R::BACKEND, "token_hash", "not 32 bytes"))?;
    Ok(Invitation {
        token_hash: TokenHash(hash),
        tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
        user_id: UserId::from_uuid(row.id("user_id")?),
        kind: match row.text("kind")?.as_str() {
            "initial" => InvitationKind::Initial,
            "resend" => InvitationKind::Resend,
            other => return Err(corrupt(R::BACKEND, "kind", other)),
        },
        state: match row.text("state")?.as_str() {
            "pending" => InvitationState::Pending,
            "used" => InvitationState::Used,
            "revoked" => InvitationState::Revoked,
            other => return Err(corrupt(R::BACKEND, "state", other)),
        },
        created_at: row.time("created_at")?,
        expires_at: row.time("expires_at")?,
        failed_attempts: u32::try_from(row.int("failed_attempts")?)
            .map_err(|e| corrupt(R::BACKEND, "failed_attempts", e))?,
    })
}

/// The tombstone columns every backend selects.
pub const TOMBSTONE_COLUMNS: &str = "tenant_id, user_id, email, deleted_at, deleted_by";

/// Columns: [`TOMBSTONE_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn tombstone<R: Columns>(row: &R) -> Result<Tombstone, StoreError> {
    Ok(Tombstone {
        user_id: UserId::from_uuid(row.id("user_id")?),
        tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
        email: row.email("email")?,
        deleted_at: row.time("deleted_at")?,
        deleted_by: serde_json::from_str::<ActorRef>(&row.text("deleted_by")?)
            .map_err(|e| corrupt(R::BACKEND, "deleted_by", e))?,
    })
}

/// The outbox columns every backend selects.
pub const OUTBOX_COLUMNS: &str = "tenant_id, id, user_id, recipient, subject, body_text, body_html, state, state_at, failure, attempts, next_attempt_at, last_error, created_at";

/// Columns: [`OUTBOX_COLUMNS`].
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn outbox<R: Columns>(row: &R) -> Result<OutboxRecord, StoreError> {
    let state = match row.text("state")?.as_str() {
        "pending" => DeliveryState::Pending,
        "sent" => DeliveryState::Sent {
            at: row.time("state_at")?,
        },
        "failed" => DeliveryState::Failed {
            reason: row.opt_text("failure")?.unwrap_or_default(),
            at: row.time("state_at")?,
        },
        other => return Err(corrupt(R::BACKEND, "state", other)),
    };
    Ok(OutboxRecord {
        message: Message {
            id: MessageId::from_uuid(row.id("id")?),
            tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
            user_id: UserId::from_uuid(row.id("user_id")?),
            to: row.text("recipient")?,
            subject: row.text("subject")?,
            text: row.text("body_text")?,
            html: row.text("body_html")?,
            date: None,
        },
        state,
        attempts: row.count("attempts")?,
        next_attempt_at: row.time("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.time("created_at")?,
    })
}

/// Columns: the user's `tenant_id, id, role, status, crm_access, grants, template_id` and
/// its template's permissions as `template_permissions` (NULL without a template).
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn subject<R: Columns>(row: &R) -> Result<Subject, StoreError> {
    let template = match (
        row.opt_id("template_id")?,
        row.opt_perms("template_permissions")?,
    ) {
        (Some(id), Some(p)) => Some((TemplateId::from_uuid(id), p)),
        _ => None,
    };
    Ok(Subject {
        tenant_id: TenantId::from_uuid(row.id("tenant_id")?),
        user_id: UserId::from_uuid(row.id("id")?),
        role: row.parsed::<Role>("role")?,
        status: row.parsed::<Status>("status")?,
        crm_access: row.flag("crm_access")?,
        grants: row.perms("grants")?,
        template,
    })
}

/// Columns: `seq, event` (the event as JSON text).
///
/// # Errors
/// [`Corrupt`] or the driver's error.
pub fn audit_record<R: Columns>(row: &R) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: u64::try_from(row.int("seq")?).map_err(|e| corrupt(R::BACKEND, "seq", e))?,
        event: serde_json::from_str(&row.text("event")?)
            .map_err(|e| corrupt(R::BACKEND, "event", e))?,
    })
}
