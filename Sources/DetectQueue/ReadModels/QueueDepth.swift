import Foundation
import Postgres

/// The queue as the database holds it now: requests and post-tasks by state (every state, zeros included)
/// and how long the oldest claimable request has waited. `detectq status` prints it; `/metrics` exports it.
/// The counts come from `detectq.state_counts` (migration 0010), which triggers keep exact, so reading them
/// costs the same with ten million finished requests as with none.
package struct QueueDepth: Sendable, Hashable {
    package var requests: [RequestState: Int]
    /// The same by queue (every queue of `detectq.queues`, every state, zeros included).
    package var requestsByQueue: [String: [RequestState: Int]] = [:]
    package var postTasks: [PostTask.State: Int]
    /// Seconds since the oldest request that is claimable now became due; nil when none is.
    package var oldestClaimableAge: Double?

    /// Folds the counts' appended changes into one row per state; workers call it now and then.
    package static func foldCounts(_ pool: PostgresConnectionPool) async throws {
        try await pool.query("SELECT detectq.fold_state_counts()")
    }

    /// Reads it in one statement.
    package static func read(_ pool: PostgresConnectionPool) async throws -> QueueDepth {
        var depth = QueueDepth(
            requests: Dictionary(uniqueKeysWithValues: RequestState.allCases.map { ($0, 0) }),
            postTasks: Dictionary(uniqueKeysWithValues: PostTask.State.allCases.map { ($0, 0) }),
            oldestClaimableAge: nil
        )
        let zeros = Dictionary(uniqueKeysWithValues: RequestState.allCases.map { ($0, 0) })
        let rows = try await pool.query("""
            SELECT kind, queue, state, sum(n)::int8 AS n, NULL::float8 AS age FROM detectq.state_counts GROUP BY kind, queue, state
            UNION ALL
            SELECT 'queue', name, NULL, 0, NULL FROM detectq.queues
            UNION ALL
            SELECT 'oldest', NULL, NULL, 0, EXTRACT(EPOCH FROM now() - min(run_at))::float8
            FROM detectq.requests WHERE state IN ('queued', 'retrying') AND run_at <= now()
            """)
        for row in rows {
            switch try row.decode("kind", as: String.self) {
            case "request":
                guard let state = RequestState(rawValue: try row.decode("state")) else { continue }
                let count: Int = try row.decode("n")
                depth.requests[state, default: 0] += count
                depth.requestsByQueue[try row.decode("queue", as: String?.self) ?? "default", default: zeros][state, default: 0] += count
            case "queue":
                depth.requestsByQueue[try row.decode("queue", as: String.self), default: zeros] = depth.requestsByQueue[
                    try row.decode("queue", as: String.self)] ?? zeros
            case "post_task":
                if let state = PostTask.State(rawValue: try row.decode("state")) { depth.postTasks[state] = try row.decode("n") }
            default:
                depth.oldestClaimableAge = try row.decode("age", as: Double?.self)
            }
        }
        return depth
    }
}
