//! PostgreSQL's column types for the shared row readers ([`tenantry_store::sql`]): ids are
//! `uuid`, permission sets `text[]` of sorted `"category:action"` strings ([permission set (D4)](tenantry_core::Rule::PermissionSet)), times BIGINT
//! Unix nanoseconds.

use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Row, ValueRef as _};
use tenantry_core::{
    Counters, Email, IdentityId, Permission, Permissions, Role, RoleTemplate, Status, Subject,
    TemplateId, Tenant, TenantId, TenantState, User, UserId,
};
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
    invitation_from_row => invitation -> tenantry_core::Invitation,
    tombstone_from_row => tombstone -> tenantry_core::Tombstone,
    outbox_from_row => outbox -> tenantry_store::OutboxRecord,
    audit_from_row => audit_record -> tenantry_core::AuditRecord,
}

/// A row read by position (issue 14): the columns of one table's list ([`USER_COLUMNS`],
/// [`TEMPLATE_COLUMNS`], [`TENANT_COLUMNS`]) from column `base` on, in the list's order.
/// No column is looked up by name, keywords are matched on the borrowed text (no `String`
/// per column), and a permission list is folded into its bits from the binary `text[]`
/// value without a `Vec<String>`. What the schema guarantees is not checked again: an
/// address is taken as stored ([`Email::from_stored`]), as the shared readers take it.
#[derive(Clone, Copy)]
pub(crate) struct At<'r> {
    row: &'r PgRow,
    base: usize,
}

impl<'r> At<'r> {
    pub(crate) fn new(row: &'r PgRow, base: usize) -> Self {
        Self { row, base }
    }

