-- detectq 0016: queues, groups and fair shares of the API (CONTRACT section 8).
--
-- A producer names a request's lane (queue) and, if it likes, its group (a customer, a channel, an uploader).
-- Each queue has one row of settings in detectq.queues, made with the defaults the first time a request names
-- it. The new columns have a constant default, so adding them rewrites nothing; their constraints are added
-- NOT VALID (they hold for every new row at once) and validated by 0017, which blocks no writer, with the
-- indexes the fair claim reads, built CONCURRENTLY.

ALTER TABLE detectq.requests ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE detectq.requests ADD COLUMN group_key text;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_queue_name CHECK (queue ~ '^[a-z0-9_.-]{1,63}$') NOT VALID;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_group_key_length CHECK (char_length(group_key) <= 200) NOT VALID;

COMMENT ON COLUMN detectq.requests.queue IS
    'The lane: 1-63 of a-z 0-9 _ - . ; its settings are the row of detectq.queues with this name.';
COMMENT ON COLUMN detectq.requests.group_key IS
    'Optional, at most 200 characters (a customer, a channel): within a queue and a priority, groups take turns.';

CREATE TABLE detectq.queues (
    name                text PRIMARY KEY CONSTRAINT queues_name CHECK (name ~ '^[a-z0-9_.-]{1,63}$'),
    weight              integer NOT NULL DEFAULT 1 CONSTRAINT queues_weight_positive CHECK (weight >= 1),
    max_in_flight       integer CONSTRAINT queues_max_in_flight_positive CHECK (max_in_flight >= 1),
    group_max_in_flight integer CONSTRAINT queues_group_max_in_flight_positive CHECK (group_max_in_flight >= 1),
    rate_limit          double precision
                        CONSTRAINT queues_rate_limit_positive CHECK (rate_limit > 0 AND rate_limit < 'Infinity'),
    daily_limit         bigint CONSTRAINT queues_daily_limit_positive CHECK (daily_limit >= 1),
    paused_at           timestamptz,
    paused_by           text,
    pause_reason        text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- The fair claim's own bookkeeping (detectq.next_fair_claims writes it, nothing else does).
    pass                double precision NOT NULL DEFAULT 0,
    passed_at           timestamptz,
    group_cursor        text,
    next_slot_at        timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT queues_pause_complete CHECK (paused_at IS NOT NULL OR (paused_by IS NULL AND pause_reason IS NULL))
);

COMMENT ON TABLE detectq.queues IS
    'One row per queue: its share of the API (weight) and limits (NULL: none), and its pause. Made with the defaults the first time a request names the queue.';
COMMENT ON COLUMN detectq.queues.weight IS 'While several queues wait, each gets claims in proportion to its weight.';
COMMENT ON COLUMN detectq.queues.max_in_flight IS 'At most this many requests submitting or awaiting_result at once, across all workers.';
COMMENT ON COLUMN detectq.queues.group_max_in_flight IS 'The same, per group_key within the queue.';
COMMENT ON COLUMN detectq.queues.rate_limit IS 'Requests per second of the shared API budget.';
COMMENT ON COLUMN detectq.queues.daily_limit IS 'Detections billed per UTC day.';
COMMENT ON COLUMN detectq.queues.pass IS 'Claims taken, each 1/weight, while other queues waited: the fair claim serves the lowest first.';

INSERT INTO detectq.queues (name) VALUES ('default');

