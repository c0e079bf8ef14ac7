-- Sources and the order ledger (SQLite). Same tables, columns and keys as
-- migrations/postgres/0003_sources.sql. No raw email/phone/name anywhere in here.

-- Webhook signing secrets (Shopify, Stripe), Fernet-encrypted like destination tokens.
CREATE TABLE source_secrets (
    source           TEXT PRIMARY KEY,                 -- shopify | stripe
    secret_encrypted BLOB NOT NULL,
    updated_at       REAL NOT NULL
);

-- The order ledger: every order or subscription seen from any source (api, shopify, stripe,
-- csv), one row per (source, order_id), whether or not a conversion was sent for it. The truth
-- set of the gap report. evidence is JSON, e.g. {"ttclid": "landing_site"}.
CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    source            TEXT    NOT NULL,
    order_id          TEXT    NOT NULL,
    order_time        INTEGER NOT NULL,                -- unix seconds
    value             REAL,
    currency          TEXT,
    event             TEXT,                            -- the conversion event it maps to
    event_id          TEXT,                            -- that conversion's event_id, if one was made
    session_id        TEXT,
    attributed_tiktok INTEGER NOT NULL DEFAULT 0,      -- boolean
    evidence          BLOB,                            -- JSON object: signal -> where it was found
    recorded_at       REAL    NOT NULL,
    UNIQUE (source, order_id)
);
CREATE INDEX orders_time ON orders (order_time);

-- Webhook deliveries already processed: a redelivery with the same id is answered at once.
CREATE TABLE source_deliveries (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,                         -- X-Shopify-Webhook-Id / Stripe event id
    received_at REAL NOT NULL,
    status      TEXT NOT NULL,                         -- processed | ignored
    UNIQUE (source, delivery_id)
);

-- Input refused by a source endpoint or the importer, for the diagnostics page. reason is
-- JSON ({"error", "errors": [{path, reason}]}); it never holds request bodies or raw PII.
CREATE TABLE ingest_rejections (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    source      TEXT NOT NULL,
    delivery_id TEXT,
    reason      BLOB NOT NULL
);
CREATE INDEX ingest_rejections_at ON ingest_rejections (at);
