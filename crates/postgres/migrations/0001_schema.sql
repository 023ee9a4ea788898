-- tenantry schema, version 1 (PostgreSQL). The same tables, keys and rules as the SQLite
-- schema, in PostgreSQL's terms.
--
-- Times are Unix nanoseconds (BIGINT, as in SQLite, so the orders are identical); ids are
-- native UUIDs (compared byte by byte, like the Rust ids); permission sets are text[] of
-- sorted "category:action" strings (D4, never raw bits); keys that are sorted on are
-- COLLATE "C" so the order is the byte order the reference store uses, whatever the
-- database's collation.
--
-- The functions pin their search_path to the one the migration ran with, so the triggers
-- keep working for connections whose search_path differs.

-- D4: a permission list holds known "category:action" strings, sorted, without repeats.
CREATE FUNCTION tenantry_permission_list_ok(p text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT p <@ ARRAY[
        'conversations:view', 'conversations:create', 'conversations:edit', 'conversations:delete', 'conversations:manage',
        'settings:view', 'settings:create', 'settings:edit', 'settings:delete', 'settings:manage',
        'users:view', 'users:create', 'users:edit', 'users:delete', 'users:manage',
        'analytics:view', 'analytics:create', 'analytics:edit', 'analytics:delete', 'analytics:manage',
        'integrations:view', 'integrations:create', 'integrations:edit', 'integrations:delete', 'integrations:manage',
        'experiments:view', 'experiments:create', 'experiments:edit', 'experiments:delete', 'experiments:manage'
    ]::text[]
    AND p = ARRAY(SELECT DISTINCT x COLLATE "C" FROM unnest(p) AS u(x) ORDER BY 1)
$$;

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    user_limit    bigint CHECK (user_limit IS NULL OR user_limit BETWEEN 0 AND 4294967295),
    created_at    bigint NOT NULL,
    version       bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    -- Kept by the triggers below, never by the application (D8, D9).
    seats_used    bigint NOT NULL DEFAULT 0 CHECK (seats_used >= 0),
    active_admins bigint NOT NULL DEFAULT 0 CHECK (active_admins >= 0),
    -- D8: a tenant that has users keeps at least one active admin.
    CONSTRAINT tenants_last_admin CHECK (seats_used = 0 OR active_admins >= 1)
);

CREATE TABLE role_templates (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL,
    name_key    text COLLATE "C" NOT NULL,
    permissions text[] NOT NULL CONSTRAINT role_templates_permissions_ok CHECK (tenantry_permission_list_ok(permissions)),
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    CONSTRAINT role_templates_pkey PRIMARY KEY (tenant_id, id),
    -- D12: names are unique per tenant, case-insensitively.
    CONSTRAINT role_templates_name_key UNIQUE (tenant_id, name_key)
);

CREATE TABLE users (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    id                uuid NOT NULL,
    email             text NOT NULL,
    email_key         text COLLATE "C" NOT NULL,
    role              text NOT NULL CHECK (role IN ('admin', 'user')),
    status            text NOT NULL CHECK (status IN ('invited', 'active', 'suspended')),
    template_id       uuid,
    crm_access        boolean NOT NULL,
    grants            text[] NOT NULL CONSTRAINT users_grants_ok CHECK (tenantry_permission_list_ok(grants)),
    created_at        bigint NOT NULL,
    last_login        bigint,
    -- last_login with "never" as the smallest value, for keyset paging (D18).
    login_key         bigint NOT NULL,
    invite_expires_at bigint,
    CONSTRAINT users_pkey PRIMARY KEY (tenant_id, id),
    -- D3: one user per canonical address per tenant.
    CONSTRAINT users_email_key UNIQUE (tenant_id, email_key),
    CONSTRAINT users_template_fk FOREIGN KEY (tenant_id, template_id)
        REFERENCES role_templates (tenant_id, id),
    -- D5: admins always have CRM access.
    CONSTRAINT users_admin_crm CHECK (role <> 'admin' OR crm_access),
    CONSTRAINT users_login_key CHECK (login_key = COALESCE(last_login, -9223372036854775808))
);
CREATE INDEX users_by_email ON users (tenant_id, email_key, id);
CREATE INDEX users_by_created ON users (tenant_id, created_at, id);
CREATE INDEX users_by_login ON users (tenant_id, login_key, id);
CREATE INDEX users_by_template ON users (tenant_id, template_id, email_key, id);
CREATE INDEX users_by_status ON users (tenant_id, status, email_key, id);

