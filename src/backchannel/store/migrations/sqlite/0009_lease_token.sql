-- Delivery: the token of the claim that holds an in-flight row. Every mark a worker makes
-- names it, and a mark whose token no longer matches changes nothing: a worker whose lease
-- ran out mid-cycle (slow platform, stalled process) can no longer mark rows that another
-- worker has claimed since, nor return delivered rows to pending. NULL when not in flight.
ALTER TABLE outbox ADD COLUMN lease_token TEXT;
