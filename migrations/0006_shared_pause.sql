-- detectq 0006: one shared pause of the API's use, with a reason and an owner, for every worker on the
-- database: a 429's Retry-After (every API call waits), an account out of credit (402: submitting waits;
-- one submission probes again at `until`), and an operator's `detectq pause` (submitting waits until
-- `detectq resume`). Callbacks, polls and post-processing go on under the last two.
CREATE TABLE detectq.pauses (
    kind      text PRIMARY KEY
              CONSTRAINT pauses_kind_valid CHECK (kind IN ('rate_limited', 'out_of_credit', 'operator')),
    reason    text NOT NULL CONSTRAINT pauses_reason_not_blank CHECK (btrim(reason) <> ''),
    paused_by text,
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- rate_limited: when the Retry-After ends; out_of_credit: when the next probe may go; operator: NULL.
    until     timestamptz,

    CONSTRAINT pauses_until_set_unless_operator CHECK ((kind = 'operator') = (until IS NULL))
);

COMMENT ON TABLE detectq.pauses IS
    'The shared pause: rate_limited (a 429), out_of_credit (a 402) and operator (detectq pause), with who, when and why.';

-- The rate-limit pause moves here from api_budget.paused_until, which no worker reads from now on.
INSERT INTO detectq.pauses (kind, reason, paused_by, until)
SELECT 'rate_limited', 'the API answered 429 Too Many Requests', NULL, paused_until
FROM detectq.api_budget WHERE paused_until > now();
ALTER TABLE detectq.api_budget DROP COLUMN paused_until;
