//! The write path: a change, an audit append, an outbox claim or a delivery result is one
//! batch on the writer (`BEGIN IMMEDIATE` … `COMMIT`, one round trip); and the mapping of
//! SQLite's errors into [`StoreError`].

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tenantry_core::{AuditEvent, Change, MessageId, TenantId, Write};
use tenantry_mail::Message;
use tenantry_store::{Constraint, DeliveryUpdate, OutboxRecord, StoreError};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::batch::{Batch, Expect};
use crate::rows::{self, BACKEND, backend, id_text, nanos, outbox_from_row, perms_text};

/// Maps a sqlx error into the shared error: constraint names into [`Constraint`], lock
/// time-outs into [`StoreError::Busy`], anything else into [`StoreError::Backend`].
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let msg = db.message();
        let code = db.code().unwrap_or_default();
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let primary = code.parse::<i64>().map(|c| c & 0xff).unwrap_or(0);
        if primary == 5 || primary == 6 {
            return StoreError::Busy {
                backend: BACKEND,
                reason: msg.to_owned(),
            };
        }
        let constraint = if msg.contains("guard_missing_row") {
            Some(Constraint::MissingRow)
        } else if msg.contains("guard_counters") {
            Some(Constraint::Counters)
        } else if msg.contains("guard_tenant") {
            return StoreError::NotFound;
        } else if msg.contains("users.tenant_id, users.email_key") {
            Some(Constraint::UserEmail)
        } else if msg.contains("users.tenant_id, users.id") || msg.contains("user id reused") {
            Some(Constraint::UserId)
        } else if msg.contains("role_templates.tenant_id, role_templates.name_key") {
            Some(Constraint::TemplateName)
        } else if msg.contains("role_templates.tenant_id, role_templates.id") {
            Some(Constraint::TemplateId)
        } else if msg.contains("invitations.token_hash") {
            Some(Constraint::TokenHash)
        } else if msg.contains("tenants.id") {
            Some(Constraint::TenantId)
        } else if msg.contains("seat limit") {
            Some(Constraint::SeatLimit)
        } else if msg.contains("FOREIGN KEY") {
            Some(Constraint::MissingRow)
        } else if msg.contains("CHECK constraint failed") && msg.contains("active_admins") {
            Some(Constraint::LastAdmin)
        } else if msg.contains("constraint failed") || msg.contains("tenantry:") {
            Some(Constraint::Schema)
        } else {
            None
        };
        if let Some(constraint) = constraint {
            return StoreError::Conflict { constraint };
        }
    }
    backend(e)
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

