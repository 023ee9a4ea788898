//! The reads of [`Store`](tenantry_store::Store): each `X_inner` is the body of `Store::X`,
//! one query on the pool.

use sqlx::postgres::PgRow;
use tenantry_core::{
    AuditRecord, IdentityId, Invitation, MessageId, RoleTemplate, Subject, TemplateId, TenantId,
    TenantState, TokenHash, Tombstone, User, UserId,
};
use tenantry_store::sql::{self, Param};
use tenantry_store::{
    MAX_PAGE_SIZE, Membership, OutboxRecord, Page, Person, StoreError, TenantCursor, UserQuery,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::rows::{
    self, At, INVITATION_COLUMNS, OUTBOX_COLUMNS, SUBJECT_COLUMNS, TEMPLATE_COLUMNS,
    TENANT_COLUMNS, USER_COLUMNS, invitation_from_row, limit_i64, nanos_clamped, outbox_from_row,
    tombstone_from_row,
};
use crate::write::map_err;

/// Binds a shared listing's parameters in order.
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for p in params {
        q = match p {
            Param::Id(u) => q.bind(*u),
            Param::Text(s) => q.bind(s.as_str()),
            Param::Int(i) => q.bind(*i),
            Param::Bool(v) => q.bind(*v),
        };
    }
    q
}

/// A row of [`USER_COLUMNS`], read by position.
fn opt_user(row: Option<PgRow>) -> Result<Option<User>, StoreError> {
    row.as_ref().map(|r| At::new(r, 0).user()).transpose()
}

/// A row of [`TEMPLATE_COLUMNS`], read by position.
fn template_at(row: &PgRow) -> Result<RoleTemplate, StoreError> {
    At::new(row, 0).template()
}

/// A row of [`TENANT_COLUMNS`], read by position.
fn tenant_at(row: &PgRow) -> Result<TenantState, StoreError> {
    At::new(row, 0).tenant()
}

