-- detectq 0021: identical media is detected once (CONTRACT section 9).
--
-- A request may carry media_sha256 (a producer sets it for any media; the worker computes it for a media_path
-- before it submits). When its hash and every option forwarded to the API match a request that completed with a
-- detection of its own within DETECTQ_REUSE_VERDICT_WITHIN, and its reuse_verdict allows it, it completes with
-- that verdict without calling the API (submit_path 'reused', reused_from naming the source). One that matches a
-- request still in flight waits for it: it is handed back queued, waiting_for naming the one in flight, and
-- completes from its verdict in the statement that completes it (queued -> completed, new here), or becomes
-- claimable again when that one ends any other way, to be sent by itself, one at a time.
--
-- The new columns have constant defaults, so adding them rewrites nothing; the constraints are added NOT VALID
-- (they hold for every new row at once) and validated by 0022, with the index the lookup reads, built
-- CONCURRENTLY.

ALTER TABLE detectq.requests ADD COLUMN media_sha256 text;
ALTER TABLE detectq.requests ADD COLUMN reuse_verdict boolean NOT NULL DEFAULT true;
ALTER TABLE detectq.requests ADD COLUMN reused_from bigint;
ALTER TABLE detectq.requests ADD COLUMN waiting_for bigint;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_media_sha256_hex CHECK (media_sha256 ~ '^[0-9a-f]{64}$') NOT VALID;
ALTER TABLE detectq.requests DROP CONSTRAINT requests_submit_path_valid;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_submit_path_valid
    CHECK (submit_path IN ('url', 'multipart', 'secure_upload', 'media_token', 'reused')) NOT VALID;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_reused_from_with_reused_path
    CHECK ((reused_from IS NOT NULL) = (submit_path IS NOT DISTINCT FROM 'reused')) NOT VALID;

COMMENT ON COLUMN detectq.requests.media_sha256 IS
    'SHA-256 of the media, 64 hex characters (stored in lower case); the worker computes it for a media_path.';
COMMENT ON COLUMN detectq.requests.reuse_verdict IS
    'Whether the request may complete with the verdict of identical media and options detected before (or in flight).';
COMMENT ON COLUMN detectq.requests.reused_from IS
    'The request whose detection gave this one its verdict (submit_path reused); it was never sent to the API.';
COMMENT ON COLUMN detectq.requests.waiting_for IS
    'While queued: the request with identical media and options in flight whose verdict this one waits for.';

-- A hash given in capitals is the same hash.
CREATE FUNCTION detectq.requests_lower_media_sha256() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.media_sha256 := lower(NEW.media_sha256);
    RETURN NEW;
END
$$;
CREATE TRIGGER requests_lower_media_sha256 BEFORE INSERT OR UPDATE OF media_sha256 ON detectq.requests
    FOR EACH ROW WHEN (NEW.media_sha256 <> lower(NEW.media_sha256)) EXECUTE FUNCTION detectq.requests_lower_media_sha256();

-- A request waiting for identical media completes from its verdict, in the statement that completes it.
INSERT INTO detectq.request_state_transitions (from_state, to_state) VALUES ('queued', 'completed');

