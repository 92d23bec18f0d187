-- detectq: no transaction
-- detectq 0017: builds indexes on detectq.requests (CONCURRENTLY, blocking no writer) and validates the constraints
-- 0016 added, for the fair claim of CONTRACT section 8: each queue's and group's due requests in claim order,
-- the requests in flight per queue and group (max_in_flight, group_max_in_flight), and the requests whose answer
-- is owed (counted as in flight, and against the daily limit); and counts for the daily limit what was billed today before 0016 (whose trigger counts
-- from then on). Re-runnable after an interruption (but for that count, should it be cut off between its INSERT and the
-- runner's record of this migration).
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_queue_claimable_idx ON detectq.requests (queue, group_key, priority DESC, run_at, id)
    WHERE state IN ('queued', 'retrying');
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_queue_in_flight_idx ON detectq.requests (queue, group_key)
    WHERE state IN ('submitting', 'awaiting_result');
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_queue_answer_owed_idx ON detectq.requests (queue, group_key, unanswered_since)
    WHERE unanswered_since IS NOT NULL AND accepted_at IS NULL;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_queue_name;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_group_key_length;
INSERT INTO detectq.queue_billing (queue, day, n)
SELECT 'default', (accepted_at AT TIME ZONE 'UTC')::date, count(*) FROM detectq.requests
WHERE accepted_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND accepted_at < (SELECT applied_at FROM detectq.schema_migrations WHERE version = 16)
GROUP BY 2;
