-- Google's ids on the browser leg (SQLite). Same columns, keys and defaults as
-- migrations/postgres/0011_google_ids.sql.

-- What bc.js saw of Google on a landing session: the GA4 client id (from the _ga cookie,
-- normalized as identity.normalize_ga_client_id does) and the Google Ads click ids (from the
-- landing URL, bc.js's _bc_gclid/_bc_gbraid/_bc_wbraid cookies, or the gclid of _gcl_aw).
-- Stitching fills them into conversions that lack them, as it does ttclid.
ALTER TABLE landing_sessions ADD COLUMN ga_client_id TEXT;
ALTER TABLE landing_sessions ADD COLUMN gclid TEXT;
ALTER TABLE landing_sessions ADD COLUMN gbraid TEXT;
ALTER TABLE landing_sessions ADD COLUMN wbraid TEXT;

-- Whose tag the mirrored call was: 'tiktok' (ttq.track; every row before this migration) or
-- 'google' (gtag('event', name, {transaction_id}), the transaction_id as event_id).
ALTER TABLE browser_events ADD COLUMN platform TEXT NOT NULL DEFAULT 'tiktok';

-- Purged sessions that had a Google Ads click id (gclid, gbraid or wbraid) are counted apart,
-- as those with a ttclid are: one more key column. SQLite cannot change a primary key in
-- place, so the table is rebuilt (its rows so far had no Google click: 0).
CREATE TABLE session_rollups_0011 (
    day              TEXT    NOT NULL,
    browser_family   TEXT    NOT NULL,
    os               TEXT    NOT NULL,
    os_version_major TEXT    NOT NULL,
    load_bucket      TEXT    NOT NULL,
    pixel_status     TEXT    NOT NULL,
    had_ttclid       INTEGER NOT NULL,
    sessions         INTEGER NOT NULL,
    had_google_click INTEGER NOT NULL,                     -- 0/1: gclid, gbraid or wbraid
    PRIMARY KEY (day, browser_family, os, os_version_major, load_bucket, pixel_status,
                 had_ttclid, had_google_click)
);
INSERT INTO session_rollups_0011 (day, browser_family, os, os_version_major, load_bucket,
                                  pixel_status, had_ttclid, sessions, had_google_click)
    SELECT day, browser_family, os, os_version_major, load_bucket, pixel_status, had_ttclid,
           sessions, 0
    FROM session_rollups;
DROP TABLE session_rollups;
ALTER TABLE session_rollups_0011 RENAME TO session_rollups;
