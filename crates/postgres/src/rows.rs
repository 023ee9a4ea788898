//! Conversions between PostgreSQL rows and domain values.

use sqlx::Row;
use sqlx::postgres::PgRow;
use tenantry_core::{
    ActorRef, Counters, Email, Invitation, InvitationKind, InvitationState, MessageId, Permissions,
    Role, RoleTemplate, Status, Subject, TemplateId, TemplateName, Tenant, TenantId, TenantState,
    TokenHash, Tombstone, User, UserId,
};
use tenantry_mail::Message;
use tenantry_store::{DeliveryState, OutboxRecord, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) const BACKEND: &str = "postgres";

/// Wraps any error as this backend's [`StoreError::Backend`].
pub(crate) fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        source: Box::new(e),
    }
}

/// A value that is not what the schema promises.
#[derive(Debug, thiserror::Error)]
#[error("corrupt value in column {column}: {detail}")]
pub(crate) struct Corrupt {
    column: &'static str,
    detail: String,
}

fn corrupt(column: &'static str, detail: impl ToString) -> StoreError {
    backend(Corrupt {
        column,
        detail: detail.to_string(),
    })
}

/// A bind parameter of a dynamically built query.
pub(crate) enum Param {
    Uuid(Uuid),
    Text(String),
    Int(i64),
    Bool(bool),
}

/// A time as Unix nanoseconds; times outside 1677–2262 are refused.
pub(crate) fn nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|e| corrupt("time", e))
}

/// A time as Unix nanoseconds, clamped into range (for comparisons only).
pub(crate) fn nanos_clamped(t: OffsetDateTime) -> i64 {
    clamp_i128(t.unix_timestamp_nanos())
}

pub(crate) fn clamp_i128(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The login key of a last login: never signed in sorts first (D18).
pub(crate) fn login_key(last_login: Option<i64>) -> i64 {
    last_login.unwrap_or(i64::MIN)
}

fn time_of(column: &'static str, v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v)).map_err(|e| corrupt(column, e))
}

/// D4: a permission set as the sorted list of `"category:action"` strings.
pub(crate) fn perms_list(p: Permissions) -> Vec<String> {
    p.to_strings()
}

fn perms_of(column: &'static str, list: &[String]) -> Result<Permissions, StoreError> {
    Permissions::parse_list(list).map_err(|e| corrupt(column, e))
}

pub(crate) fn kind_text(k: InvitationKind) -> &'static str {
    match k {
        InvitationKind::Initial => "initial",
        InvitationKind::Resend => "resend",
    }
}

pub(crate) fn state_text(s: InvitationState) -> &'static str {
    match s {
        InvitationState::Pending => "pending",
        InvitationState::Used => "used",
        InvitationState::Revoked => "revoked",
    }
}

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(backend)
}

fn get_time(row: &PgRow, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    time_of(column, get::<i64>(row, column)?)
}

fn get_opt_time(row: &PgRow, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
    get::<Option<i64>>(row, column)?
        .map(|v| time_of(column, v))
        .transpose()
}

fn get_u32(row: &PgRow, column: &'static str) -> Result<u32, StoreError> {
    u32::try_from(get::<i64>(row, column)?).map_err(|e| corrupt(column, e))
}

pub(crate) const TENANT_COLUMNS: &str =
    "id, name, user_limit, created_at, version, seats_used, active_admins";

pub(crate) fn tenant_from_row(row: &PgRow) -> Result<TenantState, StoreError> {
    Ok(TenantState {
        tenant: Tenant {
            id: TenantId::from_uuid(get(row, "id")?),
            name: get(row, "name")?,
            user_limit: get::<Option<i64>>(row, "user_limit")?
                .map(|l| u32::try_from(l).map_err(|e| corrupt("user_limit", e)))
                .transpose()?,
            created_at: get_time(row, "created_at")?,
        },
        counters: Counters {
            version: u64::try_from(get::<i64>(row, "version")?)
                .map_err(|e| corrupt("version", e))?,
            seats_used: get_u32(row, "seats_used")?,
            active_admins: get_u32(row, "active_admins")?,
        },
    })
}

pub(crate) const USER_COLUMNS: &str = "tenant_id, id, email, role, status, template_id, crm_access, grants, created_at, last_login, invite_expires_at";

