-- Diagnostics: the dashboard's "delivered per day" and latency figures read delivered rows by
-- delivered_at range. Without this index they read the whole delivery history, which only
-- grows (conversions are scrubbed, not deleted). Partial: rows not yet delivered are not in
-- it. Same index in both backends. Cost measured with bench/delivery.py: see the README.
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;