-- Detections billed, by queue and UTC day: one row per statement that billed (a request's accepted_at set),
-- folded with the state counts. The daily limit reads today's sum. (0017 counts what was billed earlier today,
-- outside this migration's lock.)
CREATE TABLE detectq.queue_billing (
    queue text NOT NULL,
    day   date NOT NULL,
    n     bigint NOT NULL
);
CREATE INDEX queue_billing_queue_day_idx ON detectq.queue_billing (queue, day);

COMMENT ON TABLE detectq.queue_billing IS
    'Detections billed per queue and UTC day, as rows to add up (each statement that billed adds one; the fold sums them).';


-- The kept counts of requests by state (migration 0010) are kept by queue too: detectq_queue_depth{queue,state}.
ALTER TABLE detectq.state_counts ADD COLUMN queue text;
UPDATE detectq.state_counts SET queue = 'default' WHERE kind = 'request';
COMMENT ON COLUMN detectq.state_counts.queue IS 'The queue of the requests counted (NULL for post-tasks).';

CREATE OR REPLACE FUNCTION detectq.count_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE OR REPLACE FUNCTION detectq.recount_states() RETURNS void
LANGUAGE sql AS $$
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

-- A queue's row appears the first time a request names it.
CREATE OR REPLACE FUNCTION detectq.requests_record_inserts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := detectq.current_actor();
    given_detail text := nullif(current_setting('detectq.event_detail', true), '');
BEGIN
    INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
    SELECT id, NULL, state, actor, given_detail FROM inserted ORDER BY id;
    INSERT INTO detectq.queues (name) SELECT DISTINCT queue FROM inserted ORDER BY 1 ON CONFLICT (name) DO NOTHING;
    IF EXISTS (SELECT 1 FROM inserted WHERE run_at <= now()) THEN
        PERFORM pg_notify('detectq_requests', '');
    END IF;
    RETURN NULL;
END
$$;

-- The history trigger of 0012, which now also counts each detection billed (accepted_at set) for its queue.
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
                   max(queue) FILTER (WHERE is_before) AS old_queue, max(queue) FILTER (WHERE NOT is_before) AS queue
            FROM (
                SELECT id, state, error_message, updated_at, accepted_at, queue, true AS is_before FROM before_rows
                UNION ALL SELECT id, state, error_message, updated_at, accepted_at, queue, false FROM after_rows
            ) AS versions
            GROUP BY id
        ) AS paired
        WHERE from_state <> to_state OR old_queue <> queue
    ), events AS (
        INSERT INTO detectq.request_events (request_id, from_state, to_state, worker_id, detail)
        SELECT id, from_state, to_state, actor,
               coalesce(given_detail, CASE WHEN to_state IN ('retrying', 'failed') THEN error_message END)
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

-- The fold of the kept counts also sums the billing rows (and forgets days older than 40).
CREATE OR REPLACE FUNCTION detectq.fold_state_counts() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH folded AS (DELETE FROM detectq.state_counts RETURNING kind, queue, state, n)
    INSERT INTO detectq.state_counts (kind, queue, state, n)
    SELECT kind, queue, state, sum(n) FROM folded GROUP BY kind, queue, state HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.failure_counts RETURNING state, reason, n, last_seen)
    INSERT INTO detectq.failure_counts (state, reason, n, last_seen)
    SELECT state, reason, sum(n), max(last_seen) FROM folded GROUP BY state, reason HAVING sum(n) <> 0;
    WITH folded AS (DELETE FROM detectq.queue_billing RETURNING queue, day, n)
    INSERT INTO detectq.queue_billing (queue, day, n)
    SELECT queue, day, sum(n) FROM folded WHERE day >= (now() AT TIME ZONE 'UTC')::date - 40 GROUP BY queue, day;
$$;

