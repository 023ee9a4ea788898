//! The write path: a change, an audit append, a sign-in, an outbox claim or a delivery
//! result is one [`Job`] on the writer thread (`BEGIN IMMEDIATE` … `COMMIT`, prepared and
//! cached statements, row counts checked in Rust between them); and the mapping of SQLite's
//! errors into [`StoreError`].

use rusqlite::{OptionalExtension, Transaction, params};
use tenantry_core::{AuditEvent, Change, MessageId, Status, TenantId, UserId, Write};
use tenantry_mail::Message;
use tenantry_store::sql::USER_COLUMNS;
use tenantry_store::{Constraint, DeliveryUpdate, OutboxRecord, SignInOutcome, StoreError};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::cache::{Entry, apply_change};
use crate::conn::Job;
use crate::rows::{self, BACKEND, backend, id_text, nanos, outbox_from_row, perms_text};

/// Maps what SQLite said (its primary result code and message) into the shared error:
/// constraint names into [`Constraint`], lock time-outs into [`StoreError::Busy`]; `None`
/// for anything else.
fn classify(primary: i32, msg: &str) -> Option<StoreError> {
    // SQLITE_BUSY (5) and SQLITE_LOCKED (6).
    if primary == 5 || primary == 6 {
        return Some(StoreError::Busy {
            backend: BACKEND,
            reason: msg.to_owned(),
        });
    }
    let constraint = if msg.contains("users.tenant_id, users.email_key") {
        Constraint::UserEmail
    } else if msg.contains("users.identity, users.tenant_id") {
        // D28: the unique index `users_identity` (migration 7).
        Constraint::UserIdentity
    } else if msg.contains("users.tenant_id, users.id") || msg.contains("user id reused") {
        Constraint::UserId
    } else if msg.contains("role_templates.tenant_id, role_templates.name_key") {
        Constraint::TemplateName
    } else if msg.contains("role_templates.tenant_id, role_templates.id") {
        Constraint::TemplateId
    } else if msg.contains("invitations.token_hash") {
        Constraint::TokenHash
    } else if msg.contains("tenants.id") {
        Constraint::TenantId
    } else if msg.contains("seat limit") {
        Constraint::SeatLimit
    } else if msg.contains("FOREIGN KEY") {
        Constraint::MissingRow
    } else if msg.contains("CHECK constraint failed") && msg.contains("active_admins") {
        Constraint::LastAdmin
    } else if msg.contains("constraint failed") || msg.contains("tenantry:") {
        Constraint::Schema
    } else {
        return None;
    };
    Some(StoreError::Conflict { constraint })
}

/// Maps a rusqlite error into the shared error (see [`classify`]); anything unknown is
/// [`StoreError::Backend`].
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let text = msg.as_deref().unwrap_or_default();
        if let Some(mapped) = classify(f.extended_code & 0xff, text) {
            return mapped;
        }
    }
    backend(e)
}

fn conflict(constraint: Constraint) -> StoreError {
    StoreError::Conflict { constraint }
}

/// Runs one cached statement; returns the rows it changed.
fn exec(tx: &Transaction<'_>, sql: &str, p: impl rusqlite::Params) -> Result<usize, StoreError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute(p))
        .map_err(map_err)
}

/// As [`exec`] for a statement that must change exactly one row, else `missing`.
fn exec_one(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
    missing: StoreError,
) -> Result<(), StoreError> {
    if exec(tx, sql, p)? == 1 {
        Ok(())
    } else {
        Err(missing)
    }
}

fn missing_row() -> StoreError {
    conflict(Constraint::MissingRow)
}

