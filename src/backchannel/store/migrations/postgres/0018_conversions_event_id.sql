-- Dedup page (PostgreSQL). Same index as migrations/sqlite/0018_conversions_event_id.sql.

-- A Pixel call mirrored with another id than its order's is a mismatch only when that id is
-- no stored conversion's own in the same property (two orders in one visit are two events,
-- not a mismatch). The other Pixels' calls carry their platform's event names (fbq's
-- "Purchase" for our CompletePayment), so the lookup cannot use the (property, event,
-- event_id) key: it is by property and event_id, which this index makes a probe instead of a
-- scan of the property's conversions.
CREATE INDEX conversions_event_id ON conversions (property_id, event_id);
