-- tenantry schema, version 3 (SQLite): a table that stays empty. A change is sent to SQLite
-- as one batch of statements ending in COMMIT. After a statement that must change exactly one
-- row, the batch inserts a row naming the rule here when it did not; the CHECK named after
-- the rule refuses it, which stops the batch before its COMMIT.
CREATE TABLE batch_guard (
    rule TEXT NOT NULL,
    CONSTRAINT guard_version CHECK (rule <> 'version'),
    CONSTRAINT guard_missing_row CHECK (rule <> 'missing_row'),
    CONSTRAINT guard_counters CHECK (rule <> 'counters'),
    CONSTRAINT guard_tenant CHECK (rule <> 'tenant')
) STRICT;
