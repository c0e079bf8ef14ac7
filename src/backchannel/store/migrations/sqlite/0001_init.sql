-- Backchannel schema v1 (SQLite). Applied by `backchannel migrate` and on start.
-- Raw email/phone never reach this file: conversions.payload holds hashed identifiers only.

CREATE TABLE conversions (
    id              INTEGER PRIMARY KEY,
    event           TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event_time      INTEGER NOT NULL,
    received_at     REAL    NOT NULL,
    origin          TEXT    NOT NULL DEFAULT 'api',   -- api | shopify | stripe | csv
    order_id        TEXT,
    session_id      TEXT,
    test_event_code TEXT,
    payload         BLOB    NOT NULL,                 -- Conversion.to_dict() as JSON
    warnings        BLOB,                             -- [{path, reason}] as JSON
    UNIQUE (event, event_id)
);
CREATE INDEX conversions_received ON conversions (received_at);
CREATE INDEX conversions_order ON conversions (order_id) WHERE order_id IS NOT NULL;

-- One row per (conversion, destination): the delivery state machine.
--   pending -> in_flight -> delivered
--                        -> pending (retry, due_at in the future)
--                        -> dead    (platform refused it; replay re-queues)
--   pending -> expired  (older than the destination's window; never sent)
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    conversion_id INTEGER NOT NULL REFERENCES conversions (id),
    destination   TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending',
    due_at        REAL    NOT NULL,
    lease_until   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_response TEXT,
    platform_ref  TEXT,
    sent_body     BLOB,                               -- for dead letters: the event as sent
    created_at    REAL    NOT NULL,
    delivered_at  REAL,
    UNIQUE (conversion_id, destination)
);
CREATE INDEX outbox_due ON outbox (destination, status, due_at);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL DEFAULT 'ingest',       -- ingest | collect | admin
    prefix      TEXT NOT NULL,                        -- first characters, for display
    key_hash    TEXT NOT NULL UNIQUE,                 -- sha256 of the whole key
    created_at  REAL NOT NULL,
    revoked_at  REAL
);

-- Destination settings; the token is Fernet-encrypted, never stored in plaintext.
CREATE TABLE connections (
    destination     TEXT PRIMARY KEY,
    pixel           TEXT NOT NULL,
    token_encrypted BLOB,
    token_last4     TEXT,
    test_event_code TEXT,
    updated_at      REAL NOT NULL
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT
);
