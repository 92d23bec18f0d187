import DetectSimulator
import ResembleDetect
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Postgres
import Testing

/// Real `detectq worker` processes, killed and stopped from outside.
@Suite("detectq worker processes: kill -9 and SIGTERM", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct WorkerProcessTests {
    struct Setup {
        let configuration: PostgresConfiguration
        let uri: String
        let pool: PostgresConnectionPool
        let simulator: DetectSimulator

        static func make(latency: Duration) async throws -> Setup {
            let configuration = try await TestDatabase.createMigratedDatabase()
            return Setup(
                configuration: configuration, uri: try TestDatabase.connectionURI(database: configuration.database!),
                pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 2),
                simulator: try await DetectSimulator.startForTest(configuration: .init(latency: latency))
            )
        }

        func worker(_ id: String, extra: [String: String] = [:]) async throws -> DetectqProcess {
            let port = try LoopbackPort.free()
            return try await DetectqProcess.start(["worker"], environment: [
                "DATABASE_URL": uri, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": id,
                "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_LEASE_SECONDS": "2", "DETECTQ_POLL_INTERVAL": "0.3",
                "DETECTQ_RETRY_BASE_SECONDS": "0.2", "DETECTQ_RETRY_MAX_SECONDS": "1", "DETECTQ_SHUTDOWN_GRACE_SECONDS": "10",
            ].merging(extra) { $1 })
        }

        func count(_ condition: String) async throws -> Int {
            try await pool.query(PostgresQuery(sql: "SELECT count(*) AS n FROM detectq.requests WHERE \(condition)", parameters: []))[0]
                .decode("n", as: Int.self)
        }

        func waitFor(_ condition: String, count expected: Int) async throws {
            try await waitUntil("\(expected) requests where \(condition)") { try await count(condition) >= expected }
        }
    }

    @Test func aKilledWorkersRequestsAreFinishedByAnotherAndNoneWithARemoteUUIDIsSubmittedTwice() async throws {
        let setup = try await Setup.make(latency: .seconds(60))
        try await setup.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode)
            SELECT 'https://cdn.example.com/' || mode || '-' || n || '.wav', mode
            FROM generate_series(1, 8) AS n, unnest(ARRAY['sync', 'poll']) AS mode
            """)
        let first = try await setup.worker("doomed")
        do {
            try await setup.waitFor("wait_mode = 'poll' AND remote_uuid IS NOT NULL", count: 8)
            try await setup.waitFor("wait_mode = 'sync' AND submit_started_at IS NOT NULL", count: 8)
        } catch {
            Issue.record("\(error); the worker printed:\n\(first.output.suffix(3000))")
            await first.stop(signal: SIGKILL)
            return
        }
        #expect(try await setup.count("state = 'completed'") == 0, "killed while every request is in flight")
        let acceptedBeforeKill = try await setup.pool.query("SELECT media_url FROM detectq.requests WHERE remote_uuid IS NOT NULL")
            .map { try $0.decode("media_url", as: String.self) }
        await first.stop(signal: SIGKILL)
        await setup.simulator.state.setLatency(.milliseconds(300))
        await setup.simulator.state.fastForward()

        let second = try await setup.worker("survivor")
        try await setup.waitFor("state = 'completed'", count: 16)
        #expect(await second.stop() == 0)

        let stats = await setup.simulator.state.snapshot()
        #expect(acceptedBeforeKill.count == 8)
        for url in acceptedBeforeKill {
            #expect(stats.submissionsByMedia[url] == 1, "\(url) had a remote_uuid and must not be submitted again")
        }
        let takenOver = try await setup.count("wait_mode = 'sync' AND attempt = 2")
        #expect(takenOver == 8, "the sync requests the dead worker was waiting on were taken over after its lease expired")
        let rescuedBy = try await setup.pool.query("""
            SELECT DISTINCT worker_id FROM detectq.request_events WHERE to_state = 'completed'
            """).map { try $0.decode("worker_id", as: String?.self) }
        #expect(rescuedBy == ["survivor"])
        print("kill -9: 8 accepted requests finished by polling, each submitted once; 8 sync requests resubmitted (attempt 2), the documented window of Prefer: wait")
        await setup.simulator.stop()
    }

    @Test func aWorkerKilledMidDeliveryHasItsAlertRescuedAndDeliveredWithTheSameEventID() async throws {
        let setup = try await Setup.make(latency: .zero)
        let sink = try await HTTPRecorder.start(stallFirst: 1, stall: .seconds(60))
        let alerts = ["DETECTQ_ALERT_WEBHOOK_URL": sink.baseURL + "/hook"]
        try await setup.pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/fake-alert.wav')")
        let first = try await setup.worker("doomed-alerter", extra: alerts)
        let stalled = await sink.deliveries(count: 1)
        #expect(stalled.count == 1, "the first delivery reached the sink and hangs there")
        await first.stop(signal: SIGKILL)

        let second = try await setup.worker("rescuer", extra: alerts)
        try await waitUntil("the rescued alert is delivered") {
            try await setup.pool.query("""
                SELECT count(*) AS n FROM detectq.post_tasks WHERE processor = 'alert.webhook' AND state = 'completed'
                """)[0].decode("n", as: Int.self) > 0
        }
        let deliveries = sink.deliveries
        #expect(await second.stop() == 0)
        #expect(deliveries.count == 2)
        let ids = Set(deliveries.compactMap { $0.header("X-Detectq-Event-Id") })
        #expect(ids.count == 1, "the rescued delivery repeats the same event id: \(ids)")
        let task = try await setup.pool.query("""
            SELECT state::text AS state, attempt FROM detectq.post_tasks WHERE processor = 'alert.webhook'
            """)[0]
        #expect(try task.decode("state", as: String.self) == "completed" && task.decode("attempt", as: Int.self) == 2)
        await sink.stop()
        await setup.simulator.stop()
    }

    @Test func sigtermDrainsTheRequestsInFlightAndExitsCleanly() async throws {
        let setup = try await Setup.make(latency: .milliseconds(1500))
        try await setup.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode) SELECT 'https://cdn.example.com/t' || n || '.wav', 'sync'
            FROM generate_series(1, 30) AS n
            """)
        let worker = try await setup.worker("graceful", extra: ["DETECTQ_CONCURRENCY": "10"])
        try await setup.waitFor("state = 'submitting' AND submit_started_at IS NOT NULL", count: 5)
        let stopping = ContinuousClock.now
        let status = await worker.stop(signal: SIGTERM)
        let took = ContinuousClock.now - stopping
        #expect(status == 0)
        #expect(took < .seconds(12), "exits within the grace period: \(took)")
        #expect(try await setup.count("state = 'submitting'") == 0, "nothing is left holding a lease")
        #expect(try await setup.count("state = 'queued' AND attempt > 0") == 0, "released requests did not spend an attempt")

        let next = try await setup.worker("successor")
        try await setup.waitFor("state = 'completed'", count: 30)
        #expect(await next.stop() == 0)
        let stats = await setup.simulator.state.snapshot()
        #expect(stats.submissions == 30, "nothing was lost and nothing was submitted twice")
        print("SIGTERM: exited 0 after \(took) with requests in flight; all 30 completed, 30 submissions")
        await setup.simulator.stop()
    }
}

