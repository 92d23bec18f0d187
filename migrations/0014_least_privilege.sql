-- Least privilege (REFERENCE.md section 10). The triggers that keep the history and the counts write tables their
-- caller may not: a producer inserts requests and an operator retries, cancels or prunes them, yet neither may
-- write detectq.request_events, detectq.state_counts or detectq.failure_counts. They run as the schema's owner
-- (SECURITY DEFINER, with a search path no caller can shadow); every table they name is qualified.
-- Altering functions takes no lock on any table.
ALTER FUNCTION detectq.count_statement() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.count_failure_reason_change() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.requests_record_inserts() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.requests_record_transitions() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.requests_delete_history() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.post_tasks_record_event() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION detectq.fold_state_counts() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The worker's functions are the worker's: `detectq roles` grants them to detectq_worker.
REVOKE EXECUTE ON FUNCTION detectq.fold_state_counts() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.recount_states() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.next_claimable_requests(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION detectq.next_claimable_post_tasks(bigint) FROM PUBLIC;
