-- Daily rollups (PostgreSQL). Same tables and indexes as migrations/sqlite/0019_rollups.sql.
-- See src/backchannel/rollups.py for why and how they are used.

-- A mark: "a figure of (property, UTC day) may have changed". Every store write that can
-- change a report's figure of a day appends one in its own transaction (append-only, so
-- concurrent writers never wait for each other on a hot row). Taking the marks (the rollup
-- refresh, or a report read) deletes them and bumps the day's version in rollup_days.
-- day: days since 1970-01-01 UTC (unix seconds / 86400, floored).
CREATE TABLE rollup_marks (
    id          BIGSERIAL PRIMARY KEY,
    property_id BIGINT  NOT NULL,
    day         BIGINT  NOT NULL
);

-- The version of each (property, day) that ever changed; a day absent here is version 0.
CREATE TABLE rollup_days (
    property_id BIGINT  NOT NULL,
    day         BIGINT  NOT NULL,
    version     BIGINT  NOT NULL,
    PRIMARY KEY (property_id, day)
);

-- One report's partial of one (property, day), computed at a version of the day: valid while
-- the day's version is still that one. name carries the report and its partial's shape
-- ("gap.tiktok/1"); data is the partial as JSON; computed_at unix seconds.
CREATE TABLE rollups (
    name        TEXT    NOT NULL,
    property_id BIGINT  NOT NULL,
    day         BIGINT  NOT NULL,
    version     BIGINT  NOT NULL,
    computed_at DOUBLE PRECISION NOT NULL,
    data        BYTEA   NOT NULL,
    PRIMARY KEY (name, property_id, day)
);

-- What the marks are found by: the orders and conversions a Pixel mirror row (its id is an
-- event_id or, for Google's tags, the order id) or a landing session touches.
CREATE INDEX orders_event_id ON orders (property_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX orders_order_id ON orders (property_id, order_id);
CREATE INDEX orders_session ON orders (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX conversions_session ON conversions (session_id) WHERE session_id IS NOT NULL;

-- What a day's partial of one property reads: its ledger orders of the day, its conversions
-- received that day (without these, one property's day is read through the day's rows of
-- every property, or through the property's every row).
CREATE INDEX orders_property_time ON orders (property_id, order_time);
CREATE INDEX conversions_property_received ON conversions (property_id, received_at);

-- The overview's figures of now, at a million conversions: the outbox rows not delivered,
-- counted from the index alone (the literal status test lets SQLite see the partial index
-- applies); the test conversions to leave out of them (a handful, not every conversion); the
-- newest rows with an error per connection (a walk of the index stopped at the LIMIT).
CREATE INDEX outbox_state ON outbox (connection_id, status, attempts) WHERE status <> 'delivered';
CREATE INDEX conversions_test ON conversions (property_id) WHERE test_event_code IS NOT NULL;
CREATE INDEX outbox_errors ON outbox (connection_id, COALESCE(failed_at, due_at), id)
    WHERE last_error IS NOT NULL;
