-- Browser leg (PostgreSQL): landing sessions, the Pixel mirror, identifier provenance.
-- Same tables, columns, keys and indexes as migrations/sqlite/0002_browser_leg.sql.
-- No raw PII: click ids, first-party cookies, the visitor's IP and user agent (both platforms
-- take them unhashed) and SHA-256 email hashes only.

-- One row per first-party session (the _bc_sid cookie of bc.js), merged from every page view.
CREATE TABLE landing_sessions (
    session_id    TEXT             PRIMARY KEY,
    first_seen    DOUBLE PRECISION NOT NULL,
    last_seen     DOUBLE PRECISION NOT NULL,
    ttclid        TEXT,                               -- from the landing URL or bc.js's cookie
    ttp           TEXT,                               -- the Pixel's _ttp cookie
    fbclid        TEXT,
    fbp           TEXT,
    fbc           TEXT,
    utm_source    TEXT,
    utm_medium    TEXT,
    utm_campaign  TEXT,
    utm_content   TEXT,
    utm_term      TEXT,
    landing_url   TEXT,                               -- the first page seen
    referrer      TEXT,                               -- that page's referrer
    last_url      TEXT,
    ip            TEXT,                               -- the visitor's (connection or trusted XFF)
    user_agent    TEXT,
    browser       TEXT,                               -- family, e.g. Chrome, Safari, TikTok in-app
    browser_version TEXT,
    os            TEXT,
    os_version    TEXT,
    load_time_ms  INTEGER,                            -- landing page load (Navigation Timing)
    pixel_status  TEXT             NOT NULL DEFAULT 'absent',  -- loaded | blocked | absent
    page_views    INTEGER          NOT NULL DEFAULT 0
);
CREATE INDEX landing_sessions_ttclid ON landing_sessions (ttclid) WHERE ttclid IS NOT NULL;
CREATE INDEX landing_sessions_last_seen ON landing_sessions (last_seen);

-- Email hashes seen on a session (from conversions that named it): stitches later conversions
-- that carry only the email (a renewal, an order from another device).
CREATE TABLE session_emails (
    email_hash  TEXT             NOT NULL,            -- sha256 hex of the normalized email
    session_id  TEXT             NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (email_hash, session_id)
);

-- The Pixel mirror: every ttq.track(event, props, {event_id}) bc.js saw on a page.
CREATE TABLE browser_events (
    id          BIGSERIAL        PRIMARY KEY,
    session_id  TEXT             NOT NULL,
    event       TEXT             NOT NULL,
    event_id    TEXT,
    at          DOUBLE PRECISION NOT NULL,            -- when the browser fired it (unix seconds)
    page_url    TEXT,
    pixel_status TEXT                                 -- the Pixel's state when it fired, if known
);
CREATE INDEX browser_events_event_id ON browser_events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX browser_events_session ON browser_events (session_id);

-- Which identifiers of a conversion came from where: JSON
-- {"session_id": ..., "matched_by": "session_id"|"ttclid"|"email"|null,
--  "fields": {"ttclid": "session", "ip": "request", ...}}
ALTER TABLE conversions ADD COLUMN stitched TEXT;
