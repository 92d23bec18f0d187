import AsyncHTTPClient
import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import NIOCore
import Postgres
import ResembleDetect
import Testing

/// One sample of a Prometheus text exposition.
struct PrometheusSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A strict reader of the Prometheus text format (version 0.0.4): every line is a `# HELP`, a `# TYPE` or a
/// sample whose metric family was typed before it; anything else fails the parse.
enum PrometheusText {
    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    static func parse(_ text: String) throws -> [PrometheusSample] {
        var types: [String: String] = [:]
        var samples: [PrometheusSample] = []
        let namePattern = /[a-zA-Z_:][a-zA-Z0-9_:]*/
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, (try? namePattern.wholeMatch(in: parts[2])) != nil,
                      ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3])
                else { throw ParseError(description: "bad TYPE line: \(line)") }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("# ") { continue }
            guard let match = try /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$/.wholeMatch(in: line) else {
                throw ParseError(description: "not a sample line: \(line)")
            }
            let name = String(match.1)
            let family = ["_bucket", "_sum", "_count"].reduce(name) { family, suffix in
                family.hasSuffix(suffix) && types[family] == nil ? String(family.dropLast(suffix.count)) : family
            }
            guard types[family] != nil else { throw ParseError(description: "sample before its TYPE: \(line)") }
            var labels: [String: String] = [:]
            if let body = match.2, !body.isEmpty {
                guard (try? /(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)+/.wholeMatch(in: body)) != nil else {
                    throw ParseError(description: "bad labels: \(line)")
                }
                for label in body.matches(of: /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/) {
                    labels[String(label.1)] = String(label.2)
                }
            }
            let text = String(match.3)
            guard let value = Double(text) ?? ["+Inf": .infinity, "-Inf": -.infinity, "NaN": .nan][text] else {
                throw ParseError(description: "bad value: \(line)")
            }
            samples.append(PrometheusSample(name: name, labels: labels, value: value))
        }
        return samples
    }
}

extension [PrometheusSample] {
    /// The sum of the samples named `name` whose labels include `labels`.
    func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }.map(\.value).reduce(0, +)
    }

    func has(_ name: String) -> Bool { contains { $0.name == name } }
}