/// [`USER_COLUMNS`] of the table aliased `u`, for statements that join another table.
fn user_columns_of_u() -> String {
    USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of the memberships statement: its tenant's name, then the user's columns.
fn membership_from_row(row: &PgRow) -> Result<Membership, StoreError> {
    let user = At::new(row, 1).user()?;
    let tenant_name: String = sqlx::Row::try_get(row, "tenant_name").map_err(rows::backend)?;
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

impl PostgresStore {
    pub(crate) async fn tenant_inner(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantState>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!("SELECT {TENANT_COLUMNS} FROM #.tenants WHERE id = $1"),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || sqlx::query(&sql).bind(tenant.as_uuid()))
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_at).transpose()
    }

    pub(crate) async fn user_inner(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<User>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!("SELECT {USER_COLUMNS} FROM #.users WHERE tenant_id = $1 AND id = $2"),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(id.as_uuid())
            })
            .await
            .map_err(map_err)?;
        opt_user(row)
    }

    pub(crate) async fn subject_inner(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<Subject>, StoreError> {
        // One round trip: the user's facts and its template's current permissions (D6); the
        // tenant and the user are the parameters, not read back, and the row is read by
        // position (issue 14). The template's permissions are a sub-select on its primary
        // key rather than a join: without statistics the planner joined the template through
        // a bitmap scan of the tenant's templates by name, and the sub-select is one probe
        // of the key (at most one row, as the join's).
        let sql = crate::q(
            &self.prefix,
            &format!(
                "SELECT {SUBJECT_COLUMNS} FROM #.users u \
                 WHERE u.tenant_id = $1 AND u.id = $2"
            ),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(id.as_uuid())
            })
            .await
            .map_err(map_err)?;
        row.as_ref()
            .map(|r| At::new(r, 0).subject(tenant, id))
            .transpose()
    }

    pub(crate) async fn user_by_email_inner(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!("SELECT {USER_COLUMNS} FROM #.users WHERE tenant_id = $1 AND email_key = $2"),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(key)
            })
            .await
            .map_err(map_err)?;
        opt_user(row)
    }

    /// [one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants):
    /// the user of `tenant` holding `identity`, through the unique index
    /// `users_identity_key` (identity, tenant_id).
    pub(crate) async fn user_by_identity_inner(
        &self,
        tenant: TenantId,
        identity: &IdentityId,
    ) -> Result<Option<User>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!("SELECT {USER_COLUMNS} FROM #.users WHERE identity = $1 AND tenant_id = $2"),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql)
                    .bind(identity.as_str())
                    .bind(tenant.as_uuid())
            })
            .await
            .map_err(map_err)?;
        opt_user(row)
    }

    /// [one person, several tenants (D28)](tenantry_core::Rule::OnePersonSeveralTenants):
    /// the person's users with their tenants' names, by tenant name (byte order), then
    /// tenant id, strictly after the cursor. The person's rows come from an index leading
    /// with the address key (`users_by_email_key`) or the identity (`users_identity_key`),
    /// each joined to its tenant by primary key: never a scan of tenants. Deleted users have
    /// no row, so they never appear.
    pub(crate) async fn memberships_inner(
        &self,
        person: &Person,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<Membership>, StoreError> {
        let (column, key) = match person {
            Person::Email(email) => ("email_key", email.key()),
            Person::Identity(identity) => ("identity", identity.as_str()),
            // `Person` is non-exhaustive; a kind this build does not know finds nobody.
            #[allow(unreachable_patterns)]
            _ => return Ok(Vec::new()),
        };
        let limit = limit_i64(limit.clamp(1, MAX_PAGE_SIZE + 1));
        let cols = user_columns_of_u();
        let head = format!(
            "SELECT t.name AS tenant_name, {cols} FROM #.users u \
             JOIN #.tenants t ON t.id = u.tenant_id WHERE u.{column} = $1"
        );
        let rows = match after {
            Some(c) => {
                sqlx::query(&crate::q(
                    &self.prefix,
                    &format!(
                        "{head} AND (t.name COLLATE \"C\", t.id) > ($2 COLLATE \"C\", $3) \
                         ORDER BY t.name COLLATE \"C\", t.id LIMIT $4"
                    ),
                ))
                .bind(key)
                .bind(c.name.as_str())
                .bind(c.id.as_uuid())
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&crate::q(
                    &self.prefix,
                    &format!("{head} ORDER BY t.name COLLATE \"C\", t.id LIMIT $2"),
                ))
                .bind(key)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(map_err)?;
        rows.iter().map(membership_from_row).collect()
    }

    pub(crate) async fn template_inner(
        &self,
        tenant: TenantId,
        id: TemplateId,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM #.role_templates WHERE tenant_id = $1 AND id = $2"
            ),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(id.as_uuid())
            })
            .await
            .map_err(map_err)?;
        row.as_ref().map(template_at).transpose()
    }

    pub(crate) async fn template_by_name_inner(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM #.role_templates WHERE tenant_id = $1 AND name_key = $2"
            ),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(key)
            })
            .await
            .map_err(map_err)?;
        row.as_ref().map(template_at).transpose()
    }

    pub(crate) async fn templates_inner(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<RoleTemplate>, StoreError> {
        let rows = sqlx::query(&crate::q(&self.prefix, &format!(
            "SELECT {TEMPLATE_COLUMNS} FROM #.role_templates WHERE tenant_id = $1 ORDER BY name_key, id"
        )))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(template_at).collect()
    }

    pub(crate) async fn count_template_users_inner(
        &self,
        tenant: TenantId,
        template: TemplateId,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&crate::q(
            &self.prefix,
            "SELECT COUNT(*) FROM #.users WHERE tenant_id = $1 AND template_id = $2",
        ))
        .bind(tenant.as_uuid())
        .bind(template.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn invitation_inner(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!(
                "SELECT {INVITATION_COLUMNS} FROM #.invitations WHERE token_hash = $1 AND tenant_id = $2"
            ),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(&hash.0[..]).bind(tenant.as_uuid())
            })
            .await
            .map_err(map_err)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    pub(crate) async fn invitations_of_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Vec<Invitation>, StoreError> {
        let rows = sqlx::query(&crate::q(&self.prefix, &format!(
            "SELECT {INVITATION_COLUMNS} FROM #.invitations WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token_hash"
        )))
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(invitation_from_row).collect()
    }

    pub(crate) async fn list_users_inner(
        &self,
        tenant: TenantId,
        query: &UserQuery,
    ) -> Result<Page<User>, StoreError> {
        // The shared listing ([listing (D18)](tenantry_core::Rule::Listing)): keyset
        // pagination on the index (tenant_id, key, id), never OFFSET.
        let listing = sql::users_listing(sql::Dialect::POSTGRES, tenant, query);
        let from = format!(" FROM {}users ", self.prefix);
        let text = listing.sql.replacen(" FROM users ", &from, 1);
        // On the store's own connections when one is free, as the one-row reads: the pool's
        // acquire and release cost more than the page's statement (issue 14).
        let fetched = self
            .hot
            .fetch_all(&self.pool, || bind_all(sqlx::query(&text), &listing.params))
            .await
            .map_err(map_err)?;
        let rows = fetched
            .iter()
            .map(|r| At::new(r, 0).user())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(sql::users_page(rows, query))
    }

    /// The operators' listing: tenants by name (byte order, as the reference store sorts
    /// them), then id, strictly after the cursor; tenant rows and counters only.
    /// The operators' listing: the shared statement ([`sql::tenants_listing`]: by name in
    /// byte order, `COLLATE "C"`, then id; keyset after the cursor on the index of migration 4).
    pub(crate) async fn tenants_inner(
        &self,
        after: Option<&TenantCursor>,
        limit: u32,
    ) -> Result<Vec<TenantState>, StoreError> {
        let listing = sql::tenants_listing(sql::Dialect::POSTGRES, after, limit);
        let from = format!(" FROM {}tenants ", self.prefix);
        let text = listing.sql.replacen(" FROM tenants ", &from, 1);
        let rows = bind_all(sqlx::query(&text), &listing.params)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(tenant_at).collect()
    }

    pub(crate) async fn tombstone_inner(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Tombstone>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            "SELECT tenant_id, user_id, email, deleted_at, deleted_by FROM #.tombstones WHERE tenant_id = $1 AND user_id = $2",
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql)
                    .bind(tenant.as_uuid())
                    .bind(user.as_uuid())
            })
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
        let rows = sqlx::query(&crate::q(&self.prefix, "SELECT seq, event FROM #.audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"))
            .bind(tenant.as_uuid())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
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
        let filter = if pending_only {
            " AND state = 'pending'"
        } else {
            ""
        };
        let rows = sqlx::query(&crate::q(&self.prefix, &format!(
            "SELECT {OUTBOX_COLUMNS} FROM #.outbox WHERE tenant_id = $1{filter} ORDER BY id DESC LIMIT $2"
        )))
        .bind(tenant.as_uuid())
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    pub(crate) async fn outbox_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        let sql = crate::q(
            &self.prefix,
            &format!("SELECT {OUTBOX_COLUMNS} FROM #.outbox WHERE tenant_id = $1 AND id = $2"),
        );
        let row = self
            .hot
            .fetch_optional(&self.pool, || {
                sqlx::query(&sql).bind(tenant.as_uuid()).bind(id.as_uuid())
            })
            .await
            .map_err(map_err)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    pub(crate) async fn tenants_with_due_mail_inner(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(&crate::q(&self.prefix, "SELECT DISTINCT tenant_id FROM #.outbox WHERE state = 'pending' AND next_attempt_at <= $1 LIMIT $2",))
        .bind(nanos_clamped(now))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(TenantId::from_uuid).collect())
    }
}