/// Runs the statements of one write. An update or delete of a row that is gone is a
/// [`Constraint::MissingRow`] conflict.
fn run_write(tx: &Transaction<'_>, tenant: TenantId, t: &str, w: &Write) -> Result<(), StoreError> {
    let foreign = |id: TenantId| {
        if id == tenant {
            Ok(())
        } else {
            Err(missing_row())
        }
    };
    match w {
        Write::InsertTenant(_) => return Err(conflict(Constraint::TenantId)),
        Write::UpdateTenant(tn) => {
            foreign(tn.id)?;
            exec_one(
                tx,
                "UPDATE tenants SET name = ?1, user_limit = ?2 WHERE id = ?3",
                params![tn.name, tn.user_limit.map(i64::from), t],
                missing_row(),
            )?;
        }
        Write::InsertUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            exec(
                tx,
                "INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id, crm_access, grants, created_at, last_login, login_key, invite_expires_at, identity) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    t,
                    id_text(u.id.as_uuid()),
                    u.email.as_str(),
                    u.email.key(),
                    u.role.as_str(),
                    u.status.as_str(),
                    u.template_id.map(|x| id_text(x.as_uuid())),
                    u.crm_access,
                    perms_text(u.grants),
                    nanos(u.created_at)?,
                    login,
                    login.unwrap_or(i64::MIN),
                    u.invite_expires_at.map(nanos).transpose()?,
                    u.identity.as_ref().map(|i| i.as_str()),
                ],
            )?;
        }
        Write::UpdateUser(u) => {
            foreign(u.tenant_id)?;
            let login = u.last_login.map(nanos).transpose()?;
            exec_one(
                tx,
                "UPDATE users SET email = ?1, email_key = ?2, role = ?3, status = ?4, template_id = ?5, crm_access = ?6, grants = ?7, \
                 last_login = ?8, login_key = ?9, invite_expires_at = ?10, identity = ?11 WHERE tenant_id = ?12 AND id = ?13",
                params![
                    u.email.as_str(),
                    u.email.key(),
                    u.role.as_str(),
                    u.status.as_str(),
                    u.template_id.map(|x| id_text(x.as_uuid())),
                    u.crm_access,
                    perms_text(u.grants),
                    login,
                    login.unwrap_or(i64::MIN),
                    u.invite_expires_at.map(nanos).transpose()?,
                    u.identity.as_ref().map(|i| i.as_str()),
                    t,
                    id_text(u.id.as_uuid()),
                ],
                missing_row(),
            )?;
        }
        Write::DeleteUser(tomb) => {
            let id = id_text(tomb.user_id.as_uuid());
            exec_one(
                tx,
                "DELETE FROM users WHERE tenant_id = ?1 AND id = ?2",
                params![t, id],
                missing_row(),
            )?;
            exec(
                tx,
                "INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    t,
                    id,
                    tomb.email.as_str(),
                    nanos(tomb.deleted_at)?,
                    serde_json::to_string(&tomb.deleted_by).map_err(backend)?,
                ],
            )?;
        }
        Write::InsertTemplate(tp) => {
            foreign(tp.tenant_id)?;
            exec(
                tx,
                "INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t,
                    id_text(tp.id.as_uuid()),
                    tp.name.as_str(),
                    tp.name.key(),
                    perms_text(tp.permissions),
                    nanos(tp.created_at)?,
                    nanos(tp.updated_at)?,
                ],
            )?;
        }
        Write::UpdateTemplate(tp) => {
            foreign(tp.tenant_id)?;
            exec_one(
                tx,
                "UPDATE role_templates SET name = ?1, name_key = ?2, permissions = ?3, updated_at = ?4 WHERE tenant_id = ?5 AND id = ?6",
                params![
                    tp.name.as_str(),
                    tp.name.key(),
                    perms_text(tp.permissions),
                    nanos(tp.updated_at)?,
                    t,
                    id_text(tp.id.as_uuid()),
                ],
                missing_row(),
            )?;
        }
        Write::DeleteTemplate(id) => {
            // D12: users still referencing it fail the foreign key.
            let n = exec(
                tx,
                "DELETE FROM role_templates WHERE tenant_id = ?1 AND id = ?2",
                params![t, id_text(id.as_uuid())],
            )
            .map_err(|e| match e {
                StoreError::Conflict {
                    constraint: Constraint::MissingRow,
                } => conflict(Constraint::TemplateReferenced),
                other => other,
            })?;
            if n != 1 {
                return Err(missing_row());
            }
        }
        Write::MoveTemplateUsers { from, to } => {
            exec(
                tx,
                "UPDATE users SET template_id = ?1 WHERE tenant_id = ?2 AND template_id = ?3",
                params![to.map(|x| id_text(x.as_uuid())), t, id_text(from.as_uuid())],
            )?;
        }
        Write::InsertInvitation(inv) => {
            foreign(inv.tenant_id)?;
            exec_one(
                tx,
                "INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at, expires_at, failed_attempts) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = ?2 AND id = ?3)",
                params![
                    &inv.token_hash.0[..],
                    t,
                    id_text(inv.user_id.as_uuid()),
                    rows::kind_text(inv.kind),
                    rows::state_text(inv.state),
                    nanos(inv.created_at)?,
                    nanos(inv.expires_at)?,
                    i64::from(inv.failed_attempts),
                ],
                missing_row(),
            )?;
        }
        Write::RevokeInvitations(user) => {
            exec(
                tx,
                "UPDATE invitations SET state = 'revoked' WHERE tenant_id = ?1 AND user_id = ?2 AND state = 'pending'",
                params![t, id_text(user.as_uuid())],
            )?;
        }
        Write::UseInvitation(hash) => {
            exec_one(
                tx,
                "UPDATE invitations SET state = 'used' WHERE tenant_id = ?1 AND token_hash = ?2",
                params![t, &hash.0[..]],
                missing_row(),
            )?;
        }
        Write::FailAcceptAttempt {
            token_hash,
            failed_attempts,
            revoke,
        } => {
            // D24: only a pending invitation of this tenant counts attempts; a missing or
            // no longer pending one fails the whole change.
            exec_one(
                tx,
                "UPDATE invitations SET failed_attempts = ?1, state = CASE WHEN ?2 THEN 'revoked' ELSE state END \
                 WHERE tenant_id = ?3 AND token_hash = ?4 AND state = 'pending'",
                params![i64::from(*failed_attempts), *revoke, t, &token_hash.0[..]],
                missing_row(),
            )?;
        }
        #[allow(unreachable_patterns)]
        _ => return Err(conflict(Constraint::Schema)),
    }
    Ok(())
}

