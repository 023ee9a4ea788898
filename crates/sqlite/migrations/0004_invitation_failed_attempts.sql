-- tenantry schema, version 4 (SQLite): failed accept attempts of an invitation (D24), sign-ups
-- tried on its token with a wrong address; the fifth revokes the token. Existing invitations
-- start at none.
ALTER TABLE invitations
    ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0);