pub(crate) fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        email: Email::parse(&get::<String>(row, "email")?).map_err(|e| corrupt("email", e))?,
        role: get::<String>(row, "role")?
            .parse::<Role>()
            .map_err(|e| corrupt("role", e))?,
        status: get::<String>(row, "status")?
            .parse::<Status>()
            .map_err(|e| corrupt("status", e))?,
        template_id: get::<Option<Uuid>>(row, "template_id")?.map(TemplateId::from_uuid),
        crm_access: get(row, "crm_access")?,
        grants: perms_of("grants", &get::<Vec<String>>(row, "grants")?)?,
        created_at: get_time(row, "created_at")?,
        last_login: get_opt_time(row, "last_login")?,
        invite_expires_at: get_opt_time(row, "invite_expires_at")?,
    })
}

pub(crate) const TEMPLATE_COLUMNS: &str =
    "tenant_id, id, name, permissions, created_at, updated_at";

pub(crate) fn template_from_row(row: &PgRow) -> Result<RoleTemplate, StoreError> {
    Ok(RoleTemplate {
        id: TemplateId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: TemplateName::parse(&get::<String>(row, "name")?).map_err(|e| corrupt("name", e))?,
        permissions: perms_of("permissions", &get::<Vec<String>>(row, "permissions")?)?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) const INVITATION_COLUMNS: &str =
    "token_hash, tenant_id, user_id, kind, state, created_at, expires_at";

pub(crate) fn invitation_from_row(row: &PgRow) -> Result<Invitation, StoreError> {
    let hash: Vec<u8> = get(row, "token_hash")?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("token_hash", "not 32 bytes"))?;
    Ok(Invitation {
        token_hash: TokenHash(hash),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        kind: match get::<String>(row, "kind")?.as_str() {
            "initial" => InvitationKind::Initial,
            "resend" => InvitationKind::Resend,
            other => return Err(corrupt("kind", other)),
        },
        state: match get::<String>(row, "state")?.as_str() {
            "pending" => InvitationState::Pending,
            "used" => InvitationState::Used,
            "revoked" => InvitationState::Revoked,
            other => return Err(corrupt("state", other)),
        },
        created_at: get_time(row, "created_at")?,
        expires_at: get_time(row, "expires_at")?,
    })
}

pub(crate) fn tombstone_from_row(row: &PgRow) -> Result<Tombstone, StoreError> {
    let by: String = get(row, "deleted_by")?;
    Ok(Tombstone {
        user_id: UserId::from_uuid(get(row, "user_id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        email: Email::parse(&get::<String>(row, "email")?).map_err(|e| corrupt("email", e))?,
        deleted_at: get_time(row, "deleted_at")?,
        deleted_by: serde_json::from_str::<ActorRef>(&by).map_err(|e| corrupt("deleted_by", e))?,
    })
}

pub(crate) const OUTBOX_COLUMNS: &str = "tenant_id, id, user_id, recipient, subject, body_text, body_html, state, state_at, failure, attempts, next_attempt_at, last_error, created_at";

pub(crate) fn outbox_from_row(row: &PgRow) -> Result<OutboxRecord, StoreError> {
    let state = match get::<String>(row, "state")?.as_str() {
        "pending" => DeliveryState::Pending,
        "sent" => DeliveryState::Sent {
            at: get_time(row, "state_at")?,
        },
        "failed" => DeliveryState::Failed {
            reason: get::<Option<String>>(row, "failure")?.unwrap_or_default(),
            at: get_time(row, "state_at")?,
        },
        other => return Err(corrupt("state", other)),
    };
    Ok(OutboxRecord {
        message: Message {
            id: MessageId::from_uuid(get(row, "id")?),
            tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
            user_id: UserId::from_uuid(get(row, "user_id")?),
            to: get(row, "recipient")?,
            subject: get(row, "subject")?,
            text: get(row, "body_text")?,
            html: get(row, "body_html")?,
        },
        state,
        attempts: get_u32(row, "attempts")?,
        next_attempt_at: get_time(row, "next_attempt_at")?,
        last_error: get(row, "last_error")?,
        created_at: get_time(row, "created_at")?,
    })
}

pub(crate) fn subject_from_row(row: &PgRow) -> Result<Subject, StoreError> {
    let template = match (
        get::<Option<Uuid>>(row, "template_id")?,
        get::<Option<Vec<String>>>(row, "template_permissions")?,
    ) {
        (Some(id), Some(p)) => Some((TemplateId::from_uuid(id), perms_of("permissions", &p)?)),
        _ => None,
    };
    Ok(Subject {
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "id")?),
        role: get::<String>(row, "role")?
            .parse::<Role>()
            .map_err(|e| corrupt("role", e))?,
        status: get::<String>(row, "status")?
            .parse::<Status>()
            .map_err(|e| corrupt("status", e))?,
        crm_access: get(row, "crm_access")?,
        grants: perms_of("grants", &get::<Vec<String>>(row, "grants")?)?,
        template,
    })
}
