-- tenantry schema, version 5 (SQLite): the batch_guard table of version 3 is no longer used.
-- Every change now runs on the store's writer thread, statement by statement inside one
-- transaction, and the row counts are checked between them, so nothing needs a table whose
-- CHECKs stop a multi-statement batch.
DROP TABLE batch_guard;
