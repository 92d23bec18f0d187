-- detectq 0027: statements that look requests up by another index keep off the claim index (issue 30 item 4).
--
-- PostgreSQL may read a partial index whole when its statistics say few rows match the index's predicate: a
-- lookup by `waiting_for` that also asks for `state = 'queued'` can read the claim index
-- (requests_queue_claimable_idx, `state IN ('queued', 'retrying')`) from end to end, filtering each entry, in
-- place of the small index of waiting requests. With vacuum running that is cheap. Beside a transaction that
-- holds back vacuum the claim index keeps an entry for every request ever queued, and in scenario 14 of the bench
-- the worker's completion batch, which looks for waiters the same way, took up to 4 s a statement from the first
-- time autovacuum's ANALYZE saw the queue short (the workers' completions fell to a fifth).
--
-- The trigger that makes the waiters of a request leaving flight claimable now compares their state as text,
-- from which the planner cannot prove the claim index's predicate: it finds them by the index of waiting
-- requests, and then by their ids. (The worker's own statements, the completion batch and the lease renewal, do
-- the same in their SQL.)

CREATE OR REPLACE FUNCTION detectq.requests_record_transitions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
    illegal_id bigint;
    illegal_from detectq.request_state;
    illegal_to detectq.request_state;
    left_flight bigint[];
    waiting bigint[];
BEGIN
    WITH moved AS MATERIALIZED (
        -- Each id is in each table once, so a side's max() is that side's value.
        SELECT * FROM (
            SELECT id,
                   max(state) FILTER (WHERE is_before) AS from_state, max(state) FILTER (WHERE NOT is_before) AS to_state,
                   max(error_message) FILTER (WHERE is_before) AS old_error, max(error_message) FILTER (WHERE NOT is_before) AS error_message,
                   max(updated_at) FILTER (WHERE NOT is_before) AS updated_at,
                   max(accepted_at) FILTER (WHERE is_before) AS old_accepted_at, max(accepted_at) FILTER (WHERE NOT is_before) AS accepted_at,
                   max(queue) FILTER (WHERE is_before) AS old_queue, max(queue) FILTER (WHERE NOT is_before) AS queue,
                   max(reused_from) FILTER (WHERE NOT is_before) AS reused_from,
                   max(media_sha256) FILTER (WHERE NOT is_before) AS media_sha256,
                   max(unanswered_since) FILTER (WHERE is_before) AS old_unanswered_since,
                   max(unanswered_since) FILTER (WHERE NOT is_before) AS unanswered_since
            FROM (
                SELECT id, state, error_message, updated_at, accepted_at, queue, reused_from, media_sha256, unanswered_since, true AS is_before
                FROM before_rows
                UNION ALL SELECT id, state, error_message, updated_at, accepted_at, queue, reused_from, media_sha256, unanswered_since, false
                FROM after_rows
            ) AS versions
            GROUP BY id
        ) AS paired
        WHERE from_state <> to_state OR old_queue <> queue
    ), events AS (
        INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
        SELECT id, from_state, to_state, actor,
               coalesce(given_detail, CASE WHEN to_state IN ('retrying', 'failed') THEN error_message
                                           WHEN to_state = 'completed' AND reused_from IS NOT NULL
                                           THEN 'verdict reused from request ' || reused_from
                                                || ' (identical media and options): not sent to the API' END)
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
    SELECT bad.id, bad.from_state, bad.to_state,
           (SELECT array_agg(m.id) FROM moved m
            WHERE m.media_sha256 IS NOT NULL
              AND (m.from_state IN ('submitting', 'awaiting_result', 'retrying') OR (m.from_state = 'queued' AND m.old_unanswered_since IS NOT NULL))
              AND NOT (m.to_state IN ('submitting', 'awaiting_result', 'retrying') OR (m.to_state = 'queued' AND m.unanswered_since IS NOT NULL)))
    INTO illegal_id, illegal_from, illegal_to, left_flight
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT m.id, m.from_state, m.to_state FROM moved m
        WHERE m.from_state <> m.to_state AND NOT EXISTS (
            SELECT 1 FROM detectq.request_state_transitions t WHERE t.from_state = m.from_state AND t.to_state = m.to_state
        )
        ORDER BY m.id LIMIT 1
    ) AS bad ON true;
    IF illegal_id IS NOT NULL THEN
        RAISE EXCEPTION 'request % cannot move from % to %', illegal_id, illegal_from, illegal_to
            USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_legal_state_transition',
                  SCHEMA = 'detectq', TABLE = 'requests',
                  HINT = 'detectq.request_state_transitions lists the legal transitions';
    END IF;
    -- Read in a statement of its own, after the one that changed them, so a hand-back that statement waited for
    -- (it locks the request in flight's row for share) is seen: those waiting still (the completion's statement
    -- completes the ones it saw) become claimable now.
    IF left_flight IS NOT NULL THEN
        -- (`waiting_for IS NOT NULL` lets the planner read the small index of waiting requests: without it, 1 ms.
        -- The state compared as text keeps it off the claim index: see above.)
        SELECT array_agg(w.id) INTO waiting FROM detectq.requests w
        WHERE w.waiting_for IS NOT NULL AND w.waiting_for = ANY(left_flight) AND w.state::text = 'queued';
        IF waiting IS NOT NULL THEN
            UPDATE detectq.requests SET run_at = now(), waiting_for = NULL WHERE id = ANY(waiting) AND state::text = 'queued';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
