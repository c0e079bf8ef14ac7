-- Sources and the order ledger (PostgreSQL). Same tables, columns and keys as
-- migrations/sqlite/0003_sources.sql. No raw email/phone/name anywhere in here.

-- Webhook signing secrets (Shopify, Stripe), Fernet-encrypted like destination tokens.
CREATE TABLE source_secrets (
    source           TEXT             PRIMARY KEY,     -- shopify | stripe
    secret_encrypted BYTEA            NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL
);

-- The order ledger: every order or subscription seen from any source (api, shopify, stripe,
-- csv), one row per (source, order_id), whether or not a conversion was sent for it. The truth
-- set of the gap report. evidence is JSON, e.g. {"ttclid": "landing_site"}.
-- attributed_tiktok is an INTEGER 0/1 (not BOOLEAN) so both backends read it the same way.
CREATE TABLE orders (
    id                BIGSERIAL        PRIMARY KEY,
    source            TEXT             NOT NULL,
    order_id          TEXT             NOT NULL,
    order_time        BIGINT           NOT NULL,       -- unix seconds
    value             DOUBLE PRECISION,
    currency          TEXT,
    event             TEXT,
    event_id          TEXT,
    session_id        TEXT,
    attributed_tiktok INTEGER          NOT NULL DEFAULT 0,
    evidence          BYTEA,
    recorded_at       DOUBLE PRECISION NOT NULL,
    CONSTRAINT orders_source_order_id_key UNIQUE (source, order_id)
);
CREATE INDEX orders_time ON orders (order_time);

-- Webhook deliveries already processed: a redelivery with the same id is answered at once.
CREATE TABLE source_deliveries (
    id          BIGSERIAL        PRIMARY KEY,
    source      TEXT             NOT NULL,
    delivery_id TEXT             NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    status      TEXT             NOT NULL,
    CONSTRAINT source_deliveries_source_delivery_id_key UNIQUE (source, delivery_id)
);

-- Input refused by a source endpoint or the importer, for the diagnostics page. reason is
-- JSON ({"error", "errors": [{path, reason}]}); it never holds request bodies or raw PII.
CREATE TABLE ingest_rejections (
    id          BIGSERIAL        PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL,
    source      TEXT             NOT NULL,
    delivery_id TEXT,
    reason      BYTEA            NOT NULL
);
CREATE INDEX ingest_rejections_at ON ingest_rejections (at);
