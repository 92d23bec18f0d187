-- detectq 0007: a lost answer is found, not paid for twice (CONTRACT section 6). The API has no idempotency
-- key, so a submission whose answer never arrived may have created, and billed, a detection. From the first
-- attempt that may have sent the request until the API answers one, `unanswered_since` says since when an
-- answer has been owed; before such a request is sent again, the worker looks for the detection (List
-- Detects, back to this time less a minute of clock skew) and adopts it instead of submitting again.
ALTER TABLE detectq.requests ADD COLUMN unanswered_since timestamptz;

COMMENT ON COLUMN detectq.requests.unanswered_since IS
    'Since when an attempt may have reached the API without its answer reaching us; NULL once the API answered.';

-- A request waiting to be retried after a submission whose outcome is unknown owes an answer since then.
UPDATE detectq.requests SET unanswered_since = submit_started_at
WHERE state = 'retrying' AND remote_uuid IS NULL AND submit_started_at IS NOT NULL;

-- A genuine callback can come for a request waiting to be retried after its answer was lost: the detection
-- it names is adopted, and the request waits for its result like an accepted one.
INSERT INTO detectq.request_state_transitions (from_state, to_state) VALUES ('retrying', 'awaiting_result');
