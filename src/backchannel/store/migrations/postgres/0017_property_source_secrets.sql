-- Webhook signing secrets per property (PostgreSQL): one row per (property, source). Same
-- table, columns and keys as migrations/sqlite/0017_property_source_secrets.sql (apart from
-- 0013, properties, because SQLite rebuilds the table, which 0015 extended).
ALTER TABLE source_secrets ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1
    REFERENCES properties (id);
ALTER TABLE source_secrets ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE source_secrets DROP CONSTRAINT source_secrets_pkey;
ALTER TABLE source_secrets ADD PRIMARY KEY (property_id, source);
