import DetectSimulator
import EmbeddedPostgres
import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// detectq behind a real PgBouncer 1.18 in `pool_mode = transaction` (REFERENCE.md section 7), which
/// `scripts/test.sh` starts in front of the test server: no session state crosses it.
@Suite(
    "Behind PgBouncer in transaction mode", .enabled(if: TestDatabase.isEnabled && TestDatabase.isPgBouncerEnabled),
    .stopsWhatItStarts, .serialized
)
struct PgBouncerTests {
    struct Setup {
        let direct: String
        let pooled: String
        let pool: PostgresConnectionPool

        static func make() async throws -> Setup {
            let configuration = try await TestDatabase.createMigratedDatabase()
            let database = try #require(configuration.database)
            return Setup(
                direct: try TestDatabase.connectionURI(database: database), pooled: try TestDatabase.pgBouncerURI(database: database),
                pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
            )
        }

        func count(_ sql: String) async throws -> Int {
            try await pool.query(PostgresQuery(sql: sql, parameters: []))[0].decode("n", as: Int.self)
        }

        /// The worker's backends on the server that are listening, seen directly (through the pooler they
        /// would carry the worker's application_name too).
        func listeningBackends(of workerID: String) async throws -> Int {
            try await pool.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = \("detectq worker " + workerID) AND query ILIKE 'LISTEN%'
                """)[0].decode("n", as: Int.self)
        }

        /// Inserts the requests `numbers` of `batch`, one at a time and each after the last was claimed when
        /// `spaced`, so each wake-up is measured from an idle worker.
        func enqueue(batch: String, numbers: ClosedRange<Int>, spaced: Bool) async throws {
            for number in numbers {
                try await pool.query("""
                    INSERT INTO detectq.requests (media_url, wait_mode, metadata)
                    VALUES (\("https://cdn.example.com/\(batch)-\(number).wav"), \(number % 2 == 0 ? "sync" : "poll"),
                            jsonb_build_object('batch', \(batch)::text, 'spaced', \(spaced)))
                    """)
                if spaced {
                    try await waitUntil("request \(number) of \(batch) is claimed") {
                        try await self.count("SELECT count(*)::int8 AS n FROM detectq.requests WHERE metadata->>'batch' = '\(batch)' AND state = 'queued'") == 0
                    }
                }
            }
        }

        /// Milliseconds from each insert to its first claim, middle value, for the batch's spaced requests (the
        /// others queue behind the API's rate limit).
        func medianClaimLatency(batch: String) async throws -> Double {
            try await pool.query("""
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM e.at - r.created_at) * 1000)::float8 AS ms
                FROM detectq.requests r
                JOIN LATERAL (SELECT min(at) AS at FROM detectq.request_events WHERE request_id = r.id AND to_state = 'submitting') e ON true
                WHERE r.metadata->>'batch' = \(batch) AND (r.metadata->>'spaced')::boolean
                """)[0].decode("ms", as: Double.self)
        }

        /// The actors the history names for the batch's changes after the insert.
        func actors(batch: String) async throws -> Set<String?> {
            Set(try await pool.query("""
                SELECT DISTINCT e.worker_id FROM detectq.request_events e JOIN detectq.requests r ON r.id = e.request_id
                WHERE r.metadata->>'batch' = \(batch) AND e.from_state IS NOT NULL
                """).map { try $0.decode("worker_id", as: String?.self) })
        }

        func worker(_ id: String, simulator: DetectSimulator, listen: Bool) async throws -> DetectqProcess {
            var environment = [
                "DATABASE_URL": pooled, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": id,
                "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())", "DETECTQ_POLL_INTERVAL": "0.2", "DETECTQ_CONCURRENCY": "8",
            ]
            if listen { environment["DETECTQ_LISTEN_DATABASE_URL"] = direct }
            return try await DetectqProcess.start(["worker"], environment: environment)
        }
    }

    @Test func theProbeTellsATransactionPoolFromASession() async throws {
        let setup = try await Setup.make()
        #expect(try await SessionPooling.of(PostgresConfiguration(connectionString: setup.direct)) == .session)
        #expect(try await SessionPooling.of(PostgresConfiguration(connectionString: setup.pooled)) == .transaction)
    }

    @Test func migrateRefusesATransactionPoolAndSaysWhatToUseInstead() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let database = try #require(configuration.database)
        let outcome = try await DetectqExecutable.run(["migrate"], environment: ["DATABASE_URL": try TestDatabase.pgBouncerURI(database: database)])
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(outcome.standardError.contains("session connection") && outcome.standardError.contains("pool_mode = transaction"))
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let migrations = try await pool.query("SELECT to_regclass('detectq.schema_migrations') IS NULL AS untouched")[0]
        #expect(try migrations.decode("untouched", as: Bool.self), "nothing ran before the refusal")
        await pool.close()
    }

    @Test func workersBehindThePoolCompleteEverythingListenDirectlyOrPollAndSignTheirOwnChanges() async throws {
        let setup = try await Setup.make()
        let simulator = try await DetectSimulator.startForTest()

        let listening = try await setup.worker("pooled-a", simulator: simulator, listen: true)
        try await waitUntil("pooled-a listens on its direct connection") { try await setup.listeningBackends(of: "pooled-a") == 1 }
        try await setup.enqueue(batch: "listening", numbers: 1...10, spaced: true)
        try await setup.enqueue(batch: "listening", numbers: 11...50, spaced: false)
        try await waitUntil("the first batch completes") {
            try await setup.count("SELECT count(*)::int8 AS n FROM detectq.requests WHERE state = 'completed'") == 50
        }
        #expect(await listening.stop() == 0)

        let polling = try await setup.worker("pooled-b", simulator: simulator, listen: false)
        _ = try await polling.waitForLine(containing: "DETECTQ_LISTEN_DATABASE_URL is not set")
        try await setup.enqueue(batch: "polling", numbers: 1...10, spaced: true)
        try await setup.enqueue(batch: "polling", numbers: 11...50, spaced: false)
        try await waitUntil("the second batch completes") {
            try await setup.count("SELECT count(*)::int8 AS n FROM detectq.requests WHERE state = 'completed'") == 100
        }
        #expect(try await setup.listeningBackends(of: "pooled-b") == 0, "no LISTEN through the pooler")
        let output = polling.output
        #expect(await polling.stop() == 0)
        #expect(output.components(separatedBy: "DETECTQ_LISTEN_DATABASE_URL is not set").count == 2, "said once:\n\(output)")

        // The first worker's sessions stay in PgBouncer's pool after it stops; a session setting would have
        // named it for the second worker's changes too.
        #expect(try await setup.actors(batch: "listening") == ["pooled-a"])
        #expect(try await setup.actors(batch: "polling") == ["pooled-b"])

        try await setup.pool.query("""
            INSERT INTO detectq.requests (media_url, run_at, metadata)
            VALUES ('https://cdn.example.com/later.wav', now() + interval '1 day', '{"batch": "operator"}')
            """)
        let id = try await setup.count("SELECT id::int8 AS n FROM detectq.requests WHERE metadata->>'batch' = 'operator'")
        let cancelled = try await DetectqExecutable.run(["cancel", "\(id)"], environment: ["DATABASE_URL": setup.pooled, "USER": "ops"])
        #expect(cancelled.status == 0, "\(cancelled.standardError)")
        let operators = try await setup.actors(batch: "operator")
        #expect(operators.count == 1 && operators.first??.hasPrefix("detectq cancel (ops@") == true, "\(operators)")

        let stats = await simulator.state.snapshot()
        #expect(stats.submissionsByMedia.values.allSatisfy { $0 == 1 }, "each request submitted once")
        let listened = try await setup.medianClaimLatency(batch: "listening")
        let polled = try await setup.medianClaimLatency(batch: "polling")
        print(String(format: "behind PgBouncer: insert to claim, median of 10 from idle: %.0f ms listening directly, %.0f ms polling", listened, polled))
        await setup.pool.close()
        await simulator.stop()
    }
}
