-- detectq 0003: post-tasks get the same guarantees as requests: a table of legal state changes
-- enforced by a trigger, a history of every change, and a NOTIFY when one becomes runnable.

CREATE TABLE detectq.post_task_state_transitions (
    from_state detectq.post_task_state NOT NULL,
    to_state   detectq.post_task_state NOT NULL,
    PRIMARY KEY (from_state, to_state)
);

INSERT INTO detectq.post_task_state_transitions (from_state, to_state) VALUES
    ('queued',    'running'),    -- claimed by a worker
    ('running',   'completed'),
    ('running',   'retrying'),   -- a failed delivery, or a lease that expired, with attempts left
    ('running',   'failed'),     -- attempts spent, or a permanent failure
    ('running',   'queued'),     -- released unrun by a worker shutting down
    ('retrying',  'running'),
    ('failed',    'queued');     -- retried by hand

CREATE TABLE detectq.post_task_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id    bigint NOT NULL REFERENCES detectq.post_tasks (id) ON DELETE CASCADE,
    from_state detectq.post_task_state,
    to_state   detectq.post_task_state NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id  text,
    detail     text
);

CREATE INDEX post_task_events_task_idx ON detectq.post_task_events (task_id, id);
CREATE INDEX post_tasks_leased_idx ON detectq.post_tasks (locked_until) WHERE locked_by IS NOT NULL;

CREATE FUNCTION detectq.post_tasks_check_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT EXISTS (
        SELECT 1 FROM detectq.post_task_state_transitions t
        WHERE t.from_state = OLD.state AND t.to_state = NEW.state
    ) THEN
        RAISE EXCEPTION 'post-task % cannot move from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'post_tasks_legal_state_transition',
                  SCHEMA = 'detectq', TABLE = 'post_tasks',
                  HINT = 'detectq.post_task_state_transitions lists the legal transitions';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION detectq.post_tasks_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous detectq.post_task_state;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.state;
    END IF;
    INSERT INTO detectq.post_task_events (task_id, from_state, to_state, worker_id, detail)
    VALUES (
        NEW.id, previous, NEW.state,
        nullif(current_setting('detectq.worker_id', true), ''),
        CASE WHEN NEW.state IN ('retrying', 'failed') THEN NEW.last_error END
    );
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.post_tasks_notify_runnable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('detectq_post_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER post_tasks_check_update BEFORE UPDATE ON detectq.post_tasks
    FOR EACH ROW EXECUTE FUNCTION detectq.post_tasks_check_update();
CREATE TRIGGER post_tasks_record_insert AFTER INSERT ON detectq.post_tasks
    FOR EACH ROW EXECUTE FUNCTION detectq.post_tasks_record_event();
CREATE TRIGGER post_tasks_record_transition AFTER UPDATE OF state ON detectq.post_tasks
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state) EXECUTE FUNCTION detectq.post_tasks_record_event();
CREATE TRIGGER post_tasks_notify_insert AFTER INSERT ON detectq.post_tasks
    FOR EACH ROW WHEN (NEW.run_at <= now()) EXECUTE FUNCTION detectq.post_tasks_notify_runnable();
CREATE TRIGGER post_tasks_notify_runnable AFTER UPDATE OF state, run_at ON detectq.post_tasks
    FOR EACH ROW WHEN (NEW.state IN ('queued', 'retrying') AND NEW.run_at <= now())
    EXECUTE FUNCTION detectq.post_tasks_notify_runnable();