@Suite("detectq worker refuses a bad configuration at start", .stopsWhatItStarts)
struct WorkerConfigurationProcessTests {
    @Test(arguments: [
        (["RESEMBLE_API_TOKEN": "tok-secret-8", "DETECTQ_CONCURRENCY": "many"], "DETECTQ_CONCURRENCY"),
        (["RESEMBLE_API_TOKEN": ""], "RESEMBLE_API_TOKEN"),
        (["RESEMBLE_API_TOKEN": "tok-secret-7", "DETECTQ_LOG_FORMAT": "xml"], "DETECTQ_LOG_FORMAT"),
        (["RESEMBLE_API_TOKEN": "tok-secret-9", "DATABASE_URL": "postgresql://u:pw-secret@127.0.0.1:1/x?connect_timeout=2"], "DATABASE_URL"),
    ])
    func oneLineNamingTheVariable(environment: [String: String], variable: String) async throws {
        let outcome = try await DetectqExecutable.run(["worker"], environment: environment.merging(["RESEMBLE_BASE_URL": ""]) { current, _ in current })
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(lines.first?.hasPrefix("detectq worker: \(variable) must be") == true, "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("secret"))
    }

    /// A schema older than the worker (its transition table lacks a change the worker's state machine makes)
    /// would refuse that change mid-run: the worker refuses to start instead, naming the change and the fix.
    @Test(.enabled(if: TestDatabase.isEnabled))
    func aSchemaThatWouldRefuseAChangeStopsTheWorkerAtStart() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        try await pool.query("DELETE FROM detectq.request_state_transitions WHERE from_state = 'retrying' AND to_state = 'awaiting_result'")
        await pool.close()
        let outcome = try await DetectqExecutable.run(["worker"], environment: [
            "DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!), "RESEMBLE_API_TOKEN": "tok-secret-2",
            "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2", "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())",
        ])
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(lines.first?.hasPrefix("detectq worker: DATABASE_URL must be") == true, "\(outcome.standardError)")
        #expect(outcome.standardError.contains("request retrying → awaiting_result") && outcome.standardError.contains("detectq migrate"))
    }

