-- Generic platform ids on the browser leg (SQLite). Same column as
-- migrations/postgres/0012_platform_ids.sql.

-- The click ids and first-party browser ids that destinations declare
-- (destinations.base.Identifier) beyond the named columns of the first four platforms:
-- Snapchat's ScCid/_scid, Pinterest's epik/_epik, Reddit's rdt_cid/_rdt_uuid, and whatever a
-- later platform declares. A JSON object {field: value}; a message's values replace the
-- session's for the same field, as COALESCE(excluded, current) does for the named columns.
ALTER TABLE landing_sessions ADD COLUMN ids TEXT;
