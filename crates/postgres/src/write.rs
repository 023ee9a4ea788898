//! The write path: each change is one call of the `tenantry_commit` function (one round
//! trip, one transaction) that locks the tenant's row, compares its version, applies the
//! writes, checks the counters, appends the audit events and queues the mail; audit appends
//! and sign-ins ([sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange)),
//! which take the tenant's audit head and never its row; outbox claims and delivery results;
//! and the mapping of PostgreSQL's errors into [`StoreError`].

use serde_json::{Value, json};
use tenantry_core::{AuditEvent, Change, MessageId, Status, TenantId, User, UserId, Write};
use tenantry_mail::Message;
use tenantry_store::{Constraint, DeliveryUpdate, OutboxRecord, SignInOutcome, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PostgresStore;
use crate::rows::{
    self, At, BACKEND, OUTBOX_COLUMNS, USER_COLUMNS, backend, limit_i64, nanos, nanos_clamped,
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
        "users_identity_key" => Constraint::UserIdentity,
        "role_templates_pkey" => Constraint::TemplateId,
        "role_templates_name_key" => Constraint::TemplateName,
        "invitations_pkey" => Constraint::TokenHash,
        "users_seat_limit" => Constraint::SeatLimit,
        "tenants_last_admin" => Constraint::LastAdmin,
        "tenantry_counters" => Constraint::Counters,
        "tenantry_template_referenced" => Constraint::TemplateReferenced,
        _ if code == "23503" => Constraint::MissingRow,
        _ => Constraint::Schema,
    };
    Some(StoreError::Conflict { constraint })
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

/// The SQLSTATE `tenantry_commit` raises when the tenant does not exist.
const NO_TENANT: &str = "TNF01";
/// The SQLSTATE `tenantry_commit` raises when the tenant's version moved on.
const VERSION_MOVED: &str = "TNV01";

/// A time as the JSON number of its Unix nanoseconds.
fn nanos_json(t: OffsetDateTime) -> Result<Value, StoreError> {
    Ok(Value::from(nanos(t)?))
}

fn opt_nanos_json(t: Option<OffsetDateTime>) -> Result<Value, StoreError> {
    t.map_or(Ok(Value::Null), nanos_json)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn user_json(op: &str, u: &tenantry_core::User) -> Result<Value, StoreError> {
    Ok(json!({
        "op": op,
        "id": u.id.as_uuid(),
        "email": u.email.as_str(),
        "email_key": u.email.key(),
        "role": u.role.as_str(),
        "status": u.status.as_str(),
        "template_id": u.template_id.map(|x| x.as_uuid()),
        "crm": u.crm_access,
        "grants": perms_list(u.grants),
        "created_at": nanos_json(u.created_at)?,
        "last_login": opt_nanos_json(u.last_login)?,
        "invite_expires_at": opt_nanos_json(u.invite_expires_at)?,
        "identity": u.identity.as_ref().map(tenantry_core::IdentityId::as_str),
    }))
}

fn template_json(op: &str, tp: &tenantry_core::RoleTemplate) -> Result<Value, StoreError> {
    Ok(json!({
        "op": op,
        "id": tp.id.as_uuid(),
        "name": tp.name.as_str(),
        "name_key": tp.name.key(),
        "permissions": perms_list(tp.permissions),
        "created_at": nanos_json(tp.created_at)?,
        "updated_at": nanos_json(tp.updated_at)?,
    }))
}

/// One write as the JSON object `tenantry_commit` applies; a write naming another tenant is
/// refused here, before anything is sent.
fn write_json(tenant: TenantId, w: &Write) -> Result<Value, StoreError> {
    let mine = |t: TenantId| {
        if t == tenant {
            Ok(())
        } else {
            Err(conflict(Constraint::MissingRow))
        }
    };
    Ok(match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            mine(tn.id)?;
            json!({"op": "update_tenant", "name": tn.name, "user_limit": tn.user_limit})
        }
        Write::InsertUser(u) => {
            mine(u.tenant_id)?;
            user_json("insert_user", u)?
        }
        Write::UpdateUser(u) => {
            mine(u.tenant_id)?;
            user_json("update_user", u)?
        }
        Write::DeleteUser(tomb) => json!({
            "op": "delete_user",
            "id": tomb.user_id.as_uuid(),
            "email": tomb.email.as_str(),
            "deleted_at": nanos_json(tomb.deleted_at)?,
            "deleted_by": serde_json::to_string(&tomb.deleted_by).map_err(backend)?,
        }),
        Write::InsertTemplate(tp) => {
            mine(tp.tenant_id)?;
            template_json("insert_template", tp)?
        }
        Write::UpdateTemplate(tp) => {
            mine(tp.tenant_id)?;
            template_json("update_template", tp)?
        }
        Write::DeleteTemplate(id) => json!({"op": "delete_template", "id": id.as_uuid()}),
        Write::MoveTemplateUsers { from, to } => json!({
            "op": "move_template_users",
            "from": from.as_uuid(),
            "to": to.map(|x| x.as_uuid()),
        }),
        Write::InsertInvitation(inv) => {
            mine(inv.tenant_id)?;
            json!({
                "op": "insert_invitation",
                "token_hash": hex(&inv.token_hash.0),
                "user_id": inv.user_id.as_uuid(),
                "kind": rows::kind_text(inv.kind),
                "state": rows::state_text(inv.state),
                "created_at": nanos_json(inv.created_at)?,
                "expires_at": nanos_json(inv.expires_at)?,
                "failed_attempts": inv.failed_attempts,
            })
        }
        Write::RevokeInvitations(user) => {
            json!({"op": "revoke_invitations", "user_id": user.as_uuid()})
        }
        Write::UseInvitation(hash) => {
            json!({"op": "use_invitation", "token_hash": hex(&hash.0)})
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => json!({
            "op": "fail_accept_attempt",
            "token_hash": hex(&token_hash.0),
            "failed_attempts": failed_attempts,
            "revoke": revoke,
        }),
        // `Write` is non-exhaustive; refuse anything this build does not know.
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    })
}

/// The events of a change as the three arrays `tenantry_append_events` takes.
type EventArrays = (Vec<i64>, Vec<String>, Vec<String>);

fn event_arrays(events: &[AuditEvent]) -> Result<EventArrays, StoreError> {
    let mut at = Vec::with_capacity(events.len());
    let mut action = Vec::with_capacity(events.len());
    let mut body = Vec::with_capacity(events.len());
    for e in events {
        at.push(nanos(e.at)?);
        action.push(serde_json::to_string(&e.action).map_err(backend)?);
        body.push(serde_json::to_string(e).map_err(backend)?);
    }
    Ok((at, action, body))
}

/// The statement of a commit: one call of `tenantry_commit`, so the whole commit (the
/// tenant row locked from its first step to its last) costs one round trip.
const COMMIT_SQL: &str = "SELECT #.tenantry_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                          $11, $12, $13, $14, $15, $16, $17)";

/// Appends one event outside any change: the tenant's audit head gives its seq (the tenant
/// row is not locked).
const APPEND_SQL: &str = "SELECT #.tenantry_append_events($1, $2, $3, $4)";

/// The error of a failed call of the commit function.
fn commit_err(e: sqlx::Error, expected: u64) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            Some(NO_TENANT) => return StoreError::NotFound,
            Some(VERSION_MOVED) => return StoreError::VersionMismatch { expected },
            _ => {}
        }
    }
    map_err(e)
}

