//! The write path: each change is one transaction that locks the tenant's row, compares
//! its version, applies the writes, checks the counters, appends the audit events and
//! queues the mail; audit appends, outbox claims and delivery results; and the mapping of
//! PostgreSQL's errors into [`StoreError`].

use sqlx::{Postgres, Transaction};
use tenantry_core::{AuditEvent, Change, MessageId, TenantId, Write};
use tenantry_mail::Message;
use tenantry_store::{Constraint, DeliveryUpdate, OutboxRecord, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::rows::{
    self, BACKEND, OUTBOX_COLUMNS, backend, limit_i64, login_key, nanos, nanos_clamped,
    outbox_from_row, perms_list,
};

/// SQLSTATEs after which the whole use case may be retried: serialization_failure,
/// deadlock_detected, lock_not_available (a `lock_timeout`) and too_many_connections.
const BUSY_CODES: [&str; 4] = ["40001", "40P01", "55P03", "53300"];

/// Maps a sqlx error into the shared error: busy SQLSTATEs into [`StoreError::Busy`],
/// integrity violations into [`StoreError::Conflict`] by constraint name, anything else into
/// [`StoreError::Backend`].
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if let Some(mapped) = classify(&code, db.constraint(), db.message()) {
            return mapped;
        }
    }
    backend(e)
}

