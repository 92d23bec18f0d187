-- detectq: no transaction
-- detectq 0025: the dashboard's metadata search index takes entries only for requests that carry metadata.
--
-- A GIN index over jsonb_to_tsvector(metadata) took an entry (GIN's "empty item") for every version of every
-- request, an empty '{}' included, and no update of a request is HOT, so each claim and each completion wrote
-- one. Built over the rows with metadata only, a 50,000-request drain wrote 140.3 MB of WAL in place of 156.6 MB
-- (its claims 62.0 MB in place of 70.0, its completions 78.3 in place of 86.4). The dashboard's search names
-- the predicate (metadata <> '{}'), which every match satisfies: an empty document matches no words.
-- The new index is built CONCURRENTLY (blocking no writer) before the old one is dropped; a dashboard of the
-- previous release searching during a rolling upgrade reads the table rather than the index until it is
-- replaced. Re-runnable after an interruption.
CREATE INDEX CONCURRENTLY IF NOT EXISTS requests_metadata_words_idx ON detectq.requests
    USING gin (jsonb_to_tsvector('simple'::regconfig, metadata, '["key", "string", "numeric"]'))
    WHERE metadata <> '{}'::jsonb;
DROP INDEX CONCURRENTLY IF EXISTS detectq.requests_metadata_search_idx;
