-- WooCommerce source (PostgreSQL). Same column as migrations/sqlite/0015_source_store_url.sql.

-- The shop a source's webhooks must come from: WooCommerce's X-WC-Webhook-Source (the shop's
-- home URL), recorded by `backchannel source set woocommerce --store-url`. A staging copy of
-- a WordPress site keeps its webhooks and their secret; this is how its orders are refused.
-- Not a secret: plain text. NULL: any shop (Shopify and Stripe never set it).
ALTER TABLE source_secrets ADD COLUMN store_url TEXT;
