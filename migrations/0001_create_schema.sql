-- detectq 0001: the request queue, its state machine and history, and the post-processing tables.
--
-- Applied by `detectq migrate` inside one transaction and recorded, with its checksum, in
-- detectq.schema_migrations. Never edit this file once applied: add a new numbered file instead.

CREATE SCHEMA IF NOT EXISTS detectq;

-- ---------------------------------------------------------------------------------------------
-- States and their legal transitions
-- ---------------------------------------------------------------------------------------------

CREATE TYPE detectq.request_state AS ENUM (
    'queued',           -- waiting to be claimed (at or after run_at)
    'submitting',       -- claimed under a lease: uploading and submitting (sync: also waiting)
    'awaiting_result',  -- accepted by the API, remote_uuid stored; waiting for callback or poll
    'retrying',         -- an attempt failed in a way worth retrying; claimed again at run_at
    'completed',        -- the detection result is stored
    'failed',           -- will not be tried again; error_message says why
    'cancelled'         -- cancelled by a user before it completed
);

-- The one table of legal state changes. The Swift enum RequestState holds the same table, and the
-- test suite checks this trigger against it pair by pair.
CREATE TABLE detectq.request_state_transitions (
    from_state detectq.request_state NOT NULL,
    to_state   detectq.request_state NOT NULL,
    PRIMARY KEY (from_state, to_state)
);

INSERT INTO detectq.request_state_transitions (from_state, to_state) VALUES
    ('queued',          'submitting'),       -- claimed by a worker
    ('queued',          'cancelled'),
    ('submitting',      'awaiting_result'),  -- the API accepted it; remote_uuid stored
    ('submitting',      'completed'),        -- Prefer: wait returned the result
    ('submitting',      'retrying'),         -- a retryable failure, or a lease that expired
    ('submitting',      'failed'),           -- a permanent failure, or attempts spent
    ('submitting',      'cancelled'),
    ('submitting',      'queued'),           -- released unsent by a worker shutting down
    ('awaiting_result', 'completed'),
    ('awaiting_result', 'failed'),           -- the API reports the detection failed
    ('awaiting_result', 'cancelled'),
    ('retrying',        'submitting'),       -- claimed again
    ('retrying',        'cancelled'),
    ('failed',          'queued');           -- `detectq retry`

-- ---------------------------------------------------------------------------------------------
-- The queue
-- ---------------------------------------------------------------------------------------------

