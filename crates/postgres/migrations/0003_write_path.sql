-- tenantry schema, version 3 (PostgreSQL): the write path in one round trip, and sign-ins
-- outside the tenant's version (D27).
--
-- audit_heads: the last audit seq handed out per tenant. Every append (a commit's events, a
-- refused attempt, a sign-in) takes the next numbers by updating this row, whose lock it
-- holds to its end: seqs become visible in the order they were handed out (D13), and a
-- sign-in appends its record without the tenant row's lock that commits hold.
CREATE TABLE audit_heads (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
    seq       bigint NOT NULL CHECK (seq >= 0)
);
INSERT INTO audit_heads (tenant_id, seq)
SELECT t.id, COALESCE((SELECT MAX(a.seq) FROM audit_log a WHERE a.tenant_id = t.id), 0)
FROM tenants t;

-- Every tenant has its head from its first moment, however it was inserted.
CREATE FUNCTION tenantry_tenants_after_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO audit_heads (tenant_id, seq) VALUES (NEW.id, 0);
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_after_insert AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry_tenants_after_insert();

-- The seat-limit check locks the tenant row FOR NO KEY UPDATE (was FOR UPDATE): the same
-- exclusion between commits, without waiting for the key-share locks that foreign keys of
-- audit and sign-in rows take on the tenant.
CREATE OR REPLACE FUNCTION tenantry_users_before_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    lim  bigint;
    used bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM tombstones WHERE tenant_id = NEW.tenant_id AND user_id = NEW.id) THEN
        RAISE EXCEPTION 'tenantry: user id reused'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'users_id_not_reused',
                  TABLE = 'users';
    END IF;
    SELECT user_limit, seats_used INTO lim, used FROM tenants WHERE id = NEW.tenant_id FOR NO KEY UPDATE;
    IF lim IS NOT NULL AND used >= lim THEN
        RAISE EXCEPTION 'tenantry: seat limit reached'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'users_seat_limit',
                  TABLE = 'users';
    END IF;
    RETURN NEW;
END
$$;

-- Appends events after the tenant's head; returns the last seq written (0 for none). Raises
-- tenantry_missing_row when the tenant has no head (no such tenant).
CREATE FUNCTION tenantry_append_events(p_tenant uuid, p_at bigint[], p_action text[], p_event text[])
RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n    bigint := COALESCE(cardinality(p_at), 0);
    last bigint;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    UPDATE audit_heads SET seq = seq + n WHERE tenant_id = p_tenant RETURNING seq INTO last;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenantry: no such tenant'
            USING ERRCODE = 'TNF01';
    END IF;
    INSERT INTO audit_log (tenant_id, seq, at, action, event)
    SELECT p_tenant, last - n + e.ord, e.at, e.action, e.event
    FROM unnest(p_at, p_action, p_event) WITH ORDINALITY AS e(at, action, event, ord);
    RETURN last;
END
$$;

CREATE FUNCTION tenantry_json_list(j jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT COALESCE(ARRAY(SELECT jsonb_array_elements_text(j)), '{}'::text[])
$$;

-- One whole commit (D16), in the one statement that calls it: lock the tenant row (or insert
-- the new tenant), compare its version, apply the writes in order, check the trigger-kept
-- counters, set the version, append the events and queue the mail. Refusals:
-- TNF01 (no such tenant), TNV01 (the version moved on), and the constraints' own errors
-- (tenantry_missing_row, tenantry_counters, tenantry_template_referenced and the schema's).
CREATE FUNCTION tenantry_commit(
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
                               invite_expires_at)
            VALUES (p_tenant, (w->>'id')::uuid, w->>'email', w->>'email_key', w->>'role',
                    w->>'status', (w->>'template_id')::uuid, (w->>'crm')::boolean,
                    tenantry_json_list(w->'grants'), (w->>'created_at')::bigint,
                    (w->>'last_login')::bigint,
                    COALESCE((w->>'last_login')::bigint, -9223372036854775808),
                    (w->>'invite_expires_at')::bigint);
        WHEN 'update_user' THEN
            UPDATE users SET email = w->>'email', email_key = w->>'email_key', role = w->>'role',
                status = w->>'status', template_id = (w->>'template_id')::uuid,
                crm_access = (w->>'crm')::boolean, grants = tenantry_json_list(w->'grants'),
                last_login = (w->>'last_login')::bigint,
                login_key = COALESCE((w->>'last_login')::bigint, -9223372036854775808),
                invite_expires_at = (w->>'invite_expires_at')::bigint
            WHERE tenant_id = p_tenant AND id = (w->>'id')::uuid;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such user'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
            END IF;
        WHEN 'delete_user' THEN
            -- The row goes, its tombstone stays (D11).
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
                    tenantry_json_list(w->'permissions'), (w->>'created_at')::bigint,
                    (w->>'updated_at')::bigint);
        WHEN 'update_template' THEN
            UPDATE role_templates SET name = w->>'name', name_key = w->>'name_key',
                permissions = tenantry_json_list(w->'permissions'),
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
            INSERT INTO invitations (token_hash, tenant_id, user_id, kind, state, created_at,
                                     expires_at, failed_attempts)
            SELECT decode(w->>'token_hash', 'hex'), p_tenant, (w->>'user_id')::uuid, w->>'kind',
                   w->>'state', (w->>'created_at')::bigint, (w->>'expires_at')::bigint,
                   (w->>'failed_attempts')::bigint
            WHERE EXISTS (SELECT 1 FROM users WHERE tenant_id = p_tenant
                                               AND id = (w->>'user_id')::uuid);
            IF NOT FOUND THEN
                RAISE EXCEPTION 'tenantry: no such user'
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'tenantry_missing_row';
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
    last := tenantry_append_events(p_tenant, p_at, p_action, p_event);
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
