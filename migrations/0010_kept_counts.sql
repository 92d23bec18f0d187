-- Counts by state, and failure groups, without scanning years of rows (CONTRACT section 7, "Growing for
-- years"): `detectq status`, `/metrics` and the dashboard read requests and post-tasks by state, and failed
-- and retrying requests by reason, from here, not from aggregates over the tables. Every insert, delete and
-- change of state appends its change (insert-only, so concurrent writers never wait on a counter row);
-- workers fold the changes into one row per state now and then. A state's count is the sum of its rows,
-- exact in every snapshot.
CREATE TABLE detectq.state_counts (
    kind  text NOT NULL CONSTRAINT state_counts_kind_valid CHECK (kind IN ('request', 'post_task')),
    state text NOT NULL,
    n     bigint NOT NULL
);

-- Failed and retrying requests by state and reason (the error_message, '(no reason)' when there is none);
-- last_seen is the latest updated_at of a request that joined the group.
CREATE TABLE detectq.failure_counts (
    state     text NOT NULL CONSTRAINT failure_counts_state_valid CHECK (state IN ('failed', 'retrying')),
    reason    text NOT NULL,
    n         bigint NOT NULL,
    last_seen timestamptz
);

-- Inserts and deletes come in batches (a producer's INSERT … SELECT, a prune), so they are counted once per
-- statement from its transition table; TG_ARGV[0] is the kind.
CREATE FUNCTION detectq.count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO detectq.state_counts (kind, state, n)
    SELECT TG_ARGV[0], state::text, sign * count(*) FROM changed_rows GROUP BY state;
    IF TG_ARGV[0] = 'request' THEN
        -- A group's last_seen is when a request joined it, so a delete leaves it as it was.
        INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
        SELECT state::text, coalesce(error_message, '(no reason)'), sign * count(*), CASE WHEN sign > 0 THEN max(updated_at) END
        FROM changed_rows WHERE state IN ('failed', 'retrying') GROUP BY 1, 2;
    END IF;
    RETURN NULL;
END
$$;

-- A move is counted by the row, in the trigger that already records it in the history: one call per change
-- of state, none for an UPDATE that moves nothing.
CREATE OR REPLACE FUNCTION detectq.requests_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous detectq.request_state;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.state;
        INSERT INTO detectq.state_counts (kind, state, n) VALUES ('request', OLD.state::text, -1), ('request', NEW.state::text, 1);
        IF OLD.state IN ('failed', 'retrying') THEN
            INSERT INTO detectq.failure_counts (state, reason, n) VALUES (OLD.state::text, coalesce(OLD.error_message, '(no reason)'), -1);
        END IF;
        IF NEW.state IN ('failed', 'retrying') THEN
            INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
            VALUES (NEW.state::text, coalesce(NEW.error_message, '(no reason)'), 1, NEW.updated_at);
        END IF;
    END IF;
    INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
    VALUES (
        NEW.id, previous, NEW.state, detectq.current_actor(),
        coalesce(nullif(current_setting('detectq.event_detail', true), ''),
                 CASE WHEN NEW.state IN ('retrying', 'failed') THEN NEW.error_message END)
    );
    RETURN NULL;
END
$$;

-- A failure's reason changed without a change of state (an UPDATE by hand): its group moves.
CREATE FUNCTION detectq.count_failure_reason_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen) VALUES
        (OLD.state::text, coalesce(OLD.error_message, '(no reason)'), -1, NULL),
        (NEW.state::text, coalesce(NEW.error_message, '(no reason)'), 1, NEW.updated_at);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION detectq.post_tasks_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous detectq.post_task_state;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.state;
        INSERT INTO detectq.state_counts (kind, state, n) VALUES ('post_task', OLD.state::text, -1), ('post_task', NEW.state::text, 1);
    END IF;
    INSERT INTO detectq.post_task_events (task_id, from_state, to_state, worker_id, detail)
    VALUES (NEW.id, previous, NEW.state, detectq.current_actor(), CASE WHEN NEW.state IN ('retrying', 'failed') THEN NEW.last_error END);
    RETURN NULL;
END
$$;

-- Creating the triggers locks each table against writes until this migration commits, so the counts taken
-- below are exact and every later change is counted.
CREATE TRIGGER requests_count_inserts AFTER INSERT ON detectq.requests
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('request');
CREATE TRIGGER requests_count_reason_changes AFTER UPDATE OF error_message ON detectq.requests
    FOR EACH ROW WHEN (OLD.state = NEW.state AND NEW.state IN ('failed', 'retrying')
                       AND OLD.error_message IS DISTINCT FROM NEW.error_message)
    EXECUTE FUNCTION detectq.count_failure_reason_change();
CREATE TRIGGER requests_count_deletes AFTER DELETE ON detectq.requests
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('request');
CREATE TRIGGER post_tasks_count_inserts AFTER INSERT ON detectq.post_tasks
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('post_task');
CREATE TRIGGER post_tasks_count_deletes AFTER DELETE ON detectq.post_tasks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('post_task');

INSERT INTO detectq.state_counts (kind, state, n)
SELECT 'request', state::text, count(*) FROM detectq.requests GROUP BY state;
INSERT INTO detectq.state_counts (kind, state, n)
SELECT 'post_task', state::text, count(*) FROM detectq.post_tasks GROUP BY state;
INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
SELECT state::text, coalesce(error_message, '(no reason)'), count(*), max(updated_at)
FROM detectq.requests WHERE state IN ('failed', 'retrying') GROUP BY 1, 2;

-- Folds the appended changes into one row per kind and state (states that sum to zero drop out). Two folds
-- at once are safe: the second skips the rows the first deleted and cannot see the sums it wrote.
CREATE FUNCTION detectq.fold_state_counts() RETURNS void LANGUAGE sql AS $$
    WITH folded AS (DELETE FROM detectq.state_counts RETURNING kind, state, n)
    INSERT INTO detectq.state_counts (kind, state, n)
    SELECT kind, state, sum(n) FROM folded GROUP BY kind, state HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.failure_counts RETURNING state, reason, n, last_seen)
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state, reason, sum(n), max(last_seen) FROM folded GROUP BY state, reason HAVING sum(n) <> 0;
$$;

-- Recounts from the tables themselves, after a bulk load that ran with the triggers off.
CREATE FUNCTION detectq.recount_states() RETURNS void LANGUAGE sql AS $$
    DELETE FROM detectq.state_counts;
    INSERT INTO detectq.state_counts (kind, state, n)
    SELECT 'request', state::text, count(*) FROM detectq.requests GROUP BY state;
    INSERT INTO detectq.state_counts (kind, state, n)
    SELECT 'post_task', state::text, count(*) FROM detectq.post_tasks GROUP BY state;
    DELETE FROM detectq.failure_counts;
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state::text, coalesce(error_message, '(no reason)'), count(*), max(updated_at)
    FROM detectq.requests WHERE state IN ('failed', 'retrying') GROUP BY 1, 2;
$$;

-- The post-processors' backlogs (the dashboard's overview) read only the tasks that are not completed.
CREATE INDEX post_tasks_unfinished_idx ON detectq.post_tasks (processor, state) INCLUDE (run_at) WHERE state <> 'completed';
