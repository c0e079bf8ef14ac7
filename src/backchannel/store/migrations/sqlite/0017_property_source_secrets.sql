-- Webhook signing secrets per property (SQLite): one row per (property, source). Same
-- table, columns and keys as migrations/postgres/0017_property_source_secrets.sql.
-- Apart from 0013 (properties) because it rebuilds source_secrets, which 0015 extended
-- (store_url, WooCommerce): after 0015 the column is there on every path (a fresh store, one
-- of the release before properties, one of a build with 0015 but not 0013).
-- rebuilds: source_secrets(source, secret_encrypted, updated_at, store_url)
CREATE TABLE source_secrets_0017 (
    source           TEXT    NOT NULL,
    secret_encrypted BLOB    NOT NULL,
    updated_at       REAL    NOT NULL,
    store_url        TEXT,
    property_id      INTEGER NOT NULL REFERENCES properties (id),
    PRIMARY KEY (property_id, source)
);
INSERT INTO source_secrets_0017 (source, secret_encrypted, updated_at, store_url, property_id)
    SELECT source, secret_encrypted, updated_at, store_url, 1 FROM source_secrets;
DROP TABLE source_secrets;
ALTER TABLE source_secrets_0017 RENAME TO source_secrets;
