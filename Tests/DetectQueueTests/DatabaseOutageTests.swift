import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Postgres
import SchemaMigrations
import Testing
import WorkerTestSupport

/// PostgreSQL going away during an attempt. After the API accepted, the worker must store the answer once the
/// database is back, not leave the request to be taken over and submitted (and billed) again; before anything
/// was sent, the claim goes back with its attempt unspent: an outage is not the request's failure.
@Suite("A database outage during an attempt", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct DatabaseOutageTests {
    /// A migrated throwaway cluster of the test's own (to stop and start), and a harness on it whose simulator
    /// takes `latency` per detection.
    static func outageHarness(latency: Duration) async throws -> (ThrowawayPostgresCluster, WorkerHarness) {
        let cluster = try await ThrowawayPostgresCluster.startForTest(durableCommits: true)
        let database = PostgresConfiguration(connectionString: cluster.connectionString)
        _ = try await MigrationRunner(configuration: database).migrate()
        let mediaRoot = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-outage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mediaRoot, withIntermediateDirectories: true)
        let harness = WorkerHarness(
            database: database, pool: PostgresConnectionPool(configuration: database, maximumConnections: 2),
            simulator: try await DetectSimulator.startForTest(configuration: .init(latency: latency)), mediaRoot: mediaRoot
        )
        return (cluster, harness)
    }

    @Test(arguments: [ThrowawayPostgresCluster.ShutdownMode.fast, .immediate])
    func theAnswerIsStoredWhenTheDatabaseIsBackAndNothingIsSentTwice(mode: ThrowawayPostgresCluster.ShutdownMode) async throws {
        let (cluster, harness) = try await Self.outageHarness(latency: .seconds(2))
        let sync = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-sync.wav", "sync"])
        let polled = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-poll.wav", "poll"])
        let log = CapturedLog()
        let worker = harness.startWorker(try harness.configuration(environment: ["DETECTQ_LEASE_SECONDS": "20"]), log: log)
        try await log.explaining {
            try await waitUntil("the API has both submissions") { await harness.simulator.state.snapshot().submissions == 2 }
        }
        try await cluster.stopServer(mode)
        // The outage outlasts the sync detection's 2 s, so its answer arrives while the database is down.
        try await Task.sleep(for: .seconds(3))
        try await cluster.startServer()
        // The test's own pool finds each of its connections broken once.
        for _ in 0..<harness.pool.maximumConnections { _ = try? await harness.pool.query("SELECT 1") }
        try await log.explaining { try await harness.waitUntilFinished([sync, polled]) }
        await worker.stop()

        for id in [sync, polled] {
            let row = try await harness.row(id)
            #expect(try row.decode("state", as: String.self) == "completed")
            #expect(try row.decode("attempt", as: Int.self) == 1, "no second attempt:\n\(log.text)")
        }
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.submissions == 2, "each request was sent once: \(stats.submissionsByMedia)\n\(log.text)")
        await harness.stop()
        await cluster.destroy()
    }

    @Test func anOutageBeforeTheSubmissionGivesTheClaimBackWithItsAttemptUnspent() async throws {
        let (cluster, harness) = try await Self.outageHarness(latency: .milliseconds(100))
        let second = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/second.wav", "sync"])
        // The API throttles: the attempt waits out the shared pause before it asks again (a claim's own first slot
        // is spent at once), and the database goes away while it waits.
        await harness.simulator.state.setThrottled(true)
        let log = CapturedLog()
        let worker = harness.startWorker(try harness.configuration(environment: ["DETECTQ_LEASE_SECONDS": "30"]), log: log)
        try await waitUntil("the API throttled the request") { await harness.simulator.state.snapshot().throttledRequests >= 1 }
        try await cluster.stopServer(.fast)
        await harness.simulator.state.setThrottled(false)
        try await waitUntil("the request's attempt meets the outage") { log.contains("before this attempt sent anything") }
        try await cluster.startServer()
        for _ in 0..<harness.pool.maximumConnections { _ = try? await harness.pool.query("SELECT 1") }
        try await harness.waitUntilFinished([second])
        await worker.stop()

        let row = try await harness.row(second)
        #expect(try row.decode("state", as: String.self) == "completed")
        #expect(try row.decode("attempt", as: Int.self) == 1, "the outage spent no attempt")
        #expect(try await harness.history(second) == ["queued", "submitting", "queued", "submitting", "completed"], "given back, then sent")
        #expect(await harness.simulator.state.snapshot().submissions == 1, "sent once")
        await harness.stop()
        await cluster.destroy()
    }
}