/// Reserves `events.len()` audit sequence numbers and inserts the events under them;
/// returns the last. With `counters`, the reservation also checks that the counters the
/// triggers kept equal the change's ([`Constraint::Counters`] otherwise); without, a
/// missing tenant is [`StoreError::NotFound`].
fn append_events(
    tx: &Transaction<'_>,
    t: &str,
    events: &[AuditEvent],
    counters: Option<tenantry_core::Counters>,
) -> Result<i64, StoreError> {
    let n = i64::try_from(events.len()).map_err(backend)?;
    let last: Option<i64> = match counters {
        Some(c) => tx
            .prepare_cached(
                "UPDATE tenants SET audit_seq = audit_seq + ?1 WHERE id = ?2 AND seats_used = ?3 AND active_admins = ?4 RETURNING audit_seq",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![n, t, i64::from(c.seats_used), i64::from(c.active_admins)],
                    |r| r.get(0),
                )
                .optional()
            }),
        None => tx
            .prepare_cached(
                "UPDATE tenants SET audit_seq = audit_seq + ?1 WHERE id = ?2 RETURNING audit_seq",
            )
            .and_then(|mut s| s.query_row(params![n, t], |r| r.get(0)).optional()),
    }
    .map_err(map_err)?;
    let Some(last) = last else {
        return Err(match counters {
            Some(_) => conflict(Constraint::Counters),
            None => StoreError::NotFound,
        });
    };
    for (i, e) in (1..).zip(events) {
        exec(
            tx,
            "INSERT INTO audit_log (tenant_id, seq, at, action, event) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                t,
                last - n + i,
                nanos(e.at)?,
                serde_json::to_string(&e.action).map_err(backend)?,
                serde_json::to_string(e).map_err(backend)?,
            ],
        )?;
    }
    Ok(last)
}

/// Inserts the outbox rows of the change's messages ([mail delivery (D17)](tenantry_core::Rule::MailDelivery): queued in the same commit).
fn insert_mail(
    tx: &Transaction<'_>,
    outbox: &[Message],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let at = nanos(now)?;
    for m in outbox {
        exec(
            tx,
            "INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html, state, attempts, next_attempt_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
            params![
                id_text(m.tenant_id.as_uuid()),
                id_text(m.id.as_uuid()),
                id_text(m.user_id.as_uuid()),
                m.to,
                m.subject,
                m.text,
                m.html,
                at,
            ],
        )?;
    }
    Ok(())
}

/// A change with its outbox messages ([`tenantry_store::Store::commit`]).
struct Commit {
    change: Change,
    outbox: Vec<Message>,
}

impl Job for Commit {
    type Out = ();

    fn tenant(&self) -> Option<TenantId> {
        Some(self.change.tenant_id)
    }

