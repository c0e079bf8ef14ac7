-- Properties (SQLite): several shops, sites or apps in one install, each with its own
-- connections, keys, settings and rows. Same tables, columns, keys and indexes as
-- migrations/postgres/0013_properties.sql (new columns come last, where PostgreSQL's
-- ALTER TABLE puts them). Everything stored before belongs to the property 'default' (id 1),
-- created here: its connections, keys, rows and settings; pending deliveries carry on.
-- SQLite cannot change a primary key or a UNIQUE constraint in place, so the tables whose
-- keys gain the property are rebuilt (copy, drop, rename); the others gain a column.
-- A rebuild copies the columns it names: SqliteStore.migrate checks, before applying it,
-- that each rebuilt table has no other column (one a later migration added, on a store that
-- got that one first), and refuses naming it rather than drop it. (source_secrets, which
-- 0015 extends, is rebuilt by 0017, after it.)
-- rebuilds: connections(destination, pixel, token_encrypted, token_last4, test_event_code, updated_at, settings, secrets_encrypted)
-- rebuilds: conversions(id, event, event_id, event_time, received_at, origin, order_id, session_id, test_event_code, payload, warnings, stitched, scrubbed_at)
-- rebuilds: outbox(id, conversion_id, destination, status, due_at, lease_until, attempts, last_error, last_response, platform_ref, sent_body, created_at, delivered_at, failed_at, lease_token)
-- rebuilds: orders(id, source, order_id, order_time, value, currency, event, event_id, session_id, attributed_tiktok, evidence, recorded_at)
-- rebuilds: session_rollups(day, browser_family, os, os_version_major, load_bucket, pixel_status, had_ttclid, sessions, had_google_click)
-- rebuilds: pixel_counts(day, event, count, imported_at)

CREATE TABLE properties (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    default_region     TEXT,                           -- NULL: the install's DEFAULT_REGION
    tiktok_utm_sources TEXT,                           -- NULL: the install's TIKTOK_UTM_SOURCES
    created_at         REAL    NOT NULL
);
INSERT INTO properties (id, name, created_at) VALUES (1, 'default', unixepoch());

