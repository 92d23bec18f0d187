-- Rolling upgrades from the first releases (REFERENCE.md section 10). Migration 0006 moved the rate-limit pause
-- from detectq.api_budget.paused_until to detectq.pauses and dropped the column, which the workers of releases
-- before it read on every API call: beside a newer schema they failed every attempt ("column does not exist"),
-- spending attempts until they were stopped (measured: 283 attempts in 5 s from the first release's two workers).
-- The column comes back, unused by this release, so that those workers go on working until they are replaced;
-- they keep their own 429 pauses in it, as they did. A nullable-free column with a constant default is stored in
-- the catalog: no rewrite, and the table has one row.
ALTER TABLE detectq.api_budget ADD COLUMN IF NOT EXISTS paused_until timestamptz NOT NULL DEFAULT '-infinity';
COMMENT ON COLUMN detectq.api_budget.paused_until IS
    'Read and written only by workers of releases before migration 0006, during a rolling upgrade; detectq.pauses holds the rate-limit pause since.';