CREATE TABLE detectq.requests (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,

    -- What the producer sets: exactly one media source ...
    media_url            text,
    media_path           text,
    media_token          text,
    -- ... the options forwarded to the API ...
    visualize            boolean NOT NULL DEFAULT false,
    intelligence         boolean NOT NULL DEFAULT false,
    audio_source_tracing boolean NOT NULL DEFAULT false,
    use_reverse_search   boolean NOT NULL DEFAULT false,
    use_ood_detector     boolean NOT NULL DEFAULT false,
    zero_retention_mode  boolean NOT NULL DEFAULT false,
    frame_length         integer,
    start_region         numeric,
    end_region           numeric,
    max_video_secs       numeric,
    max_video_fps        numeric,
    model_types          text,
    pipeline             text,
    -- ... and how the queue treats it.
    wait_mode            text NOT NULL DEFAULT 'auto',
    priority             smallint NOT NULL DEFAULT 0,
    run_at               timestamptz NOT NULL DEFAULT now(),
    max_attempts         integer NOT NULL DEFAULT 8,
    idempotency_key      text,
    metadata             jsonb NOT NULL DEFAULT '{}',

    -- What the worker maintains.
    state                detectq.request_state NOT NULL DEFAULT 'queued',
    attempt              integer NOT NULL DEFAULT 0,
    locked_by            text,
    locked_until         timestamptz,
    remote_uuid          text,
    submit_path          text,
    submit_started_at    timestamptz,
    media_type           text,
    label                text,
    is_fake              boolean,
    aggregated_score     double precision,
    result               jsonb,
    file_deleted_at      timestamptz,
    error_message        text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz,

    -- Producer rules (CONTRACT.md section 1).
    CONSTRAINT requests_exactly_one_media_source
        CHECK (num_nonnulls(media_url, media_path, media_token) = 1),
    CONSTRAINT requests_media_url_not_blank CHECK (btrim(media_url) <> ''),
    CONSTRAINT requests_media_path_not_blank CHECK (btrim(media_path) <> ''),
    CONSTRAINT requests_media_token_not_blank CHECK (btrim(media_token) <> ''),
    CONSTRAINT requests_frame_length_range CHECK (frame_length BETWEEN 1 AND 4),
    CONSTRAINT requests_start_region_non_negative CHECK (start_region >= 0 AND start_region < 'Infinity'),
    CONSTRAINT requests_end_region_non_negative CHECK (end_region >= 0 AND end_region < 'Infinity'),
    CONSTRAINT requests_end_region_after_start_region CHECK (end_region > start_region),
    CONSTRAINT requests_max_video_secs_non_negative CHECK (max_video_secs >= 0 AND max_video_secs < 'Infinity'),
    CONSTRAINT requests_max_video_fps_non_negative CHECK (max_video_fps >= 0 AND max_video_fps < 'Infinity'),
    CONSTRAINT requests_model_types_valid CHECK (model_types IN ('image', 'talking_head')),
    CONSTRAINT requests_pipeline_not_blank CHECK (btrim(pipeline) <> ''),
    CONSTRAINT requests_wait_mode_valid CHECK (wait_mode IN ('auto', 'sync', 'callback', 'poll')),
    CONSTRAINT requests_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT requests_idempotency_key_unique UNIQUE (idempotency_key),
    CONSTRAINT requests_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object'),

    -- Worker invariants: states that cannot be represented are rejected.
    CONSTRAINT requests_attempt_non_negative CHECK (attempt >= 0),
    CONSTRAINT requests_submit_path_valid CHECK (submit_path IN ('url', 'multipart', 'secure_upload', 'media_token')),
    CONSTRAINT requests_remote_uuid_unique UNIQUE (remote_uuid),
    CONSTRAINT requests_lease_complete CHECK ((locked_by IS NULL) = (locked_until IS NULL)),
    CONSTRAINT requests_lease_only_while_working
        CHECK (locked_by IS NULL OR state IN ('submitting', 'awaiting_result')),
    CONSTRAINT requests_submitting_has_lease CHECK (state <> 'submitting' OR locked_by IS NOT NULL),
    CONSTRAINT requests_awaiting_result_has_remote_uuid
        CHECK (state <> 'awaiting_result' OR remote_uuid IS NOT NULL),
    CONSTRAINT requests_completed_has_result
        CHECK (state <> 'completed' OR (result IS NOT NULL AND completed_at IS NOT NULL)),
    CONSTRAINT requests_failed_has_reason CHECK (state <> 'failed' OR error_message IS NOT NULL)
);

COMMENT ON TABLE detectq.requests IS
    'Detection requests: producers INSERT them (exactly one of media_url, media_path, media_token); detectq workers do the rest.';

-- The claim query's scan: claimable rows in claim order, and nothing else.
CREATE INDEX requests_claimable_idx ON detectq.requests (priority DESC, run_at, id)
    WHERE state IN ('queued', 'retrying');

-- ---------------------------------------------------------------------------------------------
-- History: every transition, the insert included
-- ---------------------------------------------------------------------------------------------

CREATE TABLE detectq.request_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id bigint NOT NULL REFERENCES detectq.requests (id) ON DELETE CASCADE,
    from_state detectq.request_state,
    to_state   detectq.request_state NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id  text,
    detail     text
);

CREATE INDEX request_events_request_idx ON detectq.request_events (request_id, id);

-- A new request starts queued, with no attempt, lease or result of its own.
CREATE FUNCTION detectq.requests_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' OR NEW.attempt <> 0 OR NEW.locked_by IS NOT NULL OR NEW.remote_uuid IS NOT NULL
       OR NEW.result IS NOT NULL OR NEW.completed_at IS NOT NULL THEN
        RAISE EXCEPTION 'a new request must start queued, with no attempt, lease, remote_uuid or result'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_new_request_starts_queued',
                  SCHEMA = 'detectq', TABLE = 'requests';
    END IF;
    RETURN NEW;
END
$$;