-- What routes an anonymous request to a property: a page origin (collect), a Shopify shop
-- domain (X-Shopify-Shop-Domain), a Stripe account (the event's `account`). Each value
-- belongs to one property at most, so a webhook is never guessed between two.
CREATE TABLE property_bindings (
    kind        TEXT    NOT NULL,                      -- origin | shopify | stripe
    value       TEXT    NOT NULL,                      -- https://shop.example | x.myshopify.com | acct_…
    property_id INTEGER NOT NULL REFERENCES properties (id),
    PRIMARY KEY (kind, value)
);

-- Connections: one destination account of a property (several per destination allowed),
-- named by a label unique in its property (the first one of a destination: its name). Its
-- routes (JSON list of event names; NULL: every event) and suspension record (suspension.py)
-- used to be admin settings keyed by destination ('route.<d>', 'suspended:<d>').
CREATE TABLE connections_0013 (
    destination       TEXT    NOT NULL,
    pixel             TEXT    NOT NULL,
    token_encrypted   BLOB,
    token_last4       TEXT,
    test_event_code   TEXT,
    updated_at        REAL    NOT NULL,
    settings          TEXT,
    secrets_encrypted BLOB,
    id                INTEGER PRIMARY KEY,
    property_id       INTEGER NOT NULL REFERENCES properties (id),
    label             TEXT    NOT NULL,
    routes            TEXT,
    suspension        TEXT,
    UNIQUE (property_id, label)
);
INSERT INTO connections_0013 (destination, pixel, token_encrypted, token_last4, test_event_code,
                              updated_at, settings, secrets_encrypted, property_id, label)
    SELECT destination, pixel, token_encrypted, token_last4, test_event_code, updated_at,
           settings, secrets_encrypted, 1, destination
    FROM connections ORDER BY destination;
-- A destination that had rows, a route or a suspension but no stored connection (TikTok and
-- Meta in sandbox mode, the two on by default then) gets one, so its rows keep a connection.
INSERT INTO connections_0013 (destination, pixel, updated_at, property_id, label)
    SELECT d.name, '', unixepoch(), 1, d.name FROM (
        SELECT destination AS name FROM outbox
        UNION SELECT substr(name, 7) FROM admin_settings WHERE name LIKE 'route.%'
        UNION SELECT substr(name, 11) FROM admin_settings WHERE name LIKE 'suspended:%'
        UNION SELECT 'tiktok'
        UNION SELECT 'meta'
    ) AS d
    WHERE d.name NOT IN (SELECT destination FROM connections) ORDER BY d.name;
UPDATE connections_0013 SET routes = (
    SELECT NULLIF(a.value, 'null') FROM admin_settings a
    WHERE a.name = 'route.' || connections_0013.destination
);
UPDATE connections_0013 SET suspension = (
    SELECT NULLIF(a.value, '') FROM admin_settings a
    WHERE a.name = 'suspended:' || connections_0013.destination
);
DELETE FROM admin_settings WHERE name LIKE 'route.%' OR name LIKE 'suspended:%';

-- Conversions: the dedup key becomes (property, event, event_id): the same order id in two
-- properties is two conversions (the event_id stays the one the browser Pixel derives).
CREATE TABLE conversions_0013 (
    id              INTEGER PRIMARY KEY,
    event           TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event_time      INTEGER NOT NULL,
    received_at     REAL    NOT NULL,
    origin          TEXT    NOT NULL DEFAULT 'api',
    order_id        TEXT,
    session_id      TEXT,
    test_event_code TEXT,
    payload         BLOB    NOT NULL,
    warnings        BLOB,
    stitched        TEXT,
    scrubbed_at     REAL,
    property_id     INTEGER NOT NULL REFERENCES properties (id),
    UNIQUE (property_id, event, event_id)
);
INSERT INTO conversions_0013 (id, event, event_id, event_time, received_at, origin, order_id,
                              session_id, test_event_code, payload, warnings, stitched,
                              scrubbed_at, property_id)
    SELECT id, event, event_id, event_time, received_at, origin, order_id, session_id,
           test_event_code, payload, warnings, stitched, scrubbed_at, 1
    FROM conversions;

-- Outbox rows: one per (conversion, connection). Rows keep their id, state, lease and
-- history: pending ones are delivered by the default property's connection of their
-- destination, delivered ones are never sent again.
CREATE TABLE outbox_0013 (
    id            INTEGER PRIMARY KEY,
    conversion_id INTEGER NOT NULL REFERENCES conversions_0013 (id),
    destination   TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending',
    due_at        REAL    NOT NULL,
    lease_until   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_response TEXT,
    platform_ref  TEXT,
    sent_body     BLOB,
    created_at    REAL    NOT NULL,
    delivered_at  REAL,
    failed_at     REAL,
    lease_token   TEXT,
    connection_id INTEGER NOT NULL REFERENCES connections_0013 (id),
    UNIQUE (conversion_id, connection_id)
);
INSERT INTO outbox_0013 (id, conversion_id, destination, status, due_at, lease_until, attempts,
                         last_error, last_response, platform_ref, sent_body, created_at,
                         delivered_at, failed_at, lease_token, connection_id)
    SELECT o.id, o.conversion_id, o.destination, o.status, o.due_at, o.lease_until,
           o.attempts, o.last_error, o.last_response, o.platform_ref, o.sent_body,
           o.created_at, o.delivered_at, o.failed_at, o.lease_token, c.id
    FROM outbox o JOIN connections_0013 c ON c.property_id = 1 AND c.label = o.destination;

-- Children first: nothing references the old tables once the old outbox is gone; renaming
-- the new tables rewrites the references to them (SQLite >= 3.26).
DROP TABLE outbox;
DROP TABLE conversions;
DROP TABLE connections;
ALTER TABLE conversions_0013 RENAME TO conversions;
ALTER TABLE connections_0013 RENAME TO connections;
ALTER TABLE outbox_0013 RENAME TO outbox;
CREATE INDEX conversions_received ON conversions (received_at);
CREATE INDEX conversions_order ON conversions (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX conversions_unscrubbed ON conversions (received_at) WHERE scrubbed_at IS NULL;
CREATE INDEX outbox_due ON outbox (connection_id, status, due_at);
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- The order ledger: one row per (property, source, order_id).
CREATE TABLE orders_0013 (
    id                INTEGER PRIMARY KEY,
    source            TEXT    NOT NULL,
    order_id          TEXT    NOT NULL,
    order_time        INTEGER NOT NULL,
    value             REAL,
    currency          TEXT,
    event             TEXT,
    event_id          TEXT,
    session_id        TEXT,
    attributed_tiktok INTEGER NOT NULL DEFAULT 0,
    evidence          BLOB,
    recorded_at       REAL    NOT NULL,
    property_id       INTEGER NOT NULL REFERENCES properties (id),
    UNIQUE (property_id, source, order_id)
);
INSERT INTO orders_0013 (id, source, order_id, order_time, value, currency, event, event_id,
                         session_id, attributed_tiktok, evidence, recorded_at, property_id)
    SELECT id, source, order_id, order_time, value, currency, event, event_id, session_id,
           attributed_tiktok, evidence, recorded_at, 1
    FROM orders;
DROP TABLE orders;
ALTER TABLE orders_0013 RENAME TO orders;
CREATE INDEX orders_time ON orders (order_time);

-- Purged sessions are counted per property.
CREATE TABLE session_rollups_0013 (
    day              TEXT    NOT NULL,
    browser_family   TEXT    NOT NULL,
    os               TEXT    NOT NULL,
    os_version_major TEXT    NOT NULL,
    load_bucket      TEXT    NOT NULL,
    pixel_status     TEXT    NOT NULL,
    had_ttclid       INTEGER NOT NULL,
    sessions         INTEGER NOT NULL,
    had_google_click INTEGER NOT NULL,
    property_id      INTEGER NOT NULL REFERENCES properties (id),
    PRIMARY KEY (property_id, day, browser_family, os, os_version_major, load_bucket,
                 pixel_status, had_ttclid, had_google_click)
);
INSERT INTO session_rollups_0013 (day, browser_family, os, os_version_major, load_bucket,
                                  pixel_status, had_ttclid, sessions, had_google_click,
                                  property_id)
    SELECT day, browser_family, os, os_version_major, load_bucket, pixel_status, had_ttclid,
           sessions, had_google_click, 1
    FROM session_rollups;
DROP TABLE session_rollups;
ALTER TABLE session_rollups_0013 RENAME TO session_rollups;

-- Events Manager counts per property.
CREATE TABLE pixel_counts_0013 (
    day         TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    imported_at REAL    NOT NULL,
    property_id INTEGER NOT NULL REFERENCES properties (id),
    PRIMARY KEY (property_id, day, event)
);
INSERT INTO pixel_counts_0013 (day, event, count, imported_at, property_id)
    SELECT day, event, count, imported_at, 1 FROM pixel_counts;
DROP TABLE pixel_counts;
ALTER TABLE pixel_counts_0013 RENAME TO pixel_counts;

-- Rows whose key does not change gain their property. Session ids stay unique in the whole
-- install (a session belongs to the property whose site key created it, and another
-- property's key can never write to it); NULL only where noted.
ALTER TABLE landing_sessions ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE landing_sessions SET property_id = 1;
ALTER TABLE browser_events ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE browser_events SET property_id = 1;
-- admin keys are the install's (NULL); ingest and site keys belong to one property
ALTER TABLE api_keys ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE api_keys SET property_id = 1 WHERE scope <> 'admin';
-- NULL: an install-wide action (a password, the key rotation)
ALTER TABLE audit_log ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE audit_log SET property_id = 1;
-- NULL: input no property could be named for (an unknown shop or Stripe account)
ALTER TABLE ingest_rejections ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE ingest_rejections SET property_id = 1;
ALTER TABLE source_deliveries ADD COLUMN property_id INTEGER REFERENCES properties (id);
UPDATE source_deliveries SET property_id = 1;
