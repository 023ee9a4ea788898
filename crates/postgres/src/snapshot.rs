//! [`Store::snapshot`](tenantry_store::Store::snapshot) in one round trip: the tenant row,
//! and each row the use case names, joined onto it in a single statement (one snapshot of
//! the database, READ COMMITTED or stronger), on one of the store's own connections when one
//! is free (as the other one-row reads). Every join is on a primary or unique key, so
//! the statement returns at most one row.

use std::sync::OnceLock;

use sqlx::postgres::PgRow;
use tenantry_core::{RoleTemplate, TenantId, User};
use tenantry_store::sql::{self, Columns};
use tenantry_store::{Snapshot, SnapshotRequest, StoreError};

use crate::PostgresStore;
use crate::rows::{Cols, TEMPLATE_COLUMNS, TENANT_COLUMNS, USER_COLUMNS};
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

/// Whether the joined row under `cols`' prefix exists (its id is not NULL).
fn present(cols: &Cols<'_>) -> Result<bool, StoreError> {
    Ok(cols.opt_id("id")?.is_some())
}

fn user(row: &PgRow, prefix: &'static str) -> Result<Option<User>, StoreError> {
    let cols = Cols { row, prefix };
    if present(&cols)? {
        sql::user(&cols).map(Some)
    } else {
        Ok(None)
    }
}

fn template(row: &PgRow, prefix: &'static str) -> Result<Option<RoleTemplate>, StoreError> {
    let cols = Cols { row, prefix };
    if present(&cols)? {
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
        out.state = Some(sql::tenant(&Cols::of(&row))?);
        out.actor = user(&row, "a_")?;
        out.actor_template = template(&row, "at_")?;
        out.target = user(&row, "g_")?;
        out.target_template = template(&row, "gt_")?;
        out.template = template(&row, "r_")?;
        out.email_user = user(&row, "e_")?;
        Ok(out)
    }
}
