-- W3C trace context (CONTRACT section 7): a producer may set traceparent at INSERT, and the request's spans
-- then continue that trace. The check is NOT VALID because every existing row has NULL, which passes: adding
-- it needs no scan of a table that may hold years of rows, and every INSERT and UPDATE is checked.
ALTER TABLE detectq.requests ADD COLUMN traceparent text;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_traceparent_w3c CHECK (
    traceparent IS NULL
    OR (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$'
        AND left(traceparent, 2) <> 'ff'
        AND substr(traceparent, 4, 32) <> repeat('0', 32)
        AND substr(traceparent, 37, 16) <> repeat('0', 16))
) NOT VALID;
COMMENT ON COLUMN detectq.requests.traceparent IS
    'W3C traceparent (00-<trace-id>-<parent-id>-<flags>) of the producer''s span; the request''s spans continue its trace';
