-- tenantry schema, version 7 (SQLite): one person, several tenants (D28). A host may attach
-- its own identity id (an OpenID Connect subject, say) to a user: opaque text of 1 to 255
-- bytes, compared byte for byte, unique per tenant. Existing users have none.
ALTER TABLE users
    ADD COLUMN identity TEXT
    CHECK (identity IS NULL OR length(CAST(identity AS BLOB)) BETWEEN 1 AND 255);
-- Unique per tenant, and led by the id so that one index finds both the user of a tenant
-- holding it and every tenant where it is held (the memberships of an identity id).
CREATE UNIQUE INDEX users_identity ON users (identity, tenant_id) WHERE identity IS NOT NULL;
-- The memberships of an address: its users in every tenant, by the canonical key (the
-- per-tenant indexes all lead with the tenant).
CREATE INDEX users_by_email_key ON users (email_key, tenant_id);