    fn get<T>(&self, i: usize) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get(self.base.saturating_add(i))
            .map_err(backend)
    }

    fn opt_id(&self, i: usize) -> Result<Option<Uuid>, StoreError> {
        self.get(i)
    }

    fn id(&self, i: usize, column: &'static str) -> Result<Uuid, StoreError> {
        self.opt_id(i)?
            .ok_or_else(|| sql::corrupt(BACKEND, column, "NULL"))
    }

    fn keyword<T>(&self, i: usize, column: &'static str) -> Result<T, StoreError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.get::<&str>(i)?
            .parse::<T>()
            .map_err(|e| sql::corrupt(BACKEND, column, e))
    }

    fn time(&self, i: usize, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        sql::time_of(BACKEND, column, self.get(i)?)
    }

    fn opt_time(
        &self,
        i: usize,
        column: &'static str,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.get::<Option<i64>>(i)?
            .map(|v| sql::time_of(BACKEND, column, v))
            .transpose()
    }

    fn count(&self, i: usize, column: &'static str) -> Result<u32, StoreError> {
        u32::try_from(self.get::<i64>(i)?).map_err(|e| sql::corrupt(BACKEND, column, e))
    }

    /// A nullable permission list ([permission set (D4)](tenantry_core::Rule::PermissionSet)).
    fn opt_perms(&self, i: usize, column: &'static str) -> Result<Option<Permissions>, StoreError> {
        let index = self.base.saturating_add(i);
        let raw = self.row.try_get_raw(index).map_err(backend)?;
        if raw.is_null() {
            return Ok(None);
        }
        if raw.format() == PgValueFormat::Binary
            && <Vec<String> as sqlx::Type<sqlx::Postgres>>::compatible(&raw.type_info())
        {
            let bytes = raw
                .as_bytes()
                .map_err(|e| sql::corrupt(BACKEND, column, e))?;
            return perms_of_binary_array(bytes)
                .map(Some)
                .map_err(|e| sql::corrupt(BACKEND, column, e));
        }
        // A text-format value (the simple protocol), or a type sqlx will name in its error.
        self.get::<Option<Vec<String>>>(i)?
            .map(|list| {
                Permissions::parse_list(&list).map_err(|e| sql::corrupt(BACKEND, column, e))
            })
            .transpose()
    }

    fn perms(&self, i: usize, column: &'static str) -> Result<Permissions, StoreError> {
        self.opt_perms(i, column)?
            .ok_or_else(|| sql::corrupt(BACKEND, column, "NULL"))
    }

    /// Whether the row under this base exists (its id, the list's column `id_at`, is not
    /// NULL): for the snapshot's LEFT JOINs.
    pub(crate) fn present(&self, id_at: usize) -> Result<bool, StoreError> {
        Ok(self.opt_id(id_at)?.is_some())
    }

    /// Columns: [`USER_COLUMNS`] from `base` on.
    pub(crate) fn user(&self) -> Result<User, StoreError> {
        Ok(User {
            tenant_id: TenantId::from_uuid(self.id(0, "tenant_id")?),
            id: UserId::from_uuid(self.id(1, "id")?),
            email: Email::from_stored(self.get::<&str>(2)?.to_owned()),
            role: self.keyword::<Role>(3, "role")?,
            status: self.keyword::<Status>(4, "status")?,
            template_id: self.opt_id(5)?.map(TemplateId::from_uuid),
            crm_access: self.get(6)?,
            grants: self.perms(7, "grants")?,
            created_at: self.time(8, "created_at")?,
            last_login: self.opt_time(9, "last_login")?,
            invite_expires_at: self.opt_time(10, "invite_expires_at")?,
            identity: self.get::<Option<&str>>(11)?.map(IdentityId::from_stored),
        })
    }

    /// Columns: [`TEMPLATE_COLUMNS`] from `base` on.
    pub(crate) fn template(&self) -> Result<RoleTemplate, StoreError> {
        let name = sql::template_name(BACKEND, self.get::<&str>(2)?)?;
        Ok(RoleTemplate {
            tenant_id: TenantId::from_uuid(self.id(0, "tenant_id")?),
            id: TemplateId::from_uuid(self.id(1, "id")?),
            name,
            permissions: self.perms(3, "permissions")?,
            created_at: self.time(4, "created_at")?,
            updated_at: self.time(5, "updated_at")?,
        })
    }

    /// Columns: [`TENANT_COLUMNS`] from `base` on.
    pub(crate) fn tenant(&self) -> Result<TenantState, StoreError> {
        Ok(TenantState {
            tenant: Tenant {
                id: TenantId::from_uuid(self.id(0, "id")?),
                name: self.get::<String>(1)?,
                user_limit: self
                    .get::<Option<i64>>(2)?
                    .map(|l| u32::try_from(l).map_err(|e| sql::corrupt(BACKEND, "user_limit", e)))
                    .transpose()?,
                created_at: self.time(3, "created_at")?,
            },
            counters: Counters {
                version: u64::try_from(self.get::<i64>(4)?)
                    .map_err(|e| sql::corrupt(BACKEND, "version", e))?,
                seats_used: self.count(5, "seats_used")?,
                active_admins: self.count(6, "active_admins")?,
            },
        })
    }

    /// Columns: [`SUBJECT_COLUMNS`] from `base` on; the tenant and the user are the ones the
    /// statement looked up (they are its parameters, not read back).
    pub(crate) fn subject(&self, tenant: TenantId, user: UserId) -> Result<Subject, StoreError> {
        let template = match (self.opt_id(4)?, self.opt_perms(5, "template_permissions")?) {
            (Some(id), Some(p)) => Some((TemplateId::from_uuid(id), p)),
            _ => None,
        };
        Ok(Subject {
            tenant_id: tenant,
            user_id: user,
            role: self.keyword::<Role>(0, "role")?,
            status: self.keyword::<Status>(1, "status")?,
            crm_access: self.get(2)?,
            grants: self.perms(3, "grants")?,
            template,
        })
    }
}

/// The columns [`At::subject`] reads, of the user aliased `u` (the tenant `$1`): its
/// facts, then its template's permissions, NULL without a template of that tenant.
pub(crate) const SUBJECT_COLUMNS: &str = "u.role, u.status, u.crm_access, u.grants, u.template_id, \
     (SELECT t.permissions FROM #.role_templates t WHERE t.tenant_id = $1 AND t.id = u.template_id)";

/// How many columns each list has (the snapshot's offsets).
pub(crate) const TENANT_WIDTH: usize = 7;
pub(crate) const USER_WIDTH: usize = 12;
pub(crate) const TEMPLATE_WIDTH: usize = 6;