impl PostgresStore {
    /// [concurrency (D16)](tenantry_core::Rule::Concurrency): the change, its events and its
    /// mail in one call of `tenantry_commit` (see `migrations/0003_write_path.sql`).
    pub(crate) async fn commit_inner(
        &self,
        change: &Change,
        outbox: &[Message],
    ) -> Result<(), StoreError> {
        let tenant = change.tenant_id;
        let mut writes = change.writes.iter().peekable();
        let new_tenant = match writes.peek() {
            Some(Write::InsertTenant(tn)) => {
                if tn.id != tenant || change.expected_version != 0 {
                    return Err(conflict(Constraint::MissingRow));
                }
                writes.next();
                Some(json!({
                    "name": tn.name,
                    "user_limit": tn.user_limit,
                    "created_at": nanos_json(tn.created_at)?,
                }))
            }
            _ => None,
        };
        let writes = writes
            .map(|w| write_json(tenant, w))
            .collect::<Result<Vec<_>, _>>()?;
        if outbox.iter().any(|m| m.tenant_id != tenant) {
            return Err(conflict(Constraint::MissingRow));
        }
        let (at, action, body) = event_arrays(&change.events)?;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        let ids: Vec<Uuid> = outbox.iter().map(|m| m.id.as_uuid()).collect();
        let users: Vec<Uuid> = outbox.iter().map(|m| m.user_id.as_uuid()).collect();
        let to: Vec<&str> = outbox.iter().map(|m| m.to.as_str()).collect();
        let subject: Vec<&str> = outbox.iter().map(|m| m.subject.as_str()).collect();
        let text: Vec<&str> = outbox.iter().map(|m| m.text.as_str()).collect();
        let html: Vec<&str> = outbox.iter().map(|m| m.html.as_str()).collect();
        let expected = change.expected_version;
        let sql = crate::q(&self.prefix, COMMIT_SQL);
        let query = sqlx::query(&sql)
            .bind(tenant.as_uuid())
            .bind(i64::try_from(expected).map_err(backend)?)
            .bind(i64::try_from(change.counters.version).map_err(backend)?)
            .bind(i64::from(change.counters.seats_used))
            .bind(i64::from(change.counters.active_admins))
            .bind(new_tenant)
            .bind(Value::Array(writes))
            .bind(at)
            .bind(action)
            .bind(body)
            .bind(ids)
            .bind(users)
            .bind(to)
            .bind(subject)
            .bind(text)
            .bind(html)
            .bind(nanos(now)?);
        self.hot
            .execute_once(&self.pool, query)
            .await
            .map_err(|e| commit_err(e, expected))?;
        Ok(())
    }

