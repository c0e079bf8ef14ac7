-- Diagnostics: when a delivery attempt last failed (retry, dead letter or expiry), in unix
-- seconds. Before this the dashboard could only show due_at (the next try for a retrying
-- row, the last due try for a dead one). NULL for rows that never failed, and for rows that
-- failed before this migration. Same column in both backends.
ALTER TABLE outbox ADD COLUMN failed_at REAL;
