//! SQLite's column types for the shared row readers ([`tenantry_store::sql`]): ids are
//! hyphenated UUID text, permission sets JSON arrays of sorted `"category:action"` strings
//! ([permission set (D4)](tenantry_core::Rule::PermissionSet)), booleans integers.
//!
//! Rows are rusqlite's, read by column position: the names of a statement's columns are
//! taken once per query ([`Names`]), and a row finds each column by name starting where the
//! last one was found (the shared readers read columns in the order they are selected), so
//! a column costs one comparison, not a scan of every column name.

use std::cell::Cell;

use rusqlite::types::ValueRef;
use tenantry_core::Permissions;
use tenantry_store::StoreError;
use tenantry_store::sql::{self, Columns};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use tenantry_store::sql::{kind_text, nanos_clamped, state_text};

pub(crate) const BACKEND: &str = "sqlite";

/// Wraps any error as this backend's [`StoreError::Backend`].
pub(crate) fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    sql::error(BACKEND, e)
}

/// A time as Unix nanoseconds; times outside 1677–2262 are refused.
pub(crate) fn nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    sql::nanos(BACKEND, t)
}

pub(crate) fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(crate) fn parse_id(s: &str) -> Result<Uuid, StoreError> {
    Uuid::try_parse(s).map_err(|e| sql::corrupt(BACKEND, "id", e))
}

/// [permission set (D4)](tenantry_core::Rule::PermissionSet): a permission set as a JSON array of sorted `"category:action"` strings.
pub(crate) fn perms_text(p: Permissions) -> String {
    serde_json::to_string(&p).unwrap_or_else(|_| "[]".to_owned())
}

/// The column names of a statement, taken once per query.
pub(crate) struct Names(Vec<String>);

impl Names {
    pub(crate) fn of(stmt: &rusqlite::Statement<'_>) -> Self {
        Self(stmt.column_names().into_iter().map(str::to_owned).collect())
    }
}

/// A row of this backend, read through [`Columns`].
pub(crate) struct Cols<'r> {
    row: &'r rusqlite::Row<'r>,
    names: &'r Names,
    /// Where the next column is looked for first.
    hint: Cell<usize>,
}

impl<'r> Cols<'r> {
    pub(crate) fn new(row: &'r rusqlite::Row<'r>, names: &'r Names) -> Self {
        Self {
            row,
            names,
            hint: Cell::new(0),
        }
    }

    fn index(&self, column: &'static str) -> Result<usize, StoreError> {
        let names = &self.names.0;
        let hint = self.hint.get();
        let at = if names.get(hint).is_some_and(|n| n == column) {
            hint
        } else {
            names
                .iter()
                .position(|n| n == column)
                .ok_or_else(|| sql::corrupt(BACKEND, column, "no such column"))?
        };
        self.hint.set(at + 1);
        Ok(at)
    }

    fn value(&self, column: &'static str) -> Result<ValueRef<'_>, StoreError> {
        let i = self.index(column)?;
        self.row.get_ref(i).map_err(backend)
    }

    fn opt_str(&self, column: &'static str) -> Result<Option<&str>, StoreError> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|e| sql::corrupt(BACKEND, column, e)),
            _ => Err(sql::corrupt(BACKEND, column, "not text")),
        }
    }
}

impl Columns for Cols<'_> {
    const BACKEND: &'static str = BACKEND;

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| sql::corrupt(BACKEND, column, "NULL"))
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        Ok(self.opt_str(column)?.map(str::to_owned))
    }
    fn int(&self, column: &'static str) -> Result<i64, StoreError> {
        self.opt_int(column)?
            .ok_or_else(|| sql::corrupt(BACKEND, column, "NULL"))
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            _ => Err(sql::corrupt(BACKEND, column, "not an integer")),
        }
    }
    fn flag(&self, column: &'static str) -> Result<bool, StoreError> {
        Ok(self.int(column)? != 0)
    }
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError> {
        match self.value(column)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
            _ => Err(sql::corrupt(BACKEND, column, "not a blob")),
        }
    }
    fn opt_id(&self, column: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.opt_str(column)?
            .map(|s| Uuid::try_parse(s).map_err(|e| sql::corrupt(BACKEND, column, e)))
            .transpose()
    }
    fn opt_perms(&self, column: &'static str) -> Result<Option<Permissions>, StoreError> {
        self.opt_str(column)?
            .map(|s| serde_json::from_str(s).map_err(|e| sql::corrupt(BACKEND, column, e)))
            .transpose()
    }
}

/// Row readers of this backend's rows (see [`tenantry_store::sql`]).
macro_rules! readers {
    ($($name:ident => $shared:ident -> $ty:ty),* $(,)?) => {
        $(
            pub(crate) fn $name(row: &Cols<'_>) -> Result<$ty, StoreError> {
                row.hint.set(0);
                sql::$shared(row)
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

/// Runs a prepared (cached) query and reads every row with `read`.
pub(crate) fn all<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    read: impl Fn(&Cols<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let names = Names::of(stmt);
    let mut rows = stmt.query(params).map_err(crate::write::map_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(crate::write::map_err)? {
        out.push(read(&Cols::new(row, &names))?);
    }
    Ok(out)
}

/// Runs a prepared (cached) query and reads its first row, if any, with `read`.
pub(crate) fn one<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    read: impl Fn(&Cols<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let names = Names::of(stmt);
    let mut rows = stmt.query(params).map_err(crate::write::map_err)?;
    match rows.next().map_err(crate::write::map_err)? {
        Some(row) => read(&Cols::new(row, &names)).map(Some),
        None => Ok(None),
    }
}
