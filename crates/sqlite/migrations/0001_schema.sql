-- tenantry schema, version 1 (SQLite).
-- Times are Unix nanoseconds (INTEGER); ids are lowercase hyphenated UUID text;
-- permission sets are JSON arrays of sorted "category:action" strings (D4).

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    user_limit    INTEGER CHECK (user_limit IS NULL OR user_limit >= 0),
    created_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 0,
    -- Kept by the triggers below, never by the application (D8, D9).
    seats_used    INTEGER NOT NULL DEFAULT 0 CHECK (seats_used >= 0),
    active_admins INTEGER NOT NULL DEFAULT 0 CHECK (active_admins >= 0),
    -- The last audit sequence number handed out (D13).
    audit_seq     INTEGER NOT NULL DEFAULT 0,
    -- D8: a tenant that has users keeps at least one active admin.
    CHECK (seats_used = 0 OR active_admins >= 1)
) STRICT;

CREATE TABLE role_templates (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE UNIQUE INDEX role_templates_name_key ON role_templates (tenant_id, name_key);

CREATE TABLE users (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                TEXT NOT NULL,
    email             TEXT NOT NULL,
    email_key         TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    status            TEXT NOT NULL CHECK (status IN ('invited', 'active', 'suspended')),
    template_id       TEXT,
    crm_access        INTEGER NOT NULL CHECK (crm_access IN (0, 1)),
    grants            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    last_login        INTEGER,
    -- last_login with "never" as the smallest value, for keyset paging (D18).
    login_key         INTEGER NOT NULL,
    invite_expires_at INTEGER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES role_templates (tenant_id, id),
    -- D5: admins always have CRM access.
    CHECK (role <> 'admin' OR crm_access = 1)
) STRICT;
CREATE UNIQUE INDEX users_email_key ON users (tenant_id, email_key);
CREATE INDEX users_by_email ON users (tenant_id, email_key, id);
CREATE INDEX users_by_created ON users (tenant_id, created_at, id);
CREATE INDEX users_by_login ON users (tenant_id, login_key, id);
CREATE INDEX users_by_template ON users (tenant_id, template_id, email_key, id);
CREATE INDEX users_by_status ON users (tenant_id, status, email_key, id);

CREATE TABLE invitations (
    token_hash BLOB PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('initial', 'resend')),
    state      TEXT NOT NULL CHECK (state IN ('pending', 'used', 'revoked')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX invitations_by_user ON invitations (tenant_id, user_id, created_at);

CREATE TABLE tombstones (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    user_id    TEXT NOT NULL,
    email      TEXT NOT NULL,
    deleted_at INTEGER NOT NULL,
    deleted_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) STRICT;

CREATE TABLE audit_log (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    seq       INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    action    TEXT NOT NULL,
    event     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) STRICT;

CREATE TABLE outbox (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    state_at        INTEGER,
    failure         TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

-- D13: the audit log is append-only.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'tenantry: audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'tenantry: audit_log is append-only');
END;

-- D11: ids are never reused.
CREATE TRIGGER users_id_not_reused BEFORE INSERT ON users
WHEN EXISTS (SELECT 1 FROM tombstones WHERE tenant_id = NEW.tenant_id AND user_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'tenantry: user id reused');
END;

-- D9: an insert at or over the limit fails.
CREATE TRIGGER users_seat_limit BEFORE INSERT ON users
WHEN EXISTS (
    SELECT 1 FROM tenants
    WHERE id = NEW.tenant_id AND user_limit IS NOT NULL AND seats_used >= user_limit
)
BEGIN
    SELECT RAISE(ABORT, 'tenantry: seat limit reached');
END;

-- Counters follow the rows (D8, D9).
CREATE TRIGGER users_count_insert AFTER INSERT ON users
BEGIN
    UPDATE tenants
    SET seats_used = seats_used + 1,
        active_admins = active_admins + (NEW.role = 'admin' AND NEW.status = 'active')
    WHERE id = NEW.tenant_id;
END;
CREATE TRIGGER users_count_delete AFTER DELETE ON users
BEGIN
    UPDATE tenants
    SET seats_used = seats_used - 1,
        active_admins = active_admins - (OLD.role = 'admin' AND OLD.status = 'active')
    WHERE id = OLD.tenant_id;
END;
CREATE TRIGGER users_count_update AFTER UPDATE OF role, status ON users
BEGIN
    UPDATE tenants
    SET active_admins = active_admins
        - (OLD.role = 'admin' AND OLD.status = 'active')
        + (NEW.role = 'admin' AND NEW.status = 'active')
    WHERE id = NEW.tenant_id;
END;
