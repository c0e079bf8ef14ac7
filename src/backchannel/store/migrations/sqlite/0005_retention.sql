-- Retention (SQLite): what purged landing sessions leave behind, and which conversions had
-- their IP and user agent scrubbed. Same tables, columns, keys and indexes as
-- migrations/postgres/0005_retention.sql. See backchannel.retention.

-- Counts of purged landing sessions, per cause the gap report breaks down by. No session id,
-- IP, user agent or URL: one row per (day, browser family, OS, OS major version, page-load
-- bucket, Pixel state, had a ttclid), added to (upsert) as sessions are purged.
-- Unknown values are 'unknown' (never NULL: the key columns are the primary key).
CREATE TABLE session_rollups (
    day              TEXT    NOT NULL,                 -- UTC date of the first page view, YYYY-MM-DD
    browser_family   TEXT    NOT NULL,                 -- Chrome, Safari, TikTok in-app, ...
    os               TEXT    NOT NULL,                 -- iOS, Android, Windows, ...
    os_version_major TEXT    NOT NULL,                 -- '17' of iOS 17.4
    load_bucket      TEXT    NOT NULL,                 -- <1s | 1-2.5s | 2.5-5s | 5s+ | unknown
    pixel_status     TEXT    NOT NULL,                 -- loaded | blocked | absent
    had_ttclid       INTEGER NOT NULL,                 -- 0/1
    sessions         INTEGER NOT NULL,
    PRIMARY KEY (day, browser_family, os, os_version_major, load_bucket, pixel_status,
                 had_ttclid)
);

-- When a conversion's IP and user agent were removed from its payload (NULL: not yet).
-- The partial index holds only the not-yet-scrubbed rows, so the hourly purge finds the next
-- ones without walking the scrubbed history.
ALTER TABLE conversions ADD COLUMN scrubbed_at REAL;
CREATE INDEX conversions_unscrubbed ON conversions (received_at) WHERE scrubbed_at IS NULL;
