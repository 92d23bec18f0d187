import AsyncHTTPClient
import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import NIOCore
import NIOHTTP1
import Postgres
import Testing

/// The API token against every place detectq writes to, and the worker's HTTP port against every door
/// but its three, with real processes.
@Suite("Secrets stay out of every output; the worker's port opens three doors only", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct SecuritySurfaceTests {
    static let token = "api-token-surface-4e9d0c7b"
    static let wrongToken = "wrong-token-surface-8c1f2a"

    @Test func theTokenIsInNoLogErrorStatusMetricsOrRowAndNothingElseAnswers() async throws {
        let database = try await TestDatabase.createMigratedDatabase()
        let uri = try TestDatabase.connectionURI(database: database.database!)
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 1)
        let simulator = try await DetectSimulator.startForTest(configuration: .init(
            requiredToken: Self.token, faults: .init(serverErrorRate: 0.2), seed: 3
        ))
        let ids = try await pool.query("""
            INSERT INTO detectq.requests (media_url, media_path, media_token, wait_mode, max_attempts)
            VALUES ('https://cdn.example.com/fake-1.wav', NULL, NULL, 'sync', 20),
                   ('https://cdn.example.com/real-2.wav', NULL, NULL, 'poll', 20),
                   (NULL, '../../etc/passwd.wav', NULL, 'sync', 20),
                   (NULL, NULL, 'not-a-real-media-token', 'sync', 20)
            RETURNING id
            """).map { try $0.decode("id", as: Int.self) }
        let environment = ["DATABASE_URL": uri, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_POLL_INTERVAL": "0.2",
                           "DETECTQ_RETRY_BASE_SECONDS": "0.1", "DETECTQ_RETRY_MAX_SECONDS": "1"]

        let refused = try await DetectqProcess.start(["worker"], environment: environment.merging([
            "RESEMBLE_API_TOKEN": Self.wrongToken, "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())",
        ]) { $1 })
        let refusal = try? await refused.waitForLine(containing: "RESEMBLE_API_TOKEN")
        let refusedOutput = refused.output
        await refused.stop()
        #expect(refusal != nil, "the refused token is reported, naming its variable: \(refusedOutput)")
        #expect(!refusedOutput.contains(Self.wrongToken), "a refused token is not printed: \(refusedOutput)")

        let port = try LoopbackPort.free()
        let worker = try await DetectqProcess.start(["worker"], environment: environment.merging([
            "RESEMBLE_API_TOKEN": Self.token, "DETECTQ_HTTP_PORT": "\(port)",
        ]) { $1 })
        try await waitUntil("every request is finished") {
            try await pool.query("""
                SELECT count(*)::int8 AS n FROM detectq.requests WHERE state IN ('queued', 'submitting', 'retrying', 'awaiting_result')
                """)[0].decode("n", as: Int.self) == 0
        }
        let base = "http://127.0.0.1:\(port)"
        // Nothing below may leave the worker running if it throws.
        guard let metrics = try? await Self.fetch(.GET, base + "/metrics") else {
            await worker.stop()
            Issue.record("the worker's /metrics did not answer: \(worker.output)")
            return
        }
        #expect(metrics.status == 200 && metrics.body.contains("detectq_"))
        for door in ["/healthz", "/readyz", "/metrics"] {
            #expect(await (try? Self.fetch(.GET, base + door))?.status == 200, "\(door) answers")
        }
        let probes: [(HTTPMethod, String)] = [
            (.GET, "/"), (.GET, "/callbacks"), (.GET, "/callbacks/\(ids[0])/x"), (.DELETE, "/callbacks/\(ids[0])/x"),
            (.PUT, "/callbacks/\(ids[0])/x"), (.POST, "/healthz"), (.POST, "/metrics"), (.DELETE, "/metrics"),
            (.GET, "/admin"), (.GET, "/debug/pprof"), (.GET, "/.env"), (.GET, "/../../etc/passwd"), (.GET, "/%2e%2e/%2e%2e/etc/passwd"),
            (.OPTIONS, "/callbacks/1/x"), (.TRACE, "/"), (.GET, "/api/v2/detect"), (.GET, "/requests"), (.POST, "/requests"), (.GET, "/dashboard"),
        ]
        for (method, path) in probes {
            guard let answer = try? await Self.fetch(method, base + path) else {
                Issue.record("\(method) \(path) got no answer")
                continue
            }
            #expect((400..<500).contains(answer.status), "\(method) \(path) answered \(answer.status)")
            #expect(!answer.body.contains(Self.token))
        }
        let workerOutput = worker.output
        #expect(await worker.stop() == 0)

        let states = try await pool.query("SELECT state::text AS s, error_message FROM detectq.requests ORDER BY id")
            .map { (try $0.decode("s", as: String.self), try $0.decode("error_message", as: String?.self) ?? "") }
        #expect(states.map(\.0) == ["completed", "completed", "failed", "failed"], "\(states)")
        #expect(states[2].1.contains("DETECTQ_MEDIA_ROOT") && states[3].1.contains("media_token"), "\(states)")
        let rows = try await pool.query("""
            SELECT coalesce((SELECT string_agg(row_to_json(r)::text, ' ') FROM detectq.requests r), '')
                || coalesce((SELECT string_agg(row_to_json(e)::text, ' ') FROM detectq.request_events e), '')
                || coalesce((SELECT string_agg(row_to_json(t)::text, ' ') FROM detectq.post_tasks t), '') AS everything
            """)[0].decode("everything", as: String.self)
        var outputs = ["the worker's log": workerOutput, "/metrics": metrics.body, "the rows": rows]
        for arguments in [["status"], ["status", "--json"], ["show"] + ids.map(String.init), ["config", "check"]] {
            let outcome = try await DetectqExecutable.run(arguments, environment: environment.merging(["RESEMBLE_API_TOKEN": Self.token]) { $1 })
            outputs["detectq " + arguments.joined(separator: " ")] = outcome.standardOutput + outcome.standardError
        }
        for (place, text) in outputs {
            #expect(!text.isEmpty, "\(place) printed something to search")
            #expect(!text.contains(Self.token) && !text.contains(Self.wrongToken), "the API token appears in \(place)")
        }
        await simulator.stop()
        await pool.close()
    }

    /// Sends one request and returns its status and body.
    static func fetch(_ method: HTTPMethod, _ url: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if method == .POST || method == .PUT { request.body = .bytes(ByteBuffer(string: "{}")) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 4 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}
