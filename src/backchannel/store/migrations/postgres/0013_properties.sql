-- Properties (PostgreSQL): several shops, sites or apps in one install, each with its own
-- connections, keys, settings and rows. Same tables, columns, keys and indexes as
-- migrations/sqlite/0013_properties.sql. Everything stored before belongs to the property
-- 'default' (id 1), created here: its connections, keys, rows and settings; pending
-- deliveries carry on. Keys change in place (ALTER TABLE), in one transaction.

CREATE TABLE properties (
    id                 BIGSERIAL        PRIMARY KEY,
    name               TEXT             NOT NULL UNIQUE,
    default_region     TEXT,                           -- NULL: the install's DEFAULT_REGION
    tiktok_utm_sources TEXT,                           -- NULL: the install's TIKTOK_UTM_SOURCES
    created_at         DOUBLE PRECISION NOT NULL
);
INSERT INTO properties (id, name, created_at) VALUES (1, 'default', EXTRACT(EPOCH FROM now()));
SELECT setval('properties_id_seq', 1);

-- What routes an anonymous request to a property: a page origin (collect), a Shopify shop
-- domain (X-Shopify-Shop-Domain), a Stripe account (the event's `account`). Each value
-- belongs to one property at most, so a webhook is never guessed between two.
CREATE TABLE property_bindings (
    kind        TEXT   NOT NULL,                       -- origin | shopify | stripe
    value       TEXT   NOT NULL,
    property_id BIGINT NOT NULL REFERENCES properties (id),
    PRIMARY KEY (kind, value)
);

-- Connections: one destination account of a property (several per destination allowed),
-- named by a label unique in its property (the first one of a destination: its name). Its
-- routes (JSON list of event names; NULL: every event) and suspension record (suspension.py)
-- used to be admin settings keyed by destination ('route.<d>', 'suspended:<d>').
ALTER TABLE connections ADD COLUMN id BIGSERIAL;
ALTER TABLE connections ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1
    REFERENCES properties (id);
ALTER TABLE connections ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE connections ADD COLUMN label TEXT;
UPDATE connections SET label = destination;
ALTER TABLE connections ALTER COLUMN label SET NOT NULL;
ALTER TABLE connections ADD COLUMN routes TEXT;
ALTER TABLE connections ADD COLUMN suspension TEXT;
ALTER TABLE connections DROP CONSTRAINT connections_pkey;
ALTER TABLE connections ADD PRIMARY KEY (id);
ALTER TABLE connections ADD CONSTRAINT connections_property_id_label_key
    UNIQUE (property_id, label);
-- A destination that had rows, a route or a suspension but no stored connection (TikTok and
-- Meta in sandbox mode, the two on by default then) gets one, so its rows keep a connection.
INSERT INTO connections (destination, pixel, updated_at, property_id, label)
    SELECT d.name, '', EXTRACT(EPOCH FROM now()), 1, d.name FROM (
        SELECT destination AS name FROM outbox
        UNION SELECT substr(name, 7) FROM admin_settings WHERE name LIKE 'route.%'
        UNION SELECT substr(name, 11) FROM admin_settings WHERE name LIKE 'suspended:%'
        UNION SELECT 'tiktok'
        UNION SELECT 'meta'
    ) AS d
    WHERE d.name NOT IN (SELECT destination FROM connections) ORDER BY d.name;
UPDATE connections SET routes = (
    SELECT NULLIF(a.value, 'null') FROM admin_settings a
    WHERE a.name = 'route.' || connections.destination
);
UPDATE connections SET suspension = (
    SELECT NULLIF(a.value, '') FROM admin_settings a
    WHERE a.name = 'suspended:' || connections.destination
);
DELETE FROM admin_settings WHERE name LIKE 'route.%' OR name LIKE 'suspended:%';

-- Conversions: the dedup key becomes (property, event, event_id): the same order id in two
-- properties is two conversions (the event_id stays the one the browser Pixel derives).
ALTER TABLE conversions ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1
    REFERENCES properties (id);
ALTER TABLE conversions ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE conversions DROP CONSTRAINT conversions_event_event_id_key;
ALTER TABLE conversions ADD CONSTRAINT conversions_property_id_event_event_id_key
    UNIQUE (property_id, event, event_id);

-- Outbox rows: one per (conversion, connection). Rows keep their id, state, lease and
-- history: pending ones are delivered by the default property's connection of their
-- destination, delivered ones are never sent again.
ALTER TABLE outbox ADD COLUMN connection_id BIGINT REFERENCES connections (id);
UPDATE outbox AS o SET connection_id = c.id
    FROM connections c WHERE c.property_id = 1 AND c.label = o.destination;
ALTER TABLE outbox ALTER COLUMN connection_id SET NOT NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_conversion_id_destination_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_conversion_id_connection_id_key
    UNIQUE (conversion_id, connection_id);
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (connection_id, status, due_at);

-- The order ledger: one row per (property, source, order_id).
ALTER TABLE orders ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1 REFERENCES properties (id);
ALTER TABLE orders ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE orders DROP CONSTRAINT orders_source_order_id_key;
ALTER TABLE orders ADD CONSTRAINT orders_property_id_source_order_id_key
    UNIQUE (property_id, source, order_id);

-- Purged sessions are counted per property.
ALTER TABLE session_rollups ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1
    REFERENCES properties (id);
ALTER TABLE session_rollups ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE session_rollups DROP CONSTRAINT session_rollups_pkey;
ALTER TABLE session_rollups ADD PRIMARY KEY (property_id, day, browser_family, os,
                                             os_version_major, load_bucket, pixel_status,
                                             had_ttclid, had_google_click);

-- Events Manager counts per property.
ALTER TABLE pixel_counts ADD COLUMN property_id BIGINT NOT NULL DEFAULT 1
    REFERENCES properties (id);
ALTER TABLE pixel_counts ALTER COLUMN property_id DROP DEFAULT;
ALTER TABLE pixel_counts DROP CONSTRAINT pixel_counts_pkey;
ALTER TABLE pixel_counts ADD PRIMARY KEY (property_id, day, event);

-- Rows whose key does not change gain their property. Session ids stay unique in the whole
-- install (a session belongs to the property whose site key created it, and another
-- property's key can never write to it); NULL only where noted.
ALTER TABLE landing_sessions ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE landing_sessions SET property_id = 1;
ALTER TABLE browser_events ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE browser_events SET property_id = 1;
-- admin keys are the install's (NULL); ingest and site keys belong to one property
ALTER TABLE api_keys ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE api_keys SET property_id = 1 WHERE scope <> 'admin';
-- NULL: an install-wide action (a password, the key rotation)
ALTER TABLE audit_log ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE audit_log SET property_id = 1;
-- NULL: input no property could be named for (an unknown shop or Stripe account)
ALTER TABLE ingest_rejections ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE ingest_rejections SET property_id = 1;
ALTER TABLE source_deliveries ADD COLUMN property_id BIGINT REFERENCES properties (id);
UPDATE source_deliveries SET property_id = 1;
