//! The reads of [`Store`](tenantry_store::Store): each `X_inner` is the body of `Store::X`.
//! An owning store serves tenant state, users, subjects and templates through its cache.
//! Every read is one cached prepared statement on a reader connection (see `conn.rs`).

use std::future::Future;
use std::sync::LazyLock;

use rusqlite::params;
use rusqlite::types::Value;
use tenantry_core::{
    AuditRecord, IdentityId, Invitation, MessageId, RoleTemplate, Subject, TemplateId, TenantId,
    TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_store::sql::Columns as _;
use tenantry_store::sql::{
    self, Dialect, INVITATION_COLUMNS, OUTBOX_COLUMNS, Param, TEMPLATE_COLUMNS, TOMBSTONE_COLUMNS,
    USER_COLUMNS,
};
use tenantry_store::{
    MAX_PAGE_SIZE, Membership, OutboxRecord, Page, Person, StoreError, TenantCursor, UserQuery,
};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::cache::{self, Lookup};
use crate::rows::{
    self, Cols, id_text, invitation_from_row, outbox_from_row, template_from_row, tenant_from_row,
    tombstone_from_row, user_from_row,
};
use crate::write::map_err;

/// One row of `sql` (a constant statement, prepared once per connection), read with `read`.
fn one<T>(
    c: &rusqlite::Connection,
    sql: &str,
    p: impl rusqlite::Params,
    read: impl Fn(&Cols<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(map_err)?;
    rows::one(&mut stmt, p, read)
}

/// Every row of `sql`, read with `read`.
fn all<T>(
    c: &rusqlite::Connection,
    sql: &str,
    p: impl rusqlite::Params,
    read: impl Fn(&Cols<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(map_err)?;
    rows::all(&mut stmt, p, read)
}

/// The memberships of a person ([one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants)):
/// `{which}` is the column that names them (`email_key` or `identity`, bound to `?1`),
/// `{after}` the keyset condition (empty for the first page). The person's users come
/// first, through the index on that column (`users_by_email_key` or `users_identity`,
/// migration 7), and each finds its tenant by primary key: `CROSS JOIN` keeps SQLite from
/// walking the tenants by name instead. The few rows of one person are then sorted by
/// tenant name (byte order, `BINARY`) and id.
fn memberships_sql(which: &str, after: &str, limit: &str) -> String {
    let columns = USER_COLUMNS
        .split(',')
        .map(|c| format!("u.{c} AS {c}", c = c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {columns}, t.name AS tenant_name FROM users u CROSS JOIN tenants t ON t.id = u.tenant_id \
         WHERE u.{which} = ?1{after} ORDER BY t.name, t.id LIMIT {limit}"
    )
}

/// The four statements of [`SqliteStore::memberships_inner`]: by address key or identity
/// id, first page or after a cursor.
pub(crate) struct MembershipSql {
    pub(crate) email_first: String,
    pub(crate) email_after: String,
    pub(crate) identity_first: String,
    pub(crate) identity_after: String,
}

pub(crate) static MEMBERSHIPS: LazyLock<MembershipSql> = LazyLock::new(|| {
    let after = " AND (t.name, t.id) > (?2, ?3)";
    MembershipSql {
        email_first: memberships_sql("email_key", "", "?2"),
        email_after: memberships_sql("email_key", after, "?4"),
        identity_first: memberships_sql("identity", "", "?2"),
        identity_after: memberships_sql("identity", after, "?4"),
    }
});

/// The user of a tenant (`?2`) holding an identity id (`?1`), on `users_identity`.
pub(crate) static USER_BY_IDENTITY: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {USER_COLUMNS} FROM users WHERE identity = ?1 AND tenant_id = ?2")
});

/// One row of a memberships statement: the user's columns, then the tenant's name.
fn membership_from_row(row: &Cols<'_>) -> Result<Membership, StoreError> {
    let user = user_from_row(row)?;
    let tenant_name = row.text("tenant_name")?;
    Ok(Membership {
        tenant_id: user.tenant_id,
        tenant_name,
        user_id: user.id,
        email: user.email,
        role: user.role,
        status: user.status,
        last_login: user.last_login,
        identity: user.identity,
    })
}

/// A parameter of the shared listing, as SQLite stores it.
fn value(p: Param) -> Value {
    match p {
        Param::Id(id) => Value::Text(id_text(id)),
        Param::Text(s) => Value::Text(s),
        Param::Int(i) => Value::Integer(i),
        Param::Bool(b) => Value::Integer(i64::from(b)),
    }
}

impl SqliteStore {
    /// A row of the tenant through the cache: `pick` finds it there; on a miss `read` reads
    /// it and `put` stores it (unless the tenant changed meanwhile). A shared store reads.
    async fn cached<T: Clone>(
        &self,
        tenant: TenantId,
        pick: impl FnOnce(&cache::Entry) -> Option<&T>,
        put: impl FnOnce(&mut cache::Entry, T),
        read: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        let Some(cache) = &self.cache else {
            return read.await;
        };
        let ticket = match cache.get(tenant, pick) {
            Lookup::Hit(v) => return Ok(Some(v)),
            Lookup::Miss(ticket) => ticket,
        };
        let value = read.await?;
        if let Some(v) = &value {
            cache.put(tenant, ticket, |e| put(e, v.clone()));
        }
        Ok(value)
    }

    pub(crate) async fn tenant_inner(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantState>, StoreError> {
        let t = id_text(tenant.as_uuid());
        let read = self.conns.read(move |c| {
            one(
                c,
                "SELECT id, name, user_limit, created_at, version, seats_used, active_admins FROM tenants WHERE id = ?1",
                params![t],
                tenant_from_row,
            )
        });
        self.cached(tenant, |e| e.state.as_ref(), |e, v| e.state = Some(v), read)
            .await
    }

    pub(crate) async fn user_inner(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<User>, StoreError> {
        let (t, u) = (id_text(tenant.as_uuid()), id_text(id.as_uuid()));
        let read = self.conns.read(move |c| {
            one(
                c,
                &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND id = ?2"),
                params![t, u],
                user_from_row,
            )
        });
        self.cached(
            tenant,
            |e| e.users.get(&id),
            |e, v| {
                e.users.insert(id, v);
            },
            read,
        )
        .await
    }

    pub(crate) async fn subject_inner(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<Subject>, StoreError> {
        if let Some(s) = self.cache.as_ref().and_then(|c| c.subject(tenant, id)) {
            return Ok(Some(s));
        }
        let (t, u) = (id_text(tenant.as_uuid()), id_text(id.as_uuid()));
        let read = self.conns.read(move |c| {
            one(
                c,
                "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions AS template_permissions \
                 FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
                 WHERE u.tenant_id = ?1 AND u.id = ?2",
                params![t, u],
                rows::subject_from_row,
            )
        });
        self.cached(
            tenant,
            |e| e.subjects.in_map(id),
            |e, v| e.subjects.put(v),
            read,
        )
        .await
    }

    pub(crate) async fn user_by_email_inner(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<User>, StoreError> {
        let (t, k) = (id_text(tenant.as_uuid()), key.to_owned());
        self.conns
            .read(move |c| {
                one(
                    c,
                    &format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND email_key = ?2"
                    ),
                    params![t, k],
                    user_from_row,
                )
            })
            .await
    }

    /// The user of the tenant holding this identity id, on the unique index
    /// `users_identity` (D28).
    pub(crate) async fn user_by_identity_inner(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        let (t, i) = (id_text(tenant.as_uuid()), identity.as_str().to_owned());
        self.conns
            .read(move |c| one(c, &USER_BY_IDENTITY, params![i, t], user_from_row))
            .await
    }

    /// Every tenant where the person is a user (D28), by tenant name (byte order) then id,
    /// keyset after the cursor, at most `limit` rows (clamped into 1..=501 as
    /// [`SqliteStore::tenants_inner`] is): an index read of the person's users, never a
    /// scan of users or tenants (see [`memberships_sql`]).
    pub(crate) async fn memberships_inner(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_PAGE_SIZE + 1));
        let (by_email, key) = match person {
            Person::Email(e) => (true, e.key().to_owned()),
            Person::Identity(i) => (false, i.as_str().to_owned()),
            _ => {
                return Err(StoreError::Unsupported {
                    operation: "memberships",
                });
            }
        };
        let after = after.map(|c| (c.name.clone(), id_text(c.id.as_uuid())));
        self.conns
            .read(move |c| {
                let sql = &*MEMBERSHIPS;
                match (&after, by_email) {
                    (None, true) => all(
                        c,
                        &sql.email_first,
                        params![key, limit],
                        membership_from_row,
                    ),
                    (None, false) => all(
                        c,
                        &sql.identity_first,
                        params![key, limit],
                        membership_from_row,
                    ),
                    (Some((name, id)), true) => all(
                        c,
                        &sql.email_after,
                        params![key, name, id, limit],
                        membership_from_row,
                    ),
                    (Some((name, id)), false) => all(
                        c,
                        &sql.identity_after,
                        params![key, name, id, limit],
                        membership_from_row,
                    ),
                }
            })
            .await
    }

    pub(crate) async fn template_inner(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let (t, i) = (id_text(tenant.as_uuid()), id_text(id.as_uuid()));
        let read = self.conns.read(move |c| {
            one(
                c,
                &format!(
                    "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = ?1 AND id = ?2"
                ),
                params![t, i],
                template_from_row,
            )
        });
        self.cached(
            tenant,
            |e| e.templates.get(&id),
            |e, v| {
                e.templates.insert(id, v);
            },
            read,
        )
        .await
    }

    pub(crate) async fn template_by_name_inner(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let (t, k) = (id_text(tenant.as_uuid()), key.to_owned());
        self.conns
            .read(move |c| {
                one(
                    c,
                    &format!(
                        "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = ?1 AND name_key = ?2"
                    ),
                    params![t, k],
                    template_from_row,
                )
            })
            .await
    }

    pub(crate) async fn templates_inner(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<RoleTemplate>, StoreError> {
        let t = id_text(tenant.as_uuid());
        self.conns
            .read(move |c| {
                all(
                    c,
                    &format!(
                        "SELECT {TEMPLATE_COLUMNS} FROM role_templates WHERE tenant_id = ?1 ORDER BY name_key, id"
                    ),
                    params![t],
                    template_from_row,
                )
            })
            .await
    }

    pub(crate) async fn count_template_users_inner(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        let (t, i) = (id_text(tenant.as_uuid()), id_text(template.as_uuid()));
        let n = self
            .conns
            .read(move |c| {
                c.prepare_cached(
                    "SELECT COUNT(*) FROM users WHERE tenant_id = ?1 AND template_id = ?2",
                )
                .and_then(|mut s| s.query_row(params![t, i], |r| r.get::<_, i64>(0)))
                .map_err(map_err)
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn invitation_inner(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        let (t, h) = (id_text(tenant.as_uuid()), hash.0);
        self.conns
            .read(move |c| {
                one(
                    c,
                    &format!(
                        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = ?1 AND tenant_id = ?2"
                    ),
                    params![&h[..], t],
                    invitation_from_row,
                )
            })
            .await
    }

    pub(crate) async fn invitations_of_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        let (t, u) = (id_text(tenant.as_uuid()), id_text(user.as_uuid()));
        self.conns
            .read(move |c| {
                all(
                    c,
                    &format!(
                        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE tenant_id = ?1 AND user_id = ?2 ORDER BY created_at, token_hash"
                    ),
                    params![t, u],
                    invitation_from_row,
                )
            })
            .await
    }

    pub(crate) async fn list_users_inner(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        let listing = sql::users_listing(Dialect::SQLITE, tenant, query);
        let sql = listing.sql;
        let values: Vec<Value> = listing.params.into_iter().map(value).collect();
        let rows = self
            .conns
            .read(move |c| {
                all(
                    c,
                    &sql,
                    rusqlite::params_from_iter(values.iter()),
                    user_from_row,
                )
            })
            .await?;
        Ok(sql::users_page(rows, query))
    }

    /// The operators' listing: the shared statement ([`sql::tenants_listing`]: by name in
    /// byte order, SQLite's `BINARY` collation, then id, whose hyphenated lower-case text
    /// sorts as the id does; keyset after the cursor on the index `tenants_by_name`).
    pub(crate) async fn tenants_inner(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        let listing = sql::tenants_listing(Dialect::SQLITE, after, limit);
        let sql = listing.sql;
        let values: Vec<Value> = listing.params.into_iter().map(value).collect();
        self.conns
            .read(move |c| {
                all(
                    c,
                    &sql,
                    rusqlite::params_from_iter(values.iter()),
                    tenant_from_row,
                )
            })
            .await
    }

    pub(crate) async fn tombstone_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        let (t, u) = (id_text(tenant.as_uuid()), id_text(user.as_uuid()));
        self.conns
            .read(move |c| {
                one(
                    c,
                    &format!(
                        "SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE tenant_id = ?1 AND user_id = ?2"
                    ),
                    params![t, u],
                    tombstone_from_row,
                )
            })
            .await
    }

    pub(crate) async fn audit_inner(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let t = id_text(tenant.as_uuid());
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.conns
            .read(move |c| {
                all(
                    c,
                    "SELECT seq, event FROM audit_log WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    params![t, after, i64::from(limit)],
                    rows::audit_from_row,
                )
            })
            .await
    }

    pub(crate) async fn outbox_inner(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = if pending_only {
            format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = ?1 AND state = 'pending' ORDER BY id DESC LIMIT ?2"
            )
        } else {
            format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = ?1 ORDER BY id DESC LIMIT ?2"
            )
        };
        let t = id_text(tenant.as_uuid());
        self.conns
            .read(move |c| all(c, &sql, params![t, i64::from(limit)], outbox_from_row))
            .await
    }

    pub(crate) async fn outbox_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        let (t, m) = (id_text(tenant.as_uuid()), id_text(id.as_uuid()));
        self.conns
            .read(move |c| {
                one(
                    c,
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE tenant_id = ?1 AND id = ?2"
                    ),
                    params![t, m],
                    outbox_from_row,
                )
            })
            .await
    }

    pub(crate) async fn tenants_with_due_mail_inner(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let now = rows::nanos_clamped(now);
        let ids: Vec<String> = self
            .conns
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT DISTINCT tenant_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1 LIMIT ?2",
                    )
                    .map_err(map_err)?;
                let rows = stmt
                    .query_map(params![now, i64::from(limit)], |r| r.get::<_, String>(0))
                    .map_err(map_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
            })
            .await?;
        ids.iter()
            .map(|s| rows::parse_id(s).map(TenantId::from_uuid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::{MEMBERSHIPS, USER_BY_IDENTITY};
    use crate::SqliteStore;
    use rusqlite::types::Value;

    /// The details of SQLite's plan for `sql`, its `n` parameters bound to text.
    fn plan(c: &rusqlite::Connection, sql: &str, n: usize) -> Vec<String> {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = vec![Value::Text("x".into()); n];
        stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// D28: each memberships statement (by address key and by identity id, first page and
    /// after a cursor) and the identity lookup read the person's users through the index
    /// of migration 7 and each tenant by its primary key: no step scans a table (SQLite
    /// says `SCAN` for that), before and after `ANALYZE` on a database of many tenants.
    #[tokio::test]
    async fn d28_memberships_and_the_identity_lookup_are_index_reads() {
        let dir = std::env::temp_dir().join(format!("tenantry-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let app = tenantry_service::Tenantry::builder(store.clone())
            .build()
            .unwrap();
        for i in 0..40 {
            let email = tenantry_core::Email::parse(&format!("admin{i}@acme.test")).unwrap();
            app.create_tenant(&format!("Tenant {i:02}"), None, email)
                .await
                .unwrap();
        }
        drop(app);
        store.close().await;
        let c = rusqlite::Connection::open(&path).unwrap();
        let checks: [(&str, &str, usize, &str); 5] = [
            (
                "email, first page",
                &MEMBERSHIPS.email_first,
                2,
                "users_by_email_key",
            ),
            (
                "email, after",
                &MEMBERSHIPS.email_after,
                4,
                "users_by_email_key",
            ),
            (
                "identity, first page",
                &MEMBERSHIPS.identity_first,
                2,
                "users_identity",
            ),
            (
                "identity, after",
                &MEMBERSHIPS.identity_after,
                4,
                "users_identity",
            ),
            ("user by identity", &USER_BY_IDENTITY, 2, "users_identity"),
        ];
        for analyzed in [false, true] {
            if analyzed {
                c.execute_batch("ANALYZE").unwrap();
            }
            for (what, sql, n, index) in checks {
                let steps = plan(&c, sql, n);
                assert!(
                    steps.iter().any(|s| s.starts_with("SEARCH u USING INDEX ")
                        && s.contains(index)
                        || s.starts_with("SEARCH users USING INDEX ") && s.contains(index)),
                    "{what} (analyzed: {analyzed}): not on {index}: {steps:?}"
                );
                assert!(
                    !steps.iter().any(|s| s.starts_with("SCAN")),
                    "{what} (analyzed: {analyzed}): a scan: {steps:?}"
                );
                if sql.contains("tenants t") {
                    assert!(
                        steps.iter().any(|s| s.starts_with("SEARCH t USING INDEX sqlite_autoindex_tenants")),
                        "{what} (analyzed: {analyzed}): tenant not by primary key: {steps:?}"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
