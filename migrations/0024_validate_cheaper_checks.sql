-- detectq: no transaction
-- detectq 0024: validates the constraints 0023 rewrote (a scan that blocks no writer). Re-runnable.
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_queue_name;
ALTER TABLE detectq.requests VALIDATE CONSTRAINT requests_media_sha256_hex;
