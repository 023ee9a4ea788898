//! [`Store::snapshot`](tenantry_store::Store::snapshot) in one round trip: the tenant row,
//! and each row the use case names, joined onto it in a single statement (one snapshot of
//! the database, READ COMMITTED or stronger), on one of the store's own connections when one
//! is free (as the other one-row reads). Every join is on a primary or unique key, so
//! the statement returns at most one row.
//!
//! There is a statement per request shape (which of the actor, the target, the template and
//! the address it names): each joins only the tables its shape reads, so an invite (the
//! actor and an address) starts four scans, not seven (issue 14: the executor's start-up of
//! unused joins was a measured part of the server's CPU per invite). The row is read by
//! position.

use std::sync::OnceLock;

use sqlx::postgres::PgRow;
use tenantry_core::{RoleTemplate, TenantId, User};
use tenantry_store::{Snapshot, SnapshotRequest, StoreError};

use crate::PostgresStore;
use crate::rows::{
    At, TEMPLATE_COLUMNS, TEMPLATE_WIDTH, TENANT_COLUMNS, TENANT_WIDTH, USER_COLUMNS, USER_WIDTH,
};
use crate::write::map_err;

/// Which rows a request reads, one bit each.
const ACTOR: usize = 1;
const TARGET: usize = 2;
const TEMPLATE: usize = 4;
const EMAIL: usize = 8;
/// How many shapes there are.
pub(crate) const SHAPES: usize = 16;

/// The statements of a store (its schema prefix in place), built at a shape's first use.
pub(crate) type Statements = [OnceLock<String>; SHAPES];

/// Nothing built yet.
pub(crate) fn statements() -> Statements {
    std::array::from_fn(|_| OnceLock::new())
}

fn shape(request: &SnapshotRequest) -> usize {
    let bit = |on: bool, b: usize| if on { b } else { 0 };
    bit(request.actor.is_some(), ACTOR)
        | bit(request.target.is_some(), TARGET)
        | bit(request.template.is_some(), TEMPLATE)
        | bit(request.email_key.is_some(), EMAIL)
}

/// The columns of `list`, each as `alias.column`.
fn of(alias: &str, list: &str) -> String {
    list.split(',')
        .map(str::trim)
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement of `shape`, with `#.` standing for the schema prefix: the tenant's
/// columns, then those of each row the shape reads in the order actor, its template, target,
/// its template, template, address holder; parameters `$1` the tenant, then one per row read
/// in the same order.
fn statement(shape: usize) -> String {
    let mut select = vec![of("t", TENANT_COLUMNS)];
    let mut from = String::from("FROM #.tenants t");
    let mut param = 1;
    let mut next = || {
        param += 1;
        param
    };
    // A user by its id (the next parameter) and that user's template, as `u` and `ut`.
    let mut person = |u: &str, ut: &str, p| {
        select.push(of(u, USER_COLUMNS));
        select.push(of(ut, TEMPLATE_COLUMNS));
        from.push_str(&format!(
            " LEFT JOIN #.users {u} ON {u}.tenant_id = t.id AND {u}.id = ${p} \
             LEFT JOIN #.role_templates {ut} ON {ut}.tenant_id = t.id AND {ut}.id = {u}.template_id"
        ));
    };
    if shape & ACTOR != 0 {
        person("a", "at", next());
    }
    if shape & TARGET != 0 {
        person("g", "gt", next());
    }
    if shape & TEMPLATE != 0 {
        let p = next();
        select.push(of("r", TEMPLATE_COLUMNS));
        from.push_str(&format!(
            " LEFT JOIN #.role_templates r ON r.tenant_id = t.id AND r.id = ${p}"
        ));
    }
    if shape & EMAIL != 0 {
        let p = next();
        select.push(of("e", USER_COLUMNS));
        from.push_str(&format!(
            " LEFT JOIN #.users e ON e.tenant_id = t.id AND e.email_key = ${p}"
        ));
    }
    format!("SELECT {} {from} WHERE t.id = $1", select.join(", "))
}

/// Reads the joined rows one after the other, from the column after the tenant's.
struct Reader<'r> {
    row: &'r PgRow,
    at: usize,
}

impl Reader<'_> {
    /// The next `width` columns, as `read` reads them when the row exists (its id, the
    /// list's second column, is not NULL).
    fn next<T>(
        &mut self,
        width: usize,
        read: impl FnOnce(&At<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let at = At::new(self.row, self.at);
        self.at = self.at.saturating_add(width);
        if at.present(1)? {
            read(&at).map(Some)
        } else {
            Ok(None)
        }
    }

    fn user(&mut self) -> Result<Option<User>, StoreError> {
        self.next(USER_WIDTH, |at| at.user())
    }

    fn template(&mut self) -> Result<Option<RoleTemplate>, StoreError> {
        self.next(TEMPLATE_WIDTH, |at| at.template())
    }
}

impl PostgresStore {
    pub(crate) async fn snapshot_inner(
        &self,
        tenant: TenantId,
        request: &SnapshotRequest,
    ) -> Result<Snapshot, StoreError> {
        let shape = shape(request);
        let sql = self
            .snapshots
            .get(shape)
            .map(|s| s.get_or_init(|| crate::q(&self.prefix, &statement(shape))))
            .map_or("", String::as_str);
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                let mut q = sqlx::query(sql).bind(tenant.as_uuid());
                if let Some(a) = request.actor {
                    q = q.bind(a.as_uuid());
                }
                if let Some(g) = request.target {
                    q = q.bind(g.as_uuid());
                }
                if let Some(r) = request.template {
                    q = q.bind(r.as_uuid());
                }
                if let Some(e) = request.email_key.as_deref() {
                    q = q.bind(e);
                }
                q
            })
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(Snapshot::default());
        };
        let mut out = Snapshot::default();
        out.state = Some(At::new(&row, 0).tenant()?);
        let mut read = Reader {
            row: &row,
            at: TENANT_WIDTH,
        };
        if shape & ACTOR != 0 {
            out.actor = read.user()?;
            out.actor_template = read.template()?;
        }
        if shape & TARGET != 0 {
            out.target = read.user()?;
            out.target_template = read.template()?;
        }
        if shape & TEMPLATE != 0 {
            out.template = read.template()?;
        }
        if shape & EMAIL != 0 {
            out.email_user = read.user()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shape's statement numbers its parameters in the order they are bound, and joins
    /// only what the shape reads.
    #[test]
    fn each_shape_joins_what_it_reads() {
        for shape in 0..SHAPES {
            let sql = statement(shape);
            let reads = shape.count_ones() as usize;
            assert!(
                sql.contains(&format!("${}", reads + 1)) || reads == 0,
                "{sql}"
            );
            assert!(!sql.contains(&format!("${}", reads + 2)), "{sql}");
            assert_eq!(sql.contains(" a ON "), shape & ACTOR != 0, "{sql}");
            assert_eq!(sql.contains(" g ON "), shape & TARGET != 0, "{sql}");
            assert_eq!(sql.contains(" r ON "), shape & TEMPLATE != 0, "{sql}");
            assert_eq!(sql.contains(" e ON "), shape & EMAIL != 0, "{sql}");
        }
        assert_eq!(
            statement(ACTOR | EMAIL).matches("LEFT JOIN").count(),
            3,
            "an invite's shape"
        );
    }
}
