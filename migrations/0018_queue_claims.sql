-- detectq 0018: claims per queue and minute (CONTRACT section 8), for the dashboard's Queues page and its chart of
-- each queue's claims per minute. Kept as rows to add up by the history trigger, like the billing of 0016 (one row
-- per statement that claimed, per queue and minute), folded with the counts; a day is kept.

CREATE TABLE detectq.queue_claims (
    queue  text NOT NULL,
    minute timestamptz NOT NULL,
    n      bigint NOT NULL
);
CREATE INDEX queue_claims_minute_idx ON detectq.queue_claims (minute, queue);

COMMENT ON TABLE detectq.queue_claims IS
    'Claims (moves from queued or retrying to submitting) per queue and minute, as rows to add up; the fold sums them and keeps a day.';

-- The history trigger of 0016, which now also counts each claim (a move from queued or retrying to submitting)
-- for its queue and minute.
CREATE OR REPLACE FUNCTION detectq.requests_record_transitions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
    illegal record;
BEGIN
    WITH moved AS MATERIALIZED (
        -- Each id is in each table once, so a side's max() is that side's value.
        SELECT * FROM (
            SELECT id,
                   max(state) FILTER (WHERE is_before) AS from_state, max(state) FILTER (WHERE NOT is_before) AS to_state,
                   max(error_message) FILTER (WHERE is_before) AS old_error, max(error_message) FILTER (WHERE NOT is_before) AS error_message,
                   max(updated_at) FILTER (WHERE NOT is_before) AS updated_at,
                   max(accepted_at) FILTER (WHERE is_before) AS old_accepted_at, max(accepted_at) FILTER (WHERE NOT is_before) AS accepted_at,
                   max(queue) FILTER (WHERE is_before) AS old_queue, max(queue) FILTER (WHERE NOT is_before) AS queue
            FROM (
                SELECT id, state, error_message, updated_at, accepted_at, queue, true AS is_before FROM before_rows
                UNION ALL SELECT id, state, error_message, updated_at, accepted_at, queue, false FROM after_rows
            ) AS versions
            GROUP BY id
        ) AS paired
        WHERE from_state <> to_state OR old_queue <> queue
    ), events AS (
        INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
        SELECT id, from_state, to_state, actor,
               coalesce(given_detail, CASE WHEN to_state IN ('retrying', 'failed') THEN error_message END)
        FROM moved WHERE from_state <> to_state ORDER BY id
    ), counted AS (
        -- By queue: a request moved to another queue by hand leaves the old one's count for the new one's.
        INSERT INTO detectq.state_counts (kind, queue, state, n)
        SELECT 'request', change.queue, change.state, sum(change.n)
        FROM moved, LATERAL (VALUES (old_queue, from_state::text, -1), (queue, to_state::text, 1)) AS change(queue, state, n)
        GROUP BY change.queue, change.state HAVING sum(change.n) <> 0
    ), failures AS (
        INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
        SELECT change.state, change.reason, change.n, change.last_seen
        FROM moved, LATERAL (VALUES (from_state::text, coalesce(old_error, '(no reason)'), -1, NULL::timestamptz),
                                    (to_state::text, coalesce(error_message, '(no reason)'), 1, updated_at))
             AS change(state, reason, n, last_seen)
        WHERE change.state IN ('failed', 'retrying') AND from_state <> to_state
    ), billed AS (
        INSERT INTO detectq.queue_billing (queue, day, n)
        SELECT queue, (accepted_at AT TIME ZONE 'UTC')::date, count(*)
        FROM moved WHERE old_accepted_at IS NULL AND accepted_at IS NOT NULL
        GROUP BY 1, 2
    ), claimed AS (
        INSERT INTO detectq.queue_claims (queue, minute, n)
        SELECT queue, date_trunc('minute', updated_at), count(*)
        FROM moved WHERE to_state = 'submitting' AND from_state IN ('queued', 'retrying')
        GROUP BY 1, 2
    )
    SELECT moved.id, moved.from_state, moved.to_state INTO illegal
    FROM moved
    WHERE moved.from_state <> moved.to_state AND NOT EXISTS (
        SELECT 1 FROM detectq.request_state_transitions t WHERE t.from_state = moved.from_state AND t.to_state = moved.to_state
    )
    ORDER BY moved.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'request % cannot move from % to %', illegal.id, illegal.from_state, illegal.to_state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_legal_state_transition',
                  SCHEMA = 'detectq', TABLE = 'requests',
                  HINT = 'detectq.request_state_transitions lists the legal transitions';
    END IF;
    RETURN NULL;
END
$$;

-- The fold of the kept counts also sums the claim rows (and forgets minutes older than a day).
CREATE OR REPLACE FUNCTION detectq.fold_state_counts() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH folded AS (DELETE FROM detectq.state_counts RETURNING kind, queue, state, n)
    INSERT INTO detectq.state_counts (kind, queue, state, n)
    SELECT kind, queue, state, sum(n) FROM folded GROUP BY kind, queue, state HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.failure_counts RETURNING state, reason, n, last_seen)
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state, reason, sum(n), max(last_seen) FROM folded GROUP BY state, reason HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.queue_billing RETURNING queue, day, n)
    INSERT INTO detectq.queue_billing (queue, day, n)
    SELECT queue, day, sum(n) FROM folded WHERE day >= (now() AT TIME ZONE 'UTC')::date - 40 GROUP BY queue, day;
    WITH folded AS (DELETE FROM detectq.queue_claims RETURNING queue, minute, n)
    INSERT INTO detectq.queue_claims (queue, minute, n)
    SELECT queue, minute, sum(n) FROM folded WHERE minute >= now() - interval '1 day' GROUP BY queue, minute;
$$;
