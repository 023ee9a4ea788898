-- tenantry schema, version 2 (SQLite): the per-tenant dispatcher claims due mail by
-- (tenant, state, next attempt); index exactly that.
CREATE INDEX outbox_by_tenant_due ON outbox (tenant_id, state, next_attempt_at, id);
