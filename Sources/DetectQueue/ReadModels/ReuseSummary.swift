import Postgres

/// What spending each detection once saved (CONTRACT section 9): requests completed today (UTC) with a verdict
/// of identical media instead of a detection of their own, and those waiting now for one in flight. `detectq
/// status` and the dashboard read it.
package struct ReuseSummary: Sendable, Hashable {
    package var reusedToday: Int
    package var waiting: Int

    /// Reads both counts, each from its own partial index.
    package static func read(_ pool: PostgresConnectionPool) async throws -> ReuseSummary {
        let row = try await pool.query("""
            SELECT (SELECT count(*) FROM detectq.requests
                    WHERE reused_from IS NOT NULL AND completed_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')::int8
                   AS reused_today,
                   (SELECT count(*) FROM detectq.requests WHERE waiting_for IS NOT NULL AND state = 'queued')::int8 AS waiting
            """)[0]
        return ReuseSummary(reusedToday: try row.decode("reused_today"), waiting: try row.decode("waiting"))
    }
}