/// The shared error for a database error with SQLSTATE `code` naming `constraint`, when
/// it is one the service understands.
fn classify(code: &str, constraint: Option<&str>, message: &str) -> Option<StoreError> {
    if BUSY_CODES.contains(&code) {
        return Some(StoreError::Busy {
            backend: BACKEND,
            reason: message.to_owned(),
        });
    }
    if !code.starts_with("23") {
        return None;
    }
    let constraint = match constraint.unwrap_or_default() {
        "tenants_pkey" => Constraint::TenantId,
        "users_pkey" | "users_id_not_reused" | "tombstones_pkey" => Constraint::UserId,
        "users_email_key" => Constraint::UserEmail,
        "role_templates_pkey" => Constraint::TemplateId,
        "role_templates_name_key" => Constraint::TemplateName,
        "invitations_pkey" => Constraint::TokenHash,
        "users_seat_limit" => Constraint::SeatLimit,
        "tenants_last_admin" => Constraint::LastAdmin,
        _ if code == "23503" => Constraint::MissingRow,
        _ => Constraint::Schema,
    };
    Some(StoreError::Conflict { constraint })
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

fn affected_one(r: &sqlx::postgres::PgQueryResult) -> Result<(), StoreError> {
    if r.rows_affected() == 1 {
        Ok(())
    } else {
        Err(conflict(Constraint::MissingRow))
    }
}

async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    w: &Write,
) -> Result<(), StoreError> {
    let t = tenant.as_uuid();
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            if tn.id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query("UPDATE tenants SET name = $1, user_limit = $2 WHERE id = $3")
                .bind(&tn.name)
                .bind(tn.user_limit.map(i64::from))
                .bind(t)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::InsertUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let last_login = u.last_login.map(nanos).transpose()?;
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(t)
            .bind(u.id.as_uuid())
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| x.as_uuid()))
            .bind(u.crm_access)
            .bind(perms_list(u.grants))
            .bind(nanos(u.created_at)?)
            .bind(last_login)
            .bind(login_key(last_login))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::UpdateUser(u) => {
            if u.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let last_login = u.last_login.map(nanos).transpose()?;
            let r = sqlx::query(
                "UPDATE users SET email = $1, email_key = $2, role = $3, status = $4, template_id = $5, crm_access = $6, grants = $7, \
                 last_login = $8, login_key = $9, invite_expires_at = $10 WHERE tenant_id = $11 AND id = $12",
            )
            .bind(u.email.as_str())
            .bind(u.email.key())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| x.as_uuid()))
            .bind(u.crm_access)
            .bind(perms_list(u.grants))
            .bind(last_login)
            .bind(login_key(last_login))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .bind(t)
            .bind(u.id.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::DeleteUser(tomb) => {
            // One statement: the row goes, its tombstone stays (D11).
            let r = sqlx::query(
                "WITH gone AS (DELETE FROM users WHERE tenant_id = $1 AND id = $2 RETURNING tenant_id, id) \
                 INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) \
                 SELECT tenant_id, id, $3, $4, $5 FROM gone",
            )
            .bind(t)
            .bind(tomb.user_id.as_uuid())
            .bind(tomb.email.as_str())
            .bind(nanos(tomb.deleted_at)?)
            .bind(serde_json::to_string(&tomb.deleted_by).map_err(backend)?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::InsertTemplate(tp) => {
            if tp.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            sqlx::query(
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(t)
            .bind(tp.id.as_uuid())
            .bind(tp.name.as_str())
            .bind(tp.name.key())
            .bind(perms_list(tp.permissions))
            .bind(nanos(tp.created_at)?)
            .bind(nanos(tp.updated_at)?)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::UpdateTemplate(tp) => {
            if tp.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query(
                "UPDATE role_templates SET name = $1, name_key = $2, permissions = $3, updated_at = $4 WHERE tenant_id = $5 AND id = $6",
            )
            .bind(tp.name.as_str())
            .bind(tp.name.key())
            .bind(perms_list(tp.permissions))
            .bind(nanos(tp.updated_at)?)
            .bind(t)
            .bind(tp.id.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::DeleteTemplate(id) => {
            let r = sqlx::query("DELETE FROM role_templates WHERE tenant_id = $1 AND id = $2")
                .bind(t)
                .bind(id.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(|e| match map_err(e) {
                    // The users' foreign key refused: users still reference it (D12).
                    StoreError::Conflict {
                        constraint: Constraint::MissingRow,
                    } => conflict(Constraint::TemplateReferenced),
                    other => other,
                })?;
            affected_one(&r)?;
        }
        Write::MoveTemplateUsers { from, to } => {
            sqlx::query(
                "UPDATE users SET template_id = $1 WHERE tenant_id = $2 AND template_id = $3",
            )
            .bind(to.map(|x| x.as_uuid()))
            .bind(t)
            .bind(from.as_uuid())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        Write::InsertInvitation(inv) => {
            if inv.tenant_id != tenant {
                return Err(conflict(Constraint::MissingRow));
            }
            let r = sqlx::query(
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = $2 AND id = $3)",
            )
            .bind(&inv.token_hash.0[..])
            .bind(t)
            .bind(inv.user_id.as_uuid())
            .bind(rows::kind_text(inv.kind))
            .bind(rows::state_text(inv.state))
            .bind(nanos(inv.created_at)?)
            .bind(nanos(inv.expires_at)?)
            .bind(i64::from(inv.failed_attempts))
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::RevokeInvitations(user) => {
            sqlx::query("UPDATE invitations SET state = 'revoked' WHERE tenant_id = $1 AND user_id = $2 AND state = 'pending'")
                .bind(t)
                .bind(user.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        Write::UseInvitation(hash) => {
            let r = sqlx::query(
                "UPDATE invitations SET state = 'used' WHERE tenant_id = $1 AND token_hash = $2",
            )
            .bind(t)
            .bind(&hash.0[..])
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => {
            // D24: only a pending invitation of this tenant counts attempts; a missing or
            // no longer pending one fails the whole change.
            let r = sqlx::query(
                "UPDATE invitations SET failed_attempts = $1, state = CASE WHEN $2 THEN 'revoked' ELSE state END \
                 WHERE tenant_id = $3 AND token_hash = $4 AND state = 'pending'",
            )
            .bind(i64::from(*failed_attempts))
            .bind(*revoke)
            .bind(t)
            .bind(&token_hash.0[..])
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            affected_one(&r)?;
        }
        // `Write` is non-exhaustive; refuse anything this build does not know.
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

/// Appends `events` after the tenant's last audit record; returns the last seq written.
/// The caller holds the tenant row's lock, so sequence numbers are handed out (and become
/// visible) in commit order: a feed reader never sees seq n+1 before seq n ([audit log (D13)](tenantry_core::Rule::AuditLog)).
async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut at = Vec::with_capacity(events.len());
    let mut action = Vec::with_capacity(events.len());
    let mut body = Vec::with_capacity(events.len());
    for e in events {
        at.push(nanos(e.at)?);
        action.push(serde_json::to_string(&e.action).map_err(backend)?);
        body.push(serde_json::to_string(e).map_err(backend)?);
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO audit_log (tenant_id, seq, at, action, event) \
         SELECT $1, b.base + e.ord, e.at, e.action, e.event \
         FROM (SELECT COALESCE(MAX(seq), 0) AS base FROM audit_log WHERE tenant_id = $1) AS b, \
              unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS e(at, action, event, ord) \
         RETURNING seq",
    )
    .bind(tenant.as_uuid())
    .bind(at)
    .bind(action)
    .bind(body)
    .fetch_all(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(seqs
        .into_iter()
        .max()
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0))
}

async fn queue_mail(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox: &[Message],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if outbox.is_empty() {
        return Ok(());
    }
    if outbox.iter().any(|m| m.tenant_id != tenant) {
        return Err(conflict(Constraint::MissingRow));
    }
    let ids: Vec<Uuid> = outbox.iter().map(|m| m.id.as_uuid()).collect();
    let users: Vec<Uuid> = outbox.iter().map(|m| m.user_id.as_uuid()).collect();
    let to: Vec<&str> = outbox.iter().map(|m| m.to.as_str()).collect();
    let subject: Vec<&str> = outbox.iter().map(|m| m.subject.as_str()).collect();
    let text: Vec<&str> = outbox.iter().map(|m| m.text.as_str()).collect();
    let html: Vec<&str> = outbox.iter().map(|m| m.html.as_str()).collect();
    sqlx::query(
        "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
         SELECT $1, m.id, m.user_id, m.recipient, m.subject, m.body_text, m.body_html, 'pending', 0, $8, $8 \
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) \
              AS m(id, user_id, recipient, subject, body_text, body_html)",
    )
    .bind(tenant.as_uuid())
    .bind(ids)
    .bind(users)
    .bind(to)
    .bind(subject)
    .bind(text)
    .bind(html)
    .bind(nanos(now)?)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Locks the tenant's row for the rest of the transaction; `None` when it does not exist.
async fn lock_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT version FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)
}

/// The body of one commit, inside `tx` ([concurrency (D16)](tenantry_core::Rule::Concurrency)): lock and compare the version, apply the
/// writes, check the trigger-kept counters, bump the version, append the audit events and
/// queue the mail.
async fn commit_in(
    tx: &mut Transaction<'static, Postgres>,
    change: &Change,
    outbox: &[Message],
) -> Result<(), StoreError> {
    let tenant = change.tenant_id;
    let t = tenant.as_uuid();
    let mut writes = change.writes.iter().peekable();
    if let Some(Write::InsertTenant(tn)) = writes.peek() {
        if tn.id != tenant || change.expected_version != 0 {
            return Err(conflict(Constraint::MissingRow));
        }
        sqlx::query(
            "INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(t)
        .bind(&tn.name)
        .bind(tn.user_limit.map(i64::from))
        .bind(nanos(tn.created_at)?)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        writes.next();
    } else {
        match lock_tenant(tx, tenant).await? {
            None => return Err(StoreError::NotFound),
            Some(v) if u64::try_from(v).ok() != Some(change.expected_version) => {
                return Err(StoreError::VersionMismatch {
                    expected: change.expected_version,
                });
            }
            Some(_) => {}
        }
    }
    for w in writes {
        apply(tx, tenant, w).await?;
    }
    let (seats, admins): (i64, i64) = sqlx::query_as(
        "UPDATE tenants SET version = $1 WHERE id = $2 RETURNING seats_used, active_admins",
    )
    .bind(i64::try_from(change.counters.version).map_err(backend)?)
    .bind(t)
    .fetch_one(&mut **tx)
    .await
    .map_err(map_err)?;
    if i64::from(change.counters.seats_used) != seats
        || i64::from(change.counters.active_admins) != admins
    {
        return Err(conflict(Constraint::Counters));
    }
    append_events(tx, tenant, &change.events).await?;
    let now = change
        .events
        .first()
        .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
    queue_mail(tx, tenant, outbox, now).await
}

/// Ends a transaction: committed when its body succeeded, rolled back at once (so the
/// tenant's row lock is released promptly) when it failed.
async fn finish<T>(
    tx: Transaction<'static, Postgres>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            tx.commit().await.map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            // A failed rollback leaves the connection to be discarded by the pool.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn append_one(
    tx: &mut Transaction<'static, Postgres>,
    event: &AuditEvent,
) -> Result<u64, StoreError> {
    // The tenant's lock orders this append with every commit's (D13).
    if lock_tenant(tx, event.tenant_id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    append_events(tx, event.tenant_id, std::slice::from_ref(event)).await
}

impl PostgresStore {
    pub(crate) async fn commit_inner(
        &self,
        change: &Change,
        outbox: &[Message],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let result = commit_in(&mut tx, change, outbox).await;
        finish(tx, result).await
    }

    pub(crate) async fn append_audit_inner(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let result = append_one(&mut tx, event).await;
        finish(tx, result).await
    }

    pub(crate) async fn claim_due_mail_inner(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        // SKIP LOCKED: two dispatchers claiming at once take different messages. The due
        // set is a MATERIALIZED CTE, picked once: as an `IN (subquery)` the planner may run
        // the subquery again for each outer row (a nested loop without Materialize), and
        // each run then skips the rows already leased and picks the next ones, so a claim of
        // `LIMIT 1` leased every due message (seen on a small, unanalyzed outbox).
        let rows = sqlx::query(&format!(
            "WITH due AS MATERIALIZED \
             (SELECT id FROM outbox WHERE tenant_id = $2 AND state = 'pending' AND next_attempt_at <= $3 \
              ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET next_attempt_at = $1 WHERE tenant_id = $2 AND id IN (SELECT id FROM due) \
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(nanos_clamped(lease_until))
        .bind(tenant.as_uuid())
        .bind(nanos_clamped(now))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut claimed = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.message.id);
        Ok(claimed)
    }

    pub(crate) async fn claim_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        // At READ COMMITTED a concurrent claim of the same row waits for this one, then
        // re-checks the row it committed: the lease is in the future, so it claims nothing.
        let row = sqlx::query(&format!(
            "UPDATE outbox SET next_attempt_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND state = 'pending' AND next_attempt_at <= $4 \
             RETURNING {OUTBOX_COLUMNS}"
        ))
        .bind(nanos_clamped(lease_until))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(nanos_clamped(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    pub(crate) async fn record_delivery_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let t = tenant.as_uuid();
        let m = id.as_uuid();
        let q = match update {
            DeliveryUpdate::Sent { at } => sqlx::query(
                "UPDATE outbox SET state = 'sent', state_at = $1, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?)
            .bind(t)
            .bind(m),
            DeliveryUpdate::Retry { reason, retry_at } => sqlx::query(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, last_error = $4, attempts = attempts + 1 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos_clamped(*retry_at))
            .bind(t)
            .bind(m)
            .bind(reason.as_str()),
            // D26: sent or failed for good, a message keeps no body (they hold the live
            // accept link).
            DeliveryUpdate::Failed { reason, at } => sqlx::query(
                "UPDATE outbox SET state = 'failed', state_at = $1, failure = $4, last_error = $4, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(nanos(*at)?)
            .bind(t)
            .bind(m)
            .bind(reason.as_str()),
        };
        let r = q.execute(&self.pool).await.map_err(map_err)?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        // Not pending any more (a late result changes nothing: sent stays sent, failed stays
        // failed), or no such message.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM outbox WHERE tenant_id = $1 AND id = $2")
                .bind(t)
                .bind(m)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        exists.map(|_| ()).ok_or(StoreError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::{Constraint, StoreError, classify};

    fn constraint_of(code: &str, name: Option<&str>) -> Option<Constraint> {
        match classify(code, name, "m") {
            Some(StoreError::Conflict { constraint }) => Some(constraint),
            _ => None,
        }
    }

    #[test]
    fn d16_busy_sqlstates_are_retryable() {
        for code in ["40001", "40P01", "55P03", "53300"] {
            let e = classify(code, None, "m");
            assert!(
                matches!(
                    e,
                    Some(StoreError::Busy {
                        backend: "postgres",
                        ..
                    })
                ),
                "{code}"
            );
            assert!(e.is_some_and(|e| e.is_retryable()));
        }
        assert!(classify("42P01", None, "m").is_none());
    }

    #[test]
    fn constraint_names_map_to_constraints() {
        let cases = [
            ("23505", "tenants_pkey", Constraint::TenantId),
            ("23505", "users_pkey", Constraint::UserId),
            ("23505", "users_id_not_reused", Constraint::UserId),
            ("23505", "users_email_key", Constraint::UserEmail),
            ("23505", "role_templates_pkey", Constraint::TemplateId),
            ("23505", "role_templates_name_key", Constraint::TemplateName),
            ("23505", "invitations_pkey", Constraint::TokenHash),
            ("23514", "users_seat_limit", Constraint::SeatLimit),
            ("23514", "tenants_last_admin", Constraint::LastAdmin),
            ("23503", "users_template_fk", Constraint::MissingRow),
            ("23514", "users_admin_crm", Constraint::Schema),
            ("23001", "audit_log_append_only", Constraint::Schema),
        ];
        for (code, name, want) in cases {
            assert_eq!(constraint_of(code, Some(name)), Some(want), "{name}");
        }
    }
}