    fn run(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let change = &self.change;
        let tenant = change.tenant_id;
        let t = id_text(tenant.as_uuid());
        let version = i64::try_from(change.counters.version).map_err(backend)?;
        let mut writes = change.writes.iter().peekable();
        if let Some(Write::InsertTenant(tn)) = writes.peek() {
            if tn.id != tenant || change.expected_version != 0 {
                return Err(missing_row());
            }
            exec(
                tx,
                "INSERT INTO tenants (id, name, user_limit, created_at, version) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    t,
                    tn.name,
                    tn.user_limit.map(i64::from),
                    nanos(tn.created_at)?,
                    version
                ],
            )?;
            writes.next();
        } else {
            // D16: the compare-and-set of the version comes first, so a stale change is
            // reported as such (and retried) before any of its writes could collide.
            let expected = i64::try_from(change.expected_version).map_err(backend)?;
            let n = exec(
                tx,
                "UPDATE tenants SET version = ?1 WHERE id = ?2 AND version = ?3",
                params![version, t, expected],
            )?;
            if n != 1 {
                let exists = tx
                    .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")
                    .and_then(|mut s| s.exists(params![t]))
                    .map_err(map_err)?;
                return Err(if exists {
                    StoreError::VersionMismatch {
                        expected: change.expected_version,
                    }
                } else {
                    StoreError::NotFound
                });
            }
        }
        for w in writes {
            run_write(tx, tenant, &t, w)?;
        }
        append_events(tx, &t, &change.events, Some(change.counters))?;
        let now = change
            .events
            .first()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.at);
        insert_mail(tx, &self.outbox, now)
    }

    fn update(&self, entry: &mut Entry, _: &()) -> bool {
        apply_change(entry, &self.change)
    }
}

/// A sign-in ([`tenantry_store::Store::record_sign_in`], D27).
struct SignIn {
    tenant: TenantId,
    user: UserId,
    at: OffsetDateTime,
    event: AuditEvent,
}

impl Job for SignIn {
    type Out = SignInOutcome;

    fn tenant(&self) -> Option<TenantId> {
        Some(self.tenant)
    }

    fn run(&mut self, tx: &Transaction<'_>) -> Result<SignInOutcome, StoreError> {
        let t = id_text(self.tenant.as_uuid());
        let id = id_text(self.user.as_uuid());
        let user = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND id = ?2"
                ))
                .map_err(map_err)?;
            rows::one(&mut stmt, params![t, id], rows::user_from_row)?
        };
        let Some(mut user) = user else {
            return Ok(SignInOutcome::NotFound);
        };
        if user.status != Status::Active {
            return Ok(SignInOutcome::NotActive(user.status));
        }
        // A later sign-in already recorded is kept.
        let at = match user.last_login {
            Some(later) if later > self.at => later,
            _ => self.at.to_offset(time::UtcOffset::UTC),
        };
        let login = nanos(at)?;
        exec_one(
            tx,
            "UPDATE users SET last_login = ?1, login_key = ?1 WHERE tenant_id = ?2 AND id = ?3 AND status = 'active'",
            params![login, t, id],
            missing_row(),
        )?;
        append_events(tx, &t, std::slice::from_ref(&self.event), None)?;
        user.last_login = Some(at);
        Ok(SignInOutcome::Recorded(user))
    }

    fn update(&self, entry: &mut Entry, out: &SignInOutcome) -> bool {
        if let SignInOutcome::Recorded(u) = out
            && let Some(cached) = entry.users.get_mut(&u.id)
        {
            cached.last_login = u.last_login;
        }
        true
    }
}

/// A job that touches no cached row, from a closure.
struct Plain<F>(Option<F>);

impl<T, F> Job for Plain<F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
{
    type Out = T;

    fn tenant(&self) -> Option<TenantId> {
        None
    }

    fn run(&mut self, tx: &Transaction<'_>) -> Result<T, StoreError> {
        match self.0.take() {
            Some(f) => f(tx),
            None => Err(crate::conn::closed()),
        }
    }

    fn update(&self, _: &mut Entry, _: &T) -> bool {
        true
    }
}

/// Claims the outbox rows `sql` selects (it ends in `RETURNING *`).
fn claimed(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(map_err)?;
    rows::all(&mut stmt, p, outbox_from_row)
}

