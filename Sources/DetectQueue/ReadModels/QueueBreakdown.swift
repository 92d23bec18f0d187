import Foundation
import Postgres

/// Where the queue's work stands beyond its counts: failures grouped by reason, who holds leases, and each
/// post-processor's backlog. `detectq status` prints it and the dashboard shows it, from the same reads.
package enum QueueBreakdown {
    /// Requests that failed, or are retrying, with the same `error_message`.
    package struct FailureGroup: Sendable, Hashable {
        package var reason: String
        package var failed: Int
        package var retrying: Int
        package var lastSeen: Date
    }

    /// What one worker holds: request and post-task leases, and when the first of them expires.
    package struct LeaseHolder: Sendable, Hashable {
        package var workerID: String
        package var requests: Int
        package var postTasks: Int
        /// Seconds from now until its earliest lease expires (negative once one has).
        package var nextExpiry: Double
    }

    /// One post-processor's unfinished tasks by state, and how long the oldest due one has waited.
    package struct Backlog: Sendable, Hashable {
        package var processor: String
        package var counts: [PostTask.State: Int]
        package var oldestDueAge: Double?
    }

    /// The `limit` largest failure groups, a message missing being `(no reason)`; `lastSeen` is when a
    /// request last joined the group. Read from `detectq.failure_counts`, which triggers keep (migration 0010),
    /// so the cost does not grow with the failures kept in the table.
    package static func failureGroups(_ pool: PostgresConnectionPool, limit: Int) async throws -> [FailureGroup] {
        try await pool.query("""
            SELECT reason,
                   coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8 AS failed,
                   coalesce(sum(n) FILTER (WHERE state = 'retrying'), 0)::int8 AS retrying,
                   max(last_seen) AS last_seen
            FROM detectq.failure_counts
            GROUP BY reason HAVING sum(n) > 0 ORDER BY sum(n) DESC, reason LIMIT \(limit)
            """).map {
            FailureGroup(
                reason: try $0.decode("reason"), failed: try $0.decode("failed"), retrying: try $0.decode("retrying"),
                lastSeen: try $0.decode("last_seen")
            )
        }
    }

    /// Every worker holding a lease on a request or a post-task, by worker id.
    package static func leaseHolders(_ pool: PostgresConnectionPool) async throws -> [LeaseHolder] {
        try await pool.query("""
            SELECT locked_by, sum(requests)::int8 AS requests, sum(post_tasks)::int8 AS post_tasks,
                   EXTRACT(EPOCH FROM min(expiry) - now())::float8 AS next_expiry
            FROM (
                SELECT locked_by, count(*) AS requests, 0 AS post_tasks, min(locked_until) AS expiry
                FROM detectq.requests WHERE locked_by IS NOT NULL GROUP BY locked_by
                UNION ALL
                SELECT locked_by, 0, count(*), min(locked_until)
                FROM detectq.post_tasks WHERE locked_by IS NOT NULL GROUP BY locked_by
            ) AS leases
            GROUP BY locked_by ORDER BY locked_by
            """).map {
            LeaseHolder(
                workerID: try $0.decode("locked_by"), requests: try $0.decode("requests"), postTasks: try $0.decode("post_tasks"),
                nextExpiry: try $0.decode("next_expiry")
            )
        }
    }

    /// Every processor with unfinished post-tasks, by name.
    package static func postTaskBacklogs(_ pool: PostgresConnectionPool) async throws -> [Backlog] {
        var backlogs: [String: Backlog] = [:]
        for row in try await pool.query("""
            SELECT processor, state::text AS state, count(*)::int8 AS n,
                   EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE state IN ('queued', 'retrying') AND run_at <= now()))::float8 AS oldest
            FROM detectq.post_tasks WHERE state <> 'completed'
            GROUP BY 1, 2
            """) {
            let processor: String = try row.decode("processor")
            var backlog = backlogs[processor] ?? Backlog(processor: processor, counts: [:], oldestDueAge: nil)
            if let state = PostTask.State(rawValue: try row.decode("state")) { backlog.counts[state] = try row.decode("n") }
            if let oldest = try row.decode("oldest", as: Double?.self) { backlog.oldestDueAge = max(backlog.oldestDueAge ?? 0, oldest) }
            backlogs[processor] = backlog
        }
        return backlogs.values.sorted { $0.processor < $1.processor }
    }
}
