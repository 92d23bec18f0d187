import DetectQueue
import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Logging
import Postgres
import ServiceLifecycle

/// A migrated database, a simulator, a media root, and workers running in this process: what the tests of the
/// worker and of each post-processor start from.
package struct WorkerHarness: Sendable {
    package let database: PostgresConfiguration
    package let pool: PostgresConnectionPool
    package let simulator: DetectSimulator
    package let mediaRoot: URL

    /// A harness over a database of its own (a cluster a test starts and stops, say); the caller stops it.
    package init(database: PostgresConfiguration, pool: PostgresConnectionPool, simulator: DetectSimulator, mediaRoot: URL) {
        self.database = database
        self.pool = pool
        self.simulator = simulator
        self.mediaRoot = mediaRoot
    }

    package static func start(_ simulatorConfiguration: SimulatorConfiguration = .init(purgeDelay: .milliseconds(200))) async throws -> WorkerHarness {
        let database = try await TestDatabase.createMigratedDatabase()
        let mediaRoot = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-worker-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mediaRoot, withIntermediateDirectories: true)
        let harness = WorkerHarness(
            database: database, pool: PostgresConnectionPool(configuration: database, maximumConnections: 4),
            simulator: try await DetectSimulator.start(configuration: simulatorConfiguration), mediaRoot: mediaRoot
        )
        TestResources.stopAtEnd { await harness.stop() }
        return harness
    }

    /// A worker configuration against this harness; `callbacks` gives it a callback receiver on a free port.
    package func configuration(workerID: String = "test-worker", callbacks: Bool = false, environment: [String: String] = [:]) throws -> WorkerConfiguration {
        var settings = [
            "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": workerID, "DETECTQ_MEDIA_ROOT": mediaRoot.path,
            "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())", "DETECTQ_LEASE_SECONDS": "10", "DETECTQ_POLL_INTERVAL": "0.2",
            "DETECTQ_RETRY_BASE_SECONDS": "0.1", "DETECTQ_RETRY_MAX_SECONDS": "1", "DETECTQ_CONCURRENCY": "16", "DETECTQ_API_RATE_LIMIT": "200",
            "DETECTQ_SHUTDOWN_GRACE_SECONDS": "5",
        ]
        if callbacks {
            settings["DETECTQ_CALLBACK_URL"] = "http://127.0.0.1:\(settings["DETECTQ_HTTP_PORT"]!)"
            // A callback that came before the accepted answer was stored is refused until reconciliation adopts
            // it; the poll that follows the callback timeout finds the result instead, soon in tests.
            settings["DETECTQ_CALLBACK_TIMEOUT"] = "2"
        }
        var configuration = try WorkerConfiguration.fromEnvironment(settings.merging(environment) { $1 })
        configuration.database = PostgresConfiguration(
            connectionString: database.connectionString, database: database.database,
            applicationName: "detectq worker \(workerID)"
        )
        return configuration
    }

    /// Runs a worker until `stop` is called on the returned handle; by default with one post-processor,
    /// `test.alert`, that applies to fakes and does nothing.
    package func startWorker(
        _ configuration: WorkerConfiguration, postProcessors: [any PostProcessor] = [NoteFakes()], log: CapturedLog? = nil,
        slots: RecordingSlots? = nil
    ) -> RunningWorker {
        let worker = Worker(
            configuration: configuration, postProcessors: postProcessors,
            logger: log?.logger(label: "test-worker") ?? Logger(label: "test-worker", factory: { _ in SwiftLogNoOpLogHandler() }),
            slots: slots
        )
        let group = ServiceGroup(configuration: .init(services: [worker], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })))
        let running = RunningWorker(worker: worker, group: group, task: Task { try await group.run() })
        TestResources.stopAtEnd { await running.stop() }
        return running
    }

    /// Writes a media file under the media root.
    @discardableResult
    package func writeMedia(_ relativePath: String, _ contents: String) throws -> URL {
        let url = mediaRoot.appendingPathComponent(relativePath)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(contents.utf8).write(to: url)
        return url
    }

    package func insert(_ columns: String, _ values: [any PostgresEncodable]) async throws -> Int {
        let placeholders = (1...values.count).map { "$\($0)" }.joined(separator: ", ")
        return try await pool.query(PostgresQuery(
            sql: "INSERT INTO detectq.requests (\(columns)) VALUES (\(placeholders)) RETURNING id", parameters: values
        ))[0].decode("id", as: Int.self)
    }

    /// Waits until none of `ids` is in a state other than the terminal ones.
    package func waitUntilFinished(_ ids: [Int], timeout: Duration = generousDeadline) async throws {
        do {
            try await waitUntil("requests \(ids.prefix(5))… are finished", timeout: timeout, interval: .milliseconds(100)) {
                try await pool.query("""
                    SELECT count(*) AS n FROM detectq.requests WHERE id = ANY(\(ids)) AND state NOT IN ('completed', 'failed', 'cancelled')
                    """)[0].decode("n", as: Int.self) == 0
            }
        } catch {
            // A wait that times out says where each unfinished request stands, for the run's log.
            let unfinished = try? await pool.query("""
                SELECT r.id, r.state::text AS state, r.attempt, r.run_at, r.locked_by, r.locked_until, r.error_message,
                       (SELECT string_agg(coalesce(e.from_state::text, '-') || '>' || e.to_state::text || ' ' || to_char(e.at, 'HH24:MI:SS.MS')
                                          || coalesce(' (' || e.detail || ')', ''), '; ' ORDER BY e.id)
                        FROM detectq.request_events e WHERE e.request_id = r.id) AS history, now() AS now
                FROM detectq.requests r WHERE r.id = ANY(\(ids)) AND r.state NOT IN ('completed', 'failed', 'cancelled')
                """)
            for row in unfinished.map(Array.init) ?? [] {
                print("unfinished request \(String(describing: try? row.decode("id", as: Int.self))): "
                    + "\(String(describing: try? row.decode("state", as: String.self))), attempt \(String(describing: try? row.decode("attempt", as: Int.self))), "
                    + "run_at \(String(describing: try? row.decode("run_at", as: Date.self))) (now \(String(describing: try? row.decode("now", as: Date.self)))), "
                    + "held by \(String(describing: try? row.decode("locked_by", as: String?.self))); history: \(String(describing: try? row.decode("history", as: String?.self)))")
            }
            throw error
        }
    }

    /// Waits until the requests `ids` are finished and so is every post-task they made: what a test of
    /// post-processing asserts comes after both.
    package func waitUntilProcessed(_ ids: [Int], timeout: Duration = generousDeadline) async throws {
        try await waitUntilFinished(ids, timeout: timeout)
        try await waitUntil("the post-tasks of requests \(ids.prefix(5))… are finished", timeout: timeout, interval: .milliseconds(100)) {
            try await pool.query("""
                SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = ANY(\(ids)) AND state NOT IN ('completed', 'failed')
                """)[0].decode("n", as: Int.self) == 0
        }
    }

    /// Counts what `sql` counts (a query selecting `count(*) AS n`).
    package func count(_ sql: PostgresQuery) async throws -> Int {
        try await pool.query(sql)[0].decode("n", as: Int.self)
    }

    package func row(_ id: Int) async throws -> PostgresRow {
        try await pool.query("""
            SELECT state::text, label, is_fake, aggregated_score, remote_uuid, submit_path, error_message, media_type,
                   result, attempt, file_deleted_at, media_sha256, reused_from FROM detectq.requests WHERE id = \(id)
            """)[0]
    }

    package func history(_ id: Int) async throws -> [String] {
        try await pool.query("SELECT to_state::text FROM detectq.request_events WHERE request_id = \(id) ORDER BY id")
            .map { try $0.decode("to_state", as: String.self) }
    }

    /// Stops the simulator, closes the pool and removes the media root; idempotent.
    package func stop() async {
        await simulator.stop()
        await pool.close()
        try? FileManager.default.removeItem(at: mediaRoot)
    }
}

/// A post-processor for tests: applies to fakes and is done at once.
package struct NoteFakes: PostProcessor {
    package let name = "test.alert"

    package init() {}

    package func applies(to outcome: DetectionOutcome) -> Bool { outcome.item.isFake == true }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult { .done }
}

/// A worker running in this process.
package struct RunningWorker: Sendable {
    package let worker: Worker
    let group: ServiceGroup
    let task: Task<Void, any Error>

    package func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}

/// Services running in this process for one test (a store's coalesced writers, say), stopped gracefully by
/// `stop` or at the end of the test.
package struct RunningServices: Sendable {
    let group: ServiceGroup
    let task: Task<Void, any Error>

    /// Runs `services` in one group until `stop`.
    @discardableResult
    package static func start(_ services: [any Service]) -> RunningServices {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) }, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        ))
        let running = RunningServices(group: group, task: Task { try await group.run() })
        TestResources.stopAtEnd { await running.stop() }
        return running
    }

    package func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}
