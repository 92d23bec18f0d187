-- detectq 0012: the history trigger of an UPDATE costs time in proportion to its rows, whatever it saw before.
--
-- The statement trigger of 0011 paired each row's old and new versions by joining its two transition
-- tables. The planner sizes a transition table when the trigger's statement is first parsed in a session,
-- and PL/pgSQL keeps that parse: a session whose first UPDATE changed one row planned every later join for
-- one row, as a nested loop. A lease heartbeat over 5,000 requests then compared 25 million pairs and took
-- 2.5 s of the server's CPU, every few seconds, where the UPDATE alone takes 0.1 s. The versions are now
-- paired by grouping both tables' rows by id, which costs the same whatever the estimate, once per statement:
-- the check for an illegal change reads the same pairs as the history, and its exception takes back what
-- the statement wrote.

CREATE OR REPLACE FUNCTION detectq.requests_record_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
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
                   max(updated_at) FILTER (WHERE NOT is_before) AS updated_at
            FROM (
                SELECT id, state, error_message, updated_at, true AS is_before FROM before_rows
                UNION ALL SELECT id, state, error_message, updated_at, false FROM after_rows
            ) AS versions
            GROUP BY id
        ) AS paired
        WHERE from_state <> to_state
    ), events AS (
        INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
        SELECT id, from_state, to_state, actor,
               coalesce(given_detail, CASE WHEN to_state IN ('retrying', 'failed') THEN error_message END)
        FROM moved ORDER BY id
    ), counted AS (
        INSERT INTO detectq.state_counts (kind, state, n)
        SELECT 'request', change.state, sum(change.n)
        FROM moved, LATERAL (VALUES (from_state::text, -1), (to_state::text, 1)) AS change(state, n)
        GROUP BY change.state HAVING sum(change.n) <> 0
    ), failures AS (
        INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
        SELECT change.state, change.reason, change.n, change.last_seen
        FROM moved, LATERAL (VALUES (from_state::text, coalesce(old_error, '(no reason)'), -1, NULL::timestamptz),
                                    (to_state::text, coalesce(error_message, '(no reason)'), 1, updated_at))
             AS change(state, reason, n, last_seen)
        WHERE change.state IN ('failed', 'retrying')
    )
    SELECT moved.id, moved.from_state, moved.to_state INTO illegal
    FROM moved
    WHERE NOT EXISTS (
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
