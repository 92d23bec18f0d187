import ChildProcesses
import DetectSimulator
import EmbeddedPostgres
import Foundation
import Hummingbird
import Logging
import Postgres
import Synchronization

/// What a rolling-upgrade check does: how many requests, and how many workers of each release.
package struct UpgradeCheckOptions: Sendable {
    package var requests: Int
    package var previousWorkers: Int
    package var workers: Int

    package init(requests: Int = 90, previousWorkers: Int = 2, workers: Int = 2) {
        self.requests = requests
        self.previousWorkers = previousWorkers
        self.workers = workers
    }
}

/// A rolling upgrade tried as a user would make one (REFERENCE.md section 10): the previous release's `migrate`
/// and workers on a throwaway PostgreSQL cluster with requests in flight against the simulator, this release's
/// `detectq migrate` run beside them, the previous workers stopped (one of them killed), then this release's
/// workers. It checks that every request completed, that no media was billed twice, that every post-task
/// completed and that the kept counts agree with `count(*)`, and reports the figures.
package struct UpgradeCheck: Sendable {
    let previous: URL
    let current: URL
    let options: UpgradeCheckOptions
    let say: @Sendable (String) -> Void

    /// `previous` is the previous release's `detectq`, `current` this release's.
    package init(previous: URL, current: URL, options: UpgradeCheckOptions, say: @escaping @Sendable (String) -> Void) {
        self.previous = previous
        self.current = current
        self.options = options
        self.say = say
    }

    package func run() async throws -> UpgradeReport {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-upgrade-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let token = "upgrade-token-" + UUID().uuidString
        let cluster = try await ThrowawayPostgresCluster.start(durableCommits: true)
        let simulator = try await DetectSimulator.start(configuration: SimulatorConfiguration(
            requiredToken: token, latency: .seconds(2), purgeDelay: nil, storageDirectory: work.appendingPathComponent("simulator")
        ))
        let sink = try await AlertSink.start()
        let database = PostgresConfiguration(connectionString: cluster.connectionString, applicationName: "detectq upgrade-check")
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 2)
        let environment = [
            "DATABASE_URL": cluster.connectionString, "RESEMBLE_API_TOKEN": token, "RESEMBLE_BASE_URL": simulator.baseURL,
            "DETECTQ_LEASE_SECONDS": "4", "DETECTQ_POLL_INTERVAL": "0.5", "DETECTQ_CALLBACK_TIMEOUT": "4",
            "DETECTQ_RETRY_BASE_SECONDS": "0.5", "DETECTQ_SHUTDOWN_GRACE_SECONDS": "1", "DETECTQ_CONCURRENCY": "16",
            "DETECTQ_ALERT_WEBHOOK_URL": sink.url, "DETECTQ_ALERT_WEBHOOK_SECRET": "upgrade-webhook-secret",
        ]
        var report = UpgradeReport(requests: options.requests)
        do {
            try await runToEnd(previous, ["migrate"], environment, log: work.appendingPathComponent("migrate-previous.log"))
            try await pool.query("""
                INSERT INTO detectq.requests (media_url, wait_mode)
                SELECT 'https://cdn.example.com/upgrade/' || CASE WHEN n % 4 = 0 THEN 'fake-' ELSE '' END || n || '.wav',
                       (ARRAY['sync', 'poll', 'callback'])[1 + n % 3]
                FROM generate_series(1, \(options.requests)) AS n
                """)
            let previousWorkers = try await start(previous, count: options.previousWorkers, name: "previous", environment, work)
            say("upgrade-check: \(options.requests) requests, \(options.previousWorkers) workers of the previous release")
            let inFlight = min(options.requests / 2, 40)
            try await waitFor("\(inFlight) requests in flight with the previous release's workers", timeout: .seconds(120)) {
                try await count(pool, "state IN ('submitting', 'awaiting_result')") >= inFlight
            }
            report.inFlightAtMigrate = try await count(pool, "state IN ('submitting', 'awaiting_result')")
            report.completedBeforeMigrate = try await count(pool, "state = 'completed'")

            let migrateStarted = ContinuousClock.now
            let migratedAt = Date()
            try await runToEnd(current, ["migrate"], environment, log: work.appendingPathComponent("migrate-current.log"))
            report.migrateSeconds = (ContinuousClock.now - migrateStarted).seconds
            report.migrateOutput = (try? String(contentsOf: work.appendingPathComponent("migrate-current.log"), encoding: .utf8)) ?? ""
            say("upgrade-check: this release's migrate ran beside them in \(String(format: "%.2f", report.migrateSeconds)) s")

            // The previous workers go on beside the new schema for a while, then stop: the first is killed.
            try await Task.sleep(for: .seconds(5))
            for row in try await pool.query("""
                SELECT coalesce(from_state::text, 'inserted') || ' -> ' || to_state::text AS change, count(*)::int8 AS n
                FROM detectq.request_events WHERE at > \(migratedAt) GROUP BY 1 ORDER BY 2 DESC
                """) {
                report.changesByPreviousAfterMigrate[try row.decode("change", as: String.self)] = try row.decode("n", as: Int.self)
            }
            for row in try await pool.query("""
                SELECT coalesce(e.detail, '(none)') AS reason, count(*)::int8 AS n FROM detectq.request_events e
                WHERE e.at > \(migratedAt) AND e.to_state IN ('retrying', 'failed') GROUP BY 1 ORDER BY 2 DESC LIMIT 3
                """) {
                report.previousFailuresAfterMigrate.append("\(try row.decode("n", as: Int.self))× \(try row.decode("reason", as: String.self).prefix(300))")
            }
            report.previousExitedOnTheirOwn = previousWorkers.filter { !$0.isRunning }.count
            previousWorkers.first?.signal(SIGKILL)
            for worker in previousWorkers.dropFirst() { _ = await worker.stop(grace: .seconds(10)) }
            _ = try? await previousWorkers.first?.waitForExit()
            report.unfinishedAtHandOver = try await count(pool, "state NOT IN ('completed', 'failed', 'cancelled')")

            let workers = try await start(current, count: options.workers, name: "current", environment, work)
            try await waitFor("every request and post-task finished with this release's workers", timeout: .seconds(240)) {
                let requests = try await count(pool, "state NOT IN ('completed', 'failed', 'cancelled')")
                let postTasks = try await pool.query("""
                    SELECT count(*)::int8 AS n FROM detectq.post_tasks WHERE state NOT IN ('completed', 'failed')
                    """)[0].decode("n", as: Int.self)
                return requests == 0 && postTasks == 0
            }
            for worker in workers { _ = await worker.stop(grace: .seconds(10)) }
            try await check(into: &report, pool: pool, simulator: simulator)
            report.alertsDelivered = sink.deliveries
        } catch {
            report.problems.append("the check could not finish: \(error); logs in \(work.path)")
        }
        await pool.close()
        await sink.stop()
        await simulator.stop()
        await cluster.destroy()
        if report.problems.isEmpty { try? FileManager.default.removeItem(at: work) } else { report.logs = work.path }
        return report
    }

    /// Reads the outcome: states, billing, post-tasks and the kept counts.
    private func check(into report: inout UpgradeReport, pool: PostgresConnectionPool, simulator: DetectSimulator) async throws {
        for row in try await pool.query("SELECT state::text AS state, count(*)::int8 AS n FROM detectq.requests GROUP BY 1") {
            report.endStates[try row.decode("state", as: String.self)] = try row.decode("n", as: Int.self)
        }
        if report.endStates["completed", default: 0] != options.requests {
            report.problems.append("not every request completed: \(report.endStates)")
        }
        let stats = await simulator.state.snapshot()
        report.billed = stats.submissions
        report.billedTwice = stats.submissionsByMedia.filter { $0.value > 1 }.map(\.key).sorted()
        if !report.billedTwice.isEmpty {
            report.problems.append("billed more than once: \(report.billedTwice.prefix(5))")
        }
        let postTasks = try await pool.query("SELECT state::text AS state, count(*)::int8 AS n FROM detectq.post_tasks GROUP BY 1")
        for row in postTasks { report.postTaskStates[try row.decode("state", as: String.self)] = try row.decode("n", as: Int.self) }
        if report.postTaskStates.keys.contains(where: { $0 != "completed" }) {
            report.problems.append("not every post-task completed: \(report.postTaskStates)")
        }
        let disagreeing = try await pool.query("""
            SELECT k.kind || '.' || k.state AS key, k.n AS kept, coalesce(c.n, 0) AS counted
            FROM (SELECT kind, state, sum(n)::int8 AS n FROM detectq.state_counts GROUP BY 1, 2) AS k
            FULL JOIN (
                SELECT 'request' AS kind, state::text AS state, count(*)::int8 AS n FROM detectq.requests GROUP BY 2
                UNION ALL SELECT 'post_task', state::text, count(*) FROM detectq.post_tasks GROUP BY 2
            ) AS c USING (kind, state)
            WHERE coalesce(k.n, 0) <> coalesce(c.n, 0)
            """)
        report.countsAgree = disagreeing.isEmpty
        if !report.countsAgree { report.problems.append("the kept counts disagree with count(*) in \(disagreeing.count) states") }
        
    }

    private func count(_ pool: PostgresConnectionPool, _ condition: String) async throws -> Int {
        try await pool.query(PostgresQuery(sql: "SELECT count(*)::int8 AS n FROM detectq.requests WHERE \(condition)", parameters: []))[0].decode("n", as: Int.self)
    }

    private func runToEnd(_ executable: URL, _ arguments: [String], _ environment: [String: String], log: URL) async throws {
        let status = try await BackgroundProcess.start(executable.path, arguments: arguments, environment: environment, log: log).waitForExit()
        guard status == .exited(0) else {
            let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw UpgradeCheckError("\(executable.path) \(arguments.joined(separator: " ")) ended with \(status): \(output.suffix(400))")
        }
    }

    private func start(
        _ executable: URL, count: Int, name: String, _ environment: [String: String], _ work: URL
    ) async throws -> [BackgroundProcess] {
        var started: [BackgroundProcess] = []
        for index in 1...count {
            let id = "\(name)-w\(index)"
            let port = try LoopbackPort.free()
            started.append(try await BackgroundProcess.start(executable.path, arguments: ["worker"], environment: environment.merging([
                "DETECTQ_WORKER_ID": id, "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)",
            ]) { $1 }, log: work.appendingPathComponent("\(id).log")))
        }
        return started
    }

    private func waitFor(_ what: String, timeout: Duration, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw UpgradeCheckError("gave up waiting for \(what) after \(timeout)")
    }
}

