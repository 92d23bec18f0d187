-- Who made a change, without session state: behind a transaction-pooling PgBouncer a session setting set
-- by one client stays on the server connection and is seen by the next client that borrows it, so the
-- history would name the wrong worker. application_name is a startup parameter PgBouncer keeps per client
-- and sets on every server connection it lends, so the actor now comes from it:
--   'detectq worker <id>'   -> '<id>'                   (a worker; DETECTQ_WORKER_ID)
--   'detectq <verb> (<who>)' -> the whole name           (detectq retry, cancel, pause, the dashboard)
--   anything else           -> NULL                      (a producer's INSERT, a hand-written UPDATE)
-- A transaction (or session) that sets detectq.worker_id itself still names its own actor first. The history
-- triggers call it from migration 0010 on, where they are rewritten to keep the counts as well.

-- PL/pgSQL rather than SQL: it runs for every event, and a SQL function with a FROM is planned on each call.
CREATE FUNCTION detectq.current_actor() RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    explicit text := nullif(current_setting('detectq.worker_id', true), '');
    name text := current_setting('application_name');
BEGIN
    IF explicit IS NOT NULL THEN
        RETURN explicit;
    ELSIF starts_with(name, 'detectq worker ') THEN
        RETURN nullif(substr(name, 16), '');
    ELSIF name ~ '^detectq [a-z-]+ \(' THEN
        RETURN name;
    END IF;
    RETURN NULL;
END
$$;
