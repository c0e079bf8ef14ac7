-- The Shopify custom pixel (PostgreSQL). Same columns, keys and defaults as
-- migrations/sqlite/0016_shopify_pixel.sql.

-- A site key may post to /v1/collect from an opaque origin (`Origin: null`): a Shopify
-- custom pixel runs in a sandboxed iframe without allow-same-origin, so its fetch carries no
-- shop origin. 0/1; only keys created for it (`snippet shopify`, or `keys create --scope
-- collect --allow-null-origin`) have it; every key before this migration: 0.
ALTER TABLE api_keys ADD COLUMN allow_null_origin INTEGER NOT NULL DEFAULT 0;

-- Which landing session completed which Shopify checkout: the pixel's checkout_completed
-- sends its session id with checkout.token, and the orders/create webhook's checkout_token
-- finds the session through it. The first report of a token wins (the pixel fires once per
-- checkout); rows go when their session is purged (retention).
CREATE TABLE checkout_sessions (
    checkout_token TEXT             PRIMARY KEY,
    session_id     TEXT             NOT NULL,
    seen_at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX checkout_sessions_session ON checkout_sessions (session_id);
