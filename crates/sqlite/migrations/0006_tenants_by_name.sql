-- tenantry schema, version 6 (SQLite): the operators' listing of tenants reads them in order
-- of name (byte order), then id, after a keyset cursor; index exactly that.
CREATE INDEX tenants_by_name ON tenants (name, id);
