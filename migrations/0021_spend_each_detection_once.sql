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

-- The lookup of a batch of claimed requests with their hashes, each still held by p_worker in submitting, under
-- one advisory lock per hash (taken in the hashes' order, so two batches never wait for each other crosswise;
-- the two-key form keeps them apart from any one-key lock). Each request's hash is stored (and a stale
-- waiting_for cleared). For one whose may_reuse is true, the answer is, in this order:
--   'reuse', other_id the newest request with the same hash and options that completed with a detection of
--            its own (not itself reused) within p_within;
--   'wait',  other_id a request with the same hash and options in flight (submitting, awaiting_result or
--            retrying, and not itself waiting): waiting_for is set, and the worker hands the request back;
--   'send'   otherwise, and for every request whose may_reuse is false;
--   'moved_on' for a request the worker no longer holds.
-- Waiting is decided under the lock and marked at once, so of two identical requests looked up together (in one
-- batch or two) one waits and the other is sent, never both waiting.
CREATE FUNCTION detectq.find_identical_media(
    p_worker text, p_within interval, p_ids bigint[], p_hashes text[], p_may_reuse boolean[]
) RETURNS TABLE (id bigint, outcome text, other_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    held bigint[];
    item record;
    found_other record;
BEGIN
    PERFORM pg_advisory_xact_lock(20261207, keys.k)
    FROM (SELECT DISTINCT hashtext(lower(h)) AS k FROM unnest(p_hashes) AS h ORDER BY 1) AS keys;
    WITH stored AS (
        UPDATE detectq.requests r SET media_sha256 = lower(given.hash), waiting_for = NULL
        FROM unnest(p_ids, p_hashes) AS given(id, hash)
        WHERE r.id = given.id AND r.state = 'submitting' AND r.locked_by = p_worker
        RETURNING r.id
    )
    SELECT coalesce(array_agg(stored.id), '{}') INTO held FROM stored;
    FOR item IN SELECT given.id, given.may_reuse FROM unnest(p_ids, p_may_reuse) AS given(id, may_reuse) LOOP
        id := item.id;
        other_id := NULL;
        IF NOT item.id = ANY(held) THEN
            outcome := 'moved_on';
        ELSIF NOT item.may_reuse THEN
            outcome := 'send';
        ELSE
            SELECT o.id, o.state INTO found_other
            FROM detectq.requests me
            JOIN detectq.requests o ON o.media_sha256 = me.media_sha256 AND o.id <> me.id AND o.reused_from IS NULL
                AND o.visualize = me.visualize AND o.intelligence = me.intelligence
                AND o.audio_source_tracing = me.audio_source_tracing AND o.use_reverse_search = me.use_reverse_search
                AND o.use_ood_detector = me.use_ood_detector AND o.zero_retention_mode = me.zero_retention_mode
                AND o.frame_length IS NOT DISTINCT FROM me.frame_length AND o.start_region IS NOT DISTINCT FROM me.start_region
                AND o.end_region IS NOT DISTINCT FROM me.end_region AND o.max_video_secs IS NOT DISTINCT FROM me.max_video_secs
                AND o.max_video_fps IS NOT DISTINCT FROM me.max_video_fps AND o.model_types IS NOT DISTINCT FROM me.model_types
                AND o.pipeline IS NOT DISTINCT FROM me.pipeline
            WHERE me.id = item.id
              AND ((o.state = 'completed' AND o.completed_at >= now() - p_within)
                   OR (o.state IN ('submitting', 'awaiting_result', 'retrying') AND o.waiting_for IS NULL))
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

-- When a request with a hash leaves flight other than by the completion that completes its waiters (it failed,
-- was cancelled, was handed back, or completed by a hand-written UPDATE), the requests waiting for it become
-- claimable now: the first one claimed is sent, and the others wait for it in turn.
CREATE FUNCTION detectq.requests_release_waiters() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE detectq.requests SET run_at = now(), waiting_for = NULL
    WHERE waiting_for = NEW.id AND state = 'queued';
    RETURN NULL;
END
$$;
CREATE TRIGGER requests_release_waiters AFTER UPDATE OF state ON detectq.requests
    FOR EACH ROW WHEN (OLD.state IN ('submitting', 'awaiting_result', 'retrying')
                       AND NEW.state NOT IN ('submitting', 'awaiting_result', 'retrying')
                       AND NEW.media_sha256 IS NOT NULL)
    EXECUTE FUNCTION detectq.requests_release_waiters();

-- The history trigger of 0018, whose detail for a reused verdict names the request it came from.
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
                   max(queue) FILTER (WHERE is_before) AS old_queue, max(queue) FILTER (WHERE NOT is_before) AS queue,
                   max(reused_from) FILTER (WHERE NOT is_before) AS reused_from
            FROM (
                SELECT id, state, error_message, updated_at, accepted_at, queue, reused_from, true AS is_before FROM before_rows
                UNION ALL SELECT id, state, error_message, updated_at, accepted_at, queue, reused_from, false FROM after_rows
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
