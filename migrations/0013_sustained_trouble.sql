-- detectq 0013: the API's trouble that lasts (CONTRACT section 6, "A throttle slows the fleet and fails
-- nothing" and "No billed detection is left unread").

-- A 429 without Retry-After pauses every worker for a backoff that starts at one second and doubles, to at
-- most a minute, while the 429s go on; the pause row keeps the backoff it last set.
ALTER TABLE detectq.pauses ADD COLUMN backoff_seconds double precision
    CONSTRAINT pauses_backoff_positive CHECK (backoff_seconds > 0);

COMMENT ON COLUMN detectq.pauses.backoff_seconds IS
    'rate_limited: the backoff the last 429 without Retry-After set (doubled by the next one while the 429s go on).';

-- The installation's name, a short random one stored by the first `detectq migrate`: upload names carry it
-- (detectq-<installation>-<id>-<attempt>.<ext>), so two deployments sharing one API team (staging and
-- production) never adopt each other's detections.
CREATE TABLE detectq.installation (
    name       text NOT NULL CONSTRAINT installation_name_valid CHECK (name ~ '^[a-z0-9]{5,12}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    singleton  boolean NOT NULL DEFAULT true PRIMARY KEY CONSTRAINT installation_singleton CHECK (singleton)
);

INSERT INTO detectq.installation (name)
SELECT string_agg(substr('abcdefghijklmnopqrstuvwxyz0123456789', 1 + floor(random() * 36)::int, 1), '')
FROM generate_series(1, 5);

COMMENT ON TABLE detectq.installation IS
    'This deployment''s name, carried in upload names so that deployments sharing an API team never adopt each other''s detections.';

-- Every attempt's callback secret stays valid until its request ends: a genuine callback of an earlier
-- attempt names a detection that was billed, and is adopted, not refused. The hashes an attempt replaces are
-- kept here by a trigger, so every writer (and a worker of the previous release) keeps them alike.
ALTER TABLE detectq.requests ADD COLUMN earlier_callback_secret_hashes text[];

COMMENT ON COLUMN detectq.requests.earlier_callback_secret_hashes IS
    'SHA-256 (hex) of the callback secrets of earlier attempts, still valid until the request ends; a secret''s column.';

CREATE FUNCTION detectq.keep_earlier_callback_secret() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.earlier_callback_secret_hashes := array_append(coalesce(OLD.earlier_callback_secret_hashes, '{}'), OLD.callback_secret_hash);
    RETURN NEW;
END;
$$;

CREATE TRIGGER requests_keep_earlier_callback_secret
    BEFORE UPDATE OF callback_secret_hash ON detectq.requests
    FOR EACH ROW
    WHEN (OLD.callback_secret_hash IS NOT NULL AND NEW.callback_secret_hash IS DISTINCT FROM OLD.callback_secret_hash)
    EXECUTE FUNCTION detectq.keep_earlier_callback_secret();

-- A genuine callback can come for a request given back unsent after an earlier attempt lost its answer (a
-- worker stopping, a throttle, the zero-retention wait for that callback): its detection is adopted there too.
INSERT INTO detectq.request_state_transitions (from_state, to_state) VALUES ('queued', 'awaiting_result');