CREATE TABLE invitations (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    user_id    uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('initial', 'resend')),
    state      text NOT NULL CHECK (state IN ('pending', 'used', 'revoked')),
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX invitations_by_user ON invitations (tenant_id, user_id, created_at);

CREATE TABLE tombstones (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    user_id    uuid NOT NULL,
    email      text NOT NULL,
    deleted_at bigint NOT NULL,
    deleted_by text NOT NULL,
    CONSTRAINT tombstones_pkey PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE audit_log (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    seq       bigint NOT NULL CHECK (seq >= 1),
    at        bigint NOT NULL,
    action    text NOT NULL,
    -- The event as JSON text (text, not jsonb: kept byte for byte as written).
    event     text NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE outbox (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    user_id         uuid NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    state_at        bigint,
    failure         text,
    attempts        bigint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at bigint NOT NULL,
    last_error      text,
    created_at      bigint NOT NULL,
    CONSTRAINT outbox_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
-- The per-tenant dispatcher claims due mail by (tenant, state, next attempt).
CREATE INDEX outbox_by_tenant_due ON outbox (tenant_id, state, next_attempt_at, id);

-- D13: the audit log is append-only, in the database itself: no UPDATE, DELETE or TRUNCATE.
CREATE FUNCTION tenantry_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tenantry: audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation', CONSTRAINT = 'audit_log_append_only',
              TABLE = 'audit_log';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tenantry_audit_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tenantry_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry_audit_append_only();

-- D11: ids are never reused. D9: an insert at or over the limit fails. The tenant row is
-- locked (FOR UPDATE) so two concurrent inserts cannot both pass the check at READ COMMITTED.
CREATE FUNCTION tenantry_users_before_insert() RETURNS trigger
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
    SELECT user_limit, seats_used INTO lim, used FROM tenants WHERE id = NEW.tenant_id FOR UPDATE;
    IF lim IS NOT NULL AND used >= lim THEN
        RAISE EXCEPTION 'tenantry: seat limit reached'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'users_seat_limit',
                  TABLE = 'users';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_before_insert BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION tenantry_users_before_insert();

-- A user's tenant and id never change.
CREATE FUNCTION tenantry_users_keys_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'tenantry: a user''s tenant and id never change'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'users_keys_fixed',
                  TABLE = 'users';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_keys_fixed BEFORE UPDATE OF tenant_id, id ON users
    FOR EACH ROW EXECUTE FUNCTION tenantry_users_keys_fixed();

-- Counters follow the rows (D8, D9).
CREATE FUNCTION tenantry_users_count() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tenants
        SET seats_used = seats_used + 1,
            active_admins = active_admins + (NEW.role = 'admin' AND NEW.status = 'active')::int
        WHERE id = NEW.tenant_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE tenants
        SET seats_used = seats_used - 1,
            active_admins = active_admins - (OLD.role = 'admin' AND OLD.status = 'active')::int
        WHERE id = OLD.tenant_id;
    ELSIF (OLD.role = 'admin' AND OLD.status = 'active')
          IS DISTINCT FROM (NEW.role = 'admin' AND NEW.status = 'active') THEN
        UPDATE tenants
        SET active_admins = active_admins
            - (OLD.role = 'admin' AND OLD.status = 'active')::int
            + (NEW.role = 'admin' AND NEW.status = 'active')::int
        WHERE id = NEW.tenant_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_count AFTER INSERT OR DELETE OR UPDATE OF role, status ON users
    FOR EACH ROW EXECUTE FUNCTION tenantry_users_count();
