-- Daily rollups: how long a kept partial took to compute (seconds). Same column on both
-- backends (migrations/sqlite and migrations/postgres, 0021).
-- Why: a partial of a day with a million rows (an import, a backlog) takes a minute and
-- gigabytes to compute; the background refresh recomputes a partial at most every
-- rollups.COST_SHARE times its cost (so it takes at most ~1/COST_SHARE of a core), and a
-- dashboard page may show it that much older than rollups.DASHBOARD_STALE (it says from when)
-- rather than compute it on the request. 0: computed before this column, or instantly.

ALTER TABLE rollups ADD COLUMN seconds DOUBLE PRECISION NOT NULL DEFAULT 0;
