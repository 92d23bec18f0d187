import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Postgres
import Testing

/// `detectq worker` exporting OpenTelemetry traces over OTLP/HTTP (REFERENCE.md section 7) to a small receiver
/// of the test's own, which records what it is sent.
@Suite("OpenTelemetry traces over OTLP/HTTP", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct TracingTests {
    /// One span as the receiver got it.
    struct ReceivedSpan {
        let traceID: String
        let spanID: String
        let parentSpanID: String
        let name: String
        let kind: Int
        let attributes: [String: String]
    }

    /// The spans in OTLP JSON export requests; ids as hex, whichever of hex or base64 the exporter wrote.
    static func spans(in deliveries: [HTTPRecorder.Delivery]) throws -> [ReceivedSpan] {
        func hex(_ value: Any?) -> String {
            guard let text = value as? String, !text.isEmpty else { return "" }
            if text.count % 2 == 0, text.allSatisfy(\.isHexDigit), text.count == 32 || text.count == 16 { return text.lowercased() }
            return Data(base64Encoded: text).map { $0.map { String(format: "%02x", $0) }.joined() } ?? text
        }
        func value(_ any: Any?) -> String {
            guard let object = any as? [String: Any], let (_, inner) = object.first else { return "" }
            return "\(inner)"
        }
        var spans: [ReceivedSpan] = []
        for delivery in deliveries where delivery.path.hasSuffix("/v1/traces") {
            let body = try #require(try JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any])
            for resource in body["resourceSpans"] as? [[String: Any]] ?? [] {
                for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                    for span in scope["spans"] as? [[String: Any]] ?? [] {
                        var attributes: [String: String] = [:]
                        for attribute in span["attributes"] as? [[String: Any]] ?? [] {
                            if let key = attribute["key"] as? String { attributes[key] = value(attribute["value"]) }
                        }
                        spans.append(ReceivedSpan(
                            traceID: hex(span["traceId"]), spanID: hex(span["spanId"]), parentSpanID: hex(span["parentSpanId"]),
                            name: span["name"] as? String ?? "", kind: (span["kind"] as? Int) ?? 0, attributes: attributes
                        ))
                    }
                }
            }
        }
        return spans
    }

    @Test func eachRequestsSpansContinueTheProducersTraceAndLogsCarryItsIDs() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        // A detection takes 300 ms, so the poll-mode request is polled for.
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(300)))
        let receiver = try await HTTPRecorder.start()
        let token = "trace-test-token-" + UUID().uuidString
        let pollTrace = "4bf92f3577b34da6a3ce929d0e0e4736", producerSpan = "00f067aa0ba902b7"
        let fakeTrace = "0af7651916cd43dd8448eb211c80319c"
        let ids = try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, traceparent) VALUES
                ('https://cdn.example.com/traced-real.wav', 'poll', \("00-\(pollTrace)-\(producerSpan)-01")),
                ('https://cdn.example.com/traced-fake.wav', 'sync', \("00-\(fakeTrace)-\(producerSpan)-01")),
                ('https://cdn.example.com/untraced.wav', 'sync', NULL)
            RETURNING id
            """).map { try $0.decode("id", as: Int.self) }
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": try TestDatabase.connectionURI(database: try #require(configuration.database)),
            "RESEMBLE_BASE_URL": simulator.baseURL, "RESEMBLE_API_TOKEN": token, "DETECTQ_WORKER_ID": "traced",
            "DETECTQ_HTTP_PORT": "\(try LoopbackPort.free())", "DETECTQ_POLL_INTERVAL": "0.2", "DETECTQ_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.baseURL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_SERVICE_NAME": "detectq-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100",
        ])
        try await waitUntil("the three requests complete and the fake's alert is delivered") {
            try await pool.query("""
                SELECT (SELECT count(*) FROM detectq.requests WHERE state = 'completed')
                     + (SELECT count(*) FROM detectq.post_tasks WHERE processor = 'alert.pg_notify' AND state = 'completed') AS n
                """)[0].decode("n", as: Int.self) == 4
        }
        let wanted: Set = ["detectq.claim", "detectq.submit", "POST /detect", "GET /detect/{uuid}", "detectq.wait", "detectq.complete"]
        let spans = try await waitFor("every span of the requests is exported") { () -> [ReceivedSpan]? in
            let spans = try Self.spans(in: receiver.deliveries)
            let poll = Set(spans.filter { $0.traceID == pollTrace }.map(\.name))
            let fake = Set(spans.filter { $0.traceID == fakeTrace }.map(\.name))
            let untraced = Set(spans.filter { $0.attributes["detectq.request_id"] == "\(ids[2])" }.map(\.name))
            let exported = wanted.isSubset(of: poll) && fake.contains("detectq.post_process")
                && untraced.isSuperset(of: ["detectq.claim", "detectq.submit", "detectq.complete"])
            return exported ? spans : nil
        }
        let output = worker.output
        #expect(await worker.stop() == 0)

        let poll = spans.filter { $0.traceID == pollTrace }
        for span in poll where span.name.hasPrefix("detectq.") {
            #expect(span.attributes["detectq.request_id"] == "\(ids[0])", "\(span.name) names its request")
            #expect(span.parentSpanID == producerSpan, "\(span.name) is a child of the producer's span")
        }
        #expect(poll.first { $0.name == "GET /detect/{uuid}" } != nil, "the polls are HTTP client spans too")
        let call = try #require(poll.first { $0.name == "POST /detect" })
        #expect(call.kind == 3, "an HTTP client span (SPAN_KIND_CLIENT)")
        #expect(call.attributes["http.request.method"] == "POST")
        #expect(call.attributes["http.response.status_code"].flatMap(Int.init).map { (200..<300).contains($0) } == true)
        #expect(call.attributes["server.address"] == "127.0.0.1")
        #expect(call.attributes["url.full"]?.hasSuffix("/api/v2/detect") == true)
        let submit = try #require(poll.first { $0.name == "detectq.submit" })
        #expect(call.parentSpanID == submit.spanID, "the API call is inside the submission")
        #expect(poll.first { $0.name == "detectq.wait" }?.attributes["detectq.wait_mode"] == "poll")

        let alert = try #require(spans.first { $0.traceID == fakeTrace && $0.name == "detectq.post_process" })
        #expect(alert.attributes["detectq.processor"] == "alert.pg_notify" && alert.attributes["detectq.request_id"] == "\(ids[1])")

        let untraced = spans.filter { $0.attributes["detectq.request_id"] == "\(ids[2])" }
        #expect(Set(untraced.map(\.traceID)).count == 1, "a request without traceparent still has one trace of its own")
        #expect(Set(untraced.map(\.name)).isSuperset(of: ["detectq.claim", "detectq.submit", "detectq.complete"]))

        let exported = receiver.deliveries.map(\.text).joined()
        #expect(exported.contains("detectq-under-test"), "OTEL_SERVICE_NAME names the service")
        #expect(!exported.contains(token), "no span carries the API token")
        let acceptedLine = output.split(separator: "\n").first { $0.contains("accepted by the API") && $0.contains("\"request_id\":\"\(ids[0])\"") }
        #expect(acceptedLine?.contains(pollTrace) == true, "the log line carries the trace id: \(acceptedLine.map(String.init) ?? output)")
        await receiver.stop()
        await pool.close()
    }

    @Test func aProtocolThisBuildCannotExportStopsTheWorkerNamingTheVariable() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let outcome = try await DetectqExecutable.run(["worker"], environment: [
            "DATABASE_URL": try TestDatabase.connectionURI(database: try #require(configuration.database)),
            "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        ])
        #expect(outcome.status != 0)
        #expect(outcome.standardError.split(separator: "\n").count == 1, "\(outcome.standardError)")
        #expect(outcome.standardError.contains("OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or http/json"))
    }
}
