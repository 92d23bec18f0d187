import Foundation
import Postgres

/// What became of one producer's batch: the requests whose `metadata` carries `key` = `value` (as
/// `detectq demo` tags its own), read back for a progress line and a closing summary.
package struct BatchOutcome: Sendable {
    /// The batch's requests by state, and its post-tasks not yet finished.
    package struct Progress: Sendable {
        package var states: [RequestState: Int]
        package var pendingPostTasks: Int

        package var total: Int { states.values.reduce(0, +) }
        /// Requests not yet completed, failed or cancelled.
        package var unfinished: Int { total - finished }
        package var finished: Int { self[.completed] + self[.failed] + self[.cancelled] }

        package subscript(state: RequestState) -> Int { states[state, default: 0] }
    }

    package var progress: Progress
    package var fakes: Int
    /// Alert post-tasks (`alert.*`) that completed.
    package var alertsSent: Int
    package var zeroRetention: Int
    /// Zero-retention requests with `file_deleted_at` set.
    package var retentionConfirmed: Int
    package var intelligenceRequested: Int
    /// Rows in `detectq.intelligence_archive` for the batch.
    package var archiveRows: Int
    /// Requests by `submit_path`, for those sent (and `reused` for those that took identical media's verdict).
    package var submitPaths: [String: Int]
    /// Requests that completed with the verdict of identical media and options, never sent (CONTRACT section 9).
    package var reused: Int { submitPaths[SubmitPath.reused.rawValue, default: 0] }
    /// Requests sent to the API, each a detection of its own.
    package var detections: Int { submitPaths.filter { $0.key != SubmitPath.reused.rawValue }.values.reduce(0, +) }
    /// From the first request's creation to the last completion.
    package var drainSeconds: Double
    /// The batch's requests by queue, and how long they waited from their INSERT to their first claim.
    package var lanes: [Lane]

    /// One queue's part of the batch.
    package struct Lane: Sendable, Hashable {
        package var queue: String
        package var requests: Int
        /// Seconds from INSERT to the first claim (the move to `submitting`), of those claimed; nil when none was.
        package var waitMedian: Double?
        package var wait95: Double?
        package var waitLongest: Double?
    }

    /// The progress of the batch tagged `key` = `value`.
    package static func progress(key: String, value: String, on pool: PostgresConnectionPool) async throws -> Progress {
        var states: [RequestState: Int] = [:]
        for row in try await pool.query("""
            SELECT state, count(*)::int8 AS n FROM detectq.requests WHERE metadata->>\(key) = \(value) GROUP BY 1
            """) {
            states[try row.decode("state", as: RequestState.self)] = try row.decode("n")
        }
        let pending = try await pool.query("""
            SELECT count(*)::int8 AS n FROM detectq.post_tasks t JOIN detectq.requests r ON r.id = t.request_id
            WHERE r.metadata->>\(key) = \(value) AND t.state IN ('queued', 'running', 'retrying')
            """)[0].decode("n", as: Int.self)
        return Progress(states: states, pendingPostTasks: pending)
    }

    /// Everything the batch tagged `key` = `value` came to.
    package static func read(key: String, value: String, on pool: PostgresConnectionPool) async throws -> BatchOutcome {
        let row = try await pool.query("""
            SELECT count(*) FILTER (WHERE r.is_fake)::int8 AS fakes,
                   count(*) FILTER (WHERE r.zero_retention_mode)::int8 AS zero_retention,
                   count(*) FILTER (WHERE r.zero_retention_mode AND r.file_deleted_at IS NOT NULL)::int8 AS retention_confirmed,
                   count(*) FILTER (WHERE r.intelligence)::int8 AS intelligence,
                   (SELECT count(*) FROM detectq.intelligence_archive a JOIN detectq.requests q ON q.id = a.request_id
                     WHERE q.metadata->>\(key) = \(value))::int8 AS archive_rows,
                   (SELECT count(*) FROM detectq.post_tasks t JOIN detectq.requests q ON q.id = t.request_id
                     WHERE q.metadata->>\(key) = \(value) AND t.processor LIKE 'alert.%' AND t.state = 'completed')::int8 AS alerts,
                   COALESCE(EXTRACT(EPOCH FROM max(r.completed_at) - min(r.created_at)), 0)::float8 AS drain
            FROM detectq.requests r WHERE r.metadata->>\(key) = \(value)
            """)[0]
        var paths: [String: Int] = [:]
        for path in try await pool.query("""
            SELECT submit_path, count(*)::int8 AS n FROM detectq.requests
            WHERE metadata->>\(key) = \(value) AND submit_path IS NOT NULL GROUP BY 1
            """) {
            paths[try path.decode("submit_path")] = try path.decode("n")
        }
        let lanes = try await pool.query("""
            SELECT r.queue, count(*)::int8 AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY w.seconds) AS median,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY w.seconds) AS p95,
                   max(w.seconds) AS longest
            FROM detectq.requests r
            CROSS JOIN LATERAL (
                SELECT EXTRACT(EPOCH FROM min(e.at) - r.created_at)::float8 AS seconds
                FROM detectq.request_events e WHERE e.request_id = r.id AND e.to_state = 'submitting'
            ) AS w
            WHERE r.metadata->>\(key) = \(value)
            GROUP BY r.queue ORDER BY r.queue
            """).map { lane in
            Lane(
                queue: try lane.decode("queue"), requests: try lane.decode("n"), waitMedian: try lane.decode("median"),
                wait95: try lane.decode("p95"), waitLongest: try lane.decode("longest")
            )
        }
        return BatchOutcome(
            progress: try await progress(key: key, value: value, on: pool),
            fakes: try row.decode("fakes"), alertsSent: try row.decode("alerts"),
            zeroRetention: try row.decode("zero_retention"), retentionConfirmed: try row.decode("retention_confirmed"),
            intelligenceRequested: try row.decode("intelligence"), archiveRows: try row.decode("archive_rows"),
            submitPaths: paths, drainSeconds: try row.decode("drain"), lanes: lanes
        )
    }
}
