-- Events Manager counts (SQLite): daily Pixel event counts imported from a TikTok Events
-- Manager export (`backchannel report import-pixel`), the "pixel-only from an export" variant
-- of the gap report. Same table, columns and key as migrations/postgres/0006_pixel_counts.sql.
-- One row per (UTC day, event); a re-import replaces the day's count (upsert).
CREATE TABLE pixel_counts (
    day         TEXT    NOT NULL,                      -- YYYY-MM-DD
    event       TEXT    NOT NULL,                      -- CompletePayment, ...
    count       INTEGER NOT NULL,                      -- >= 0, as Events Manager reported it
    imported_at REAL    NOT NULL,                      -- unix seconds of the last import
    PRIMARY KEY (day, event)
);
