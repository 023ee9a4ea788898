-- tenantry schema, version 7 (PostgreSQL): an invite's commit looks nothing up (issue 14).
--
-- The same tenantry_commit (signature, writes, checks, errors and order as migration 6's),
-- except that an invitation of the user the same commit inserted is written without the
-- lookup of that user: the insert has just succeeded in this transaction, and no write of
-- the commit removed the row since (a delete_user forgets it), so the lookup could only
-- find it. The lookup stays for every other invitation (a resend: the user must exist).
-- On a server without statistics (autovacuum off) that lookup's cached plan walked the
-- tenant's whole range of users_by_status, one index entry per user of the tenant, at every
-- invite; it is gone from an invite's commit rather than planned better.
CREATE OR REPLACE FUNCTION tenantry_commit(
    p_tenant uuid, p_expected bigint, p_version bigint, p_seats bigint, p_admins bigint,
    p_new_tenant jsonb, p_writes jsonb,
    p_at bigint[], p_action text[], p_event text[],
    p_mail_id uuid[], p_mail_user uuid[], p_mail_to text[], p_mail_subject text[],
    p_mail_text text[], p_mail_html text[], p_now bigint)
RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v      bigint;
    w      jsonb;
    seats  bigint;
    admins bigint;
    last   bigint;
    n      bigint;
    -- The user the last insert_user of this commit wrote (NULL: none, or deleted since).
    inserted uuid;
BEGIN
    IF p_new_tenant IS NOT NULL THEN
        INSERT INTO tenants (id, name, user_limit, created_at, version)
        VALUES (p_tenant, p_new_tenant->>'name', (p_new_tenant->>'user_limit')::bigint,
                (p_new_tenant->>'created_at')::bigint, 0);
    ELSE
        SELECT version INTO v FROM tenants WHERE id = p_tenant FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenantry: no such tenant' USING ERRCODE = 'TNF01';
        END IF;
        IF v <> p_expected THEN
            RAISE EXCEPTION 'tenantry: the tenant changed concurrently' USING ERRCODE = 'TNV01';
        END IF;
    END IF;
    FOR w IN SELECT value FROM jsonb_array_elements(p_writes) LOOP
        CASE w->>'op'
        WHEN 'update_tenant' THEN
            UPDATE tenants SET name = w->>'name', user_limit = (w->>'user_limit')::bigint
            WHERE id = p_tenant;
        WHEN 'insert_user' THEN
            INSERT INTO users (tenant_id, id, email, email_key, role, status, template_id,
                               crm_access, grants, created_at, last_login, login_key,
                               invite_expires_at, identity)
            VALUES (p_tenant, (w->>'id')::uuid, w->>'email', w->>'email_key', w->>'role',
                    w->>'status', (w->>'template_id')::uuid, (w->>'crm')::boolean,
                    CASE WHEN w ? 'grants' THEN ARRAY(SELECT jsonb_array_elements_text(w->'grants')) END, (w->>'created_at')::bigint,
                    (w->>'last_login')::bigint,
                    COALESCE((w->>'last_login')::bigint, -9223372036854775808),
                    (w->>'invite_expires_at')::bigint, w->>'identity');
            inserted := (w->>'id')::uuid;
        WHEN 'update_user' THEN
            UPDATE users SET email = w->>'email', email_key = w->>'email_key', role = w->>'role',
                status = w->>'status', template_id = (w->>'template_id')::uuid,
                crm_access = (w->>'crm')::boolean, grants = CASE WHEN w ? 'grants' THEN ARRAY(SELECT jsonb_array_elements_text(w->'grants')) END,
                last_login = (w->>'last_login')::bigint,
                login_key = COALESCE((w->>'last_login')::bigint, -9223372036854775808),
                invite_expires_at = (w->>'invite_expires_at')::bigint,
                identity = w->>'identity'
            WHERE tenant_id = p_tenant AND id = (w->>'id')::uuid;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such user'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'delete_user' THEN
            -- The row goes, its tombstone stays (D11).
            inserted := NULL;
            WITH gone AS (DELETE FROM users WHERE tenant_id = p_tenant AND id = (w->>'id')::uuid
                          RETURNING tenant_id, id)
            INSERT INTO tombstones (tenant_id, user_id, email, deleted_at, deleted_by)
            SELECT tenant_id, id, w->>'email', (w->>'deleted_at')::bigint, w->>'deleted_by'
            FROM gone;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such user'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'insert_template' THEN
            INSERT INTO role_templates (tenant_id, id, name, name_key, permissions, created_at,
                                        updated_at)
            VALUES (p_tenant, (w->>'id')::uuid, w->>'name', w->>'name_key',
                    CASE WHEN w ? 'permissions' THEN ARRAY(SELECT jsonb_array_elements_text(w->'permissions')) END, (w->>'created_at')::bigint,
                    (w->>'updated_at')::bigint);
        WHEN 'update_template' THEN
            UPDATE role_templates SET name = w->>'name', name_key = w->>'name_key',
                permissions = CASE WHEN w ? 'permissions' THEN ARRAY(SELECT jsonb_array_elements_text(w->'permissions')) END,
                updated_at = (w->>'updated_at')::bigint
            WHERE tenant_id = p_tenant AND id = (w->>'id')::uuid;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such template'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'delete_template' THEN
            -- D12: users still referencing it refuse the delete (the foreign key would too).
            IF EXISTS (SELECT 1 FROM users WHERE tenant_id = p_tenant
                                              AND template_id = (w->>'id')::uuid) THEN
                RAISE EXCEPTION 'tenantry: template still referenced'
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'tenantry_template_referenced';
            END IF;
            DELETE FROM role_templates WHERE tenant_id = p_tenant AND id = (w->>'id')::uuid;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such template'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'move_template_users' THEN
            UPDATE users SET template_id = (w->>'to')::uuid
            WHERE tenant_id = p_tenant AND template_id = (w->>'from')::uuid;
        WHEN 'insert_invitation' THEN
            IF inserted IS NOT NULL AND (w->>'user_id')::uuid = inserted THEN
                -- An invite: its user was inserted by this commit (above), no lookup.
                INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state,
                                         created_at, expires_at, failed_attempts)
                VALUES (decode(w->>'token_hash', 'hex'), p_tenant, inserted, w->>'kind',
                        w->>'state', (w->>'created_at')::bigint, (w->>'expires_at')::bigint,
                        (w->>'failed_attempts')::bigint);
            ELSE
                INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state,
                                         created_at, expires_at, failed_attempts)
                SELECT decode(w->>'token_hash', 'hex'), p_tenant, (w->>'user_id')::uuid,
                       w->>'kind', w->>'state', (w->>'created_at')::bigint,
                       (w->>'expires_at')::bigint, (w->>'failed_attempts')::bigint
                WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = p_tenant
                                                   AND id = (w->>'user_id')::uuid);
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'tenantry: no such user'
                        USING ERRCODE = 'foreign_key_violation',
                              CONSTRAINT = 'tenantry_missing_row';
                END IF;
            END IF;
        WHEN 'revoke_invitations' THEN
            UPDATE invitations SET state = 'revoked'
            WHERE tenant_id = p_tenant AND user_id = (w->>'user_id')::uuid AND state = 'pending';
        WHEN 'use_invitation' THEN
            UPDATE invitations SET state = 'used'
            WHERE tenant_id = p_tenant AND token_hash = decode(w->>'token_hash', 'hex');
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such invitation'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'fail_accept_attempt' THEN
            -- D24: only a pending invitation of this tenant counts attempts.
            UPDATE invitations SET failed_attempts = (w->>'failed_attempts')::bigint,
                state = CASE WHEN (w->>'revoke')::boolean THEN 'revoked' ELSE state END
            WHERE tenant_id = p_tenant AND token_hash = decode(w->>'token_hash', 'hex')
              AND state = 'pending';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no pending invitation'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        ELSE
            RAISE EXCEPTION 'tenantry: unknown write %', w->>'op'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'tenantry_unknown_write';
        END CASE;
    END LOOP;
    UPDATE tenants SET version = p_version WHERE id = p_tenant
    RETURNING seats_used, active_admins INTO seats, admins;
    IF seats <> p_seats OR admins <> p_admins THEN
        RAISE EXCEPTION 'tenantry: counters differ from the rows'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenantry_counters';
    END IF;
    -- The events after the tenant's audit head (tenantry_append_events' body, in line).
    n := COALESCE(cardinality(p_at), 0);
    IF n = 0 THEN
        last := 0;
    ELSE
        UPDATE audit_heads SET seq = seq + n WHERE tenant_id = p_tenant RETURNING seq INTO last;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenantry: no such tenant' USING ERRCODE = 'TNF01';
        END IF;
        INSERT INTO audit_log (tenant_id, seq, at, action, event)
        SELECT p_tenant, last - n + e.ord, e.at, e.action, e.event
        FROM unnest(p_at, p_action, p_event) WITH ORDINALITY AS e(at, action, event, ord);
    END IF;
    IF COALESCE(cardinality(p_mail_id), 0) > 0 THEN
        INSERT INTO outbox (tenant_id, id, user_id, recipient, subject, body_text, body_html,
                            state, attempts, next_attempt_at, created_at)
        SELECT p_tenant, m.id, m.user_id, m.recipient, m.subject, m.body_text, m.body_html,
               'pending', 0, p_now, p_now
        FROM unnest(p_mail_id, p_mail_user, p_mail_to, p_mail_subject, p_mail_text, p_mail_html)
             AS m(id, user_id, recipient, subject, body_text, body_html);
    END IF;
    RETURN last;
END
$$;
