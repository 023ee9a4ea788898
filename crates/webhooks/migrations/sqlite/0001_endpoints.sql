-- Webhook endpoints with their secrets and delivery status (times: Unix nanoseconds).
CREATE TABLE tenantry_webhook_endpoints (
    id              TEXT    PRIMARY KEY NOT NULL,
    tenant_id       TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,
    enabled         BOOLEAN NOT NULL,
    created_at      INTEGER NOT NULL,
    secret          TEXT    NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER,
    delivered_seq   INTEGER NOT NULL CHECK (delivered_seq >= 0),
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    last_error      TEXT,
    next_attempt_at INTEGER,
    failing_since   INTEGER,
    disabled_at     INTEGER
);
CREATE INDEX tenantry_webhook_endpoints_by_tenant
    ON tenantry_webhook_endpoints (tenant_id, created_at);