/// Appends the statements of one write. Each statement says what its result must be: an
/// update or delete of a row that is gone is a [`Constraint::MissingRow`] conflict.
fn push_write(b: &mut Batch, tenant: TenantId, t: &str, w: &Write) -> Result<(), StoreError> {
    let missing = Expect::Row;
    let foreign = |id: TenantId| {
        if id == tenant {
            Ok(())
        } else {
            Err(conflict(Constraint::MissingRow))
        }
    };
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            foreign(tn.id)?;
            b.push(
                "UPDATE tenants SET name = ?, user_limit = ? WHERE id = ?",
                missing,
            )
            .bind(tn.name.clone())
            .bind(tn.user_limit.map(i64::from))
            .bind(t.to_owned());
        }
        Write::InsertUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            b.push(
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(u.id.as_uuid()))
            .bind(u.email.as_str().to_owned())
            .bind(u.email.key().to_owned())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(nanos(u.created_at)?)
            .bind(login)
            .bind(login.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?);
        }
        Write::UpdateUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            b.push(
                "UPDATE users SET email = ?, email_key = ?, role = ?, status = ?, template_id = ?, crm_access = ?, grants = ?, \
                 last_login = ?, login_key = ?, invite_expires_at = ? WHERE tenant_id = ? AND id = ?",
                missing,
            )
            .bind(u.email.as_str().to_owned())
            .bind(u.email.key().to_owned())
            .bind(u.role.as_str())
            .bind(u.status.as_str())
            .bind(u.template_id.map(|x| id_text(x.as_uuid())))
            .bind(u.crm_access)
            .bind(perms_text(u.grants))
            .bind(login)
            .bind(login.unwrap_or(i64::MIN))
            .bind(u.invite_expires_at.map(nanos).transpose()?)
            .bind(t.to_owned())
            .bind(id_text(u.id.as_uuid()));
        }
        Write::DeleteUser(tomb) => {
            b.push("DELETE FROM users WHERE tenant_id = ? AND id = ?", missing)
                .bind(t.to_owned())
                .bind(id_text(tomb.user_id.as_uuid()));
            b.push(
                "INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) VALUES (?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(tomb.user_id.as_uuid()))
            .bind(tomb.email.as_str().to_owned())
            .bind(nanos(tomb.deleted_at)?)
            .bind(serde_json::to_string(&tomb.deleted_by).map_err(backend)?);
        }
        Write::InsertTemplate(tp) => {
            foreign(tp.tenant_id)?;
            b.push(
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(tp.id.as_uuid()))
            .bind(tp.name.as_str().to_owned())
            .bind(tp.name.key().to_owned())
            .bind(perms_text(tp.permissions))
            .bind(nanos(tp.created_at)?)
            .bind(nanos(tp.updated_at)?);
        }
        Write::UpdateTemplate(tp) => {
            foreign(tp.tenant_id)?;
            b.push(
                "UPDATE role_templates SET name = ?, name_key = ?, permissions = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                missing,
            )
            .bind(tp.name.as_str().to_owned())
            .bind(tp.name.key().to_owned())
            .bind(perms_text(tp.permissions))
            .bind(nanos(tp.updated_at)?)
            .bind(t.to_owned())
            .bind(id_text(tp.id.as_uuid()));
        }
        Write::DeleteTemplate(id) => {
            // D12: users still referencing it fail the foreign key.
            b.push_remapped(
                "DELETE FROM role_templates WHERE tenant_id = ? AND id = ?",
                missing,
                Some(Constraint::TemplateReferenced),
            )
            .bind(t.to_owned())
            .bind(id_text(id.as_uuid()));
        }
        Write::MoveTemplateUsers { from, to } => {
            b.push(
                "UPDATE users SET template_id = ? WHERE tenant_id = ? AND template_id = ?",
                Expect::Any,
            )
            .bind(to.map(|x| id_text(x.as_uuid())))
            .bind(t.to_owned())
            .bind(id_text(from.as_uuid()));
        }
        Write::InsertInvitation(inv) => {
            foreign(inv.tenant_id)?;
            b.push(
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = ? AND id = ?)",
                missing,
            )
            .bind(inv.token_hash.0.to_vec())
            .bind(t.to_owned())
            .bind(id_text(inv.user_id.as_uuid()))
            .bind(rows::kind_text(inv.kind))
            .bind(rows::state_text(inv.state))
            .bind(nanos(inv.created_at)?)
            .bind(nanos(inv.expires_at)?)
            .bind(i64::from(inv.failed_attempts))
            .bind(t.to_owned())
            .bind(id_text(inv.user_id.as_uuid()));
        }
        Write::RevokeInvitations(user) => {
            b.push(
                "UPDATE invitations SET state = 'revoked' WHERE tenant_id = ? AND user_id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(t.to_owned())
            .bind(id_text(user.as_uuid()));
        }
        Write::UseInvitation(hash) => {
            b.push(
                "UPDATE invitations SET state = 'used' WHERE tenant_id = ? AND token_hash = ?",
                missing,
            )
            .bind(t.to_owned())
            .bind(hash.0.to_vec());
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => {
            // D24: only a pending invitation of this tenant counts attempts; a missing or
            // no longer pending one fails the whole change (`missing`).
            b.push(
                "UPDATE invitations SET failed_attempts = ?, state = CASE WHEN ? THEN 'revoked' ELSE state END \
                 WHERE tenant_id = ? AND token_hash = ? AND state = 'pending'",
                missing,
            )
            .bind(i64::from(*failed_attempts))
            .bind(*revoke)
            .bind(t.to_owned())
            .bind(token_hash.0.to_vec());
        }
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

/// Appends the statements that reserve `events.len()` audit sequence numbers (returning the
/// last) and insert the events under them. With `counters`, the reservation also checks
/// that the counters the triggers kept equal the change's.
fn push_events(
    b: &mut Batch,
    t: &str,
    events: &[AuditEvent],
    counters: Option<tenantry_core::Counters>,
) -> Result<(), StoreError> {
    let n = i64::try_from(events.len()).map_err(backend)?;
    match counters {
        Some(c) => b
            .push(
                "UPDATE tenants SET audit_seq = audit_seq + ? WHERE id = ? AND seats_used = ? AND active_admins = ? RETURNING audit_seq",
                Expect::Counters,
            )
            .bind(n)
            .bind(t.to_owned())
            .bind(i64::from(c.seats_used))
            .bind(i64::from(c.active_admins)),
        None => b
            .push(
                "UPDATE tenants SET audit_seq = audit_seq + ? WHERE id = ? RETURNING audit_seq",
                Expect::Found,
            )
            .bind(n)
            .bind(t.to_owned()),
    };
    for (i, e) in (1..).zip(events) {
        b.push(
            "INSERT INTO audit_log (tenant_id, seq, at, action, event) \
             VALUES (?, (SELECT audit_seq FROM tenants WHERE id = ?) - ?, ?, ?, ?)",
            Expect::Any,
        )
        .bind(t.to_owned())
        .bind(t.to_owned())
        .bind(n - i)
        .bind(nanos(e.at)?)
        .bind(serde_json::to_string(&e.action).map_err(backend)?)
        .bind(serde_json::to_string(e).map_err(backend)?);
    }
    Ok(())
}

/// Appends the outbox rows of the change's messages ([mail delivery (D17)](tenantry_core::Rule::MailDelivery): queued in the same commit).
fn push_mail(b: &mut Batch, outbox: &[Message], now: OffsetDateTime) -> Result<(), StoreError> {
    for m in outbox {
        let at = nanos(now)?;
        b.push(
            "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            Expect::Any,
        )
        .bind(id_text(m.tenant_id.as_uuid()))
        .bind(id_text(m.id.as_uuid()))
        .bind(id_text(m.user_id.as_uuid()))
        .bind(m.to.clone())
        .bind(m.subject.clone())
        .bind(m.text.clone())
        .bind(m.html.clone())
        .bind(at)
        .bind(at);
    }
    Ok(())
}

/// The audit seq the reservation of `push_events` returned.
fn returned_seq(rows: &[SqliteRow]) -> Result<u64, StoreError> {
    let seq: i64 = rows
        .first()
        .ok_or(StoreError::NotFound)?
        .try_get(0)
        .map_err(backend)?;
    u64::try_from(seq).map_err(backend)
}

impl SqliteStore {
    /// Runs a batch that begins with `BEGIN IMMEDIATE` on the writer, through its
    /// `COMMIT`, in one round trip; when a statement fails the batch stops there and the
    /// transaction is rolled back. Returns the rows the statements returned.
    ///
    /// A change to `changes` (its id) keeps that tenant's cache bypassed and empty until the
    /// batch has finished on the connection.
    async fn write(
        &self,
        mut b: Batch,
        changes: Option<TenantId>,
        tenant: &str,
        expected_version: u64,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        b.push("COMMIT", Expect::Any);
        let mut w = self.conns.writer().await;
        let conn = w.begin(changes).await?;
        let failure = match b.run(conn).await {
            Ok(Ok(rows)) => {
                w.committed();
                return Ok(rows);
            }
            Ok(Err(failure)) => failure,
            Err(e) => {
                let _ = w.roll_back().await;
                return Err(e);
            }
        };
        // A failed rollback is retried by the next user of the writer.
        let _ = w.roll_back().await;
        let version_guard = matches!(&failure.error, sqlx::Error::Database(db) if db.message().contains("guard_version"));
        if version_guard {
            // D16: the tenant changed, or is gone.
            let conn = w.conn().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
            return Err(match exists {
                None => StoreError::NotFound,
                Some(_) => StoreError::VersionMismatch {
                    expected: expected_version,
                },
            });
        }
        Err(match (map_err(failure.error), failure.remap) {
            (
                StoreError::Conflict {
                    constraint: Constraint::MissingRow,
                },
                Some(c),
            ) => conflict(c),
            (other, _) => other,
        })
    }

    pub(crate) async fn commit_inner(
        &self,
        change: &Change,
        outbox: &[Message],
    ) -> Result<(), StoreError> {
        let tenant = change.tenant_id;
        let t = id_text(tenant.as_uuid());
        let version = i64::try_from(change.counters.version).map_err(backend)?;
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        let mut writes = change.writes.iter().peekable();
        if let Some(Write::InsertTenant(tn)) = writes.peek() {
            if tn.id != tenant || change.expected_version != 0 {
                return Err(conflict(Constraint::MissingRow));
            }
            b.push(
                "INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES (?, ?, ?, ?, ?)",
                Expect::Any,
            )
            .bind(t.clone())
            .bind(tn.name.clone())
            .bind(tn.user_limit.map(i64::from))
            .bind(nanos(tn.created_at)?)
            .bind(version);
            writes.next();
        } else {
            // D16: the compare-and-set of the version comes first, so a stale change is
            // reported as such (and retried) before any of its writes could collide.
            b.push(
                "UPDATE tenants SET version = ? WHERE id = ? AND version = ?",
                Expect::Cas,
            )
            .bind(version)
            .bind(t.clone())
            .bind(i64::try_from(change.expected_version).map_err(backend)?);
        }
        for w in writes {
            push_write(&mut b, tenant, &t, w)?;
        }
        push_events(&mut b, &t, &change.events, Some(change.counters))?;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        push_mail(&mut b, outbox, now)?;
        self.write(b, Some(tenant), &t, change.expected_version)
            .await
            .map(|_| ())
    }

    pub(crate) async fn append_audit_inner(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let t = id_text(event.tenant_id.as_uuid());
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        push_events(&mut b, &t, std::slice::from_ref(event), None)?;
        returned_seq(&self.write(b, None, &t, 0).await?)
    }

    pub(crate) async fn claim_due_mail_inner(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        b.push(
            "UPDATE outbox SET next_attempt_at = ? WHERE tenant_id = ? AND id IN \
             (SELECT id FROM outbox WHERE tenant_id = ? AND state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?) \
             RETURNING *",
            Expect::Any,
        )
        .bind(rows::nanos_clamped(lease_until))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(tenant.as_uuid()))
        .bind(rows::nanos_clamped(now))
        .bind(i64::from(limit));
        let rows = self.write(b, None, "", 0).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    pub(crate) async fn claim_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        // One statement on the one writer: of two claims, the second finds the lease.
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        b.push(
            "UPDATE outbox SET next_attempt_at = ? \
             WHERE tenant_id = ? AND id = ? AND state = 'pending' AND next_attempt_at <= ? \
             RETURNING *",
            Expect::Any,
        )
        .bind(rows::nanos_clamped(lease_until))
        .bind(id_text(tenant.as_uuid()))
        .bind(id_text(id.as_uuid()))
        .bind(rows::nanos_clamped(now));
        let rows = self.write(b, None, "", 0).await?;
        rows.first().map(outbox_from_row).transpose()
    }

    pub(crate) async fn record_delivery_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let t = id_text(tenant.as_uuid());
        let m = id_text(id.as_uuid());
        let mut b = Batch::default();
        b.push("BEGIN IMMEDIATE", Expect::Any);
        match update {
            DeliveryUpdate::Sent { at } => b.push(
                "UPDATE outbox SET state = 'sent', state_at = ?, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(nanos(*at)?),
            DeliveryUpdate::Retry { retry_at, reason } => b.push(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, last_error = ?, attempts = attempts + 1 WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(rows::nanos_clamped(*retry_at))
            .bind(reason.clone()),
            // D26: sent or failed for good, a message keeps no body (they hold the live
            // accept link).
            DeliveryUpdate::Failed { at, reason } => b.push(
                "UPDATE outbox SET state = 'failed', state_at = ?, failure = ?, last_error = ?, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ? AND id = ? AND state = 'pending'",
                Expect::Any,
            )
            .bind(nanos(*at)?)
            .bind(reason.clone())
            .bind(reason.clone()),
        }
        .bind(t.clone())
        .bind(m.clone());
        // Not pending any more is fine (a late result changes nothing); no such message is
        // not.
        b.push(
            "SELECT 1 FROM outbox WHERE tenant_id = ? AND id = ?",
            Expect::Any,
        )
        .bind(t.clone())
        .bind(m);
        // Nothing was written when the message does not exist.
        if self.write(b, None, &t, 0).await?.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{Connection, SqliteConnection};
    use tenantry_store::StoreError;

    use super::map_err;

    /// A real SQLITE_BUSY (a second writer while the first holds the write lock, no busy
    /// wait) becomes the typed, retryable [`StoreError::Busy`].
    #[tokio::test]
    async fn d16_sqlite_busy_is_typed_and_retryable() {
        let dir = std::env::temp_dir().join(format!("tenantry-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.join("b.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let mut first = SqliteConnection::connect_with(&options).await.unwrap();
        let mut second = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .execute(&mut first)
            .await
            .unwrap();
        let e = sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut second)
            .await
            .unwrap_err();
        let mapped = map_err(e);
        assert!(
            matches!(
                mapped,
                StoreError::Busy {
                    backend: "sqlite",
                    ..
                }
            ),
            "{mapped:?}"
        );
        assert!(mapped.is_retryable());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
