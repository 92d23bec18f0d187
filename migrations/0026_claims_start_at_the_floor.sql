-- detectq 0026: a claim starts where a queue's claimable requests begin, not at the claim index's first entry
-- (issue 30 item 4).
--
-- A claim read the claim index (requests_queue_claimable_idx) from a queue's first entry: first the entries of the
-- requests already claimed, which stay until vacuum removes their versions, then the ones still due. While a
-- long transaction holds back vacuum those entries only grow, and no scan may mark them dead (a version is dead
-- to every snapshot or to none): 200,000 requests drained beside a held snapshot left 399,481 dead versions,
-- and a claim of 100 due requests then took 42-64 ms for its scan (91-144 ms for the whole function), against
-- 0.8-1.1 ms for the same scan started at the first due request's run_at. A run_at bound alone is not a start:
-- the index orders by priority before run_at, and the same scan with run_at only filtered in the index read
-- 1,533 pages in 21 ms.
--
-- So each queue now has a floor (detectq.claim_floors): the earliest run_at its claimable requests without a
-- group may have, and their priorities. Where those are one priority (or none), the claims of that lane scan
-- from (priority, floor) on, and the queues with due work are probed from there too. A claim that finds a floor
-- a second old walks the lane again and sets it: its first claimable request's run_at, and never later than a
-- second before the walk, so that an INSERT whose transaction began just before the walk and commits just after it
-- is not below it. A request that becomes claimable below its queue's floor (a run_at in the past, a claim handed
-- back, a priority the lane did not have) lowers it, by a trigger, in the statement that makes it so; only one
-- whose statement ended before a walk that did not yet see it can be missed, and a claim that used a floor and
-- found less than it asked for comes back when that floor is a second old, so such a request waits at most that.
-- A queue with requests of two priorities or more without a group is claimed as before.
--
-- Measured on the same 200,000 drained requests (a snapshot held, 100 due): a claim of 100 that walks took 64 ms
-- and read 200,102 entries of the claim index; the claims after it, from the floor, 1.4-2.6 ms and 101 entries.
--
-- The floors are a table of their own, not columns of detectq.queues: a claim walks with its queues' floors
-- locked (SKIP LOCKED, so it never waits for one), and it may wait for a queue's row afterwards.

CREATE TABLE detectq.claim_floors (
    queue     text PRIMARY KEY REFERENCES detectq.queues (name) ON DELETE CASCADE,
    run_at    timestamptz,
    levels    smallint[],
    walked_at timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT claim_floors_complete CHECK ((run_at IS NULL) = (levels IS NULL))
);

COMMENT ON TABLE detectq.claim_floors IS
    'Where each queue''s claims begin (the fair claim writes it, and a trigger lowers it): no claimable request without a group has an earlier run_at or another priority (NULL: not known; of two or more priorities, some).';

-- (Every queue with claimable requests has its row from now on; one a request was moved to by hand may not yet.)
INSERT INTO detectq.queues (name)
SELECT DISTINCT r.queue FROM detectq.requests AS r WHERE r.state IN ('queued', 'retrying') ORDER BY 1 ON CONFLICT (name) DO NOTHING;
INSERT INTO detectq.claim_floors (queue) SELECT name FROM detectq.queues;

-- A queue's floor row comes with the queue's row (a request naming it, `detectq queue set`, a claim that found it).
-- (A row trigger: it runs for a row inserted, not for each producer's INSERT ... ON CONFLICT DO NOTHING that
-- inserts none, as a statement trigger would.)
CREATE FUNCTION detectq.queues_add_claim_floor() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO detectq.claim_floors (queue) VALUES (NEW.name) ON CONFLICT (queue) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER queues_add_claim_floor AFTER INSERT ON detectq.queues
    FOR EACH ROW EXECUTE FUNCTION detectq.queues_add_claim_floor();

-- A statement that makes requests claimable below their queue's floor, or at a priority it does not list, lowers
-- it (once per statement; a statement that makes none claimable, as most of the workers' do, writes nothing).
-- And a request moved by hand to a queue that has no row yet gives the queue its row (and a floor) at once: the
-- claims find the queues with work from their floors, no longer by a loose scan of the claim index.
-- (One pass over the statement's rows; the workers' statements, which make none claimable, end there.)
CREATE FUNCTION detectq.requests_lower_claim_floors() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE TRIGGER requests_lower_claim_floors_on_insert AFTER INSERT ON detectq.requests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_lower_claim_floors();
CREATE TRIGGER requests_lower_claim_floors_on_update AFTER UPDATE ON detectq.requests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION detectq.requests_lower_claim_floors();

-- The floors of the queues whose floor is a second old (or was never set), each walked and set anew by this
-- claim where no other claim is at it (SKIP LOCKED): the priorities of the lane's claimable requests without a
-- group (due or not), and, when there is at most one, its first request's run_at, at most a second ago. Returns
-- the queues it set.
CREATE FUNCTION detectq.walk_claim_floors() RETURNS text[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off AS $$
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

-- claim_lane of 0016, whose lane of requests without a group now starts at the queue's floor where it has one.
CREATE OR REPLACE FUNCTION detectq.claim_lane(queue_name text, lane text, quota bigint, aging_seconds double precision, taken bigint[])
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off SET plan_cache_mode = force_custom_plan AS $$
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

-- The fair claim of 0020, which now probes and claims from the queues' floors and walks the floors a second old.
CREATE OR REPLACE FUNCTION detectq.next_fair_claims(
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

REVOKE EXECUTE ON FUNCTION detectq.walk_claim_floors() FROM PUBLIC;
