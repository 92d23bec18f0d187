import Postgres

/// `detectq.state_counts` and `detectq.failure_counts`, kept by triggers, beside what count(*) finds in the
/// tables themselves: the two must always agree.
package enum KeptCounts {
    /// The kept counts and the counted ones, both without zeros.
    package static func both(_ pool: PostgresConnectionPool) async throws -> (kept: [String: Int], counted: [String: Int]) {
        func read(_ sql: PostgresQuery) async throws -> [String: Int] {
            var counts: [String: Int] = [:]
            for row in try await pool.query(sql) where try row.decode("n", as: Int.self) != 0 {
                counts[try row.decode("key", as: String.self)] = try row.decode("n", as: Int.self)
            }
            return counts
        }
        return (
            try await read("""
                SELECT kind || '.' || state AS key, sum(n)::int8 AS n FROM detectq.state_counts GROUP BY 1
                UNION ALL SELECT 'failure.' || state || '.' || reason, sum(n)::int8 FROM detectq.failure_counts GROUP BY 1
                """),
            try await read("""
                SELECT 'request.' || state AS key, count(*)::int8 AS n FROM detectq.requests GROUP BY 1
                UNION ALL SELECT 'post_task.' || state, count(*) FROM detectq.post_tasks GROUP BY 1
                UNION ALL SELECT 'failure.' || state || '.' || coalesce(error_message, '(no reason)'), count(*)
                FROM detectq.requests WHERE state IN ('failed', 'retrying') GROUP BY 1
                """)
        )
    }
}
