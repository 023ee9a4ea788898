//! [`Store::snapshot`](tenantry_store::Store::snapshot) in one round trip: the tenant row,
//! and each row the use case names, joined onto it in a single statement (one snapshot of
//! the database, READ COMMITTED or stronger), on one of the store's own connections when one
//! is free (as the other one-row reads). Every join is on a primary or unique key, so
//! the statement returns at most one row.

use std::sync::OnceLock;

use sqlx::Row;
use sqlx::postgres::PgRow;
use tenantry_core::{Permissions, RoleTemplate, TenantId, User};
use tenantry_store::sql::{self, Columns};
use tenantry_store::{Snapshot, SnapshotRequest, StoreError};
use uuid::Uuid;

use crate::PostgresStore;
use crate::rows::{BACKEND, TEMPLATE_COLUMNS, TENANT_COLUMNS, USER_COLUMNS, backend};
use crate::write::map_err;

/// The columns of `list`, each as `alias.column AS prefix_column`.
fn prefixed(alias: &str, prefix: &str, list: &str) -> String {
    list.split(',')
        .map(str::trim)
        .map(|c| format!("{alias}.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement, with `#.` standing for the schema prefix.
fn statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let tenant = prefixed("t", "", TENANT_COLUMNS);
        format!(
            "SELECT {tenant}, {a}, {at}, {g}, {gt}, {r}, {e} \
             FROM #.tenants t \
             LEFT JOIN #.users a ON a.tenant_id = t.id AND a.id = $2 \
             LEFT JOIN #.role_templates at ON at.tenant_id = t.id AND at.id = a.template_id \
             LEFT JOIN #.users g ON g.tenant_id = t.id AND g.id = $3 \
             LEFT JOIN #.role_templates gt ON gt.tenant_id = t.id AND gt.id = g.template_id \
             LEFT JOIN #.role_templates r ON r.tenant_id = t.id AND r.id = $4 \
             LEFT JOIN #.users e ON e.tenant_id = t.id AND e.email_key = $5 \
             WHERE t.id = $1",
            a = prefixed("a", "a_", USER_COLUMNS),
            at = prefixed("at", "at_", TEMPLATE_COLUMNS),
            g = prefixed("g", "g_", USER_COLUMNS),
            gt = prefixed("gt", "gt_", TEMPLATE_COLUMNS),
            r = prefixed("r", "r_", TEMPLATE_COLUMNS),
            e = prefixed("e", "e_", USER_COLUMNS),
        )
    })
}

/// One joined row's columns under a prefix, read through [`Columns`].
struct Prefixed<'r> {
    row: &'r PgRow,
    prefix: &'static str,
}

impl Prefixed<'_> {
    fn get<'r, T>(&'r self, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        let name = format!("{}{column}", self.prefix);
        self.row.try_get(name.as_str()).map_err(backend)
    }

    /// Whether the joined row exists (its id is not NULL).
    fn present(&self) -> Result<bool, StoreError> {
        Ok(self.get::<Option<Uuid>>("id")?.is_some())
    }
}

impl Columns for Prefixed<'_> {
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

fn user(row: &PgRow, prefix: &'static str) -> Result<Option<User>, StoreError> {
    let cols = Prefixed { row, prefix };
    if cols.present()? {
        sql::user(&cols).map(Some)
    } else {
        Ok(None)
    }
}

fn template(row: &PgRow, prefix: &'static str) -> Result<Option<RoleTemplate>, StoreError> {
    let cols = Prefixed { row, prefix };
    if cols.present()? {
        sql::template(&cols).map(Some)
    } else {
        Ok(None)
    }
}

impl PostgresStore {
    pub(crate) async fn snapshot_inner(
        &self,
        tenant: TenantId,
        request: &SnapshotRequest,
    ) -> Result<Snapshot, StoreError> {
        let sql = crate::q(&self.prefix, statement());
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql)
                    .bind(tenant.as_uuid())
                    .bind(request.actor.map(|u| u.as_uuid()))
                    .bind(request.target.map(|u| u.as_uuid()))
                    .bind(request.template.map(|t| t.as_uuid()))
                    .bind(request.email_key.as_deref())
            })
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(Snapshot::default());
        };
        let mut out = Snapshot::default();
        out.state = Some(sql::tenant(&Prefixed {
            row: &row,
            prefix: "",
        })?);
        out.actor = user(&row, "a_")?;
        out.actor_template = template(&row, "at_")?;
        out.target = user(&row, "g_")?;
        out.target_template = template(&row, "gt_")?;
        out.template = template(&row, "r_")?;
        out.email_user = user(&row, "e_")?;
        Ok(out)
    }
}