/// What a rolling-upgrade check saw.
package struct UpgradeReport: Sendable {
    package var requests: Int
    package var inFlightAtMigrate = 0
    package var completedBeforeMigrate = 0
    package var migrateSeconds = 0.0
    package var migrateOutput = ""
    package var changesByPreviousAfterMigrate: [String: Int] = [:]
    package var previousExitedOnTheirOwn = 0
    /// Why the previous workers' attempts failed after the migration, most frequent first.
    package var previousFailuresAfterMigrate: [String] = []
    package var unfinishedAtHandOver = 0
    package var endStates: [String: Int] = [:]
    package var postTaskStates: [String: Int] = [:]
    package var billed = 0
    package var billedTwice: [String] = []
    package var countsAgree = false
    package var alertsDelivered = 0
    package var problems: [String] = []
    package var logs: String?

    package var passed: Bool { problems.isEmpty }

    /// The report, one figure a line.
    package var text: String {
        var lines = [
            "requests: \(requests), \(inFlightAtMigrate) in flight and \(completedBeforeMigrate) completed when this release's migrate began",
            "this release's migrate beside the previous workers: \(String(format: "%.2f", migrateSeconds)) s; "
                + migrateOutput.split(separator: "\n").filter { $0.hasPrefix("applied") }.map { String($0.dropFirst(8)) }.joined(separator: ", "),
            "state changes by the previous workers in the 5 s after it: "
                + changesByPreviousAfterMigrate.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                + "; previous workers that exited on their own: \(previousExitedOnTheirOwn)"
                + (previousFailuresAfterMigrate.isEmpty ? "" : "; their failures: " + previousFailuresAfterMigrate.joined(separator: "; ")),
            "unfinished at the hand-over (one previous worker killed, the others stopped): \(unfinishedAtHandOver)",
            "after this release's workers: requests \(endStates.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); "
                + "post-tasks \(postTaskStates.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); alerts delivered \(alertsDelivered)",
            "billed: \(billed) detections for \(requests) requests; media billed twice: \(billedTwice.count)",
            "kept counts agree with count(*): \(countsAgree ? "yes" : "no")",
        ]
        lines += problems.map { "PROBLEM \($0)" }
        if let logs { lines.append("logs: \(logs)") }
        lines.append(passed ? "the upgrade lost nothing and billed nothing twice" : "the upgrade check found problems")
        return lines.joined(separator: "\n")
    }
}

/// A check that could not be set up or carried out.
package struct UpgradeCheckError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}

/// An alert webhook that accepts every delivery and counts them.
private struct AlertSink: Sendable {
    let url: String
    let server: InProcessServer
    private let received: DeliveryCount

    static func start() async throws -> AlertSink {
        let received = DeliveryCount()
        let router = Router()
        router.post("/alerts") { _, _ -> Response in
            received.add()
            return Response(status: .ok)
        }
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: Logger(label: "upgrade-check-sink", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let server = InProcessServer(application)
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        return AlertSink(url: "http://127.0.0.1:\(port)/alerts", server: server, received: received)
    }

    var deliveries: Int { received.value }

    func stop() async { await server.stop(within: .seconds(5)) }
}

/// How many deliveries the sink accepted.
private final class DeliveryCount: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
