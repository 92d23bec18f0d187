import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Postgres
import SchemaMigrations
import Testing

/// A primary with a streaming standby (`pg_basebackup -R`), workers on a multi-host
/// `target_session_attrs=read-write` URL, and a failover mid-run (REFERENCE.md section 7).
@Suite("Following a failover to a promoted standby", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct FailoverTests {
    /// Inserts `count` requests through `url`, retrying each insert until one of the servers takes it (an
    /// idempotency key makes a retried insert that did commit harmless); returns the keys confirmed.
    static func produce(_ count: Int, from start: Int, url: String) async throws -> [String] {
        let pool = PostgresConnectionPool(configuration: PostgresConfiguration(connectionString: url), maximumConnections: 1)
        var keys: [String] = []
        for number in start..<(start + count) {
            let key = "failover-\(number)"
            try await waitUntil("insert \(key)", timeout: .seconds(60)) {
                (try? await pool.query("""
                    INSERT INTO detectq.requests (media_url, wait_mode, idempotency_key)
                    VALUES (\("https://cdn.example.com/\(key).wav"), \(number % 3 == 0 ? "sync" : "poll"), \(key))
                    ON CONFLICT (idempotency_key) DO NOTHING
                    """)) != nil
            }
            keys.append(key)
            try await Task.sleep(for: .milliseconds(20))
        }
        await pool.close()
        return keys
    }

    /// A worker started while its database is away (a failover or a restart under way) waits for it, rather than
    /// exiting at start as if `DATABASE_URL` were wrong.
    @Test func aWorkerStartedWhileItsDatabaseIsAwayWaitsForIt() async throws {
        let cluster = try await ThrowawayPostgresCluster.startForTest()
        _ = try await MigrationRunner(configuration: PostgresConfiguration(connectionString: cluster.connectionString)).migrate()
        try await cluster.stopServer(.fast)
        let simulator = try await DetectSimulator.startForTest()
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": cluster.connectionString + "?connect_timeout=2", "RESEMBLE_BASE_URL": simulator.baseURL,
            "DETECTQ_WORKER_ID": "patient", "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())",
        ])
        // The scenario, not an assertion: the worker's first tries meet no server (on a slower machine, fewer of them).
        try await Task.sleep(for: .seconds(2))
        #expect(worker.isRunning, "still waiting for its database: \(worker.output)")
        try await cluster.startServer()
        _ = try await worker.waitForLine(containing: "worker started")
        #expect(worker.isRunning)
        #expect(await worker.stop() == 0)
    }

    @Test func workersFollowThePromotedStandbyLoseNothingAndSubmitNothingTwiceAfterAStoredUUID() async throws {
        let primary = try await ThrowawayPostgresCluster.startForTest(durableCommits: true)
        _ = try await MigrationRunner(configuration: PostgresConfiguration(connectionString: primary.connectionString)).migrate()
        let standby = try await primary.makeStandbyForTest()
        let url = "postgresql://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(standby.port)/postgres"
            + "?target_session_attrs=read-write&connect_timeout=2"
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(300)))
        let workers = try await (1...2).asyncMap { number in
            try await DetectqProcess.start(["worker"], environment: [
                "DATABASE_URL": url, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": "failover-\(number)",
                "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())", "DETECTQ_LEASE_SECONDS": "3", "DETECTQ_POLL_INTERVAL": "0.3",
                "DETECTQ_RETRY_BASE_SECONDS": "0.2", "DETECTQ_RETRY_MAX_SECONDS": "1", "DETECTQ_CONCURRENCY": "8",
            ])
        }

        var keys = try await Self.produce(60, from: 0, url: url)
        let before = PostgresConnectionPool(configuration: PostgresConfiguration(connectionString: primary.connectionString), maximumConnections: 1)
        try await waitUntil("a third of the work is done on the first primary") {
            try await before.query("SELECT count(*)::int8 AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self) >= 20
        }
        await before.close()

        let stopped = Date()
        try await primary.stopServer(.fast)
        try await standby.promote()
        let promoted = Date()
        // A fast shutdown sends the standby all the WAL the primary wrote, so it holds every uuid stored before.
        let after = PostgresConnectionPool(configuration: PostgresConfiguration(connectionString: standby.connectionString), maximumConnections: 1)
        let acceptedBefore = try await after.query("SELECT media_url FROM detectq.requests WHERE remote_uuid IS NOT NULL")
            .map { try $0.decode("media_url", as: String.self) }
        keys += try await Self.produce(60, from: 60, url: url)

        try await waitUntil("every request completes on the promoted standby", timeout: .seconds(180)) {
            try await after.query("SELECT count(*)::int8 AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self) == 120
        }
        let rows = try await after.query("""
            SELECT idempotency_key, media_url, remote_uuid,
                   (SELECT min(at) FROM detectq.request_events e WHERE e.request_id = r.id AND e.to_state = 'submitting' AND e.at > \(stopped)) AS claimed_after
            FROM detectq.requests r
            """)
        #expect(Set(try rows.map { try $0.decode("idempotency_key", as: String.self) }) == Set(keys), "no confirmed insert lost")
        let firstClaim = try rows.compactMap { try $0.decode("claimed_after", as: Date?.self) }.min()
        let resumed = try #require(firstClaim, "claiming resumed after the failover").timeIntervalSince(stopped)
        #expect(resumed < 30, "claiming resumed \(resumed) s after the primary stopped")

        let stats = await simulator.state.snapshot()
        #expect(!acceptedBefore.isEmpty)
        for media in acceptedBefore {
            #expect(stats.submissionsByMedia[media] == 1, "\(media) had a remote_uuid before the failover and must not be submitted again")
        }
        let twice = stats.submissionsByMedia.filter { $0.value > 1 }
        for worker in workers {
            #expect(worker.isRunning, "a worker exited because the database went away:\n\(worker.output.suffix(2_000))")
        }
        for worker in workers {
            #expect(await worker.stop() == 0)
        }
        print(String(format: "failover: claiming resumed %.1f s after the primary stopped (%.1f s after the standby was promoted); 120 of 120 completed; %d of %d with a stored uuid submitted again, %d without one",
                     resumed, firstClaim!.timeIntervalSince(promoted), acceptedBefore.filter { stats.submissionsByMedia[$0, default: 0] > 1 }.count,
                     acceptedBefore.count, twice.count))
        await after.close()
    }
}

extension Sequence {
    /// `map` with an async transform, in order.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
