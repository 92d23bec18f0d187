-- detectq 0023: the same two rules on detectq.requests, in a form PostgreSQL checks in a tenth of the time.
--
-- A CHECK constraint is evaluated on every UPDATE of a row, whichever columns change, so every state change of
-- every request ran `queue ~ '^[a-z0-9_.-]{1,63}$'` and, for a request with a hash, `media_sha256 ~
-- '^[0-9a-f]{64}$'`: a counted repetition makes a large automaton, and the two cost 2 us and 5 us a row (100,000
-- queue names matched in 222 ms and 50,000 hashes in 276, against 34 and 36 ms as written below, 18 of which is
-- the scan): the hash's cost 10 us of server time for each hashed request's claim and completion (bench row
-- 13a). Length and alphabet are now tested apart; every allowed character is one byte, so the byte length is the
-- length in characters. Same names, same values accepted.
--
-- The new forms are added NOT VALID (they hold for every new row at once) and validated by 0024.
ALTER TABLE detectq.requests DROP CONSTRAINT requests_queue_name;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_queue_name
    CHECK (queue <> '' AND octet_length(queue) <= 63 AND queue !~ '[^a-z0-9_.-]') NOT VALID;
ALTER TABLE detectq.requests DROP CONSTRAINT requests_media_sha256_hex;
ALTER TABLE detectq.requests ADD CONSTRAINT requests_media_sha256_hex
    CHECK (octet_length(media_sha256) = 64 AND media_sha256 !~ '[^0-9a-f]') NOT VALID;
