-- detectq 0011: the second round of speed (README, Benchmarks).
--
-- 1. A request's history and counts are written once per statement, not once per row. A claim or a batch of
--    completions changes a hundred rows in one UPDATE, and a producer's backfill inserts thousands in one
--    INSERT or COPY: each statement now appends its events, counts and wake-up in a few set-based
--    statements over its transition tables, where each row used to run PL/pgSQL of its own. The rules are
--    the same: the insert is the first event, every change of state is one event (with the same actor and
--    detail), an illegal change of state is refused with `requests_legal_state_transition`, a new request
--    must start queued, and `updated_at` follows every update.
-- 2. `request_events` keeps its requests' histories without a foreign key: the key's check cost every event
--    a lookup and a row lock on its request (a third of an insert's cost). Events are written only by these
--    triggers, for rows that exist; deleting requests deletes their events in the same statement.
-- 3. A completion hands its post-tasks to the worker that completed it: they are created running under that
--    worker's lease (their history starts at `running`) and it runs them at once with the outcome in hand.
--    Only a task that any worker may claim wakes the workers.

-- A new request starts queued, with no attempt, lease or result of its own: the function runs only for a row
-- that breaks the rule (the WHEN is evaluated without calling it).
DROP TRIGGER requests_check_insert ON detectq.requests;
CREATE OR REPLACE FUNCTION detectq.requests_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a new request must start queued, with no attempt, lease, remote_uuid or result'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_new_request_starts_queued',
              SCHEMA = 'detectq', TABLE = 'requests';
END
$$;
CREATE TRIGGER requests_check_insert BEFORE INSERT ON detectq.requests
    FOR EACH ROW WHEN (NEW.state <> 'queued' OR NEW.attempt <> 0 OR NEW.locked_by IS NOT NULL OR NEW.remote_uuid IS NOT NULL
                       OR NEW.result IS NOT NULL OR NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION detectq.requests_check_insert();

-- updated_at follows every update: an UPDATE that sets it itself (the worker's do) needs no call.
DROP TRIGGER requests_check_update ON detectq.requests;
DROP FUNCTION detectq.requests_check_update();
CREATE FUNCTION detectq.requests_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER requests_touch BEFORE UPDATE ON detectq.requests
    FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at) EXECUTE FUNCTION detectq.requests_touch();

-- The inserted rows' first events, their wake-up (one NOTIFY per statement) and the history's actor and
-- detail, read once per statement.
DROP TRIGGER requests_record_insert ON detectq.requests;
DROP TRIGGER requests_notify_insert ON detectq.requests;
CREATE FUNCTION detectq.requests_record_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
BEGIN
    INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
    SELECT id, NULL, state, actor, given_detail FROM inserted ORDER BY id;
    IF EXISTS (SELECT 1 FROM inserted WHERE run_at <= now()) THEN
        PERFORM pg_notify('detectq_requests', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER requests_record_inserts AFTER INSERT ON detectq.requests
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_record_inserts();

-- Every change of state in an UPDATE: refused when illegal, else recorded in the history and the counts.
-- (A trigger with transition tables cannot name columns, so it runs for every UPDATE and finds the rows
-- whose state changed itself.)
DROP TRIGGER requests_record_transition ON detectq.requests;
CREATE FUNCTION detectq.requests_record_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
    illegal record;
BEGIN
    SELECT o.id, o.state AS from_state, n.state AS to_state INTO illegal
    FROM after_rows n JOIN before_rows o ON o.id = n.id
    WHERE n.state <> o.state AND NOT EXISTS (
        SELECT 1 FROM detectq.request_state_transitions t WHERE t.from_state = o.state AND t.to_state = n.state
    )
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'request % cannot move from % to %', illegal.id, illegal.from_state, illegal.to_state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_legal_state_transition',
                  SCHEMA = 'detectq', TABLE = 'requests',
                  HINT = 'detectq.request_state_transitions lists the legal transitions';
    END IF;
    WITH moved AS MATERIALIZED (
        SELECT n.id, o.state AS from_state, n.state AS to_state, o.error_message AS old_error, n.error_message, n.updated_at
        FROM after_rows n JOIN before_rows o ON o.id = n.id
        WHERE n.state <> o.state
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
    )
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT change.state, change.reason, change.n, change.last_seen
    FROM moved, LATERAL (VALUES (from_state::text, coalesce(old_error, '(no reason)'), -1, NULL::timestamptz),
                                (to_state::text, coalesce(error_message, '(no reason)'), 1, updated_at))
         AS change(state, reason, n, last_seen)
    WHERE change.state IN ('failed', 'retrying');
    RETURN NULL;
END
$$;
CREATE TRIGGER requests_record_transitions AFTER UPDATE ON detectq.requests
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows FOR EACH STATEMENT
    EXECUTE FUNCTION detectq.requests_record_transitions();

-- The row-level history function is no longer used by any trigger.
DROP FUNCTION detectq.requests_record_event();

-- The history without a foreign key; a DELETE of requests deletes their events in the same statement.
ALTER TABLE detectq.request_events DROP CONSTRAINT request_events_request_id_fkey;
CREATE FUNCTION detectq.requests_delete_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM detectq.request_events e USING deleted WHERE e.request_id = deleted.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER requests_delete_history AFTER DELETE ON detectq.requests
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_delete_history();

-- Post-tasks created running (handed to the completing worker) wake no one.
DROP TRIGGER post_tasks_notify_insert ON detectq.post_tasks;
CREATE TRIGGER post_tasks_notify_insert AFTER INSERT ON detectq.post_tasks
    FOR EACH ROW WHEN (NEW.state IN ('queued', 'retrying') AND NEW.run_at <= now())
    EXECUTE FUNCTION detectq.post_tasks_notify_runnable();

-- The claims' scans, in claim order and as index scans whatever the tables' statistics say. A burst of
-- inserts into a table whose statistics are stale (a fresh install; a history too large for the burst to
-- trigger an ANALYZE) led the planner to read and sort every claimable row for each claim of a hundred:
-- 20 ms a claim at 50,000 waiting, against 0.2 ms. With sorting priced out, for these functions alone, the
-- claimable index's own order is the plan. The states are the ones the state machine claims from. (ROWS 100,
-- a claim's usual size, lets the claiming UPDATE join them to the table by its primary key.)
CREATE FUNCTION detectq.next_claimable_requests(how_many bigint)
RETURNS TABLE (claimable_id bigint, claimed_from text, prior_unanswered_since timestamptz)
LANGUAGE sql VOLATILE ROWS 100 SET enable_sort = off AS $$
    SELECT r.id, r.state::text, r.unanswered_since FROM detectq.requests AS r
    WHERE r.state IN ('queued', 'retrying') AND r.run_at <= now()
    ORDER BY r.priority DESC, r.run_at, r.id
    LIMIT how_many
    FOR UPDATE SKIP LOCKED
$$;

CREATE FUNCTION detectq.next_claimable_post_tasks(how_many bigint)
RETURNS TABLE (claimable_id bigint, claimed_from text)
LANGUAGE sql VOLATILE ROWS 100 SET enable_sort = off AS $$
    SELECT t.id, t.state::text FROM detectq.post_tasks AS t
    WHERE t.state IN ('queued', 'retrying') AND t.run_at <= now()
    ORDER BY t.run_at, t.id
    LIMIT how_many
    FOR UPDATE SKIP LOCKED
$$;