-- Each request's hash, written once (by the INSERT, or by the lookup that stores the hash a worker computed):
-- what the lookup finds identical media by. A table of its own, rather than an index on detectq.requests, which
-- would take an entry for every version of every hashed request (each claim, mark and completion writes one: a
-- fifth of the queue core's throughput).
CREATE TABLE detectq.request_media_hashes (
    request_id   bigint PRIMARY KEY REFERENCES detectq.requests (id) ON DELETE CASCADE,
    media_sha256 text NOT NULL
);
CREATE INDEX request_media_hashes_sha256_idx ON detectq.request_media_hashes USING hash (media_sha256);

-- The insert trigger of 0016, which now also records each new request's hash.
CREATE OR REPLACE FUNCTION detectq.requests_record_inserts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
BEGIN
    INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
    SELECT id, NULL, state, actor, given_detail FROM inserted ORDER BY id;
    INSERT INTO detectq.queues (name) SELECT DISTINCT queue FROM inserted ORDER BY 1 ON CONFLICT (name) DO NOTHING;
    INSERT INTO detectq.request_media_hashes (request_id, media_sha256)
    SELECT id, media_sha256 FROM inserted WHERE media_sha256 IS NOT NULL;
    IF EXISTS (SELECT 1 FROM inserted WHERE run_at <= now()) THEN
        PERFORM pg_notify('detectq_requests', '');
    END IF;
    RETURN NULL;
END
$$;

-- The lookup of a batch of claimed requests with their hashes, each still held by p_worker in submitting, under
-- one advisory lock per hash (taken in the hashes' order, so two batches never wait for each other crosswise;
-- the two-key form keeps them apart from any one-key lock). A hash the worker computed is stored (and a stale
-- waiting_for cleared). For one whose may_reuse is true, the answer is, in this order:
--   'reuse', other_id the newest request with the same hash and options that completed with a detection of
--            its own (not itself reused) within p_within;
--   'wait',  other_id a request with the same hash and options in flight (submitting, awaiting_result or
--            retrying, or queued while an earlier attempt's answer is owed: a zero-retention request waiting for
--            the callback that may name its detection; and not itself waiting): waiting_for is set, and the
--            worker hands the request back;
--   'send'   otherwise, and for every request whose may_reuse is false;
--   'moved_on' for a request the worker no longer holds.
-- Waiting is decided under the lock and marked at once, so of two identical requests looked up together (in one
-- batch or two) one waits and the other is sent, never both. Most requests have a hash no other request has:
-- they are answered together, writing nothing, and only the rest are looked up one by one.
CREATE FUNCTION detectq.find_identical_media(
    p_worker text, p_within interval, p_ids bigint[], p_hashes text[], p_may_reuse boolean[]
) RETURNS TABLE (id bigint, outcome text, other_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    held bigint[];
    to_store boolean;
    alone bigint[];
    item record;
    found_other record;
BEGIN
    PERFORM pg_advisory_xact_lock(20261207, keys.k)
    FROM (SELECT DISTINCT hashtext(lower(h)) AS k FROM unnest(p_hashes) AS h ORDER BY 1) AS keys;
    -- Found by the primary key alone: with the lease in the WHERE clause the planner read every leased row's
    -- index entry (2 ms a call under load).
    SELECT coalesce(array_agg(r.id) FILTER (WHERE r.state = 'submitting' AND r.locked_by = p_worker), '{}'),
           coalesce(bool_or((r.media_sha256 IS DISTINCT FROM lower(p_hashes[array_position(p_ids, r.id)]) OR r.waiting_for IS NOT NULL)
                            AND r.state = 'submitting' AND r.locked_by = p_worker), false)
    INTO held, to_store
    FROM detectq.requests r
    WHERE r.id = ANY(p_ids);
    -- Only a hash the worker computed is written (a producer's is there already), and only when a row changes: an
    -- UPDATE of no row still runs the table's statement triggers.
    IF to_store THEN
        UPDATE detectq.requests r SET media_sha256 = lower(given.hash), waiting_for = NULL
        FROM unnest(p_ids, p_hashes) AS given(id, hash)
        WHERE r.id = given.id AND r.id = ANY(held)
          AND (r.media_sha256 IS DISTINCT FROM lower(given.hash) OR r.waiting_for IS NOT NULL);
        INSERT INTO detectq.request_media_hashes (request_id, media_sha256)
        SELECT given.id, lower(given.hash) FROM unnest(p_ids, p_hashes) AS given(id, hash) WHERE given.id = ANY(held)
        ON CONFLICT (request_id) DO UPDATE SET media_sha256 = excluded.media_sha256
        WHERE request_media_hashes.media_sha256 <> excluded.media_sha256;
    END IF;
    -- Sent at once, nothing looked up: those that may not reuse, and those whose hash no other request has.
    SELECT coalesce(array_agg(given.id), '{}') INTO alone
    FROM unnest(p_ids, p_hashes, p_may_reuse) AS given(id, hash, may_reuse)
    WHERE given.id = ANY(held)
      AND (NOT given.may_reuse OR NOT EXISTS (
          SELECT 1 FROM detectq.request_media_hashes h WHERE h.media_sha256 = lower(given.hash) AND h.request_id <> given.id
      ));
    FOR item IN SELECT g.id, lower(g.hash) AS hash FROM unnest(p_ids, p_hashes) AS g(id, hash) LOOP
        id := item.id;
        other_id := NULL;
        IF NOT item.id = ANY(held) THEN
            outcome := 'moved_on';
        ELSIF item.id = ANY(alone) THEN
            outcome := 'send';
        ELSE
            SELECT o.id, o.state INTO found_other
            FROM detectq.requests me, detectq.request_media_hashes h JOIN detectq.requests o ON o.id = h.request_id
            WHERE me.id = item.id AND h.media_sha256 = item.hash AND o.id <> me.id AND o.reused_from IS NULL
              AND ((o.state = 'completed' AND o.completed_at >= now() - p_within)
                   OR ((o.state IN ('submitting', 'awaiting_result', 'retrying') OR (o.state = 'queued' AND o.unanswered_since IS NOT NULL))
                       AND o.waiting_for IS NULL))
              AND o.visualize = me.visualize AND o.intelligence = me.intelligence
              AND o.audio_source_tracing = me.audio_source_tracing AND o.use_reverse_search = me.use_reverse_search
              AND o.use_ood_detector = me.use_ood_detector AND o.zero_retention_mode = me.zero_retention_mode
              AND o.frame_length IS NOT DISTINCT FROM me.frame_length AND o.start_region IS NOT DISTINCT FROM me.start_region
              AND o.end_region IS NOT DISTINCT FROM me.end_region AND o.max_video_secs IS NOT DISTINCT FROM me.max_video_secs
              AND o.max_video_fps IS NOT DISTINCT FROM me.max_video_fps AND o.model_types IS NOT DISTINCT FROM me.model_types
              AND o.pipeline IS NOT DISTINCT FROM me.pipeline
            ORDER BY o.state = 'completed' DESC, o.completed_at DESC, o.id
            LIMIT 1;
            IF NOT FOUND THEN
                outcome := 'send';
            ELSIF found_other.state = 'completed' THEN
                outcome := 'reuse';
                other_id := found_other.id;
            ELSE
                -- Marked at once, so that an identical request later in this batch sees this one waiting.
                outcome := 'wait';
                other_id := found_other.id;
                UPDATE detectq.requests r SET waiting_for = found_other.id WHERE r.id = item.id;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION detectq.find_identical_media(text, interval, bigint[], text[], boolean[]) FROM PUBLIC;

-- The history trigger of 0018, whose detail for a reused verdict names the request it came from, and which wakes
-- the requests waiting for one that leaves flight (submitting, awaiting_result, retrying, or queued owing an
-- answer) other than by the completion that completes them (it failed,
-- was cancelled or handed back, or a hand-written UPDATE completed it, or a completion's statement began before a
-- waiting request's hand-back committed): they become claimable now, the first one claimed is sent, and the
-- others wait for it in turn. It runs after the statement, so it sees what committed meanwhile; once per
-- statement, not once per row (a row trigger cost each completion a call).
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
        -- (`waiting_for IS NOT NULL` lets the planner read the small index of waiting requests: without it, 1 ms.)
        SELECT array_agg(w.id) INTO waiting FROM detectq.requests w
        WHERE w.waiting_for IS NOT NULL AND w.waiting_for = ANY(left_flight) AND w.state = 'queued';
        IF waiting IS NOT NULL THEN
            UPDATE detectq.requests SET run_at = now(), waiting_for = NULL WHERE id = ANY(waiting) AND state = 'queued';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