-- Only legal state changes pass; updated_at follows every update.
CREATE FUNCTION detectq.requests_check_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT EXISTS (
        SELECT 1 FROM detectq.request_state_transitions t
        WHERE t.from_state = OLD.state AND t.to_state = NEW.state
    ) THEN
        RAISE EXCEPTION 'request % cannot move from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_legal_state_transition',
                  SCHEMA = 'detectq', TABLE = 'requests',
                  HINT = 'detectq.request_state_transitions lists the legal transitions';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Appends the transition to request_events. The actor is the session's detectq.worker_id setting
-- (workers set it; a hand-written UPDATE leaves it NULL); the detail is the transaction's
-- detectq.event_detail setting, else the error_message of a retry or failure.
CREATE FUNCTION detectq.requests_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous detectq.request_state;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        previous := OLD.state;
    END IF;
    INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
    VALUES (
        NEW.id, previous, NEW.state,
        nullif(current_setting('detectq.worker_id', true), ''),
        coalesce(nullif(current_setting('detectq.event_detail', true), ''),
                 CASE WHEN NEW.state IN ('retrying', 'failed') THEN NEW.error_message END)
    );
    RETURN NULL;
END
$$;

-- Wakes idle workers when a request becomes claimable now (a later run_at is found by their polling).
CREATE FUNCTION detectq.requests_notify_claimable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('detectq_requests', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER requests_check_insert BEFORE INSERT ON detectq.requests
    FOR EACH ROW EXECUTE FUNCTION detectq.requests_check_insert();
CREATE TRIGGER requests_check_update BEFORE UPDATE ON detectq.requests
    FOR EACH ROW EXECUTE FUNCTION detectq.requests_check_update();
CREATE TRIGGER requests_record_insert AFTER INSERT ON detectq.requests
    FOR EACH ROW EXECUTE FUNCTION detectq.requests_record_event();
CREATE TRIGGER requests_record_transition AFTER UPDATE OF state ON detectq.requests
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state) EXECUTE FUNCTION detectq.requests_record_event();
CREATE TRIGGER requests_notify_insert AFTER INSERT ON detectq.requests
    FOR EACH ROW WHEN (NEW.run_at <= now()) EXECUTE FUNCTION detectq.requests_notify_claimable();
CREATE TRIGGER requests_notify_claimable AFTER UPDATE OF state, run_at ON detectq.requests
    FOR EACH ROW WHEN (NEW.state IN ('queued', 'retrying') AND NEW.run_at <= now())
    EXECUTE FUNCTION detectq.requests_notify_claimable();

-- ---------------------------------------------------------------------------------------------
-- Post-processing (CONTRACT.md section 4): one task per processor per completed request
-- ---------------------------------------------------------------------------------------------

CREATE TYPE detectq.post_task_state AS ENUM (
    'queued', 'running', 'retrying', 'completed', 'failed'
);

CREATE TABLE detectq.post_tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   bigint NOT NULL REFERENCES detectq.requests (id) ON DELETE CASCADE,
    processor    text NOT NULL,
    state        detectq.post_task_state NOT NULL DEFAULT 'queued',
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 10,
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,

    CONSTRAINT post_tasks_one_per_processor UNIQUE (request_id, processor),
    CONSTRAINT post_tasks_processor_not_blank CHECK (btrim(processor) <> ''),
    CONSTRAINT post_tasks_attempt_non_negative CHECK (attempt >= 0),
    CONSTRAINT post_tasks_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT post_tasks_lease_complete CHECK ((locked_by IS NULL) = (locked_until IS NULL)),
    CONSTRAINT post_tasks_lease_only_while_running CHECK (locked_by IS NULL OR state = 'running'),
    CONSTRAINT post_tasks_failed_has_reason CHECK (state <> 'failed' OR last_error IS NOT NULL)
);

CREATE INDEX post_tasks_claimable_idx ON detectq.post_tasks (run_at, id)
    WHERE state IN ('queued', 'retrying');

CREATE TABLE detectq.intelligence_archive (
    request_id   bigint PRIMARY KEY,
    remote_uuid  text NOT NULL,
    intelligence jsonb NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT intelligence_archive_is_object CHECK (jsonb_typeof(intelligence) = 'object')
);

COMMENT ON TABLE detectq.intelligence_archive IS
    'Intelligence reports of completed requests, one row per request; kept when the request itself is pruned.';
