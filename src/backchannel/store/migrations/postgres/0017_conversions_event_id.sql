-- Dedup page (PostgreSQL). Same index as migrations/sqlite/0017_conversions_event_id.sql.

-- A Pixel call mirrored with another id than its order's is a mismatch only when that id is
-- no stored conversion's own (two orders in one visit are two events, not a mismatch). The
-- other Pixels' calls carry their platform's event names (fbq's "Purchase" for our
-- CompletePayment), so the lookup cannot use the (event, event_id) key: it is by event_id
-- alone, which this index makes a probe instead of a scan of every conversion.
CREATE INDEX conversions_event_id ON conversions (event_id);
