-- Events Manager counts (PostgreSQL): the same table, columns and key as
-- migrations/sqlite/0006_pixel_counts.sql. See backchannel.report (parse_pixel_csv) and Store.set_pixel_counts.
-- One row per (UTC day, event); a re-import replaces the day's count (upsert).
CREATE TABLE pixel_counts (
    day         TEXT             NOT NULL,             -- YYYY-MM-DD
    event       TEXT             NOT NULL,
    count       BIGINT           NOT NULL,             -- >= 0, as Events Manager reported it
    imported_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, event)
);
