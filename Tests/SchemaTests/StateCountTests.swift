import DetectQueue
import DetectqTestSupport
import Postgres
import Testing

/// `detectq.state_counts` (migration 0010) against count(*) over the tables themselves, through inserts,
/// moves, deletes, folds, and writers and folds running at once.
@Suite("Counts by state, kept by triggers", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct StateCountTests {
    @Test func theKeptCountsMatchTheTablesThroughEveryKindOfWriteAndFold() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 6)
        try await pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/c-' || n || '.wav' FROM generate_series(1, 60) AS n
            """)
        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/one.wav')")
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', locked_by = 'w', locked_until = now() + interval '1 minute' WHERE id <= 20
            """)
        try await pool.query("UPDATE detectq.requests SET state = 'cancelled' WHERE id BETWEEN 21 AND 30")
        try await pool.query("UPDATE detectq.requests SET priority = 5 WHERE id > 30")
        try await pool.query("""
            UPDATE detectq.requests SET state = 'retrying', locked_by = NULL, locked_until = NULL,
                error_message = CASE WHEN id % 2 = 0 THEN 'HTTP 503' ELSE 'timeout' END
            WHERE id BETWEEN 1 AND 6
            """)
        try await pool.query("UPDATE detectq.requests SET state = 'submitting', locked_by = 'w', locked_until = now() + interval '1 minute' WHERE id = 1")
        try await pool.query("UPDATE detectq.requests SET state = 'failed', locked_by = NULL, locked_until = NULL, error_message = 'gave up' WHERE id = 1")
        try await pool.query("INSERT INTO detectq.post_tasks (request_id, processor) SELECT id, 'alert.pg_notify' FROM detectq.requests WHERE id <= 8")
        try await pool.query("DELETE FROM detectq.requests WHERE id BETWEEN 21 AND 25")
        var counts = try await KeptCounts.both(pool)
        #expect(counts.kept == counts.counted)
        #expect(counts.counted["request.cancelled"] == 5 && counts.counted["post_task.queued"] == 8, "\(counts.counted)")
        #expect(counts.counted["failure.failed.gave up"] == 1 && counts.counted["failure.retrying.HTTP 503"] == 3, "\(counts.counted)")
        let groups = try await QueueBreakdown.failureGroups(pool, limit: 10)
        #expect(groups.map(\.reason) == ["HTTP 503", "timeout", "gave up"] && groups.map(\.retrying) == [3, 2, 0] && groups[2].failed == 1)

        // A reason changed by hand, the state kept: the request changes group.
        try await pool.query("UPDATE detectq.requests SET error_message = 'HTTP 504' WHERE id = 2")
        counts = try await KeptCounts.both(pool)
        #expect(counts.kept == counts.counted && counts.counted["failure.retrying.HTTP 504"] == 1)

        try await QueueDepth.foldCounts(pool)
        #expect(try await pool.query("SELECT count(*)::int8 AS n FROM detectq.state_counts")[0].decode("n", as: Int.self) == counts.counted.keys.count { !$0.hasPrefix("failure.") },
                "one row per state after a fold")
        counts = try await KeptCounts.both(pool)
        #expect(counts.kept == counts.counted)

        // Writers moving requests back and forth while two folders fold.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for round in 0..<25 {
                        let id = 31 + (writer * 25 + round) % 30
                        try await pool.query("""
                            UPDATE detectq.requests SET state = 'submitting', locked_by = 'w', locked_until = now() + interval '1 minute'
                            WHERE id = \(id) AND state = 'queued'
                            """)
                        try await pool.query("UPDATE detectq.requests SET state = 'queued', locked_by = NULL, locked_until = NULL WHERE id = \(id) AND state = 'submitting'")
                        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES (\("https://cdn.example.com/w\(writer)-\(round).wav"))")
                    }
                }
            }
            for _ in 0..<2 {
                group.addTask {
                    for _ in 0..<40 { try await QueueDepth.foldCounts(pool) }
                }
            }
            try await group.waitForAll()
        }
        counts = try await KeptCounts.both(pool)
        #expect(counts.kept == counts.counted)
        let depth = try await QueueDepth.read(pool)
        #expect(depth.requests[.queued] == counts.counted["request.queued"] && depth.requests[.failed] == 1)
        await pool.close()
    }
}