-- (These functions, like the claims of 0011, price sorting out: the indexes' own order is the plan, whatever a
-- table's stale statistics say. A sort they cannot avoid, of a few queues or lanes, would then look costly enough
-- to compile with JIT, which took 100 ms a claim: JIT is off for them. And a lane's statements are planned for
-- their values: a plan made once for any queue and any limit read a whole queue's index, 6 ms a claim of 100.)
--
-- Up to `quota` due requests of one queue's one lane (a group, or the requests with no group), in the lane's
-- claim order, locked, skipping rows others hold. For the requests with no group, each priority level's
-- oldest request ages (one priority higher for each `aging_seconds` it has been claimable), and the levels
-- are taken in the order of their oldest's aged priority (the older first where they are level); within a
-- group, its higher priority goes first.
CREATE FUNCTION detectq.claim_lane(queue_name text, lane text, quota bigint, aging_seconds double precision, taken bigint[])
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    ids bigint[] := '{}';
    lowest smallint;
    more bigint[];
    level record;
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

-- What the fair claim knows of a lane of one queue (a group, or the requests with no group) and of a queue.
CREATE TYPE detectq.claim_lane_state AS (lane text, position integer, aged numeric, room bigint);
CREATE TYPE detectq.claim_queue_state AS (
    name text, weight integer, pass double precision, room bigint, taken bigint, done boolean, rate_limit double precision,
    slot_start timestamptz, again timestamptz
);

-- Up to `quota` due requests of one queue in its claim order, locked: a higher (aged) priority first, and among
-- requests of the same, groups taking turns (the requests with no group are one more lane), from the group
-- after the one served last (queues.group_cursor). A group at the queue's group_max_in_flight is skipped.
CREATE FUNCTION detectq.claim_from_queue(queue_name text, quota bigint, aging_seconds double precision, taken bigint[])
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off AS $$
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

-- What the fair claim returns for `ids` (in claim order): each row's state before, its owed answer, when to
-- claim again, and its budget slot, reserved here (consecutive slots from `budget_start`, `api_rate` a second;
-- the schedule moves on from `schedule_start`, where it stood, by as many slots).
-- When the budget held the claim back (`budget_bound`: it took all the budget let it, and would have taken
-- more), claim again when the next slot comes into the horizon. A claim that took nothing and has a time to say is one row with no id.
CREATE FUNCTION detectq.claimed_rows(
    ids bigint[], claim_again timestamptz, budget_bound boolean, budget_start timestamptz, schedule_start timestamptz,
    api_rate double precision, horizon_seconds double precision
)
RETURNS TABLE (
    claimable_id bigint, claimed_from text, prior_unanswered_since timestamptz, claim_again_at timestamptz,
    slot_at timestamptz, slot_in double precision
)
LANGUAGE plpgsql VOLATILE ROWS 100 SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
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
             LATERAL (SELECT budget_start + make_interval(secs => (c.position - 1) / api_rate) AS at) AS slot;
END
$$;

-- The fair claim: up to `how_many` due requests across the queues, locked, skipping rows others hold.
--
-- A paused queue is not claimed. Each other queue with due work has room for at most how_many, less what its
-- max_in_flight, its daily_limit (billed today, and every request that may yet be billed: sending, or with an
-- answer owed) and its rate_limit (slots 1/rate apart) leave; the queues with limits are locked first, in name
-- order, so that two claims never both count the same room. The claims go to the queues with room by their
-- passes (each request claimed costs its queue 1/weight; the lowest pass goes first), and a queue that had no
-- claim for 2 s starts again at the lowest pass of the others, neither owed nor owing. The passes are written
-- only when more than one queue had room.
--
-- With `api_rate` (the shared budget's requests a second; NULL for none) and more than one queue, the claim is
-- where the budget is spent: it takes no more requests than the budget's slots due within `horizon_seconds`, reserves one slot for
-- each (in claim order, in detectq.api_budget, as every worker's API calls do) and returns it (`slot_at`, and
-- `slot_in` seconds from now). So the shares hold where the API is called: no worker holds claimed requests
-- that wait for slots while another queue's new request waits behind them.
--
-- Each row also says when to claim again: now, when the claim stopped at how_many with more work in sight;
-- when a queue's next rate slot or UTC day comes, or the budget's next slot, when that is what held work back;
-- 'infinity' when a cap did (claim again when a request ends); NULL when there was no more work. A claim that
-- took nothing and has a time to say returns one row with no id.
CREATE FUNCTION detectq.next_fair_claims(
    how_many bigint, aging_seconds double precision, api_rate double precision, horizon_seconds double precision
)
RETURNS TABLE (
    claimable_id bigint, claimed_from text, prior_unanswered_since timestamptz, claim_again_at timestamptz,
    slot_at timestamptz, slot_in double precision
)
LANGUAGE plpgsql VOLATILE ROWS 100 SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off AS $$
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
BEGIN
    IF how_many <= 0 THEN RETURN; END IF;
    -- The queues with due work: a loose scan of the claim index, one probe per queue with claimable requests.
    WITH RECURSIVE names (name) AS (
        (SELECT r.queue FROM detectq.requests AS r WHERE r.state IN ('queued', 'retrying') ORDER BY r.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT r.queue FROM detectq.requests AS r WHERE r.state IN ('queued', 'retrying') AND r.queue > names.name
                ORDER BY r.queue LIMIT 1)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT coalesce(array_agg(names.name ORDER BY names.name), '{}') INTO candidates FROM names
    WHERE names.name IS NOT NULL
      -- (A probe per queue, not a join the planner could make over every due request.)
      AND (SELECT true FROM detectq.requests AS r
           WHERE r.queue = names.name AND r.state IN ('queued', 'retrying') AND r.run_at <= now()
           ORDER BY r.queue, r.group_key, r.priority DESC, r.run_at, r.id LIMIT 1);
    IF cardinality(candidates) = 0 THEN RETURN; END IF;
    -- With one queue there is no one to be fair to: its claims take what they can, and each call reserves its
    -- slot as it goes. Once a second queue exists, the claims spend the budget.
    IF (SELECT count(*) FROM detectq.queues) < 2 THEN api_rate := NULL; END IF;
    -- The budget's slots due within the horizon (none before a 429's pause ends), held until this claim ends.
    -- While several queues have work, the claim may take one slot early (the schedule still moves on by every
    -- slot it takes): a queue whose turn it is then finds a slot now, not behind the slots another queue's
    -- claims booked just before. The budget's busiest second may so hold two slots more than its rate.
    IF api_rate IS NOT NULL THEN
        SELECT greatest(b.next_slot_at, clock_timestamp() - make_interval(secs => least(1 / api_rate, 0.1)),
                        coalesce((SELECT p.until FROM detectq.pauses AS p WHERE p.kind = 'rate_limited'), '-infinity'))
        INTO schedule_start FROM detectq.api_budget AS b FOR NO KEY UPDATE;
        budget_start := CASE WHEN cardinality(candidates) > 1
                             THEN greatest(schedule_start - make_interval(secs => 1 / api_rate),
                                           clock_timestamp() - make_interval(secs => least(1 / api_rate, 0.1)),
                                           coalesce((SELECT p.until FROM detectq.pauses AS p WHERE p.kind = 'rate_limited'), '-infinity'))
                             ELSE schedule_start END;
        budget_room := CASE WHEN budget_start > clock_timestamp() + make_interval(secs => horizon_seconds) THEN 0
                            ELSE floor(extract(epoch FROM clock_timestamp() + make_interval(secs => horizon_seconds) - budget_start)
                                       * api_rate)::bigint + 1 END;
        IF budget_room <= 0 THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::timestamptz, budget_start - make_interval(secs => horizon_seconds),
                                NULL::timestamptz, NULL::double precision;
            RETURN;
        END IF;
        how_many := least(how_many, budget_room);
    END IF;
    -- A queue a request was moved to by hand has a row of its own from now on.
    INSERT INTO detectq.queues (name)
    SELECT c.name FROM unnest(candidates) AS c(name) WHERE NOT EXISTS (SELECT 1 FROM detectq.queues AS q WHERE q.name = c.name)
    ON CONFLICT (name) DO NOTHING;
    -- One queue with work and no limit or pause (a deployment with one lane): nothing to share or count.
    IF cardinality(candidates) = 1 AND EXISTS (
        SELECT 1 FROM detectq.queues AS q
        WHERE q.name = candidates[1] AND q.paused_at IS NULL AND q.max_in_flight IS NULL AND q.group_max_in_flight IS NULL
          AND q.rate_limit IS NULL AND q.daily_limit IS NULL
    ) THEN
        claimed_ids := detectq.claim_from_queue(candidates[1], how_many, aging_seconds, claimed_ids);
        claim_again := CASE WHEN cardinality(claimed_ids) >= how_many THEN now() END;
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
        -- A queue with no claim for 2 s starts just below the lowest pass of the queues that had one: its turn is
        -- next, and it is neither owed for the time it had no work nor owing for what it had before.
        SELECT array_agg(ROW(f.name, f.weight,
                   CASE WHEN q.passed_at >= now() - interval '2 seconds' THEN f.pass ELSE coalesce(fresh.pass - 1e-6, 0) END,
                   f.room, f.taken, f.done, f.rate_limit, f.slot_start, f.again)::detectq.claim_queue_state ORDER BY f.name)
        INTO queue_states
        FROM unnest(queue_states) AS f
        JOIN detectq.queues AS q ON q.name = f.name,
        LATERAL (SELECT min(o.pass) AS pass FROM unnest(queue_states) AS o JOIN detectq.queues AS oq ON oq.name = o.name
                 WHERE o.room > 0 AND oq.passed_at >= now() - interval '2 seconds') AS fresh;
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

    -- Added to the pass as it is now, not as this claim read it: claims at the same instant each add theirs.
    UPDATE detectq.queues AS q SET
        pass = CASE WHEN queues_with_room <= 1 THEN q.pass
                    WHEN q.passed_at >= now() - interval '2 seconds' THEN q.pass + f.taken::double precision / f.weight
                    ELSE f.pass + f.taken::double precision / f.weight END,
        passed_at = CASE WHEN queues_with_room > 1 THEN now() ELSE q.passed_at END,
        next_slot_at = CASE WHEN f.rate_limit IS NULL THEN q.next_slot_at
                            ELSE f.slot_start + make_interval(secs => f.taken / f.rate_limit) END
    FROM unnest(queue_states) AS f
    WHERE q.name = f.name AND f.taken > 0 AND (queues_with_room > 1 OR f.rate_limit IS NOT NULL);

    SELECT CASE
        WHEN bool_or(NOT f.done AND f.room > f.taken) THEN now()
        ELSE min(CASE WHEN f.done THEN NULL
                      WHEN f.again = f.slot_start THEN f.slot_start + make_interval(secs => f.taken / f.rate_limit)
                      ELSE f.again END)
        END
    INTO claim_again FROM unnest(queue_states) AS f;

    RETURN QUERY SELECT * FROM detectq.claimed_rows(
        claimed_ids, claim_again, how_many < wanted_at_most AND cardinality(claimed_ids) >= how_many, budget_start, schedule_start, api_rate,
        horizon_seconds
    );
END
$$;

REVOKE EXECUTE ON FUNCTION detectq.claim_lane(text, text, bigint, double precision, bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.claim_from_queue(text, bigint, double precision, bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.claimed_rows(bigint[], timestamptz, boolean, timestamptz, timestamptz, double precision, double precision)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.next_fair_claims(bigint, double precision, double precision, double precision) FROM PUBLIC;
