-- detectq 0002: what the worker keeps beside a request, and what all workers share.

ALTER TABLE detectq.requests
    -- SHA-256 (hex) of the request's callback secret; the secret itself is only in the callback URL.
    ADD COLUMN callback_secret_hash text,
    -- A secure-upload token (from POST /secure_uploads) and its issue time: a retry within the token's
    -- hour reuses it instead of uploading a large file again. A secret: never logged.
    ADD COLUMN secure_upload_token text,
    ADD COLUMN secure_upload_token_issued_at timestamptz,
    -- When the API accepted the request (entered awaiting_result), and how many times it was polled.
    ADD COLUMN accepted_at timestamptz,
    ADD COLUMN poll_count integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT requests_secure_upload_token_dated
        CHECK ((secure_upload_token IS NULL) = (secure_upload_token_issued_at IS NULL)),
    ADD CONSTRAINT requests_poll_count_non_negative CHECK (poll_count >= 0);

-- The rescuer's scan: leases that may have expired.
CREATE INDEX requests_leased_idx ON detectq.requests (locked_until)
    WHERE locked_by IS NOT NULL;

-- The poller's scan: accepted requests whose next poll (run_at) is due.
CREATE INDEX requests_awaiting_idx ON detectq.requests (run_at, id)
    WHERE state = 'awaiting_result';

-- The API's rate limit belongs to the token, so its budget is shared by every worker: the time of
-- the next free request slot (slots are 1/DETECTQ_API_RATE_LIMIT seconds apart; each worker reserves
-- one before each API request), and a pause that a 429's Retry-After sets.
CREATE TABLE detectq.api_budget (
    singleton    boolean PRIMARY KEY DEFAULT true CONSTRAINT api_budget_single_row CHECK (singleton),
    next_slot_at timestamptz NOT NULL DEFAULT '-infinity',
    paused_until timestamptz NOT NULL DEFAULT '-infinity'
);

INSERT INTO detectq.api_budget DEFAULT VALUES;