    /// Numbers that became durations by multiplying and converting, and trapped the process: each is now
    /// refused with a message naming its source, and the process exits with a status, not a signal.
    @Test(arguments: [
        (["simulate", "--latency", "1e300"], [:], "--latency"),
        (["simulate", "--purge-delay", "inf"], [:], "--purge-delay"),
        (["status", "--watch", "--interval", "1e300"], [:], "--interval"),
        (["chaos", "--fault-interval", "1e300"], [:], "--fault-interval"),
        (["chaos", "--rate", "1e-300"], [:], "--rate"),
        (["demo", "--latency", "nan"], [:], "--latency"),
        (["prune", "--older-than", "1e300d"], [:], "--older-than"),
        (["worker"], ["DETECTQ_PLUGINS_DIR": "/tmp", "DETECTQ_PLUGIN_TIMEOUT": "1e300"], "DETECTQ_PLUGIN_TIMEOUT"),
        (["worker"], ["DETECTQ_RETENTION_SLA": "infd"], "DETECTQ_RETENTION_SLA"),
        (["worker"], ["DETECTQ_LEASE_SECONDS": "1e300"], "DETECTQ_LEASE_SECONDS"),
    ] as [([String], [String: String], String)])
    func anAbsurdNumberIsRefusedNamingItsSourceNotATrap(arguments: [String], environment: [String: String], source: String) async throws {
        let outcome = try await DetectqExecutable.run(arguments, environment: environment.merging([
            "RESEMBLE_API_TOKEN": "tok-secret-1", "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2",
        ]) { current, _ in current })
        #expect([1, 64].contains(outcome.status), "an exit status, not a signal: \(outcome.status); \(outcome.standardError)")
        #expect(outcome.standardError.contains(source), "\(outcome.standardError)")
    }
}

@Suite("JSON logs carry no secret", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct JSONLogTests {
    @Test func aWorkerUnderFaultsLogsJSONWithoutTokensOrCallbackSecrets() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let uri = try TestDatabase.connectionURI(database: configuration.database!)
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let apiToken = "api-token-must-not-leak-7f3a"
        let simulator = try await DetectSimulator.startForTest(configuration: .init(
            requiredToken: apiToken, latency: .milliseconds(200),
            faults: .init(serverErrorRate: 0.3, dropRate: 0.1, lostCallbackRate: 0.3), seed: 7
        ))
        let uploader = DetectClient(configuration: .init(baseURL: simulator.baseURL, token: apiToken))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-log-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("FAKE voice".utf8).write(to: directory.appendingPathComponent("clip.wav"))
        var mediaToken = ""
        while mediaToken.isEmpty {
            mediaToken = (try? await uploader.secureUpload(try MediaFile(path: directory.appendingPathComponent("clip.wav").path)).token) ?? ""
        }
        try await uploader.shutdown()
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, max_attempts)
            SELECT 'https://cdn.example.com/' || n || '.wav', (ARRAY['sync', 'callback', 'poll'])[1 + n % 3], 30
            FROM generate_series(1, 12) n
            """)
        try await pool.query("INSERT INTO detectq.requests (media_token, max_attempts) VALUES (\(mediaToken), 30)")
        let port = try LoopbackPort.free()
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": uri, "RESEMBLE_BASE_URL": simulator.baseURL, "RESEMBLE_API_TOKEN": apiToken,
            "DETECTQ_LOG_FORMAT": "json", "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)",
            "DETECTQ_CALLBACK_TIMEOUT": "1", "DETECTQ_POLL_INTERVAL": "0.3", "DETECTQ_RETRY_BASE_SECONDS": "0.1",
            "DETECTQ_RETRY_MAX_SECONDS": "1",
        ])
        do {
            try await waitUntil("all 13 requests are completed") {
                try await pool.query("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self) == 13
            }
        } catch {
            // What did not complete, and why: each unfinished request's history, and the end of the worker's log.
            let unfinished = try await pool.query("""
                SELECT r.id, r.state::text AS state, r.wait_mode, r.attempt, r.locked_by, r.run_at::text AS run_at,
                       string_agg(e.at::text || ' ' || e.to_state::text || ' ' || coalesce(e.detail, ''), E'\\n  ' ORDER BY e.id) AS history
                FROM detectq.requests r JOIN detectq.request_events e ON e.request_id = r.id
                WHERE r.state <> 'completed' GROUP BY r.id
                """)
            for row in unfinished {
                print("unfinished: request \(try row.decode("id", as: Int.self)), \(try row.decode("state", as: String.self)), "
                    + "\(try row.decode("wait_mode", as: String.self)), attempt \(try row.decode("attempt", as: Int.self)), "
                    + "held by \(try row.decode("locked_by", as: String?.self) ?? "nobody"), due \(try row.decode("run_at", as: String.self))\n  "
                    + (try row.decode("history", as: String.self)))
            }
            print(worker.output.split(separator: "\n").suffix(40).joined(separator: "\n"))
            throw error
        }
        let output = worker.output
        #expect(await worker.stop() == 0)
        let lines = output.split(separator: "\n")
        #expect(lines.count > 5)
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["level"] != nil && object?["message"] != nil, "not a JSON log line: \(line)")
        }
        #expect(lines.contains { $0.contains("\"request_id\"") }, "lines about a request carry its id")
        #expect(!output.contains(apiToken), "the API token never appears")
        #expect(!output.contains(mediaToken), "the media token never appears")
        #expect(!output.contains("/callbacks/"), "no callback URL (and so no callback secret) appears")
        let stats = await simulator.state.snapshot()
        #expect(stats.injectedServerErrors + stats.injectedDrops > 0, "faults were injected while logging")
        try? FileManager.default.removeItem(at: directory)
        await simulator.stop()
        await pool.close()
    }
}
