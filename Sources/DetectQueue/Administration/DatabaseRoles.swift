/// The four roles of REFERENCE.md section 10 and their privileges, as the plain SQL `detectq roles` prints and
/// `detectq roles --apply` runs: each role created NOLOGIN where it is missing, then its privileges on the schema
/// taken back and granted again, so that a second run (after a migration added a table or a column) leaves exactly
/// what this release grants. A deployment grants each role to its own login roles.
///
/// The history and the counts are written by triggers that run as the schema's owner (migration 0014), so no role
/// writes them directly; only the worker reads the token and secret columns of `detectq.requests`.
package enum DatabaseRoles {
    /// Inserts requests and reads their outcome and history.
    package static let producer = "detectq_producer"
    /// What `detectq worker` needs, and no DDL, TRUNCATE or ownership.
    package static let worker = "detectq_worker"
    /// What the dashboard and `detectq status`/`show` read, nothing else.
    package static let viewer = "detectq_viewer"
    /// The viewer's, plus retry, cancel, pause, resume and prune.
    package static let `operator` = "detectq_operator"

    /// Every role, in the order they are created.
    package static let all = [producer, worker, viewer, `operator`]

    /// Every table of the schema this release grants on; a test checks it against the migrated schema, so a table
    /// a migration adds cannot be left out by mistake.
    package static let tables = [
        "api_budget", "claim_floors", "failure_counts", "installation", "intelligence_archive", "pauses", "post_task_events",
        "post_task_state_transitions", "post_tasks", "queue_billing", "queue_claims", "queues", "request_events", "request_media_hashes",
        "request_state_transitions",
        "requests", "schema_migrations", "state_counts", "workers",
    ]

    /// The columns of `detectq.requests` that hold a token or a secret: a media token, a secure upload's token
    /// (and when it was issued), the hashes of the callback secrets. Only the worker reads them.
    package static let tokenColumns: Set<String> = [
        "media_token", "secure_upload_token", "secure_upload_token_issued_at", "callback_secret_hash", "earlier_callback_secret_hashes",
    ]

    /// Every column of `detectq.requests`; a test checks it against the migrated schema.
    package static let requestColumns = [
        "id", "media_url", "media_path", "media_token", "visualize", "intelligence", "audio_source_tracing", "use_reverse_search",
        "use_ood_detector", "zero_retention_mode", "frame_length", "start_region", "end_region", "max_video_secs", "max_video_fps",
        "model_types", "pipeline", "wait_mode", "priority", "run_at", "max_attempts", "idempotency_key", "metadata", "state", "attempt",
        "locked_by", "locked_until", "remote_uuid", "submit_path", "submit_started_at", "media_type", "label", "is_fake",
        "aggregated_score", "result", "file_deleted_at", "error_message", "created_at", "updated_at", "completed_at",
        "callback_secret_hash", "secure_upload_token", "secure_upload_token_issued_at", "accepted_at", "poll_count", "audio_label",
        "visual_label", "unanswered_since", "traceparent", "earlier_callback_secret_hashes", "queue", "group_key", "media_sha256",
        "reuse_verdict", "reused_from", "waiting_for",
    ]

    /// The columns a producer's INSERT may set (REFERENCE.md section 1): the media, the options, how to wait,
    /// priority, schedule, attempts, idempotency key, metadata, trace context, queue and group; never a state's
    /// columns.
    package static let producerInsertColumns = [
        "media_url", "media_path", "media_token", "visualize", "intelligence", "audio_source_tracing", "use_reverse_search",
        "use_ood_detector", "zero_retention_mode", "frame_length", "start_region", "end_region", "max_video_secs", "max_video_fps",
        "model_types", "pipeline", "wait_mode", "priority", "run_at", "max_attempts", "idempotency_key", "metadata", "traceparent",
        "queue", "group_key", "media_sha256", "reuse_verdict",
    ]

    /// The settings of `detectq.queues` an operator sets (`detectq queue set|pause|resume`).
    package static let queueSettingColumns = [
        "weight", "max_in_flight", "group_max_in_flight", "rate_limit", "daily_limit", "paused_at", "paused_by", "pause_reason",
    ]

    /// The columns an operator's retry and cancel write (the state machine's changes for them).
    package static let operatorUpdateColumns = [
        "state", "attempt", "run_at", "error_message", "completed_at", "locked_by", "locked_until", "updated_at",
    ]

    /// The SQL that creates the roles where they are missing and grants their privileges; safe to run again.
    package static var script: String {
        let readable = requestColumns.filter { !tokenColumns.contains($0) }.joined(separator: ", ")
        let others = tables.filter { $0 != "requests" }.map { "detectq.\($0)" }.joined(separator: ", ")
        let roles = all.joined(separator: ", ")
        var lines = [
            "-- detectq's roles (REFERENCE.md section 10): run by the schema's owner, after detectq migrate; safe to run again.",
            "-- Grant each to a login role of its own, e.g. GRANT detectq_producer TO uploads_service;",
            "BEGIN;",
        ]
        for role in all {
            lines.append("""
                DO $$ BEGIN CREATE ROLE \(role) NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                """)
        }
        lines += [
            "-- Start from nothing on the schema, so that what follows is exactly what each role holds.",
            "REVOKE ALL ON ALL TABLES IN SCHEMA detectq FROM \(roles);",
            "REVOKE ALL ON SCHEMA detectq FROM \(roles);",
            "GRANT USAGE ON SCHEMA detectq TO \(roles);",
            "",
            "-- \(producer): inserts requests, reads them (tokens and secrets withheld) and their history.",
            "GRANT INSERT (\(producerInsertColumns.joined(separator: ", "))) ON detectq.requests TO \(producer);",
            "GRANT SELECT (\(readable)) ON detectq.requests TO \(producer);",
            "GRANT SELECT ON detectq.request_events TO \(producer);",
            "",
            "-- \(viewer): reads everything but the tokens and secrets.",
            "GRANT SELECT (\(readable)) ON detectq.requests TO \(viewer);",
            "GRANT SELECT ON \(others) TO \(viewer);",
            "",
            "-- \(`operator`): the viewer's, plus retry, cancel, pause, resume, prune and the queues' settings.",
            "GRANT \(viewer) TO \(`operator`);",
            "GRANT UPDATE (\(operatorUpdateColumns.joined(separator: ", "))), DELETE ON detectq.requests TO \(`operator`);",
            "GRANT INSERT, DELETE ON detectq.pauses TO \(`operator`);",
            "GRANT INSERT (name, \(queueSettingColumns.joined(separator: ", "))), UPDATE (\(queueSettingColumns.joined(separator: ", ")))",
            "    ON detectq.queues TO \(`operator`);",
            "",
            "-- \(worker): claims, submits and records; runs post-tasks; shares the budget and the pauses; no DDL or TRUNCATE.",
            "GRANT \(viewer) TO \(worker);",
            "GRANT SELECT, UPDATE ON detectq.requests TO \(worker);",
            "GRANT INSERT, UPDATE ON detectq.post_tasks TO \(worker);",
            "GRANT INSERT, UPDATE ON detectq.intelligence_archive TO \(worker);",
            "GRANT INSERT, UPDATE, DELETE ON detectq.workers, detectq.pauses TO \(worker);",
            "GRANT UPDATE ON detectq.api_budget TO \(worker);",
            "-- (next_claimable_requests is the claim of the releases before the queues, for their workers during an upgrade.)",
            "GRANT EXECUTE ON FUNCTION detectq.fold_state_counts(),",
            "    detectq.next_fair_claims(bigint, double precision, double precision, double precision),",
            "    detectq.next_claimable_requests(bigint), detectq.next_claimable_post_tasks(bigint),",
            "    detectq.find_identical_media(text, interval, bigint[], text[], boolean[]) TO \(worker);",
            "COMMIT;",
        ]
        return lines.joined(separator: "\n") + "\n"
    }
}
