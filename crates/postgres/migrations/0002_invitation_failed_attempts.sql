-- tenantry schema, version 2 (PostgreSQL): failed accept attempts of an invitation (D24),
-- sign-ups tried on its token with a wrong address; the fifth revokes the token. Existing
-- invitations start at none. bigint, as every counted column here (read as i64, held as u32).
ALTER TABLE invitations
    ADD COLUMN failed_attempts bigint NOT NULL DEFAULT 0
        CONSTRAINT invitations_failed_attempts_ok CHECK (failed_attempts BETWEEN 0 AND 4294967295);
