-- Backchannel schema v1 (PostgreSQL). The same tables, columns, constraints and indexes as
-- migrations/sqlite/0001_init.sql; applied by `backchannel migrate` and on start (under an
-- advisory lock, see PostgresStore.migrate).
-- Types: BIGSERIAL ids, DOUBLE PRECISION times (unix seconds, like SQLite's REAL), BYTEA for
-- JSON blobs (stored exactly as given; the store never parses them).
-- Raw email/phone never reach this database: conversions.payload holds hashed identifiers only.

CREATE TABLE conversions (
    id              BIGSERIAL        PRIMARY KEY,
    event           TEXT             NOT NULL,
    event_id        TEXT             NOT NULL,
    event_time      BIGINT           NOT NULL,
    received_at     DOUBLE PRECISION NOT NULL,
    origin          TEXT             NOT NULL DEFAULT 'api',   -- api | shopify | stripe | csv
    order_id        TEXT,
    session_id      TEXT,
    test_event_code TEXT,
    payload         BYTEA            NOT NULL,                 -- Conversion.to_dict() as JSON
    warnings        BYTEA,                                     -- [{path, reason}] as JSON
    CONSTRAINT conversions_event_event_id_key UNIQUE (event, event_id)
);
CREATE INDEX conversions_received ON conversions (received_at);
CREATE INDEX conversions_order ON conversions (order_id) WHERE order_id IS NOT NULL;

-- One row per (conversion, destination): the delivery state machine.
--   pending -> in_flight -> delivered
--                        -> pending (retry, due_at in the future)
--                        -> dead    (platform refused it; replay re-queues)
--   pending -> expired  (older than the destination's window; never sent)
CREATE TABLE outbox (
    id            BIGSERIAL        PRIMARY KEY,
    conversion_id BIGINT           NOT NULL REFERENCES conversions (id),
    destination   TEXT             NOT NULL,
    status        TEXT             NOT NULL DEFAULT 'pending',
    due_at        DOUBLE PRECISION NOT NULL,
    lease_until   DOUBLE PRECISION,
    attempts      INTEGER          NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_response TEXT,
    platform_ref  TEXT,
    sent_body     BYTEA,                                       -- for dead letters: the event as sent
    created_at    DOUBLE PRECISION NOT NULL,
    delivered_at  DOUBLE PRECISION,
    CONSTRAINT outbox_conversion_id_destination_key UNIQUE (conversion_id, destination)
);
CREATE INDEX outbox_due ON outbox (destination, status, due_at);
-- Both arms of the claim read this index: due rows in (destination, 'pending', due_at) order,
-- so claiming N rows from a backlog reads about N entries, and the few in-flight rows when
-- looking for expired leases; delivered history sits in key ranges the claim never reads.
-- A partial index on pending rows alone was measured and left out: it cost 15-25% of ingest
-- throughput (every new row is pending) and did not make the claim read fewer rows.

CREATE TABLE api_keys (
    id          BIGSERIAL        PRIMARY KEY,
    name        TEXT             NOT NULL,
    scope       TEXT             NOT NULL DEFAULT 'ingest',    -- ingest | collect | admin
    prefix      TEXT             NOT NULL,                     -- first characters, for display
    key_hash    TEXT             NOT NULL UNIQUE,              -- sha256 of the whole key
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

-- Destination settings; the token is Fernet-encrypted, never stored in plaintext.
CREATE TABLE connections (
    destination     TEXT             PRIMARY KEY,
    pixel           TEXT             NOT NULL,
    token_encrypted BYTEA,
    token_last4     TEXT,
    test_event_code TEXT,
    updated_at      DOUBLE PRECISION NOT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL        PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL,
    actor   TEXT             NOT NULL,
    action  TEXT             NOT NULL,
    detail  TEXT
);
