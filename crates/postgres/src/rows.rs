//! PostgreSQL's column types for the shared row readers ([`tenantry_store::sql`]): ids are
//! `uuid`, permission sets `text[]` of sorted `"category:action"` strings ([permission set (D4)](tenantry_core::Rule::PermissionSet)), times BIGINT
//! Unix nanoseconds.

use sqlx::Row;
use sqlx::postgres::PgRow;
use tenantry_core::Permissions;
use tenantry_store::StoreError;
use tenantry_store::sql::{self, Columns};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use tenantry_store::sql::{
    INVITATION_COLUMNS, OUTBOX_COLUMNS, TEMPLATE_COLUMNS, USER_COLUMNS, kind_text, nanos_clamped,
    state_text,
};

pub(crate) const BACKEND: &str = "postgres";

/// The tenant columns (with its counters and version).
pub(crate) const TENANT_COLUMNS: &str =
    "id, name, user_limit, created_at, version, seats_used, active_admins";

/// Wraps any error as this backend's [`StoreError::Backend`].
pub(crate) fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    sql::error(BACKEND, e)
}

/// A time as Unix nanoseconds; times outside 1677–2262 are refused.
pub(crate) fn nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    sql::nanos(BACKEND, t)
}

/// A `LIMIT` as the BIGINT it is bound as.
pub(crate) fn limit_i64(limit: u32) -> i64 {
    i64::from(limit)
}

/// [permission set (D4)](tenantry_core::Rule::PermissionSet): a permission set as the sorted list of `"category:action"` strings.
pub(crate) fn perms_list(p: Permissions) -> Vec<String> {
    p.to_strings()
}

/// A row of this backend, read through [`Columns`]: its columns as named, or, with a
/// prefix, the columns of one joined table selected as `prefix_column` (the snapshot's
/// single row holds several tables' rows side by side).
pub(crate) struct Cols<'r> {
    pub(crate) row: &'r PgRow,
    pub(crate) prefix: &'static str,
}

impl<'r> Cols<'r> {
    /// The columns of `row` as named.
    pub(crate) fn of(row: &'r PgRow) -> Self {
        Self { row, prefix: "" }
    }

    fn get<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        if self.prefix.is_empty() {
            return self.row.try_get(column).map_err(backend);
        }
        let name = format!("{}{column}", self.prefix);
        self.row.try_get(name.as_str()).map_err(backend)
    }
}

impl Columns for Cols<'_> {
    const BACKEND: &'static str = BACKEND;

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.get(column)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }
    fn int(&self, column: &'static str) -> Result<i64, StoreError> {
        self.get(column)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        self.get(column)
    }
    fn flag(&self, column: &'static str) -> Result<bool, StoreError> {
        self.get(column)
    }
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError> {
        self.get(column)
    }
    fn opt_id(&self, column: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.get(column)
    }
    fn opt_perms(&self, column: &'static str) -> Result<Option<Permissions>, StoreError> {
        self.get::<Option<Vec<String>>>(column)?
            .map(|list| {
                Permissions::parse_list(&list).map_err(|e| sql::corrupt(BACKEND, column, e))
            })
            .transpose()
    }
}

/// Row readers of this backend's rows (see [`tenantry_store::sql`]).
macro_rules! readers {
    ($($name:ident => $shared:ident -> $ty:ty),* $(,)?) => {
        $(
            pub(crate) fn $name(row: &PgRow) -> Result<$ty, StoreError> {
                sql::$shared(&Cols::of(row))
            }
        )*
    };
}

readers! {
    tenant_from_row => tenant -> tenantry_core::TenantState,
    user_from_row => user -> tenantry_core::User,
    template_from_row => template -> tenantry_core::RoleTemplate,
    invitation_from_row => invitation -> tenantry_core::Invitation,
    tombstone_from_row => tombstone -> tenantry_core::Tombstone,
    outbox_from_row => outbox -> tenantry_store::OutboxRecord,
    subject_from_row => subject -> tenantry_core::Subject,
    audit_from_row => audit_record -> tenantry_core::AuditRecord,
}
