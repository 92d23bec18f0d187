-- detectq 0020: the slot a queue's arriving work takes early is now, not one slot before the shared schedule
-- (CONTRACT section 8).
--
-- 0019 took the early slot at one slot before the schedule's next. Right after a backlog's claim booked the slot
-- due at the horizon (20 ms ahead), the schedule's next slot was 45 ms away at 40 a second, so a live request
-- claimed then waited up to 20 ms for its early slot, and on a busy database those were the same moments its
-- claim queued behind the backlog's claims: in a quarter-size run of bench row 12b, a fifth of the live requests
-- beside a saturating backfill reached the API 34-41 ms after their INSERT, against 8-12 ms for the rest (p95
-- 36 ms against 8 ms alone). The early slot is now the sooner of that slot and now, and it is one slot more than the schedule's slots
-- due within the horizon (0019 counted from the early slot, so an early slot past the horizon gave none):
-- first in the claim, it goes to the queue whose turn it is; the claim's other slots follow the schedule.
--
-- And work counts as arriving only in a queue with at most two requests due. A queue had no claim for two slots
-- also when it was alone (the passes are not kept then) or when its weight is light (a backfill at weight 1 beside
-- live at 4 is claimed once in five claims, 125 ms apart at 40 a second), and then its backlog took the early slot.
--
-- And at each slot one worker claims, not every one. A claim that found the budget booked beyond the horizon came
-- back when the next slot would be due, at the same instant as the worker that booked it and every other loser:
-- in a full-size run 7,562 of 12,123 paced claims took nothing, and a claim waited 1.9 ms on average for the
-- budget's row, the live request's claim among them. Such a claim now comes back four slots (at least 100 ms)
-- after the next slot is due, in case the worker that booked the slots does not; that worker comes back for them
-- as before, and keeps the sooner of its times when something else wakes it.
--
-- And a queue that the latest claim did not find with room starts level with the others, not one with no claim
-- for 2 s. A live queue whose requests came 200 ms apart kept its pass, a quarter more for each request, while
-- the backlog beside it, claimed alone in between, was charged nothing; within a few requests the backlog's pass
-- was the lower and it took the live request's early slot, and the live request waited for the next claim. Each
-- claim now stamps every queue it found with room (alone too, once there are other queues), and a queue whose
-- stamp is older than the latest starts just below the others: a live request arriving alone goes first, and
-- queues that stay backlogged are compared by their passes as before, however far apart the claims come.

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

    RETURN QUERY SELECT * FROM detectq.claimed_rows(
        claimed_ids, claim_again, how_many < wanted_at_most AND cardinality(claimed_ids) >= how_many, budget_start, schedule_start, api_rate,
        horizon_seconds
    );
END
$$;

-- A claim's rows with their slots: the first at budget_start, the rest from schedule_start, one slot apart
-- (when the claim took an early slot, budget_start is before schedule_start and the schedule's slot it moved is the
-- one after the last; else the two are the same time). The schedule moves on by every slot taken.
CREATE OR REPLACE FUNCTION detectq.claimed_rows(
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
             LATERAL (SELECT CASE WHEN c.position = 1 OR budget_start >= schedule_start
                                  THEN budget_start + make_interval(secs => (c.position - 1) / api_rate)
                                  ELSE schedule_start + make_interval(secs => (c.position - 2) / api_rate) END AS at) AS slot;
END
$$;
