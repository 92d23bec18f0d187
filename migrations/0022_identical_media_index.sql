-- detectq: no transaction
-- detectq 0022: builds, CONCURRENTLY (blocking no writer), the index that finds the requests waiting for identical
-- media in flight and the one that counts the reused verdicts (`detectq status`: reused today), and validates the
-- constraints 0021 added. Re-runnable after an interruption.
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_waiting_for_idx ON detectq.requests (waiting_for)
    WHERE waiting_for IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_reused_idx ON detectq.requests (completed_at)
    WHERE reused_from IS NOT NULL;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_media_sha256_hex;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_submit_path_valid;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_reused_from_with_reused_path;