@Suite("/metrics of a real worker process", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct MetricsTests {
    @Test func aScrapeDuringAndAfterARunHasEverySeriesWithPlausibleValues() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        let simulator = try await DetectSimulator.startForTest(configuration: .init(
            latency: .milliseconds(300),
            faults: FaultInjection(serverErrorRate: 0.3, rateLimitRate: 0.1, retryAfterSeconds: 1, endpoints: ["POST /detect"]),
            seed: 7
        ))
        let port = try LoopbackPort.free()
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, max_attempts, queue)
            SELECT 'https://cdn.example.com/' || CASE WHEN n % 2 = 0 THEN 'fake' ELSE 'real' END || '-' || n || '.wav',
                   (ARRAY['callback', 'poll', 'sync', 'callback'])[n % 4 + 1], 20, CASE WHEN n <= 5 THEN 'live' ELSE 'default' END
            FROM generate_series(1, 20) AS n
            """)
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!),
            "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_HTTP_PORT": "\(port)",
            "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)", "DETECTQ_CALLBACK_TIMEOUT": "2", "DETECTQ_API_RATE_LIMIT": "10",
            "DETECTQ_POLL_INTERVAL": "0.3", "DETECTQ_RETRY_BASE_SECONDS": "0.2", "DETECTQ_RETRY_MAX_SECONDS": "1",
            "DETECTQ_WORKER_ID": "metrics-worker",
        ])
        _ = try await worker.waitForLine(containing: "worker started")

        do {
            try await waitFor(pool, "SELECT count(*) FROM detectq.requests WHERE state <> 'queued'", atLeast: 5)
        } catch {
            // Once, under the stress run's load, this worker claimed nothing in 120 s: its own account, if it comes back.
            Issue.record("the worker claimed fewer than 5; its output:\n\(worker.output.suffix(8_000))")
            throw error
        }
        let during = try PrometheusText.parse(try await scrape(port))
        #expect(during.has("detectq_requests_in_flight"))
        #expect(during.filter { $0.name == "detectq_queue_depth" }.count == 14, "every state of each queue is reported")
        #expect(during.sum("detectq_queue_depth") == 20)

        try await waitFor(pool, "SELECT count(*) FROM detectq.requests WHERE state = 'completed'", atLeast: 20)
        try await waitFor(pool, "SELECT count(*) FROM detectq.post_tasks WHERE state = 'completed'", atLeast: 10)
        let text = try await scrape(port)
        let after = try PrometheusText.parse(text)
        // A snapshot held open, and three transactions since: the horizon's gauges name its age.
        let snapshot = try await PostgresConnection.connect(configuration)
        try await snapshot.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try await snapshot.query("SELECT count(*) FROM detectq.requests")
        for _ in 0..<3 { try await pool.query("SELECT txid_current()") }
        let held = try PrometheusText.parse(try await scrape(port))
        try await snapshot.query("COMMIT")
        await snapshot.close()
        #expect(await worker.stop() == 0)
        let stats = await simulator.state.snapshot()
        await simulator.stop()

        #expect(after.sum("detectq_request_transitions_total", ["from": "queued", "to": "submitting"]) == 20)
        #expect(after.sum("detectq_request_transitions_total", ["to": "completed"]) == 20)
        let retried = after.sum("detectq_request_transitions_total", ["from": "submitting", "to": "retrying"])
        #expect(retried > 0 && retried == after.sum("detectq_request_retries_total"))
        #expect(after.sum("detectq_request_retries_total", ["cause": "server_error"]) == Double(stats.injectedServerErrors))
        // A 429 created nothing and spends no attempt: it pauses the fleet, and the same attempt asks again.
        #expect(stats.injectedRateLimits > 0)
        #expect(after.sum("detectq_request_retries_total", ["cause": "rate_limited"]) == 0)
        #expect(after.sum("detectq_api_requests_total", ["endpoint": "POST /detect", "status": "503"]) == Double(stats.injectedServerErrors))
        #expect(after.sum("detectq_api_requests_total", ["endpoint": "POST /detect"]) == Double(stats.requestsByEndpoint["POST /detect"] ?? -1))
        #expect(after.sum("detectq_api_request_duration_seconds_count", ["endpoint": "POST /detect"])
            == after.sum("detectq_api_requests_total", ["endpoint": "POST /detect"]))
        #expect(after.sum("detectq_api_requests_total", ["endpoint": "GET /detect/{uuid}"]) > 0)
        #expect(after.sum("detectq_callbacks_received_total", ["outcome": "accepted"]) > 0)
        #expect(after.sum("detectq_claim_batch_size_sum", ["kind": "requests"]) >= 20)
        #expect(after.sum("detectq_claim_batch_size_count", ["kind": "requests"]) >= 1)
        #expect(after.sum("detectq_rate_limit_waits_total") > 0, "20 requests and their retries at 10/s wait for slots")
        #expect(after.sum("detectq_rate_limit_pauses_total") == Double(stats.injectedRateLimits))
        #expect(after.sum("detectq_post_tasks_total", ["processor": "alert.pg_notify", "outcome": "done"]) == 10)
        #expect(after.sum("detectq_fakes_found_total") == 10)
        #expect(after.sum("detectq_queue_depth", ["state": "completed"]) == 20)
        #expect(after.sum("detectq_queue_depth", ["state": "queued"]) == 0)
        #expect(after.sum("detectq_queue_depth", ["queue": "live", "state": "completed"]) == 5)
        #expect(after.sum("detectq_claims_total", ["queue": "live"]) >= 5)
        #expect(after.sum("detectq_claims_total") == after.sum("detectq_request_transitions_total", ["to": "submitting"]))
        #expect(after.sum("detectq_detections_billed_total", ["queue": "live"]) == 5)
        #expect(after.sum("detectq_detections_billed_total") == 20, "each detection billed once, whichever way its answer came")
        #expect(after.sum("detectq_requests_in_flight") == 0)
        #expect(after.has("detectq_oldest_claimable_age_seconds"))
        #expect(held.sum("detectq_xmin_horizon_age_transactions") >= 3, "three transactions began after the snapshot")
        #expect(held.has("detectq_xmin_horizon_held_seconds") && held.has("detectq_requests_dead_row_versions"))
        #expect(held.sum("detectq_claim_index_bytes") >= 8_192, "the claim index has at least its metapage")
        #expect(after.sum("detectq_post_task_depth", ["state": "completed"]) >= 10)
        #expect(text.contains("# TYPE detectq_api_request_duration_seconds histogram"))
    }

    @Test func reusedVerdictsAreCountedOnMetricsAndInStatus() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(50)))
        let port = try LoopbackPort.free()
        let databaseURL = try TestDatabase.connectionURI(database: configuration.database!)
        let hash = String(repeating: "e", count: 64)
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, media_sha256) VALUES ('https://cdn.example.com/fake-once.mp4', 'sync', \(hash))
            """)
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": databaseURL, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_HTTP_PORT": "\(port)",
            "DETECTQ_WORKER_ID": "reuse-worker",
        ])
        _ = try await worker.waitForLine(containing: "worker started")
        do {
            try await waitFor(pool, "SELECT count(*) FROM detectq.requests WHERE state = 'completed'", atLeast: 1)
        } catch {
            // Once, under the stress run's load, the first request did not complete in 120 s: its account, if it comes back.
            let row = try? await pool.query("SELECT state::text AS state, attempt, error_message FROM detectq.requests")
                .first.map { "\(try $0.decode("state", as: String.self)), attempt \(try $0.decode("attempt", as: Int.self)), "
                    + "\(try $0.decode("error_message", as: String?.self) ?? "no error") " }
            Issue.record("the first request did not complete: \(row ?? "unread"); the worker's output:\n\(worker.output.suffix(8_000))")
            throw error
        }
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, media_sha256)
            SELECT 'https://mirror.example.com/copy-' || n || '.mp4', 'sync', \(hash) FROM generate_series(1, 3) AS n
            """)
        try await waitFor(pool, "SELECT count(*) FROM detectq.requests WHERE state = 'completed'", atLeast: 4)
        let metrics = try PrometheusText.parse(try await scrape(port))
        #expect(await worker.stop() == 0)
        await simulator.stop()
        #expect(metrics.sum("detectq_detections_reused_total") == 3)
        #expect(metrics.sum("detectq_detections_billed_total") == 1, "one detection for four requests")

        let environment = ["DATABASE_URL": databaseURL]
        let text = try await DetectqExecutable.run(["status"], environment: environment)
        #expect(text.standardOutput.contains("identical media: 3 reused today (not sent to the API), 0 waiting for one in flight"), "\(text.standardOutput)")
        let json = try await DetectqExecutable.run(["status", "--json"], environment: environment)
        let report = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.standardOutput.utf8))
        #expect(report["reused_today"] == .number(3))
        await pool.close()
    }

    @Test func theParserRejectsWhatIsNotPrometheusText() throws {
        #expect(throws: PrometheusText.ParseError.self) { try PrometheusText.parse("no_type_declared 1\n") }
        #expect(throws: PrometheusText.ParseError.self) { try PrometheusText.parse("# TYPE a counter\na{x=1} 1\n") }
        #expect(throws: PrometheusText.ParseError.self) { try PrometheusText.parse("# TYPE a counter\na one\n") }
        #expect(try PrometheusText.parse("# TYPE a counter\na{x=\"1\",y=\"q\\\"\"} 2\n") == [
            PrometheusSample(name: "a", labels: ["x": "1", "y": "q\\\""], value: 2),
        ])
    }

    private func scrape(_ port: Int) async throws -> String {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(10))
        #expect(response.status.code == 200)
        #expect(response.headers.first(name: "Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        return String(buffer: try await response.body.collect(upTo: 1 << 22))
    }

    private func waitFor(_ pool: PostgresConnectionPool, _ sql: String, atLeast expected: Int) async throws {
        try await waitUntil("\(expected) from \(sql)") {
            try await pool.query(PostgresQuery(sql: sql.replacingOccurrences(of: "count(*)", with: "count(*) AS n"), parameters: []))[0]
                .decode("n", as: Int.self) >= expected
        }
    }
}
