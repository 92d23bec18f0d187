-- detectq 0004: what the dashboard reads. Workers announce themselves, and the request list, the
-- throughput chart and the metadata search get indexes that keep them fast on millions of rows.

-- One row per worker process: written when it starts, refreshed with every heartbeat, marked when it
-- stops cleanly. A row whose heartbeat is older than the worker's lease and that never stopped belongs
-- to a worker that died; its leases are being taken over. Rows a day old are removed by starting workers.
CREATE TABLE detectq.workers (
    worker_id     text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    concurrency   integer NOT NULL,
    lease_seconds double precision NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,

    CONSTRAINT workers_worker_id_not_blank CHECK (btrim(worker_id) <> ''),
    CONSTRAINT workers_lease_positive CHECK (lease_seconds > 0)
);

COMMENT ON TABLE detectq.workers IS
    'detectq worker processes: started_at, heartbeat_at (every third of a lease) and stopped_at (clean stops).';

-- The request list: newest first by enqueue time (ties by id), a page at a time by keyset, so a page costs
-- the same at any depth. Unfiltered and time-range pages walk the first index; a state filter the second.
CREATE INDEX requests_created_at_idx ON detectq.requests (created_at, id);
CREATE INDEX requests_state_created_at_idx ON detectq.requests (state, created_at, id);

-- The last hour's throughput and fakes.
CREATE INDEX requests_completed_at_idx ON detectq.requests (completed_at) WHERE completed_at IS NOT NULL;

-- Free text on metadata: words of its keys, strings and numbers (PostgreSQL's full-text search, no
-- extension needed). The dashboard queries it with websearch_to_tsquery('simple', ...).
CREATE INDEX requests_metadata_search_idx ON detectq.requests
    USING gin (jsonb_to_tsvector('simple'::regconfig, metadata, '["key", "string", "numeric"]'));