impl SqliteStore {
    async fn plain<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.conns.write(Plain(Some(f))).await
    }

    pub(crate) async fn commit_inner(
        &self,
        change: &Change,
        outbox: &[Message],
    ) -> Result<(), StoreError> {
        self.conns
            .write(Commit {
                change: change.clone(),
                outbox: outbox.to_vec(),
            })
            .await
    }

    pub(crate) async fn record_sign_in_inner(
        &self,
        tenant: TenantId,
        user: UserId,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<SignInOutcome, StoreError> {
        self.conns
            .write(SignIn {
                tenant,
                user,
                at,
                event: event.clone(),
            })
            .await
    }

    pub(crate) async fn append_audit_inner(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let event = event.clone();
        let last = self
            .plain(move |tx| {
                let t = id_text(event.tenant_id.as_uuid());
                append_events(tx, &t, std::slice::from_ref(&event), None)
            })
            .await?;
        u64::try_from(last).map_err(backend)
    }

    pub(crate) async fn claim_due_mail_inner(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.plain(move |tx| {
            claimed(
                tx,
                "UPDATE outbox SET next_attempt_at = ?1 WHERE tenant_id = ?2 AND id IN \
                 (SELECT id FROM outbox WHERE tenant_id = ?2 AND state = 'pending' AND next_attempt_at <= ?3 ORDER BY next_attempt_at, id LIMIT ?4) \
                 RETURNING *",
                params![
                    rows::nanos_clamped(lease_until),
                    id_text(tenant.as_uuid()),
                    rows::nanos_clamped(now),
                    i64::from(limit)
                ],
            )
        })
        .await
    }

    pub(crate) async fn claim_message_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        // One statement on the one writer: of two claims, the second finds the lease.
        let rows = self
            .plain(move |tx| {
                claimed(
                    tx,
                    "UPDATE outbox SET next_attempt_at = ?1 \
                     WHERE tenant_id = ?2 AND id = ?3 AND state = 'pending' AND next_attempt_at <= ?4 \
                     RETURNING *",
                    params![
                        rows::nanos_clamped(lease_until),
                        id_text(tenant.as_uuid()),
                        id_text(id.as_uuid()),
                        rows::nanos_clamped(now)
                    ],
                )
            })
            .await?;
        Ok(rows.into_iter().next())
    }

    pub(crate) async fn record_delivery_inner(
        &self,
        tenant: TenantId,
        id: MessageId,
        update: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let update = update.clone();
        self.plain(move |tx| {
            let t = id_text(tenant.as_uuid());
            let m = id_text(id.as_uuid());
            match &update {
                DeliveryUpdate::Sent { at } => exec(
                    tx,
                    "UPDATE outbox SET state = 'sent', state_at = ?1, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ?2 AND id = ?3 AND state = 'pending'",
                    params![nanos(*at)?, t, m],
                )?,
                DeliveryUpdate::Retry { retry_at, reason } => exec(
                    tx,
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?1, last_error = ?2, attempts = attempts + 1 WHERE tenant_id = ?3 AND id = ?4 AND state = 'pending'",
                    params![rows::nanos_clamped(*retry_at), reason, t, m],
                )?,
                // D26: sent or failed for good, a message keeps no body (they hold the live
                // accept link).
                DeliveryUpdate::Failed { at, reason } => exec(
                    tx,
                    "UPDATE outbox SET state = 'failed', state_at = ?1, failure = ?2, last_error = ?2, attempts = attempts + 1, body_text = '', body_html = '' WHERE tenant_id = ?3 AND id = ?4 AND state = 'pending'",
                    params![nanos(*at)?, reason, t, m],
                )?,
            };
            // Not pending any more is fine (a late result changes nothing); no such message
            // is not (and then nothing was written).
            let exists = tx
                .prepare_cached("SELECT 1 FROM outbox WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut s| s.exists(params![t, m]))
                .map_err(map_err)?;
            if exists {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::time::Duration;

    use tenantry_store::StoreError;

    use super::map_err;

    /// A real SQLITE_BUSY (a second writer while the first holds the write lock, no busy
    /// wait) becomes the typed, retryable [`StoreError::Busy`].
    #[test]
    fn d16_sqlite_busy_is_typed_and_retryable() {
        let dir = std::env::temp_dir().join(format!("tenantry-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = rusqlite::Connection::open(dir.join("b.db")).unwrap();
        let second = rusqlite::Connection::open(dir.join("b.db")).unwrap();
        second.busy_timeout(Duration::ZERO).unwrap();
        first
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)",
            )
            .unwrap();
        let e = second.execute_batch("BEGIN IMMEDIATE").unwrap_err();
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