    pub(crate) async fn append_audit_inner(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        // [audit log (D13)](tenantry_core::Rule::AuditLog): the seq comes from the tenant's
        // audit head, held to the end of the statement, so seqs appear in order.
        let (at, action, body) = event_arrays(std::slice::from_ref(event))?;
        let seq: i64 = sqlx::query_scalar(&crate::q(&self.prefix, APPEND_SQL))
            .bind(event.tenant_id.as_uuid())
            .bind(at)
            .bind(action)
            .bind(body)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| commit_err(e, 0))?;
        u64::try_from(seq).map_err(backend)
    }

    /// [sign-in is not a change (D27)](tenantry_core::Rule::SignInIsNotAChange): one
    /// statement. It updates the user's last login only while the user is active (the
    /// user's row lock orders it with a suspension or deletion), takes the next seq from the
    /// tenant's audit head and appends the event; the tenant's row, version and counters are
    /// not touched (its key-share lock, which the audit row's foreign key takes, does not
    /// wait for a commit's `FOR NO KEY UPDATE`).
    pub(crate) async fn record_sign_in_inner(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        if event.tenant_id != tenant {
            return Err(conflict(Constraint::MissingRow));
        }
        let sql = crate::q(
            &self.prefix,
            &format!(
                "WITH u AS (\
                   UPDATE #.users SET last_login = GREATEST(COALESCE(last_login, $3), $3), \
                                      login_key = GREATEST(COALESCE(last_login, $3), $3) \
                   WHERE tenant_id = $1 AND id = $2 AND status = 'active' \
                   RETURNING {USER_COLUMNS}), \
                 h AS (\
                   UPDATE #.audit_heads SET seq = seq + 1 \
                   WHERE tenant_id = $1 AND EXISTS (SELECT 1 FROM u) RETURNING seq), \
                 a AS (\
                   INSERT INTO #.audit_log (tenant_id, seq, at, action, event) \
                   SELECT $1, seq, $4, $5, $6 FROM h RETURNING seq) \
                 SELECT true AS recorded, {USER_COLUMNS} FROM u \
                 UNION ALL \
                 SELECT false AS recorded, {USER_COLUMNS} FROM #.users \
                 WHERE tenant_id = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM u)"
            ),
        );
        let (at_nanos, action, body) = event_arrays(std::slice::from_ref(event))?;
        let (Some(&event_at), Some(action), Some(body)) =
            (at_nanos.first(), action.first(), body.first())
        else {
            return Err(conflict(Constraint::Schema));
        };
        // A refusal reads the row as of the statement's start: when it still says active, a
        // suspension (or reactivation) committed while the update waited for the row, so the
        // statement runs again on the committed row.
        for _ in 0..3 {
            let row = sqlx::query(&sql)
                .bind(tenant.as_uuid())
                .bind(user.as_uuid())
                .bind(nanos(at)?)
                .bind(event_at)
                .bind(action)
                .bind(body)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
            let Some(row) = row else {
                return Ok(SignInOutcome::NotFound);
            };
            let recorded: bool = sqlx::Row::try_get(&row, "recorded").map_err(backend)?;
            let found: User = At::new(&row, 1).user()?;
            match (recorded, found.status) {
                (true, _) => return Ok(SignInOutcome::Recorded(found)),
                (false, Status::Active) => continue,
                (false, status) => return Ok(SignInOutcome::NotActive(status)),
            }
        }
        Err(StoreError::Busy {
            backend: BACKEND,
            reason: "the user's status kept changing during the sign-in".to_owned(),
        })
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
        let rows = sqlx::query(&crate::q(&self.prefix, &format!(
            "WITH due AS MATERIALIZED \
             (SELECT id FROM #.outbox WHERE tenant_id = $2 AND state = 'pending' AND next_attempt_at <= $3 \
              ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE #.outbox SET next_attempt_at = $1 WHERE tenant_id = $2 AND id IN (SELECT id FROM due) \
             RETURNING {OUTBOX_COLUMNS}"
        )))
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
        let row = sqlx::query(&crate::q(
            &self.prefix,
            &format!(
                "UPDATE #.outbox SET next_attempt_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND state = 'pending' AND next_attempt_at <= $4 \
             RETURNING {OUTBOX_COLUMNS}"
            ),
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
        let sql = crate::q(
            &self.prefix,
            match update {
                DeliveryUpdate::Sent { .. } => {
                    "UPDATE #.outbox SET state = 'sent', state_at = $1, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'"
                }
                DeliveryUpdate::Retry { .. } => {
                    "UPDATE #.outbox SET state = 'pending', next_attempt_at = $1, last_error = $4, attempts = attempts + 1 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'"
                }
                // D26: sent or failed for good, a message keeps no body (they hold the live
                // accept link).
                DeliveryUpdate::Failed { .. } => {
                    "UPDATE #.outbox SET state = 'failed', state_at = $1, failure = $4, last_error = $4, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = $2 AND id = $3 AND state = 'pending'"
                }
            },
        );
        let q = match update {
            DeliveryUpdate::Sent { at } => sqlx::query(&sql).bind(nanos(*at)?).bind(t).bind(m),
            DeliveryUpdate::Retry { reason, retry_at } => sqlx::query(&sql)
                .bind(nanos_clamped(*retry_at))
                .bind(t)
                .bind(m)
                .bind(reason.as_str()),
            DeliveryUpdate::Failed { reason, at } => sqlx::query(&sql)
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
        let exists: Option<i32> = sqlx::query_scalar(&crate::q(
            &self.prefix,
            "SELECT 1 FROM #.outbox WHERE tenant_id = $1 AND id = $2",
        ))
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
