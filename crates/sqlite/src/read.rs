//! The reads of [`Store`](tenantry_store::Store): each `X_inner` is the body of `Store::X`.
//! An owning store serves tenant state, users, subjects and templates through its cache.

use std::future::Future;

use sqlx::sqlite::SqliteRow;
use tenantry_core::{
    AuditRecord, Invitation, MessageId, RoleTemplate, Subject, TemplateId, TenantId, TenantState,
    TokenHash, Tombstone, User, UserId,
};
use tenantry_store::sql::{INVITATION_COLUMNS, USER_COLUMNS};
use tenantry_store::{Cursor, OutboxRecord, Page, SortBy, StoreError, UserQuery};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::cache::{self, Lookup};
use crate::rows::{
    self, id_text, invitation_from_row, outbox_from_row, template_from_row, tenant_from_row,
    tombstone_from_row, user_from_row,
};
use crate::write::map_err;

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
        let read = async {
            let row = sqlx::query("SELECT id, name, user_limit, created_at, version, seats_used, active_admins FROM tenants WHERE id = $1")
            .bind(id_text(tenant.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            row.as_ref().map(tenant_from_row).transpose()
        };
        self.cached(tenant, |e| e.state.as_ref(), |e, v| e.state = Some(v), read)
            .await
    }

    pub(crate) async fn user_inner(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<User>, StoreError> {
        let read = async {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            opt_user(row)
        };
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
        let read = async {
            let row = sqlx::query(
            "SELECT u.tenant_id, u.id, u.role, u.status, u.crm_access, u.grants, u.template_id, t.permissions AS template_permissions \
             FROM users u LEFT JOIN role_templates t ON t.tenant_id = u.tenant_id AND t.id = u.template_id \
             WHERE u.tenant_id = $1 AND u.id = $2",
        )
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
            row.as_ref().map(rows::subject_from_row).transpose()
        };
        self.cached(
            tenant,
            |e| e.subjects.get(&id),
            |e, v| {
                e.subjects.insert(id, v);
            },
            read,
        )
        .await
    }

    pub(crate) async fn user_by_email_inner(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email_key = $2"
        ))
        .bind(id_text(tenant.as_uuid()))
        .bind(key)
        .fetch_optional(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
        opt_user(row)
    }

    pub(crate) async fn template_inner(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let read = async {
            let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
            row.as_ref().map(template_from_row).transpose()
        };
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
        let row = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 AND name_key = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(key)
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        row.as_ref().map(template_from_row).transpose()
    }

    pub(crate) async fn templates_inner(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<RoleTemplate>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, id, name, permissions, created_at, updated_at FROM role_templates WHERE tenant_id = $1 ORDER BY name_key, id")
            .bind(id_text(tenant.as_uuid()))
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter().map(template_from_row).collect()
    }

    pub(crate) async fn count_template_users_inner(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND template_id = $2",
        )
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(template.as_uuid()))
        .fetch_one(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn invitation_inner(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1 AND tenant_id = $2"
        ))
        .bind(hash.0.to_vec())
        .bind(id_text(tenant.as_uuid()))
        .fetch_optional(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    pub(crate) async fn invitations_of_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token_hash"
        ))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(user.as_uuid()))
        .fetch_all(&mut *self.conns.reader().await?)
        .await
        .map_err(map_err)?;
        rows.iter().map(invitation_from_row).collect()
    }

    pub(crate) async fn list_users_inner(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        let limit = query.effective_limit();
        let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1");
        let mut binds: Vec<rows::Param> = vec![rows::Param::Text(id_text(tenant.as_uuid()))];
        let mut push = |sql: &mut String, clause: &str, values: Vec<rows::Param>| {
            let mut clause = clause.to_owned();
            for v in values {
                binds.push(v);
                clause = clause.replacen('?', &format!("${}", binds.len()), 1);
            }
            sql.push_str(" AND ");
            sql.push_str(&clause);
        };
        if let Some(s) = query.status {
            push(
                &mut sql,
                "status = ?",
                vec![rows::Param::Text(s.as_str().to_owned())],
            );
        }
        if let Some(r) = query.role {
            push(
                &mut sql,
                "role = ?",
                vec![rows::Param::Text(r.as_str().to_owned())],
            );
        }
        if let Some(t) = query.template_id {
            push(
                &mut sql,
                "template_id = ?",
                vec![rows::Param::Text(id_text(t.as_uuid()))],
            );
        }
        if let Some(c) = query.crm_access {
            push(
                &mut sql,
                "crm_access = ?",
                vec![rows::Param::Int(i64::from(c))],
            );
        }
        if let Some(needle) = &query.email_contains {
            push(
                &mut sql,
                "instr(email_key, ?) > 0",
                vec![rows::Param::Text(needle.to_ascii_lowercase())],
            );
        }
        if let Some(since) = query.inactive_since {
            push(
                &mut sql,
                "login_key < ?",
                vec![rows::Param::Int(rows::nanos_clamped(since))],
            );
        }
        if let Some(at) = query.invitation_expired_at {
            push(
                &mut sql,
                "status = 'invited' AND invite_expires_at IS NOT NULL AND invite_expires_at <= ?",
                vec![rows::Param::Int(rows::nanos_clamped(at))],
            );
        }
        let (column, cmp, dir) = match (query.sort, query.descending) {
            (SortBy::Email, false) => ("email_key", ">", "ASC"),
            (SortBy::Email, true) => ("email_key", "<", "DESC"),
            (SortBy::CreatedAt, false) => ("created_at", ">", "ASC"),
            (SortBy::CreatedAt, true) => ("created_at", "<", "DESC"),
            (SortBy::LastLogin, false) => ("login_key", ">", "ASC"),
            (SortBy::LastLogin, true) => ("login_key", "<", "DESC"),
        };
        match query.after.as_ref().filter(|c| c.sort() == query.sort) {
            Some(Cursor::Email(k, id)) => push(
                &mut sql,
                &format!("(email_key, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Text(k.clone()),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            Some(Cursor::CreatedAt(t, id)) => push(
                &mut sql,
                &format!("(created_at, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Int(rows::clamp_i128(*t)),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            Some(Cursor::LastLogin(t, id)) => push(
                &mut sql,
                &format!("(login_key, id) {cmp} (?, ?)"),
                vec![
                    rows::Param::Int(t.map_or(i64::MIN, rows::clamp_i128)),
                    rows::Param::Text(id_text(id.as_uuid())),
                ],
            ),
            None => {}
        }
        sql.push_str(&format!(
            " ORDER BY {column} {dir}, id {dir} LIMIT {}",
            u64::from(limit) + 1
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = match b {
                rows::Param::Text(s) => q.bind(s.as_str()),
                rows::Param::Int(i) => q.bind(*i),
            };
        }
        let fetched = q
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        let mut items = fetched
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more {
            items.last().map(|u| query.cursor_of(u))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub(crate) async fn tombstone_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        let row = sqlx::query("SELECT tenant_id, user_id, email, deleted_at, deleted_by FROM tombstones WHERE tenant_id = $1 AND user_id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(user.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tombstone_from_row).transpose()
    }

    pub(crate) async fn audit_inner(
        &self,
        tenant: TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, event FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(id_text(tenant.as_uuid()))
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter().map(rows::audit_from_row).collect()
    }

    pub(crate) async fn outbox_inner(
        &self,
        tenant: TenantId,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = if pending_only {
            "SELECT * FROM outbox WHERE tenant_id = $1 AND state = 'pending' ORDER BY id DESC LIMIT $2"
        } else {
            "SELECT * FROM outbox WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
        };
        let rows = sqlx::query(sql)
            .bind(id_text(tenant.as_uuid()))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    pub(crate) async fn outbox_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE tenant_id = $1 AND id = $2")
            .bind(id_text(tenant.as_uuid()))
            .bind(id_text(id.as_uuid()))
            .fetch_optional(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    pub(crate) async fn tenants_with_due_mail_inner(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT $2")
            .bind(rows::nanos_clamped(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conns.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|s| rows::parse_id(s).map(TenantId::from_uuid))
            .collect()
    }
}

fn opt_user(row: Option<SqliteRow>) -> Result<Option<User>, StoreError> {
    row.as_ref().map(user_from_row).transpose()
}
