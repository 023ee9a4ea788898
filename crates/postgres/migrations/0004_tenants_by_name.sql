-- tenantry schema, version 4 (PostgreSQL): the operators' listing of tenants reads them in
-- order of name in the "C" collation (byte order, whatever the database's default), then
-- id, after a keyset cursor; index exactly that.
CREATE INDEX tenants_by_name ON tenants (name COLLATE "C", id);
