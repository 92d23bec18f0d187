import ArgumentParser
import DetectQueue
import DetectSimulator
import EmbeddedPostgres
import Foundation
import Logging
import Postgres
import ResembleDetect
import SchemaMigrations
import ServiceLifecycle
import Synchronization

/// `detectq demo`: the whole pipeline on embedded defaults. It starts what the environment does not name (a
/// throwaway PostgreSQL cluster without `DATABASE_URL`, the simulator without `RESEMBLE_API_TOKEN`), migrates,
/// enqueues a mixed batch in a backfill lane and trickles live requests into a second lane of four times its
/// weight, runs two workers with live progress, prints a summary with each lane's wait, and stops all it started.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the whole pipeline on embedded defaults: PostgreSQL, the simulator, a backfill and a live lane, two workers, a summary.",
        discussion: """
            With DATABASE_URL set, the demo uses that database (its rows stay, tagged metadata.demo); with \
            RESEMBLE_API_TOKEN set, it calls the real API at RESEMBLE_BASE_URL (files only, unless --url names \
            package media).
            """
    )

    @Option(help: "Requests in the backfill lane's batch, besides the large file.") var requests = 24

    @Option(help: "Copies of the backfill's first files added to it (the same bytes under another name): detected once.")
    var duplicates = 3

    @Option(help: "Requests trickled into the live lane while the backfill drains.") var live = 8

    @Option(
        name: .customLong("live-every"), help: "Seconds between two live requests.",
        transform: SecondsOption.parser("--live-every", in: .milliseconds(10)...(.seconds(60)))
    )
    var liveEvery: Duration = .milliseconds(500)

    @Flag(inversion: .prefixedNo, help: "Include a file over 150 MB (the secure-upload path).") var largeFile = true

    @Option(help: "Seconds the simulator takes per detection.", transform: SecondsOption.parser("--latency", in: .zero...(.seconds(3_600))))
    var latency: Duration = .seconds(1)

    @Option(help: "A public media URL to use against the real API (repeatable).") var url: [String] = []

    @Option(help: "Seconds to wait for the batch before giving up.") var timeout = 300.0

    func validate() throws {
        guard (1...10_000).contains(requests) else { throw ValidationError("--requests must be from 1 to 10000") }
        guard (0...10_000).contains(live) else { throw ValidationError("--live must be from 0 to 10000") }
        guard (0...10_000).contains(duplicates) else { throw ValidationError("--duplicates must be from 0 to 10000") }
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be more than 0 seconds") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .error
            return handler
        }
        let environment = ProcessInfo.processInfo.environment.filter { !$0.value.trimmingCharacters(in: .whitespaces).isEmpty }
        let workDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-demo-\(UUID().uuidString.prefix(8).lowercased())")
        var cluster: ThrowawayPostgresCluster?
        var simulator: DetectSimulator?
        var succeeded = false
        var report = ""
        do {
            try FileManager.default.createDirectory(at: workDirectory.appendingPathComponent("media"), withIntermediateDirectories: true)
            let databaseURL: String
            if let given = environment["DATABASE_URL"] {
                databaseURL = given
                say("using the database in DATABASE_URL")
            } else {
                say("starting a throwaway PostgreSQL cluster (no DATABASE_URL set)")
                let started = try await ThrowawayPostgresCluster.start()
                cluster = started
                databaseURL = started.connectionString
                say("  PostgreSQL on 127.0.0.1:\(started.port), in \(started.directory.path)")
            }
            var api: (baseURL: String, token: String?)
            if let token = environment["RESEMBLE_API_TOKEN"] {
                api = (environment["RESEMBLE_BASE_URL"] ?? DetectClientConfiguration.defaultBaseURL, token)
                say("using the Detect API at \(api.baseURL) (RESEMBLE_API_TOKEN set)")
            } else {
                let started = try await DetectSimulator.start(configuration: SimulatorConfiguration(
                    latency: latency, intelligenceDelay: .seconds(1), purgeDelay: .seconds(1),
                    storageDirectory: workDirectory.appendingPathComponent("simulator")
                ))
                simulator = started
                api = (started.baseURL, nil)
                say("started the API simulator at \(started.baseURL) (no RESEMBLE_API_TOKEN set)")
            }
            (succeeded, report) = try await runDemo(
                databaseURL: databaseURL, api: api, simulator: simulator, workDirectory: workDirectory, keepsRows: cluster == nil
            )
        } catch {
            FileHandle.standardError.write(Data("detectq demo: \(error)\n".utf8))
        }
        if let simulator {
            await simulator.stop()
            say("stopped the simulator")
        }
        if let cluster {
            await cluster.destroy()
            say("stopped and removed the throwaway PostgreSQL cluster")
        }
        try? FileManager.default.removeItem(at: workDirectory)
        if !report.isEmpty { print("\n" + report) }
        if !succeeded { throw ExitCode.failure }
    }

    /// Migrates, enqueues and runs the workers until the batch is done; returns whether every request reached a
    /// final state in time, and the summary with where to look next.
    private func runDemo(
        databaseURL: String, api: (baseURL: String, token: String?), simulator: DetectSimulator?, workDirectory: URL, keepsRows: Bool
    ) async throws -> (finished: Bool, report: String) {
        let database = PostgresConfiguration(connectionString: databaseURL, applicationName: "detectq demo")
        let migration = try await MigrationRunner(configuration: database).migrate()
        say("migrated the schema (\(migration.applied.count) applied, \(migration.alreadyApplied) already there)")

        let runID = String(UUID().uuidString.prefix(8).lowercased())
        let batch = DemoBatch(
            runID: runID, queue: DemoBatch.backfillQueue, count: requests, duplicates: duplicates, largeFile: largeFile,
            simulated: simulator != nil, urls: url
        )
        let liveBatch = DemoBatch(
            runID: runID, queue: DemoBatch.liveQueue, prefix: "live-", count: live, largeFile: false, simulated: simulator != nil, urls: url
        )
        let media = workDirectory.appendingPathComponent("media")
        try batch.writeMedia(into: media)
        try liveBatch.writeMedia(into: media)
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 2)
        let queues = QueueSettingsStore(pool: pool)
        // A database's own settings for these lanes are kept; a new lane gets the demo's weights.
        for (queue, weight) in [(DemoBatch.backfillQueue, 1), (DemoBatch.liveQueue, 4)] where try await !queues.exists(queue) {
            var change = QueueSettingsChange()
            change.weight = weight
            try await queues.set(queue, change)
        }
        let started = Date()
        let store = RequestStore(pool: pool)
        let ids = try await store.enqueue(batch.requests)
        say("enqueued \(ids.count) requests in queue \(DemoBatch.backfillQueue) (demo run \(runID), ids \(ids.first ?? 0)–\(ids.last ?? 0)) with plain SQL INSERTs")

        let alerts = AlertCounter()
        let listening = await alerts.start(database)
        let workers = try (1...2).map { number in
            try makeWorker(number: number, databaseURL: databaseURL, api: api, media: media, archive: workDirectory.appendingPathComponent("archive"))
        }
        say("started 2 workers (\(workers.map(\.configuration.workerID).joined(separator: ", "))), 8 requests in flight each")
        let group = ServiceGroup(configuration: .init(
            services: workers, gracefulShutdownSignals: [.sigint, .sigterm], logger: Logger(label: "detectq.demo")
        ))
        let groupEnded = Atomic<Bool>(false)
        let running = Task {
            defer { groupEnded.store(true, ordering: .relaxed) }
            try await group.run()
        }

        let trickling = Atomic<Bool>(!liveBatch.samples.isEmpty)
        let interval = liveEvery
        let trickle = Task {
            defer { trickling.store(false, ordering: .relaxed) }
            for request in liveBatch.requests {
                try await Task.sleep(for: interval)
                _ = try await store.enqueue([request])
            }
        }
        if live > 0 {
            say("trickling \(live) requests into queue \(DemoBatch.liveQueue) (weight 4 to the backfill's 1), one every \(interval.seconds.formatted()) s\n")
        }

        let progress = DemoProgress(runID: runID, pool: pool)
        let finished = try await progress.follow(until: Date().addingTimeInterval(timeout)) {
            trickling.load(ordering: .relaxed)
        } stopped: {
            groupEnded.load(ordering: .relaxed)
        }
        trickle.cancel()
        if case .failure(let error) = await trickle.result, !(error is CancellationError) {
            FileHandle.standardError.write(Data("detectq demo: a live request could not be enqueued: \(error)\n".utf8))
        }
        await group.triggerGracefulShutdown()
        try? await running.value
        listening.cancel()

        let summary = try await DemoSummary.read(
            runID: runID, pool: pool, started: started, alertsReceived: alerts.count,
            simulator: await simulator?.state.snapshot()
        )
        await pool.close()
        var report = summary.text + "\n\n" + Self.nextSteps(runID: runID, keepsRows: keepsRows, simulated: simulator != nil)
        if !finished {
            report += groupEnded.load(ordering: .relaxed)
                ? "\ninterrupted before the batch finished"
                : "\nthe batch did not finish within --timeout \(timeout.formatted()) s"
        }
        return (finished, report)
    }

    /// Worker `number`, configured as `detectq worker` would be from the environment.
    private func makeWorker(number: Int, databaseURL: String, api: (baseURL: String, token: String?), media: URL, archive: URL) throws -> Worker {
        let port = try LoopbackPort.free()
        var environment = [
            "DATABASE_URL": databaseURL, "RESEMBLE_BASE_URL": api.baseURL,
            "DETECTQ_MEDIA_ROOT": media.path, "DETECTQ_HTTP_PORT": String(port), "DETECTQ_CONCURRENCY": "8",
            "DETECTQ_WORKER_ID": "demo-worker-\(number)", "DETECTQ_POLL_INTERVAL": "0.5", "DETECTQ_LEASE_SECONDS": "15",
            "DETECTQ_ARCHIVE_DIR": archive.path,
        ]
        if let token = api.token {
            environment["RESEMBLE_API_TOKEN"] = token
        } else {
            // Callbacks reach a worker only on loopback, so they are used with the simulator alone.
            environment["DETECTQ_CALLBACK_URL"] = "http://127.0.0.1:\(port)"
        }
        return Worker(
            configuration: try WorkerConfiguration.fromEnvironment(environment),
            postProcessors: try WorkerCommand.postProcessors(environment),
            logger: Logger(label: "detectq.demo.worker-\(number)")
        )
    }

    static func nextSteps(runID: String, keepsRows: Bool, simulated: Bool) -> String {
        var lines = ["Where to look next:"]
        if keepsRows {
            lines += [
                "  detectq status                      the queue as it stands",
                "  detectq show <id>                   one request, its result and its event history",
                "  psql \"$DATABASE_URL\" -c \"SELECT id, state, label, aggregated_score FROM detectq.requests WHERE metadata->>'demo' = '\(runID)'\"",
            ]
        } else {
            lines.append("  the throwaway cluster is gone; set DATABASE_URL to run the demo against a database that keeps its rows")
        }
        lines.append("  detectq worker --help               run workers of your own (README: Workers, Deployment)")
        if simulated { lines.append("  RESEMBLE_API_TOKEN=… detectq demo   the same against the real Detect API") }
        return lines.joined(separator: "\n")
    }

    private func say(_ line: String) {
        print("==> " + line)
        fflush(nil)
    }
}

/// Counts the fake alerts the workers publish with `pg_notify` on `detectq_alerts`, as a subscriber would.
final class AlertCounter: Sendable {
    private let received = Atomic<Int>(0)

    var count: Int { received.load(ordering: .relaxed) }

    /// Starts counting and returns once the subscription is in place; cancel the task to stop.
    func start(_ database: PostgresConfiguration) async -> Task<Void, Never> {
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
        let task = Task {
            for await event in PostgresNotificationListener.listen(database, channels: ["detectq_alerts"]) {
                switch event {
                case .listening: readyContinuation.yield()
                case .notification: received.add(1, ordering: .relaxed)
                }
            }
        }
        for await _ in ready { break }
        return task
    }
}