/// The next big-endian `i32` of `b`, and `b` moved past it.
fn be_i32(b: &mut &[u8]) -> Option<i32> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    *b = rest;
    Some(i32::from_be_bytes(*head))
}

/// A permission set from a `text[]` in PostgreSQL's binary array format (dimensions, flags,
/// element type, then per dimension its length and lower bound, then per element its
/// length and bytes), each element parsed in place.
fn perms_of_binary_array(mut b: &[u8]) -> Result<Permissions, String> {
    let malformed = || "malformed text[]".to_owned();
    let dims = be_i32(&mut b).ok_or_else(malformed)?;
    let _flags = be_i32(&mut b).ok_or_else(malformed)?;
    let _element_type = be_i32(&mut b).ok_or_else(malformed)?;
    let len = match dims {
        0 => 0,
        1 => {
            let len = be_i32(&mut b).ok_or_else(malformed)?;
            let _lower_bound = be_i32(&mut b).ok_or_else(malformed)?;
            len
        }
        _ => return Err("not a one-dimensional list".to_owned()),
    };
    let mut out = Permissions::empty();
    for _ in 0..len {
        let n = be_i32(&mut b).ok_or_else(malformed)?;
        let n = usize::try_from(n).map_err(|_| "NULL in the list".to_owned())?;
        let (item, rest) = b.split_at_checked(n).ok_or_else(malformed)?;
        b = rest;
        let text = std::str::from_utf8(item).map_err(|e| e.to_string())?;
        let p = text.parse::<Permission>().map_err(|e| e.to_string())?;
        out |= Permissions::from(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The positional readers read the lists in this order.
    #[test]
    fn the_positional_readers_follow_the_column_lists() {
        let names = |l: &str| {
            l.split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(USER_COLUMNS),
            names(
                "tenant_id, id, email, role, status, template_id, crm_access, grants, created_at, last_login, invite_expires_at, identity"
            )
        );
        assert_eq!(
            names(TEMPLATE_COLUMNS),
            names("tenant_id, id, name, permissions, created_at, updated_at")
        );
        assert_eq!(
            names(TENANT_COLUMNS),
            names("id, name, user_limit, created_at, version, seats_used, active_admins")
        );
        assert_eq!(names(USER_COLUMNS).len(), USER_WIDTH);
        assert_eq!(names(TEMPLATE_COLUMNS).len(), TEMPLATE_WIDTH);
        assert_eq!(names(TENANT_COLUMNS).len(), TENANT_WIDTH);
    }

    fn array(items: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        let dims: i32 = if items.is_empty() { 0 } else { 1 };
        b.extend(dims.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(25i32.to_be_bytes());
        if !items.is_empty() {
            b.extend(i32::try_from(items.len()).unwrap().to_be_bytes());
            b.extend(1i32.to_be_bytes());
        }
        for i in items {
            b.extend(i32::try_from(i.len()).unwrap().to_be_bytes());
            b.extend(i.as_bytes());
        }
        b
    }

    #[test]
    fn binary_lists_decode_to_their_bits() {
        assert_eq!(perms_of_binary_array(&array(&[])), Ok(Permissions::empty()));
        let list = ["analytics:view", "users:edit"];
        assert_eq!(
            perms_of_binary_array(&array(&list)),
            Ok(Permissions::parse_list(list).unwrap())
        );
        assert!(perms_of_binary_array(&array(&["users:fly"])).is_err());
        let whole = array(&list);
        for cut in 0..whole.len() {
            assert!(
                perms_of_binary_array(whole.get(..cut).unwrap()).is_err(),
                "{cut}"
            );
        }
        let mut null = array(&[]);
        null.truncate(0);
        null.extend(1i32.to_be_bytes());
        null.extend(1i32.to_be_bytes());
        null.extend(25i32.to_be_bytes());
        null.extend(1i32.to_be_bytes());
        null.extend(1i32.to_be_bytes());
        null.extend((-1i32).to_be_bytes());
        assert!(perms_of_binary_array(&null).is_err());
    }
}
