import Foundation
import Postgres
import ResembleDetect

/// Every write to `detectq.requests` and `detectq.post_tasks` that no state machine decides, in one place:
/// each leaves the row's state as it is and guards itself by what it may touch. Every other write to the two
/// tables is rendered from a machine's transition (`RequestChanges.swift`, `PostTaskStore.apply`,
/// `LeaseTable`'s claim and rescue).
enum NonStateWrite {
    /// A lease renewal: the rows `workerID` still holds among `ids` stay its own for another `lease`.
    ///
    /// The rows are locked in `id` order, the order every batch write of them takes (`RequestBatch`), so a
    /// renewal and its worker's own completion batch over the same rows wait for each other at most, never
    /// deadlock (an index or bitmap scan of `id = ANY(...)` alone locks them in whatever order the plan reads
    /// them). And they are found by the primary key only: the holder's comparison is wrapped in `coalesce`,
    /// from which the planner cannot prove the leased rows' partial index applies. It would otherwise read that
    /// index whole whenever the statistics say few rows are leased, and beside a transaction that holds back
    /// vacuum that index keeps an entry for every lease ever taken (a renewal took up to 2.8 s so).
    static func leaseRenewal(table: String, workerID: String, ids: [Int], lease: Duration) -> PostgresQuery {
        PostgresQuery(sql: """
            UPDATE \(table) AS t SET locked_until = now() + make_interval(secs => $1)
            FROM (SELECT id FROM \(table) WHERE id = ANY($2) AND coalesce(locked_by = $3, false) ORDER BY id FOR NO KEY UPDATE) AS held
            WHERE t.id = held.id
            RETURNING t.id
            """, parameters: [lease.seconds, ids, workerID])
    }

    /// A poll lease: up to `limit` accepted requests whose next poll is due, held by `workerID` for `lease`
    /// while it asks the API (the request stays `awaiting_result`).
    static func pollLease(workerID: String, limit: Int, lease: Duration) -> PostgresQuery {
        PostgresQuery(sql: """
            UPDATE detectq.requests AS r
            SET locked_by = $1, locked_until = now() + make_interval(secs => $2)
            FROM (
                SELECT id FROM detectq.requests
                WHERE state = 'awaiting_result' AND run_at <= now() AND locked_by IS NULL
                ORDER BY run_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ) AS due
            WHERE r.id = due.id
            RETURNING \(DetectionRequest.columns.replacingOccurrences(of: "id,", with: "r.id,", options: .anchored))
            """, parameters: [workerID, lease.seconds, limit])
    }

    /// The next poll of an accepted request, and its poll lease given up; `counting` false leaves the poll
    /// count (and so the growing interval) as it was.
    static func pollScheduled(id: Int, workerID: String, at: Date, counting: Bool) -> PostgresQuery {
        """
        UPDATE detectq.requests
        SET run_at = \(at), poll_count = poll_count + \(counting ? 1 : 0), locked_by = NULL, locked_until = NULL
        WHERE id = \(id) AND state = 'awaiting_result' AND (locked_by = \(workerID) OR locked_by IS NULL)
        """
    }

    /// A secure-upload token kept beside a request in submission, so a retry within its hour reuses it.
    static func secureUploadKept(_ token: SecureUploadToken, id: Int, workerID: String) -> PostgresQuery {
        """
        UPDATE detectq.requests SET secure_upload_token = \(token.token), secure_upload_token_issued_at = \(token.issuedAt)
        WHERE id = \(id) AND state = 'submitting' AND locked_by = \(workerID)
        """
    }

    /// Since when a request owes an answer, moved to `since` by a search that read back to its cutoff.
    static func answerOwedMoved(id: Int, workerID: String, to since: Date) -> PostgresQuery {
        """
        UPDATE detectq.requests SET unanswered_since = \(since)
        WHERE id = \(id) AND state = 'submitting' AND locked_by = \(workerID) AND remote_uuid IS NULL
        """
    }

    /// A retention timestamp: when the API purged the request's media.
    static func fileDeleted(id: Int, at date: Date) -> PostgresQuery {
        "UPDATE detectq.requests SET file_deleted_at = \(date) WHERE id = \(id)"
    }

    /// An alert raised about a request: a queued post-task for each sink in `sinks` (raising it again adds
    /// nothing). A new row, born `queued` as the schema's default says.
    static func alertRaised(requestID: Int, sinks: [String]) -> PostgresQuery {
        """
        INSERT INTO detectq.post_tasks (request_id, processor)
        SELECT \(requestID), unnest(\(sinks)::text[])
        ON CONFLICT (request_id, processor) DO NOTHING
        """
    }

    /// Retention: up to `limit` finished requests (completed, failed, cancelled) last updated more than `age`
    /// ago, deleted with their events and post-tasks; rows a worker holds are skipped.
    static func pruned(olderThan age: Duration, limit: Int) -> PostgresQuery {
        """
        DELETE FROM detectq.requests WHERE id IN (
            SELECT id FROM detectq.requests
            WHERE state IN ('completed', 'failed', 'cancelled') AND updated_at < now() - make_interval(secs => \(age.seconds))
            LIMIT \(limit)
            FOR UPDATE SKIP LOCKED
        )
        """
    }
}
