-- detectq's schema as the migrations in migrations/ leave it (0001 to 0027): the
-- definitions of the schema detectq, then the rows of its two transition tables, which its triggers enforce.
-- Written by pg_dump --schema-only and normalised; do not edit it. Databases are made and upgraded with
-- `detectq migrate`, never from this file. After adding a migration:
--     DETECTQ_UPDATE_SCHEMA_SNAPSHOT=1 scripts/test.sh --filter SchemaSnapshotTests

CREATE SCHEMA detectq;

CREATE TYPE detectq.claim_lane_state AS (
	lane text,
	"position" integer,
	aged numeric,
	room bigint
);

CREATE TYPE detectq.claim_queue_state AS (
	name text,
	weight integer,
	pass double precision,
	room bigint,
	taken bigint,
	done boolean,
	rate_limit double precision,
	slot_start timestamp with time zone,
	again timestamp with time zone
);

CREATE TYPE detectq.post_task_state AS ENUM (
    'queued',
    'running',
    'retrying',
    'completed',
    'failed'
);

CREATE TYPE detectq.request_state AS ENUM (
    'queued',
    'submitting',
    'awaiting_result',
    'retrying',
    'completed',
    'failed',
    'cancelled'
);

CREATE FUNCTION detectq.claim_from_queue(queue_name text, quota bigint, aging_seconds double precision, taken bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET enable_sort TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    settings detectq.queues;
    cursor_at text;
    lanes detectq.claim_lane_state[];
    ids bigint[] := '{}';
    got bigint[];
    current_tier numeric;
    lanes_left integer;
    left_over bigint;
    null_share bigint;
    tier_last_group text;
    last_group text;
BEGIN
    SELECT * INTO settings FROM detectq.queues WHERE name = queue_name;
    cursor_at := coalesce(settings.group_cursor, '');
    IF (SELECT true FROM detectq.requests AS r
        WHERE r.queue = queue_name AND r.group_key IS NOT NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
        ORDER BY r.queue, r.group_key LIMIT 1) IS NULL THEN
        RETURN detectq.claim_lane(queue_name, NULL, quota, aging_seconds, taken);
    END IF;
    -- The lanes: up to `quota` groups with due work from the cursor on (wrapping round), and the requests with
    -- no group at the wrap; each with its head's aged priority and its room under group_max_in_flight.
    WITH RECURSIVE after_cursor (lane, position) AS (
        (SELECT r.group_key, 1 FROM detectq.requests AS r
         WHERE r.queue = queue_name AND r.group_key > cursor_at AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
         ORDER BY r.queue, r.group_key LIMIT 1)
        UNION ALL
        SELECT (SELECT r.group_key FROM detectq.requests AS r
                WHERE r.queue = queue_name AND r.group_key > after_cursor.lane AND r.state IN ('queued', 'retrying')
                  AND r.run_at <= now()
                ORDER BY r.queue, r.group_key LIMIT 1), after_cursor.position + 1
        FROM after_cursor WHERE after_cursor.lane IS NOT NULL AND after_cursor.position < quota
    ), from_start (lane, position) AS (
        (SELECT r.group_key, 1000001 FROM detectq.requests AS r
         WHERE r.queue = queue_name AND r.group_key IS NOT NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
         ORDER BY r.queue, r.group_key LIMIT 1)
        UNION ALL
        SELECT (SELECT r.group_key FROM detectq.requests AS r
                WHERE r.queue = queue_name AND r.group_key > from_start.lane AND r.state IN ('queued', 'retrying')
                  AND r.run_at <= now()
                ORDER BY r.queue, r.group_key LIMIT 1), from_start.position + 1
        FROM from_start WHERE from_start.lane IS NOT NULL AND from_start.lane <= cursor_at AND from_start.position < 1000000 + quota
    ), walked AS (
        SELECT lane, position FROM after_cursor WHERE lane IS NOT NULL
        UNION ALL SELECT lane, position FROM from_start WHERE lane IS NOT NULL AND lane <= cursor_at
        UNION ALL SELECT NULL, 1000000
    )
    SELECT coalesce(array_agg(ROW(
               walked.lane, walked.position, head.priority + floor(extract(epoch FROM now() - head.run_at) / aging_seconds),
               CASE WHEN settings.group_max_in_flight IS NULL OR walked.lane IS NULL THEN quota
                    ELSE settings.group_max_in_flight - (
                        SELECT count(*) FROM detectq.requests AS r
                        WHERE r.queue = queue_name AND r.group_key = walked.lane AND r.state IN ('submitting', 'awaiting_result')) - (
                        SELECT count(*) FROM detectq.requests AS r
                        WHERE r.queue = queue_name AND r.group_key = walked.lane AND r.state IN ('queued', 'retrying')
                          AND r.unanswered_since IS NOT NULL AND r.accepted_at IS NULL) END
           )::detectq.claim_lane_state ORDER BY walked.position), '{}')
    INTO lanes
    FROM walked, LATERAL (
        (SELECT r.priority, r.run_at FROM detectq.requests AS r
         WHERE walked.lane IS NOT NULL AND r.queue = queue_name AND r.group_key = walked.lane AND r.state IN ('queued', 'retrying')
           AND r.run_at <= now()
         ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1)
        UNION ALL
        (SELECT r.priority, r.run_at FROM detectq.requests AS r
         WHERE walked.lane IS NULL AND r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying')
           AND r.run_at <= now()
         ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1)
    ) AS head;
    -- Tier by tier (lanes whose heads have the same aged priority), the quota left is shared among the tier's
    -- lanes in turn order, one more each to the first lanes when it does not divide; the named groups' shares
    -- are taken in one statement.
    FOR current_tier IN SELECT DISTINCT l.aged FROM unnest(lanes) AS l WHERE l.room > 0 ORDER BY 1 DESC LOOP
        EXIT WHEN cardinality(ids) >= quota;
        left_over := quota - cardinality(ids);
        SELECT count(*) INTO lanes_left FROM unnest(lanes) AS l WHERE l.aged = current_tier AND l.room > 0;
        SELECT coalesce(array_agg(got.id ORDER BY shares.position, got.id), '{}'),
               (array_agg(shares.lane ORDER BY shares.position DESC) FILTER (WHERE shares.lane IS NOT NULL))[1],
               min(shares.share) FILTER (WHERE shares.lane IS NULL)
        INTO got, tier_last_group, null_share
        FROM (
            SELECT l.lane, l.position,
                   least(l.room, left_over / lanes_left + CASE WHEN row_number() OVER (ORDER BY l.position) <= left_over % lanes_left THEN 1 ELSE 0 END)
                       AS share
            FROM unnest(lanes) AS l WHERE l.aged = current_tier AND l.room > 0
        ) AS shares
        LEFT JOIN LATERAL (
            SELECT r.id FROM detectq.requests AS r
            WHERE shares.lane IS NOT NULL AND r.queue = queue_name AND r.group_key = shares.lane AND r.state IN ('queued', 'retrying')
              AND r.run_at <= now() AND r.id <> ALL (taken)
            ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id
            LIMIT shares.share
            FOR UPDATE SKIP LOCKED
        ) AS got ON true;
        got := array_remove(got, NULL);
        IF tier_last_group IS NOT NULL AND cardinality(got) > 0 THEN last_group := tier_last_group; END IF;
        ids := ids || got;
        IF null_share IS NOT NULL THEN
            ids := ids || detectq.claim_lane(queue_name, NULL, null_share, aging_seconds, taken || ids);
        END IF;
    END LOOP;
    IF last_group IS NOT NULL THEN
        UPDATE detectq.queues SET group_cursor = last_group WHERE name = queue_name;
    END IF;
    RETURN ids;
END
$$;

CREATE FUNCTION detectq.claim_lane(queue_name text, lane text, quota bigint, aging_seconds double precision, taken bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET enable_sort TO 'off'
    SET jit TO 'off'
    SET plan_cache_mode TO 'force_custom_plan'
    AS $$
DECLARE
    ids bigint[] := '{}';
    lowest smallint;
    more bigint[];
    level record;
    floor record;
BEGIN
    IF quota <= 0 THEN RETURN ids; END IF;
    IF lane IS NOT NULL THEN
        SELECT coalesce(array_agg(id), '{}') INTO ids FROM (
            SELECT r.id FROM detectq.requests AS r
            WHERE r.queue = queue_name AND r.group_key = lane AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
              AND r.id <> ALL (taken)
            ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id
            LIMIT quota
            FOR UPDATE SKIP LOCKED
        ) AS claimed;
        RETURN ids;
    END IF;
    -- From the queue's floor on, where its requests without a group have one priority or none (0026).
    SELECT f.run_at, f.levels INTO floor FROM detectq.claim_floors AS f WHERE f.queue = queue_name AND cardinality(f.levels) <= 1;
    IF FOUND THEN
        IF cardinality(floor.levels) = 0 THEN RETURN ids; END IF;
        SELECT coalesce(array_agg(id), '{}') INTO ids FROM (
            SELECT r.id FROM detectq.requests AS r
            WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying')
              AND r.priority = floor.levels[1] AND r.run_at >= floor.run_at AND r.run_at <= now() AND r.id <> ALL (taken)
            ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id
            LIMIT quota
            FOR UPDATE SKIP LOCKED
        ) AS claimed;
        RETURN ids;
    END IF;
    -- In priority order first; only when a lower priority has due requests too can one of them have aged past
    -- what that took, and then the levels are taken in the order of their oldest's aged priority instead.
    SELECT coalesce(array_agg(id), '{}'), min(priority) INTO ids, lowest FROM (
        SELECT r.id, r.priority FROM detectq.requests AS r
        WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
          AND r.id <> ALL (taken)
        ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id
        LIMIT quota
        FOR UPDATE SKIP LOCKED
    ) AS claimed;
    IF lowest IS NULL OR (
        SELECT true FROM detectq.requests AS r
        WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
          AND r.priority < lowest
        ORDER BY r.queue, r.group_key, r.priority DESC LIMIT 1
    ) IS NULL THEN
        RETURN ids;
    END IF;
    ids := '{}';
    FOR level IN
        WITH RECURSIVE levels (priority) AS (
            (SELECT r.priority FROM detectq.requests AS r
             WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
             ORDER BY r.queue, r.group_key, r.priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT r.priority FROM detectq.requests AS r
                    WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
                      AND r.priority < levels.priority
                    ORDER BY r.queue, r.group_key, r.priority DESC LIMIT 1)
            FROM levels WHERE levels.priority IS NOT NULL
        )
        SELECT levels.priority, levels.priority + floor(extract(epoch FROM now() - oldest.run_at) / aging_seconds) AS aged
        FROM levels, LATERAL (
            SELECT r.run_at FROM detectq.requests AS r
            WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
              AND r.priority = levels.priority
            ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1
        ) AS oldest
        WHERE levels.priority IS NOT NULL
        ORDER BY aged DESC, oldest.run_at
    LOOP
        SELECT coalesce(array_agg(id), '{}') INTO more FROM (
            SELECT r.id FROM detectq.requests AS r
            WHERE r.queue = queue_name AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
              AND r.priority = level.priority AND r.id <> ALL (taken)
            ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id
            LIMIT quota - cardinality(ids)
            FOR UPDATE SKIP LOCKED
        ) AS claimed;
        ids := ids || more;
        EXIT WHEN cardinality(ids) >= quota;
    END LOOP;
    RETURN ids;
END
$$;

CREATE FUNCTION detectq.claimed_rows(ids bigint[], claim_again timestamp with time zone, budget_bound boolean, budget_start timestamp with time zone, schedule_start timestamp with time zone, api_rate double precision, horizon_seconds double precision) RETURNS TABLE(claimable_id bigint, claimed_from text, prior_unanswered_since timestamp with time zone, claim_again_at timestamp with time zone, slot_at timestamp with time zone, slot_in double precision)
    LANGUAGE plpgsql SECURITY DEFINER ROWS 100
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET jit TO 'off'
    AS $$
DECLARE
    next_slot timestamptz;
BEGIN
    IF api_rate IS NOT NULL AND cardinality(ids) > 0 THEN
        next_slot := schedule_start + make_interval(secs => cardinality(ids) / api_rate);
        UPDATE detectq.api_budget SET next_slot_at = next_slot;
        IF budget_bound THEN
            claim_again := next_slot - make_interval(secs => horizon_seconds);
        END IF;
    END IF;
    IF cardinality(ids) = 0 THEN
        IF claim_again IS NOT NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::timestamptz, claim_again, NULL::timestamptz, NULL::double precision;
        END IF;
        RETURN;
    END IF;
    -- (Each by its key: a join the planner could make over the whole table, whose statistics may be stale.)
    RETURN QUERY
        SELECT r.id, r.state::text, r.unanswered_since, claim_again, slot.at,
               extract(epoch FROM slot.at - clock_timestamp())::double precision
        FROM unnest(ids) WITH ORDINALITY AS c(id, position),
             LATERAL (SELECT * FROM detectq.requests AS r WHERE r.id = c.id LIMIT 1) AS r,
             LATERAL (SELECT CASE WHEN c.position = 1 OR budget_start >= schedule_start
                                  THEN budget_start + make_interval(secs => (c.position - 1) / api_rate)
                                  ELSE schedule_start + make_interval(secs => (c.position - 2) / api_rate) END AS at) AS slot;
END
$$;

CREATE FUNCTION detectq.count_failure_reason_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen) VALUES
        (OLD.state::text, coalesce(OLD.error_message, '(no reason)'), -1, NULL),
        (NEW.state::text, coalesce(NEW.error_message, '(no reason)'), 1, NEW.updated_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.count_statement() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    sign integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    IF TG_ARGV[0] = 'request' THEN
        INSERT INTO detectq.state_counts (kind, queue, state, n)
        SELECT 'request', queue, state::text, sign * count(*) FROM changed_rows GROUP BY queue, state;
        -- A group's last_seen is when a request joined it, so a delete leaves it as it was.
        INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
        SELECT state::text, coalesce(error_message, '(no reason)'), sign * count(*), CASE WHEN sign > 0 THEN max(updated_at) END
        FROM changed_rows WHERE state IN ('failed', 'retrying') GROUP BY 1, 2;
    ELSE
        INSERT INTO detectq.state_counts (kind, state, n)
        SELECT TG_ARGV[0], state::text, sign * count(*) FROM changed_rows GROUP BY state;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.current_actor() RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
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

CREATE FUNCTION detectq.find_identical_media(p_worker text, p_within interval, p_ids bigint[], p_hashes text[], p_may_reuse boolean[]) RETURNS TABLE(id bigint, outcome text, other_id bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

CREATE FUNCTION detectq.fold_state_counts() RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    WITH folded AS (DELETE FROM detectq.state_counts RETURNING kind, queue, state, n)
    INSERT INTO detectq.state_counts (kind, queue, state, n)
    SELECT kind, queue, state, sum(n) FROM folded GROUP BY kind, queue, state HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.failure_counts RETURNING state, reason, n, last_seen)
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state, reason, sum(n), max(last_seen) FROM folded GROUP BY state, reason HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.queue_billing RETURNING queue, day, n)
    INSERT INTO detectq.queue_billing (queue, day, n)
    SELECT queue, day, sum(n) FROM folded WHERE day >= (now() AT TIME ZONE 'UTC')::date - 40 GROUP BY queue, day;
    WITH folded AS (DELETE FROM detectq.queue_claims RETURNING queue, minute, n)
    INSERT INTO detectq.queue_claims (queue, minute, n)
    SELECT queue, minute, sum(n) FROM folded WHERE minute >= now() - interval '1 day' GROUP BY queue, minute;
$$;

CREATE FUNCTION detectq.keep_earlier_callback_secret() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.earlier_callback_secret_hashes := array_append(coalesce(OLD.earlier_callback_secret_hashes, '{}'), OLD.callback_secret_hash);
    RETURN NEW;
END;
$$;

CREATE FUNCTION detectq.next_claimable_post_tasks(how_many bigint) RETURNS TABLE(claimable_id bigint, claimed_from text)
    LANGUAGE sql ROWS 100
    SET enable_sort TO 'off'
    AS $$
    SELECT t.id, t.state::text FROM detectq.post_tasks AS t
    WHERE t.state IN ('queued', 'retrying') AND t.run_at <= now()
    ORDER BY t.run_at, t.id
    LIMIT how_many
    FOR UPDATE SKIP LOCKED
$$;

CREATE FUNCTION detectq.next_claimable_requests(how_many bigint) RETURNS TABLE(claimable_id bigint, claimed_from text, prior_unanswered_since timestamp with time zone)
    LANGUAGE sql ROWS 100
    SET enable_sort TO 'off'
    AS $$
    SELECT r.id, r.state::text, r.unanswered_since FROM detectq.requests AS r
    WHERE r.state IN ('queued', 'retrying') AND r.run_at <= now()
    ORDER BY r.priority DESC, r.run_at, r.id
    LIMIT how_many
    FOR UPDATE SKIP LOCKED
$$;

CREATE FUNCTION detectq.next_fair_claims(how_many bigint, aging_seconds double precision, api_rate double precision, horizon_seconds double precision) RETURNS TABLE(claimable_id bigint, claimed_from text, prior_unanswered_since timestamp with time zone, claim_again_at timestamp with time zone, slot_at timestamp with time zone, slot_in double precision)
    LANGUAGE plpgsql SECURITY DEFINER ROWS 100
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET enable_sort TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    next_day timestamptz := ((now() AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC';
    candidates text[];
    queue_states detectq.claim_queue_state[];
    claimed_ids bigint[] := '{}';
    got bigint[];
    wanted record;
    claim_again timestamptz;
    rounds integer := 0;
    queues_with_room integer;
    wanted_at_most bigint := how_many;
    limited text[];
    schedule_start timestamptz;
    budget_start timestamptz;
    budget_room bigint;
    fresh_since timestamptz;
    stamp timestamptz;
    shared boolean;
    earliest timestamptz;
    walked text[] := '{}';
    floor_expires timestamptz;
BEGIN
    IF how_many <= 0 THEN RETURN; END IF;
    -- The floors a second old are walked and set anew (detectq.walk_claim_floors). A claim that uses a floor another
    -- claim set and finds less than it asked for comes back when that floor is a second old (or in 0.1 s, when the
    -- floor is being walked now), for a request that became claimable below it unseen.
    IF EXISTS (SELECT 1 FROM detectq.claim_floors AS f WHERE f.walked_at < clock_timestamp() - interval '1 second') THEN
        walked := detectq.walk_claim_floors();
    END IF;
    SELECT min(f.walked_at) + interval '1 second' INTO floor_expires
    FROM detectq.claim_floors AS f WHERE f.run_at IS NOT NULL AND f.queue <> ALL (walked);
    IF floor_expires IS NOT NULL THEN
        floor_expires := greatest(floor_expires, clock_timestamp() + interval '0.1 second');
    END IF;
    -- The queues with due work: one probe each (not a join the planner could make over every due request), from
    -- the queue's floor where it has one: its requests in groups, and those without a group from the floor on.
    SELECT coalesce(array_agg(f.queue ORDER BY f.queue), '{}') INTO candidates
    FROM detectq.claim_floors AS f
    WHERE CASE WHEN cardinality(f.levels) <= 1 THEN
                   coalesce((SELECT true FROM detectq.requests AS r
                             WHERE r.queue = f.queue AND r.group_key IS NOT NULL AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
                             ORDER BY r.queue, r.group_key LIMIT 1), false)
                   OR coalesce((SELECT true FROM detectq.requests AS r
                                WHERE r.queue = f.queue AND r.group_key IS NULL AND r.state IN ('queued', 'retrying')
                                  AND r.priority = f.levels[1] AND r.run_at >= f.run_at AND r.run_at <= now()
                                ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1), false)
               ELSE coalesce((SELECT true FROM detectq.requests AS r
                              WHERE r.queue = f.queue AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
                              ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1), false) END;
    IF cardinality(candidates) = 0 THEN
        IF floor_expires IS NOT NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::timestamptz, floor_expires, NULL::timestamptz, NULL::double precision;
        END IF;
        RETURN;
    END IF;
    -- With one queue there is no one to be fair to: its claims take what they can, and each call reserves its
    -- slot as it goes. Once a second queue exists, the claims spend the budget.
    shared := (SELECT count(*) FROM detectq.queues) >= 2;
    IF NOT shared THEN api_rate := NULL; END IF;
    -- The budget's slots due within the horizon (none before a 429's pause ends), held until this claim ends.
    -- While several queues have work and one of them has at most two requests due and had no claim for two
    -- slots (work arriving, not a backlog draining), the claim takes one slot more, now (or one slot before the
    -- schedule's next, if that is sooner): that queue, whose turn it is, finds a slot at once, not behind the
    -- slots other queues' claims booked up to the horizon ahead. The schedule still moves on by every slot taken,
    -- so the slot is moved, not added: the budget's busiest second may hold a slot or two more than its rate,
    -- never more calls over a longer time. (Whether work is arriving is read once the budget's row is locked: the
    -- workers a notification woke together would each have seen the same request arriving, and taken a slot
    -- early after the first had claimed it.)
    IF api_rate IS NOT NULL THEN
        -- No slot is earlier than one slot ago (at most 0.1 s: a slot that passed unclaimed is gone) or than the
        -- end of a 429's pause.
        SELECT greatest(clock_timestamp() - make_interval(secs => least(1 / api_rate, 0.1)),
                        coalesce((SELECT p.until FROM detectq.pauses AS p WHERE p.kind = 'rate_limited'), '-infinity')),
               b.next_slot_at
        INTO earliest, schedule_start FROM detectq.api_budget AS b FOR NO KEY UPDATE;
        schedule_start := greatest(schedule_start, earliest);
        budget_room := CASE WHEN schedule_start > clock_timestamp() + make_interval(secs => horizon_seconds) THEN 0
                            ELSE floor(extract(epoch FROM clock_timestamp() + make_interval(secs => horizon_seconds) - schedule_start)
                                       * api_rate)::bigint + 1 END;
        budget_start := schedule_start;
        IF cardinality(candidates) > 1 AND EXISTS (
            SELECT 1 FROM detectq.queues AS q
            WHERE q.name = ANY (candidates) AND q.paused_at IS NULL
              AND (q.passed_at IS NULL OR q.passed_at < clock_timestamp() - make_interval(secs => 2 / api_rate))
              -- (No third request due: a probe in the claim index's order, which reads three entries at most.)
              AND (SELECT r.id FROM detectq.requests AS r
                   WHERE r.queue = q.name AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
                   ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id OFFSET 2 LIMIT 1) IS NULL
        ) THEN
            budget_start := greatest(least(schedule_start - make_interval(secs => 1 / api_rate), clock_timestamp()), earliest);
            IF budget_start < schedule_start THEN budget_room := budget_room + 1; END IF;
        END IF;
        -- The schedule is booked beyond the horizon: another claim took the slots due (the worker that booked them
        -- comes back for the next ones when they come due). This one comes back four slots (at least 100 ms) after
        -- the next is due, in case that worker does not; so that at each slot one worker claims, not every one.
        IF budget_room <= 0 THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::timestamptz,
                                budget_start + make_interval(secs => greatest(4 / api_rate, 0.1)),
                                NULL::timestamptz, NULL::double precision;
            RETURN;
        END IF;
        how_many := least(how_many, budget_room);
    END IF;
    -- One queue with work and no limit or pause (a deployment with one lane): nothing to share or count.
    IF cardinality(candidates) = 1 AND EXISTS (
        SELECT 1 FROM detectq.queues AS q
        WHERE q.name = candidates[1] AND q.paused_at IS NULL AND q.max_in_flight IS NULL AND q.group_max_in_flight IS NULL
          AND q.rate_limit IS NULL AND q.daily_limit IS NULL
    ) THEN
        claimed_ids := detectq.claim_from_queue(candidates[1], how_many, aging_seconds, claimed_ids);
        claim_again := CASE WHEN cardinality(claimed_ids) >= how_many THEN now() ELSE floor_expires END;
        -- Once there are other queues, the claims that find this one alone stamp it too (see the end of this
        -- function): a queue that drains alone between another's requests is here, not away.
        IF shared THEN
            UPDATE detectq.queues AS q SET passed_at = greatest(q.passed_at, clock_timestamp()) WHERE q.name = candidates[1];
        END IF;
        RETURN QUERY SELECT * FROM detectq.claimed_rows(
            claimed_ids, claim_again, how_many < wanted_at_most AND cardinality(claimed_ids) >= how_many, budget_start, schedule_start, api_rate,
            horizon_seconds
        );
        RETURN;
    END IF;
    PERFORM 1 FROM detectq.queues AS q
    WHERE q.name = ANY (candidates) AND q.paused_at IS NULL
      AND (q.max_in_flight IS NOT NULL OR q.group_max_in_flight IS NOT NULL OR q.rate_limit IS NOT NULL OR q.daily_limit IS NOT NULL)
    ORDER BY q.name
    FOR NO KEY UPDATE OF q;

    -- Counted after the locks, so this statement sees every claim that held them before.
    SELECT coalesce(array_agg(ROW(
               q.name, q.weight, q.pass, greatest(0, least(how_many, rooms.in_flight_room, rooms.daily_room, rooms.rate_room)), 0, false,
               q.rate_limit, slot.slot_start,
               -- What holds the queue back once its room is taken (for a rate, its slots resume at slot_start
               -- plus what this claim takes).
               CASE WHEN least(rooms.in_flight_room, rooms.daily_room, rooms.rate_room) >= how_many THEN NULL
                    WHEN rooms.rate_room <= least(rooms.in_flight_room, rooms.daily_room) THEN slot.slot_start
                    WHEN rooms.daily_room <= rooms.in_flight_room THEN next_day
                    ELSE 'infinity' END
           )::detectq.claim_queue_state ORDER BY q.name), '{}')
    INTO queue_states
    FROM detectq.queues AS q,
    LATERAL (SELECT greatest(q.next_slot_at, now() - make_interval(secs => least(1 / q.rate_limit, 0.1))) AS slot_start) AS slot,
    LATERAL (SELECT
        -- In flight: submitting or awaiting a result, and every request waiting with an answer owed, which a
        -- callback may move to awaiting_result without a claim.
        CASE WHEN q.max_in_flight IS NULL THEN how_many ELSE q.max_in_flight - (
            SELECT count(*) FROM detectq.requests AS r WHERE r.queue = q.name AND r.state IN ('submitting', 'awaiting_result')) - (
            SELECT count(*) FROM detectq.requests AS r
            WHERE r.queue = q.name AND r.state IN ('queued', 'retrying') AND r.unanswered_since IS NOT NULL AND r.accepted_at IS NULL) END
            AS in_flight_room,
        -- Billed today, and every request that may yet be: being sent, or sent today with its answer owed, whatever
        -- became of it since (cancelled, failed after a search that found nothing, waiting).
        CASE WHEN q.daily_limit IS NULL THEN how_many ELSE q.daily_limit
            - coalesce((SELECT sum(b.n) FROM detectq.queue_billing AS b WHERE b.queue = q.name AND b.day = today), 0)
            - (SELECT count(*) FROM detectq.requests AS r
               WHERE r.queue = q.name AND r.state IN ('submitting', 'awaiting_result') AND r.state = 'submitting' AND r.remote_uuid IS NULL)
            - (SELECT count(*) FROM detectq.requests AS r
               WHERE r.queue = q.name AND r.unanswered_since IS NOT NULL AND r.accepted_at IS NULL AND r.state <> 'submitting'
                 AND r.unanswered_since >= today::timestamp AT TIME ZONE 'UTC')
            END AS daily_room,
        CASE WHEN q.rate_limit IS NULL THEN how_many
             WHEN slot.slot_start > now() THEN 0
             ELSE floor(extract(epoch FROM now() - slot.slot_start) * q.rate_limit)::bigint + 1 END AS rate_room
    ) AS rooms
    WHERE q.name = ANY (candidates) AND q.paused_at IS NULL;

    SELECT count(*) INTO queues_with_room FROM unnest(queue_states) AS f WHERE f.room > 0;
    IF queues_with_room > 1 THEN
        -- A queue that the latest claim did not find with room (it had no work, or was paused or at a cap) starts
        -- just below the lowest pass of the queues it found: its turn is next, and it is neither owed for the time
        -- it was away nor owing for what it had before. (Read from the claims, not from the clock: a live queue
        -- whose requests come one at a time is away between them however briefly, and on a starved database
        -- claims may come seconds apart while both queues stay backlogged.)
        SELECT max(q.passed_at) INTO fresh_since FROM unnest(queue_states) AS f JOIN detectq.queues AS q ON q.name = f.name
        WHERE f.room > 0;
        SELECT array_agg(ROW(f.name, f.weight,
                   CASE WHEN q.passed_at >= fresh_since THEN f.pass ELSE coalesce(fresh.pass - 1e-6, 0) END,
                   f.room, f.taken, f.done, f.rate_limit, f.slot_start, f.again)::detectq.claim_queue_state ORDER BY f.name)
        INTO queue_states
        FROM unnest(queue_states) AS f
        JOIN detectq.queues AS q ON q.name = f.name,
        LATERAL (SELECT min(o.pass) AS pass FROM unnest(queue_states) AS o JOIN detectq.queues AS oq ON oq.name = o.name
                 WHERE o.room > 0 AND oq.passed_at >= fresh_since) AS fresh;
    END IF;

    -- Requests with an answer owed count as in flight already (a callback may move them to awaiting_result
    -- without a claim) and as maybe billed: in a queue with caps or a daily limit they are claimed whatever room
    -- those leave, or they would hold the room they wait for.
    SELECT coalesce(array_agg(f.name), '{}') INTO limited FROM unnest(queue_states) AS f JOIN detectq.queues AS q ON q.name = f.name
    WHERE q.max_in_flight IS NOT NULL OR q.group_max_in_flight IS NOT NULL OR q.daily_limit IS NOT NULL;
    IF cardinality(limited) > 0 THEN
        SELECT coalesce(array_agg(owed.id), '{}') INTO claimed_ids FROM (
            SELECT r.id FROM detectq.requests AS r
            WHERE r.queue = ANY (limited) AND r.unanswered_since IS NOT NULL AND r.accepted_at IS NULL
              AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
            ORDER BY r.run_at, r.id
            LIMIT how_many
            FOR UPDATE SKIP LOCKED
        ) AS owed;
    END IF;

    -- The claim goes to the queue whose pass is lowest (with what this claim took from it already), as much as
    -- it has room for; a queue that gave fewer than it was asked for is done, and the rest goes to the next. Over the
    -- claims of a minute each queue so gets its weight's share; within one claim, one queue or two are read.
    LOOP
        rounds := rounds + 1;
        EXIT WHEN cardinality(claimed_ids) >= how_many OR rounds > cardinality(queue_states) + 1;
        SELECT f.name, least(f.room - f.taken, how_many - cardinality(claimed_ids)) AS n INTO wanted
        FROM unnest(queue_states) AS f
        WHERE NOT f.done AND f.room > f.taken
        ORDER BY f.pass + f.taken::double precision / f.weight, f.weight DESC, f.name
        LIMIT 1;
        EXIT WHEN NOT FOUND;
        got := detectq.claim_from_queue(wanted.name, wanted.n, aging_seconds, claimed_ids);
        claimed_ids := claimed_ids || got;
        SELECT array_agg(ROW(f.name, f.weight, f.pass, f.room,
                   f.taken + CASE WHEN f.name = wanted.name THEN cardinality(got) ELSE 0 END,
                   f.done OR (f.name = wanted.name AND cardinality(got) < wanted.n),
                   f.rate_limit, f.slot_start, f.again)::detectq.claim_queue_state ORDER BY f.name)
        INTO queue_states FROM unnest(queue_states) AS f;
    END LOOP;

    -- Added to the pass as it is now, not as this claim read it: claims at the same instant each add theirs. Every
    -- queue this claim found with room is stamped with one time (never earlier than a stamp a later claim wrote
    -- first), alone or not, so that the next claim knows which queues were here; a queue that started level
    -- again keeps that start even if it took nothing.
    stamp := clock_timestamp();
    UPDATE detectq.queues AS q SET
        pass = CASE WHEN queues_with_room <= 1 THEN q.pass
                    WHEN q.passed_at >= fresh_since THEN q.pass + f.taken::double precision / f.weight
                    ELSE f.pass + f.taken::double precision / f.weight END,
        passed_at = greatest(q.passed_at, stamp),
        next_slot_at = CASE WHEN f.rate_limit IS NULL THEN q.next_slot_at
                            ELSE f.slot_start + make_interval(secs => f.taken / f.rate_limit) END
    FROM unnest(queue_states) AS f
    WHERE q.name = f.name AND f.room > 0;

    SELECT CASE
        WHEN bool_or(NOT f.done AND f.room > f.taken) THEN now()
        ELSE min(CASE WHEN f.done THEN NULL
                      WHEN f.again = f.slot_start THEN f.slot_start + make_interval(secs => f.taken / f.rate_limit)
                      ELSE f.again END)
        END
    INTO claim_again FROM unnest(queue_states) AS f;
    claim_again := coalesce(claim_again, floor_expires);

    RETURN QUERY SELECT * FROM detectq.claimed_rows(
        claimed_ids, claim_again, how_many < wanted_at_most AND cardinality(claimed_ids) >= how_many, budget_start, schedule_start, api_rate,
        horizon_seconds
    );
END
$$;

CREATE FUNCTION detectq.post_tasks_check_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION detectq.post_tasks_notify_runnable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('detectq_post_tasks', '');
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.post_tasks_record_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

CREATE FUNCTION detectq.queues_add_claim_floor() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO detectq.claim_floors (queue) VALUES (NEW.name) ON CONFLICT (queue) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.recount_states() RETURNS void
    LANGUAGE sql
    AS $$
    DELETE FROM detectq.state_counts;
    INSERT INTO detectq.state_counts (kind, queue, state, n)
    SELECT 'request', queue, state::text, count(*) FROM detectq.requests GROUP BY queue, state;
    INSERT INTO detectq.state_counts (kind, state, n)
    SELECT 'post_task', state::text, count(*) FROM detectq.post_tasks GROUP BY state;
    DELETE FROM detectq.failure_counts;
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state::text, coalesce(error_message, '(no reason)'), count(*), max(updated_at)
    FROM detectq.requests WHERE state IN ('failed', 'retrying') GROUP BY 1, 2;
$$;

CREATE FUNCTION detectq.requests_check_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'a new request must start queued, with no attempt, lease, remote_uuid or result'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'requests_new_request_starts_queued',
              SCHEMA = 'detectq', TABLE = 'requests';
END
$$;

CREATE FUNCTION detectq.requests_delete_history() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    DELETE FROM detectq.request_events e USING deleted WHERE e.request_id = deleted.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.requests_lower_claim_floors() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    claimable record;
BEGIN
    FOR claimable IN
        -- (A lane's highest and lowest priority, not all of them: a floor of two priorities or more is not used, so
        -- which they are does not matter. A DISTINCT aggregate cost an INSERT ... SELECT of 100,000 rows 8.6 us a row.)
        SELECT c.queue, min(c.run_at) FILTER (WHERE c.group_key IS NULL) AS run_at,
               ARRAY[max(c.priority) FILTER (WHERE c.group_key IS NULL), min(c.priority) FILTER (WHERE c.group_key IS NULL)] AS levels
        FROM changed AS c WHERE c.state IN ('queued', 'retrying') GROUP BY c.queue ORDER BY c.queue
    LOOP
        IF TG_OP = 'UPDATE' AND NOT EXISTS (SELECT 1 FROM detectq.queues AS q WHERE q.name = claimable.queue) THEN
            INSERT INTO detectq.queues (name) VALUES (claimable.queue) ON CONFLICT (name) DO NOTHING;
        END IF;
        IF claimable.run_at IS NOT NULL THEN
            UPDATE detectq.claim_floors AS f
            SET run_at = least(f.run_at, claimable.run_at),
                levels = ARRAY(SELECT DISTINCT l FROM unnest(f.levels || claimable.levels) AS l ORDER BY l DESC)
            WHERE f.queue = claimable.queue AND f.run_at IS NOT NULL
              AND (claimable.run_at < f.run_at OR NOT claimable.levels <@ f.levels);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.requests_lower_media_sha256() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    NEW.media_sha256 := lower(NEW.media_sha256);
    RETURN NEW;
END
$$;

CREATE FUNCTION detectq.requests_notify_claimable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('detectq_requests', '');
    RETURN NULL;
END
$$;

CREATE FUNCTION detectq.requests_record_inserts() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

CREATE FUNCTION detectq.requests_record_transitions() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

CREATE FUNCTION detectq.requests_touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION detectq.walk_claim_floors() RETURNS text[]
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET enable_sort TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    walked text[] := '{}';
    floor record;
    head record;
BEGIN
    FOR floor IN
        SELECT f.queue FROM detectq.claim_floors AS f WHERE f.walked_at < clock_timestamp() - interval '1 second'
        ORDER BY f.queue FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        -- (One walk: the lane's first claimable request is its highest priority's first.)
        SELECT r.priority, r.run_at INTO head FROM detectq.requests AS r
        WHERE r.queue = floor.queue AND r.group_key IS NULL AND r.state IN ('queued', 'retrying')
        ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1;
        IF NOT FOUND THEN
            UPDATE detectq.claim_floors SET run_at = clock_timestamp() - interval '1 second', levels = '{}', walked_at = clock_timestamp()
            WHERE queue = floor.queue;
        ELSIF (SELECT true FROM detectq.requests AS r
               WHERE r.queue = floor.queue AND r.group_key IS NULL AND r.state IN ('queued', 'retrying') AND r.priority < head.priority
               ORDER BY r.queue, r.group_key, r.priority DESC LIMIT 1) THEN
            UPDATE detectq.claim_floors SET run_at = NULL, levels = NULL, walked_at = clock_timestamp() WHERE queue = floor.queue;
        ELSE
            UPDATE detectq.claim_floors
            SET run_at = least(head.run_at, clock_timestamp() - interval '1 second'), levels = ARRAY[head.priority], walked_at = clock_timestamp()
            WHERE queue = floor.queue;
        END IF;
        walked := walked || floor.queue;
    END LOOP;
    RETURN walked;
END
$$;

CREATE TABLE detectq.api_budget (
    singleton boolean DEFAULT true NOT NULL,
    next_slot_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    paused_until timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    CONSTRAINT api_budget_single_row CHECK (singleton)
);

COMMENT ON COLUMN detectq.api_budget.paused_until IS 'Read and written only by workers of releases before migration 0006, during a rolling upgrade; detectq.pauses holds the rate-limit pause since.';

CREATE TABLE detectq.claim_floors (
    queue text NOT NULL,
    run_at timestamp with time zone,
    levels smallint[],
    walked_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    CONSTRAINT claim_floors_complete CHECK (((run_at IS NULL) = (levels IS NULL)))
);

COMMENT ON TABLE detectq.claim_floors IS 'Where each queue''s claims begin (the fair claim writes it, and a trigger lowers it): no claimable request without a group has an earlier run_at or another priority (NULL: not known; of two or more priorities, some).';

CREATE TABLE detectq.failure_counts (
    state text NOT NULL,
    reason text NOT NULL,
    n bigint NOT NULL,
    last_seen timestamp with time zone,
    CONSTRAINT failure_counts_state_valid CHECK ((state = ANY (ARRAY['failed'::text, 'retrying'::text])))
);

CREATE TABLE detectq.installation (
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    singleton boolean DEFAULT true NOT NULL,
    CONSTRAINT installation_name_valid CHECK ((name ~ '^[a-z0-9]{5,12}$'::text)),
    CONSTRAINT installation_singleton CHECK (singleton)
);

COMMENT ON TABLE detectq.installation IS 'This deployment''s name, carried in upload names so that deployments sharing an API team never adopt each other''s detections.';

CREATE TABLE detectq.intelligence_archive (
    request_id bigint NOT NULL,
    remote_uuid text NOT NULL,
    intelligence jsonb NOT NULL,
    archived_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT intelligence_archive_is_object CHECK ((jsonb_typeof(intelligence) = 'object'::text))
);

COMMENT ON TABLE detectq.intelligence_archive IS 'Intelligence reports of completed requests, one row per request; kept when the request itself is pruned.';

CREATE TABLE detectq.pauses (
    kind text NOT NULL,
    reason text NOT NULL,
    paused_by text,
    paused_at timestamp with time zone DEFAULT now() NOT NULL,
    until timestamp with time zone,
    backoff_seconds double precision,
    CONSTRAINT pauses_backoff_positive CHECK ((backoff_seconds > (0)::double precision)),
    CONSTRAINT pauses_kind_valid CHECK ((kind = ANY (ARRAY['rate_limited'::text, 'out_of_credit'::text, 'operator'::text]))),
    CONSTRAINT pauses_reason_not_blank CHECK ((btrim(reason) <> ''::text)),
    CONSTRAINT pauses_until_set_unless_operator CHECK (((kind = 'operator'::text) = (until IS NULL)))
);

COMMENT ON TABLE detectq.pauses IS 'The shared pause: rate_limited (a 429), out_of_credit (a 402) and operator (detectq pause), with who, when and why.';

COMMENT ON COLUMN detectq.pauses.backoff_seconds IS 'rate_limited: the backoff the last 429 without Retry-After set (doubled by the next one while the 429s go on).';

CREATE TABLE detectq.post_task_events (
    id bigint NOT NULL,
    task_id bigint NOT NULL,
    from_state detectq.post_task_state,
    to_state detectq.post_task_state NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker_id text,
    detail text
);

ALTER TABLE detectq.post_task_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME detectq.post_task_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE detectq.post_task_state_transitions (
    from_state detectq.post_task_state NOT NULL,
    to_state detectq.post_task_state NOT NULL
);

CREATE TABLE detectq.post_tasks (
    id bigint NOT NULL,
    request_id bigint NOT NULL,
    processor text NOT NULL,
    state detectq.post_task_state DEFAULT 'queued'::detectq.post_task_state NOT NULL,
    attempt integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 10 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    locked_by text,
    locked_until timestamp with time zone,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    CONSTRAINT post_tasks_attempt_non_negative CHECK ((attempt >= 0)),
    CONSTRAINT post_tasks_failed_has_reason CHECK (((state <> 'failed'::detectq.post_task_state) OR (last_error IS NOT NULL))),
    CONSTRAINT post_tasks_lease_complete CHECK (((locked_by IS NULL) = (locked_until IS NULL))),
    CONSTRAINT post_tasks_lease_only_while_running CHECK (((locked_by IS NULL) OR (state = 'running'::detectq.post_task_state))),
    CONSTRAINT post_tasks_max_attempts_positive CHECK ((max_attempts >= 1)),
    CONSTRAINT post_tasks_processor_not_blank CHECK ((btrim(processor) <> ''::text))
);

ALTER TABLE detectq.post_tasks ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME detectq.post_tasks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE detectq.queue_billing (
    queue text NOT NULL,
    day date NOT NULL,
    n bigint NOT NULL
);

COMMENT ON TABLE detectq.queue_billing IS 'Detections billed per queue and UTC day, as rows to add up (each statement that billed adds one; the fold sums them).';

CREATE TABLE detectq.queue_claims (
    queue text NOT NULL,
    minute timestamp with time zone NOT NULL,
    n bigint NOT NULL
);

COMMENT ON TABLE detectq.queue_claims IS 'Claims (moves from queued or retrying to submitting) per queue and minute, as rows to add up; the fold sums them and keeps a day.';

CREATE TABLE detectq.queues (
    name text NOT NULL,
    weight integer DEFAULT 1 NOT NULL,
    max_in_flight integer,
    group_max_in_flight integer,
    rate_limit double precision,
    daily_limit bigint,
    paused_at timestamp with time zone,
    paused_by text,
    pause_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    pass double precision DEFAULT 0 NOT NULL,
    passed_at timestamp with time zone,
    group_cursor text,
    next_slot_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    CONSTRAINT queues_daily_limit_positive CHECK ((daily_limit >= 1)),
    CONSTRAINT queues_group_max_in_flight_positive CHECK ((group_max_in_flight >= 1)),
    CONSTRAINT queues_max_in_flight_positive CHECK ((max_in_flight >= 1)),
    CONSTRAINT queues_name CHECK ((name ~ '^[a-z0-9_.-]{1,63}$'::text)),
    CONSTRAINT queues_pause_complete CHECK (((paused_at IS NOT NULL) OR ((paused_by IS NULL) AND (pause_reason IS NULL)))),
    CONSTRAINT queues_rate_limit_positive CHECK (((rate_limit > (0)::double precision) AND (rate_limit < 'Infinity'::double precision))),
    CONSTRAINT queues_weight_positive CHECK ((weight >= 1))
);

COMMENT ON TABLE detectq.queues IS 'One row per queue: its share of the API (weight) and limits (NULL: none), and its pause. Made with the defaults the first time a request names the queue.';

COMMENT ON COLUMN detectq.queues.weight IS 'While several queues wait, each gets claims in proportion to its weight.';

COMMENT ON COLUMN detectq.queues.max_in_flight IS 'At most this many requests submitting or awaiting_result at once, across all workers.';

COMMENT ON COLUMN detectq.queues.group_max_in_flight IS 'The same, per group_key within the queue.';

COMMENT ON COLUMN detectq.queues.rate_limit IS 'Requests per second of the shared API budget.';

COMMENT ON COLUMN detectq.queues.daily_limit IS 'Detections billed per UTC day.';

COMMENT ON COLUMN detectq.queues.pass IS 'Claims taken, each 1/weight, while other queues waited: the fair claim serves the lowest first.';

CREATE TABLE detectq.request_events (
    id bigint NOT NULL,
    request_id bigint NOT NULL,
    from_state detectq.request_state,
    to_state detectq.request_state NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    worker_id text,
    detail text
);

ALTER TABLE detectq.request_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME detectq.request_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE detectq.request_media_hashes (
    request_id bigint NOT NULL,
    media_sha256 text NOT NULL
);

CREATE TABLE detectq.request_state_transitions (
    from_state detectq.request_state NOT NULL,
    to_state detectq.request_state NOT NULL
);

CREATE TABLE detectq.requests (
    id bigint NOT NULL,
    media_url text,
    media_path text,
    media_token text,
    visualize boolean DEFAULT false NOT NULL,
    intelligence boolean DEFAULT false NOT NULL,
    audio_source_tracing boolean DEFAULT false NOT NULL,
    use_reverse_search boolean DEFAULT false NOT NULL,
    use_ood_detector boolean DEFAULT false NOT NULL,
    zero_retention_mode boolean DEFAULT false NOT NULL,
    frame_length integer,
    start_region numeric,
    end_region numeric,
    max_video_secs numeric,
    max_video_fps numeric,
    model_types text,
    pipeline text,
    wait_mode text DEFAULT 'auto'::text NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    max_attempts integer DEFAULT 8 NOT NULL,
    idempotency_key text,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    state detectq.request_state DEFAULT 'queued'::detectq.request_state NOT NULL,
    attempt integer DEFAULT 0 NOT NULL,
    locked_by text,
    locked_until timestamp with time zone,
    remote_uuid text,
    submit_path text,
    submit_started_at timestamp with time zone,
    media_type text,
    label text,
    is_fake boolean,
    aggregated_score double precision,
    result jsonb,
    file_deleted_at timestamp with time zone,
    error_message text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    callback_secret_hash text,
    secure_upload_token text,
    secure_upload_token_issued_at timestamp with time zone,
    accepted_at timestamp with time zone,
    poll_count integer DEFAULT 0 NOT NULL,
    audio_label text,
    visual_label text,
    unanswered_since timestamp with time zone,
    traceparent text,
    earlier_callback_secret_hashes text[],
    queue text DEFAULT 'default'::text NOT NULL,
    group_key text,
    media_sha256 text,
    reuse_verdict boolean DEFAULT true NOT NULL,
    reused_from bigint,
    waiting_for bigint,
    CONSTRAINT requests_attempt_non_negative CHECK ((attempt >= 0)),
    CONSTRAINT requests_awaiting_result_has_remote_uuid CHECK (((state <> 'awaiting_result'::detectq.request_state) OR (remote_uuid IS NOT NULL))),
    CONSTRAINT requests_completed_has_result CHECK (((state <> 'completed'::detectq.request_state) OR ((result IS NOT NULL) AND (completed_at IS NOT NULL)))),
    CONSTRAINT requests_end_region_after_start_region CHECK ((end_region > start_region)),
    CONSTRAINT requests_end_region_non_negative CHECK (((end_region >= (0)::numeric) AND (end_region < 'Infinity'::numeric))),
    CONSTRAINT requests_exactly_one_media_source CHECK ((num_nonnulls(media_url, media_path, media_token) = 1)),
    CONSTRAINT requests_failed_has_reason CHECK (((state <> 'failed'::detectq.request_state) OR (error_message IS NOT NULL))),
    CONSTRAINT requests_frame_length_range CHECK (((frame_length >= 1) AND (frame_length <= 4))),
    CONSTRAINT requests_group_key_length CHECK ((char_length(group_key) <= 200)),
    CONSTRAINT requests_lease_complete CHECK (((locked_by IS NULL) = (locked_until IS NULL))),
    CONSTRAINT requests_lease_only_while_working CHECK (((locked_by IS NULL) OR (state = ANY (ARRAY['submitting'::detectq.request_state, 'awaiting_result'::detectq.request_state])))),
    CONSTRAINT requests_max_attempts_positive CHECK ((max_attempts >= 1)),
    CONSTRAINT requests_max_video_fps_non_negative CHECK (((max_video_fps >= (0)::numeric) AND (max_video_fps < 'Infinity'::numeric))),
    CONSTRAINT requests_max_video_secs_non_negative CHECK (((max_video_secs >= (0)::numeric) AND (max_video_secs < 'Infinity'::numeric))),
    CONSTRAINT requests_media_path_not_blank CHECK ((btrim(media_path) <> ''::text)),
    CONSTRAINT requests_media_sha256_hex CHECK (((octet_length(media_sha256) = 64) AND (media_sha256 !~ '[^0-9a-f]'::text))),
    CONSTRAINT requests_media_token_not_blank CHECK ((btrim(media_token) <> ''::text)),
    CONSTRAINT requests_media_url_not_blank CHECK ((btrim(media_url) <> ''::text)),
    CONSTRAINT requests_metadata_is_object CHECK ((jsonb_typeof(metadata) = 'object'::text)),
    CONSTRAINT requests_model_types_valid CHECK ((model_types = ANY (ARRAY['image'::text, 'talking_head'::text]))),
    CONSTRAINT requests_pipeline_not_blank CHECK ((btrim(pipeline) <> ''::text)),
    CONSTRAINT requests_poll_count_non_negative CHECK ((poll_count >= 0)),
    CONSTRAINT requests_queue_name CHECK (((queue <> ''::text) AND (octet_length(queue) <= 63) AND (queue !~ '[^a-z0-9_.-]'::text))),
    CONSTRAINT requests_reused_from_with_reused_path CHECK (((reused_from IS NOT NULL) = (NOT (submit_path IS DISTINCT FROM 'reused'::text)))),
    CONSTRAINT requests_secure_upload_token_dated CHECK (((secure_upload_token IS NULL) = (secure_upload_token_issued_at IS NULL))),
    CONSTRAINT requests_start_region_non_negative CHECK (((start_region >= (0)::numeric) AND (start_region < 'Infinity'::numeric))),
    CONSTRAINT requests_submit_path_valid CHECK ((submit_path = ANY (ARRAY['url'::text, 'multipart'::text, 'secure_upload'::text, 'media_token'::text, 'reused'::text]))),
    CONSTRAINT requests_submitting_has_lease CHECK (((state <> 'submitting'::detectq.request_state) OR (locked_by IS NOT NULL))),
    CONSTRAINT requests_wait_mode_valid CHECK ((wait_mode = ANY (ARRAY['auto'::text, 'sync'::text, 'callback'::text, 'poll'::text])))
);

COMMENT ON TABLE detectq.requests IS 'Detection requests: producers INSERT them (exactly one of media_url, media_path, media_token); detectq workers do the rest.';

COMMENT ON COLUMN detectq.requests.audio_label IS 'The audio track''s label (metrics.label), as the API gave it.';

COMMENT ON COLUMN detectq.requests.visual_label IS 'The picture''s label (video_metrics or image_metrics), as the API gave it.';

COMMENT ON COLUMN detectq.requests.unanswered_since IS 'Since when an attempt may have reached the API without its answer reaching us; NULL once the API answered.';

COMMENT ON COLUMN detectq.requests.traceparent IS 'W3C traceparent (00-<trace-id>-<parent-id>-<flags>) of the producer''s span; the request''s spans continue its trace';

COMMENT ON COLUMN detectq.requests.earlier_callback_secret_hashes IS 'SHA-256 (hex) of the callback secrets of earlier attempts, still valid until the request ends; a secret''s column.';

COMMENT ON COLUMN detectq.requests.queue IS 'The lane: 1-63 of a-z 0-9 _ - . ; its settings are the row of detectq.queues with this name.';

COMMENT ON COLUMN detectq.requests.group_key IS 'Optional, at most 200 characters (a customer, a channel): within a queue and a priority, groups take turns.';

COMMENT ON COLUMN detectq.requests.media_sha256 IS 'SHA-256 of the media, 64 hex characters (stored in lower case); the worker computes it for a media_path.';

COMMENT ON COLUMN detectq.requests.reuse_verdict IS 'Whether the request may complete with the verdict of identical media and options detected before (or in flight).';

COMMENT ON COLUMN detectq.requests.reused_from IS 'The request whose detection gave this one its verdict (submit_path reused); it was never sent to the API.';

COMMENT ON COLUMN detectq.requests.waiting_for IS 'While queued: the request with identical media and options in flight whose verdict this one waits for.';

ALTER TABLE detectq.requests ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME detectq.requests_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE detectq.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE detectq.state_counts (
    kind text NOT NULL,
    state text NOT NULL,
    n bigint NOT NULL,
    queue text,
    CONSTRAINT state_counts_kind_valid CHECK ((kind = ANY (ARRAY['request'::text, 'post_task'::text])))
);

COMMENT ON COLUMN detectq.state_counts.queue IS 'The queue of the requests counted (NULL for post-tasks).';

CREATE TABLE detectq.workers (
    worker_id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    concurrency integer NOT NULL,
    lease_seconds double precision NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    stopped_at timestamp with time zone,
    CONSTRAINT workers_lease_positive CHECK ((lease_seconds > (0)::double precision)),
    CONSTRAINT workers_worker_id_not_blank CHECK ((btrim(worker_id) <> ''::text))
);

COMMENT ON TABLE detectq.workers IS 'detectq worker processes: started_at, heartbeat_at (every third of a lease) and stopped_at (clean stops).';

ALTER TABLE ONLY detectq.api_budget
    ADD CONSTRAINT api_budget_pkey PRIMARY KEY (singleton);

ALTER TABLE ONLY detectq.claim_floors
    ADD CONSTRAINT claim_floors_pkey PRIMARY KEY (queue);

ALTER TABLE ONLY detectq.installation
    ADD CONSTRAINT installation_pkey PRIMARY KEY (singleton);

ALTER TABLE ONLY detectq.intelligence_archive
    ADD CONSTRAINT intelligence_archive_pkey PRIMARY KEY (request_id);

ALTER TABLE ONLY detectq.pauses
    ADD CONSTRAINT pauses_pkey PRIMARY KEY (kind);

ALTER TABLE ONLY detectq.post_task_events
    ADD CONSTRAINT post_task_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY detectq.post_task_state_transitions
    ADD CONSTRAINT post_task_state_transitions_pkey PRIMARY KEY (from_state, to_state);

ALTER TABLE ONLY detectq.post_tasks
    ADD CONSTRAINT post_tasks_one_per_processor UNIQUE (request_id, processor);

ALTER TABLE ONLY detectq.post_tasks
    ADD CONSTRAINT post_tasks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY detectq.queues
    ADD CONSTRAINT queues_pkey PRIMARY KEY (name);

ALTER TABLE ONLY detectq.request_events
    ADD CONSTRAINT request_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY detectq.request_media_hashes
    ADD CONSTRAINT request_media_hashes_pkey PRIMARY KEY (request_id);

ALTER TABLE ONLY detectq.request_state_transitions
    ADD CONSTRAINT request_state_transitions_pkey PRIMARY KEY (from_state, to_state);

ALTER TABLE ONLY detectq.requests
    ADD CONSTRAINT requests_idempotency_key_unique UNIQUE (idempotency_key);

ALTER TABLE detectq.requests
    ADD CONSTRAINT requests_media_url_https CHECK (((media_url ~* '^https://'::text) OR (btrim(media_url) = ''::text))) NOT VALID;

ALTER TABLE ONLY detectq.requests
    ADD CONSTRAINT requests_pkey PRIMARY KEY (id);

ALTER TABLE ONLY detectq.requests
    ADD CONSTRAINT requests_remote_uuid_unique UNIQUE (remote_uuid);

ALTER TABLE detectq.requests
    ADD CONSTRAINT requests_traceparent_w3c CHECK (((traceparent IS NULL) OR ((traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'::text) AND ("left"(traceparent, 2) <> 'ff'::text) AND (substr(traceparent, 4, 32) <> repeat('0'::text, 32)) AND (substr(traceparent, 37, 16) <> repeat('0'::text, 16))))) NOT VALID;

ALTER TABLE ONLY detectq.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY detectq.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (worker_id);

CREATE INDEX post_task_events_task_idx ON detectq.post_task_events USING btree (task_id, id);

CREATE INDEX post_tasks_claimable_idx ON detectq.post_tasks USING btree (run_at, id) WHERE (state = ANY (ARRAY['queued'::detectq.post_task_state, 'retrying'::detectq.post_task_state]));

CREATE INDEX post_tasks_leased_idx ON detectq.post_tasks USING btree (locked_until) WHERE (locked_by IS NOT NULL);

CREATE INDEX post_tasks_unfinished_idx ON detectq.post_tasks USING btree (processor, state) INCLUDE (run_at) WHERE (state <> 'completed'::detectq.post_task_state);

CREATE INDEX queue_billing_queue_day_idx ON detectq.queue_billing USING btree (queue, day);

CREATE INDEX queue_claims_minute_idx ON detectq.queue_claims USING btree (minute, queue);

CREATE INDEX request_events_request_idx ON detectq.request_events USING btree (request_id, id);

CREATE INDEX request_media_hashes_sha256_idx ON detectq.request_media_hashes USING hash (media_sha256);

CREATE INDEX requests_awaiting_idx ON detectq.requests USING btree (run_at, id) WHERE (state = 'awaiting_result'::detectq.request_state);

CREATE INDEX requests_claimable_idx ON detectq.requests USING btree (priority DESC, run_at, id) WHERE (state = ANY (ARRAY['queued'::detectq.request_state, 'retrying'::detectq.request_state]));

CREATE INDEX requests_completed_at_idx ON detectq.requests USING btree (completed_at) WHERE (completed_at IS NOT NULL);

CREATE INDEX requests_created_at_idx ON detectq.requests USING btree (created_at, id);

CREATE INDEX requests_leased_idx ON detectq.requests USING btree (locked_until) WHERE (locked_by IS NOT NULL);

CREATE INDEX requests_metadata_words_idx ON detectq.requests USING gin (jsonb_to_tsvector('simple'::regconfig, metadata, '["key", "string", "numeric"]'::jsonb)) WHERE (metadata <> '{}'::jsonb);

CREATE INDEX requests_queue_answer_owed_idx ON detectq.requests USING btree (queue, group_key, unanswered_since) WHERE ((unanswered_since IS NOT NULL) AND (accepted_at IS NULL));

CREATE INDEX requests_queue_claimable_idx ON detectq.requests USING btree (queue, group_key, priority DESC, run_at, id) WHERE (state = ANY (ARRAY['queued'::detectq.request_state, 'retrying'::detectq.request_state]));

CREATE INDEX requests_queue_in_flight_idx ON detectq.requests USING btree (queue, group_key) WHERE (state = ANY (ARRAY['submitting'::detectq.request_state, 'awaiting_result'::detectq.request_state]));

CREATE INDEX requests_reused_idx ON detectq.requests USING btree (completed_at) WHERE (reused_from IS NOT NULL);

CREATE INDEX requests_state_created_at_idx ON detectq.requests USING btree (state, created_at, id);

CREATE INDEX requests_waiting_for_idx ON detectq.requests USING btree (waiting_for) WHERE (waiting_for IS NOT NULL);

CREATE TRIGGER post_tasks_check_update BEFORE UPDATE ON detectq.post_tasks FOR EACH ROW EXECUTE FUNCTION detectq.post_tasks_check_update();

CREATE TRIGGER post_tasks_count_deletes AFTER DELETE ON detectq.post_tasks REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('post_task');

CREATE TRIGGER post_tasks_count_inserts AFTER INSERT ON detectq.post_tasks REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('post_task');

CREATE TRIGGER post_tasks_notify_insert AFTER INSERT ON detectq.post_tasks FOR EACH ROW WHEN (((new.state = ANY (ARRAY['queued'::detectq.post_task_state, 'retrying'::detectq.post_task_state])) AND (new.run_at <= now()))) EXECUTE FUNCTION detectq.post_tasks_notify_runnable();

CREATE TRIGGER post_tasks_notify_runnable AFTER UPDATE OF state, run_at ON detectq.post_tasks FOR EACH ROW WHEN (((new.state = ANY (ARRAY['queued'::detectq.post_task_state, 'retrying'::detectq.post_task_state])) AND (new.run_at <= now()))) EXECUTE FUNCTION detectq.post_tasks_notify_runnable();

CREATE TRIGGER post_tasks_record_insert AFTER INSERT ON detectq.post_tasks FOR EACH ROW EXECUTE FUNCTION detectq.post_tasks_record_event();

CREATE TRIGGER post_tasks_record_transition AFTER UPDATE OF state ON detectq.post_tasks FOR EACH ROW WHEN ((new.state IS DISTINCT FROM old.state)) EXECUTE FUNCTION detectq.post_tasks_record_event();

CREATE TRIGGER queues_add_claim_floor AFTER INSERT ON detectq.queues FOR EACH ROW EXECUTE FUNCTION detectq.queues_add_claim_floor();

CREATE TRIGGER requests_check_insert BEFORE INSERT ON detectq.requests FOR EACH ROW WHEN (((new.state <> 'queued'::detectq.request_state) OR (new.attempt <> 0) OR (new.locked_by IS NOT NULL) OR (new.remote_uuid IS NOT NULL) OR (new.result IS NOT NULL) OR (new.completed_at IS NOT NULL))) EXECUTE FUNCTION detectq.requests_check_insert();

CREATE TRIGGER requests_count_deletes AFTER DELETE ON detectq.requests REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('request');

CREATE TRIGGER requests_count_inserts AFTER INSERT ON detectq.requests REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.count_statement('request');

CREATE TRIGGER requests_count_reason_changes AFTER UPDATE OF error_message ON detectq.requests FOR EACH ROW WHEN (((old.state = new.state) AND (new.state = ANY (ARRAY['failed'::detectq.request_state, 'retrying'::detectq.request_state])) AND (old.error_message IS DISTINCT FROM new.error_message))) EXECUTE FUNCTION detectq.count_failure_reason_change();

CREATE TRIGGER requests_delete_history AFTER DELETE ON detectq.requests REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_delete_history();

CREATE TRIGGER requests_keep_earlier_callback_secret BEFORE UPDATE OF callback_secret_hash ON detectq.requests FOR EACH ROW WHEN (((old.callback_secret_hash IS NOT NULL) AND (new.callback_secret_hash IS DISTINCT FROM old.callback_secret_hash))) EXECUTE FUNCTION detectq.keep_earlier_callback_secret();

CREATE TRIGGER requests_lower_claim_floors_on_insert AFTER INSERT ON detectq.requests REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_lower_claim_floors();

CREATE TRIGGER requests_lower_claim_floors_on_update AFTER UPDATE ON detectq.requests REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_lower_claim_floors();

CREATE TRIGGER requests_lower_media_sha256 BEFORE INSERT OR UPDATE OF media_sha256 ON detectq.requests FOR EACH ROW WHEN ((new.media_sha256 <> lower(new.media_sha256))) EXECUTE FUNCTION detectq.requests_lower_media_sha256();

CREATE TRIGGER requests_notify_claimable AFTER UPDATE OF state, run_at ON detectq.requests FOR EACH ROW WHEN (((new.state = ANY (ARRAY['queued'::detectq.request_state, 'retrying'::detectq.request_state])) AND (new.run_at <= now()))) EXECUTE FUNCTION detectq.requests_notify_claimable();

CREATE TRIGGER requests_record_inserts AFTER INSERT ON detectq.requests REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_record_inserts();

CREATE TRIGGER requests_record_transitions AFTER UPDATE ON detectq.requests REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_record_transitions();

CREATE TRIGGER requests_touch BEFORE UPDATE ON detectq.requests FOR EACH ROW WHEN ((NOT (new.updated_at IS DISTINCT FROM old.updated_at))) EXECUTE FUNCTION detectq.requests_touch();

ALTER TABLE ONLY detectq.claim_floors
    ADD CONSTRAINT claim_floors_queue_fkey FOREIGN KEY (queue) REFERENCES detectq.queues(name) ON DELETE CASCADE;

ALTER TABLE ONLY detectq.post_task_events
    ADD CONSTRAINT post_task_events_task_id_fkey FOREIGN KEY (task_id) REFERENCES detectq.post_tasks(id) ON DELETE CASCADE;

ALTER TABLE ONLY detectq.post_tasks
    ADD CONSTRAINT post_tasks_request_id_fkey FOREIGN KEY (request_id) REFERENCES detectq.requests(id) ON DELETE CASCADE;

ALTER TABLE ONLY detectq.request_media_hashes
    ADD CONSTRAINT request_media_hashes_request_id_fkey FOREIGN KEY (request_id) REFERENCES detectq.requests(id) ON DELETE CASCADE;

INSERT INTO detectq.post_task_state_transitions VALUES ('queued', 'running');
INSERT INTO detectq.post_task_state_transitions VALUES ('running', 'completed');
INSERT INTO detectq.post_task_state_transitions VALUES ('running', 'retrying');
INSERT INTO detectq.post_task_state_transitions VALUES ('running', 'failed');
INSERT INTO detectq.post_task_state_transitions VALUES ('running', 'queued');
INSERT INTO detectq.post_task_state_transitions VALUES ('retrying', 'running');
INSERT INTO detectq.post_task_state_transitions VALUES ('failed', 'queued');

INSERT INTO detectq.request_state_transitions VALUES ('queued', 'submitting');
INSERT INTO detectq.request_state_transitions VALUES ('queued', 'cancelled');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'awaiting_result');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'completed');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'retrying');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'failed');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'cancelled');
INSERT INTO detectq.request_state_transitions VALUES ('submitting', 'queued');
INSERT INTO detectq.request_state_transitions VALUES ('awaiting_result', 'completed');
INSERT INTO detectq.request_state_transitions VALUES ('awaiting_result', 'failed');
INSERT INTO detectq.request_state_transitions VALUES ('awaiting_result', 'cancelled');
INSERT INTO detectq.request_state_transitions VALUES ('retrying', 'submitting');
INSERT INTO detectq.request_state_transitions VALUES ('retrying', 'cancelled');
INSERT INTO detectq.request_state_transitions VALUES ('failed', 'queued');
INSERT INTO detectq.request_state_transitions VALUES ('retrying', 'awaiting_result');
INSERT INTO detectq.request_state_transitions VALUES ('queued', 'awaiting_result');
INSERT INTO detectq.request_state_transitions VALUES ('queued', 'completed');
