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
