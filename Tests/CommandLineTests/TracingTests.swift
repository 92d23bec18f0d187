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

    /// The spans in OTLP JSON export requests, read as the OTLP specification writes them: trace and span ids
    /// are hex (32 and 16 digits), not the base64 of the plain protobuf JSON mapping; the OpenTelemetry Collector
    /// answers 400 to anything else, and so does this reading (it throws).
    static func spans(inJSON deliveries: [HTTPRecorder.Delivery]) throws -> [ReceivedSpan] {
        func hex(_ value: Any?, digits: Int, _ field: String) throws -> String {
            guard let text = value as? String, !text.isEmpty else { return "" }
            guard text.count == digits, text.allSatisfy(\.isHexDigit) else {
                throw TestSetupError("\(field) \(text) is not \(digits) hex digits, as OTLP/JSON requires")
            }
            return text.lowercased()
        }
        func value(_ any: Any?) -> String {
            guard let object = any as? [String: Any], let (_, inner) = object.first else { return "" }
            return "\(inner)"
        }
        var spans: [ReceivedSpan] = []
        for delivery in deliveries where delivery.path.hasSuffix("/v1/traces") {
            #expect(delivery.headers["content-type"] == "application/json")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any])
            for resource in body["resourceSpans"] as? [[String: Any]] ?? [] {
                for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                    for span in scope["spans"] as? [[String: Any]] ?? [] {
                        var attributes: [String: String] = [:]
                        for attribute in span["attributes"] as? [[String: Any]] ?? [] {
                            if let key = attribute["key"] as? String { attributes[key] = value(attribute["value"]) }
                        }
                        spans.append(ReceivedSpan(
                            traceID: try hex(span["traceId"], digits: 32, "traceId"), spanID: try hex(span["spanId"], digits: 16, "spanId"),
                            parentSpanID: try hex(span["parentSpanId"], digits: 16, "parentSpanId"),
                            name: span["name"] as? String ?? "", kind: (span["kind"] as? Int) ?? 0, attributes: attributes
                        ))
                    }
                }
            }
        }
        return spans
    }

    /// The spans in OTLP protobuf export requests (`ExportTraceServiceRequest`), decoded from the wire format.
    static func spans(inProtobuf deliveries: [HTTPRecorder.Delivery]) throws -> [ReceivedSpan] {
        var spans: [ReceivedSpan] = []
        for delivery in deliveries where delivery.path.hasSuffix("/v1/traces") {
            #expect(delivery.headers["content-type"] == "application/x-protobuf")
            for resource in try ProtobufFields(delivery.body).messages(1) {
                for scope in try ProtobufFields(resource).messages(2) {
                    for span in try ProtobufFields(scope).messages(2) {
                        let fields = try ProtobufFields(span)
                        var attributes: [String: String] = [:]
                        for attribute in fields.messages(9) {
                            let pair = try ProtobufFields(attribute)
                            guard let key = pair.string(1), let value = pair.messages(2).first else { continue }
                            let any = try ProtobufFields(value)
                            attributes[key] = any.string(1) ?? any.varint(2).map { $0 != 0 ? "true" : "false" } ?? any.varint(3).map { "\(Int64(bitPattern: $0))" } ?? ""
                        }
                        func hex(_ field: Int) -> String { fields.bytes(field).map { $0.map { String(format: "%02x", $0) }.joined() } ?? "" }
                        spans.append(ReceivedSpan(
                            traceID: hex(1), spanID: hex(2), parentSpanID: hex(4), name: fields.string(5) ?? "",
                            kind: Int(fields.varint(6) ?? 0), attributes: attributes
                        ))
                    }
                }
            }
        }
        return spans
    }

    /// What one worker exported of three requests (a traced poll, a traced fake, an untraced one).
    struct Exported {
        let spans: [ReceivedSpan]
        let ids: [Int]
        let text: String
        let output: String
        let status: Int32
    }

    static let pollTrace = "4bf92f3577b34da6a3ce929d0e0e4736", producerSpan = "00f067aa0ba902b7"
    static let fakeTrace = "0af7651916cd43dd8448eb211c80319c"
    static let token = "trace-test-token-" + UUID().uuidString

    /// Runs a worker exporting over `otlpProtocol` until every span of the three requests has arrived.
    static func export(over otlpProtocol: String) async throws -> Exported {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        // A detection takes 300 ms, so the poll-mode request is polled for.
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(300)))
        let receiver = try await HTTPRecorder.start()
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
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.baseURL, "OTEL_EXPORTER_OTLP_PROTOCOL": otlpProtocol,
            "OTEL_SERVICE_NAME": "detectq-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100",
        ])
        try await waitUntil("the three requests complete and the fake's alert is delivered") {
            try await pool.query("""
                SELECT (SELECT count(*) FROM detectq.requests WHERE state = 'completed')
                     + (SELECT count(*) FROM detectq.post_tasks WHERE processor = 'alert.pg_notify' AND state = 'completed') AS n
                """)[0].decode("n", as: Int.self) == 4
        }
        let wanted: Set = ["detectq.claim", "detectq.submit", "POST /detect", "GET /detect/{uuid}", "detectq.wait", "detectq.complete"]
        let spans = try await waitFor("every span of the requests is exported over \(otlpProtocol)") { () -> [ReceivedSpan]? in
            let spans = otlpProtocol == "http/json" ? try Self.spans(inJSON: receiver.deliveries) : try Self.spans(inProtobuf: receiver.deliveries)
            let poll = Set(spans.filter { $0.traceID == pollTrace }.map(\.name))
            let fake = Set(spans.filter { $0.traceID == fakeTrace }.map(\.name))
            let untraced = Set(spans.filter { $0.attributes["detectq.request_id"] == "\(ids[2])" }.map(\.name))
            let exported = wanted.isSubset(of: poll) && fake.contains("detectq.post_process")
                && untraced.isSuperset(of: ["detectq.claim", "detectq.submit", "detectq.complete"])
            return exported ? spans : nil
        }
        let output = worker.output
        let status = await worker.stop()
        let text = receiver.deliveries.map(\.text).joined()
        await receiver.stop()
        await pool.close()
        return Exported(spans: spans, ids: ids, text: text, output: output, status: status)
    }

    @Test(arguments: ["http/json", "http/protobuf"])
    func eachRequestsSpansContinueTheProducersTraceAndLogsCarryItsIDs(otlpProtocol: String) async throws {
        let exported = try await Self.export(over: otlpProtocol)
        let (spans, ids) = (exported.spans, exported.ids)
        #expect(exported.status == 0)

        let poll = spans.filter { $0.traceID == Self.pollTrace }
        for span in poll where span.name.hasPrefix("detectq.") {
            #expect(span.attributes["detectq.request_id"] == "\(ids[0])", "\(span.name) names its request")
            #expect(span.parentSpanID == Self.producerSpan, "\(span.name) is a child of the producer's span")
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

        let alert = try #require(spans.first { $0.traceID == Self.fakeTrace && $0.name == "detectq.post_process" })
        #expect(alert.attributes["detectq.processor"] == "alert.pg_notify" && alert.attributes["detectq.request_id"] == "\(ids[1])")

        let untraced = spans.filter { $0.attributes["detectq.request_id"] == "\(ids[2])" }
        #expect(Set(untraced.map(\.traceID)).count == 1, "a request without traceparent still has one trace of its own")
        #expect(Set(untraced.map(\.name)).isSuperset(of: ["detectq.claim", "detectq.submit", "detectq.complete"]))

        #expect(exported.text.contains("detectq-under-test"), "OTEL_SERVICE_NAME names the service")
        #expect(!exported.text.contains(Self.token), "no span carries the API token")
        let acceptedLine = exported.output.split(separator: "\n").first { $0.contains("accepted by the API") && $0.contains("\"request_id\":\"\(ids[0])\"") }
        #expect(acceptedLine?.contains(Self.pollTrace) == true, "the log line carries the trace id: \(acceptedLine.map(String.init) ?? exported.output)")
    }

    @Test func theSameSpansGoOutOverJSONAsOverProtobuf() async throws {
        let json = try await Self.export(over: "http/json")
        let protobuf = try await Self.export(over: "http/protobuf")
        /// A span as both runs can name it: its producer's trace (or none), its name and whether the producer's span is its parent.
        func shapes(_ exported: Exported) -> [String] {
            exported.spans.filter { [Self.pollTrace, Self.fakeTrace].contains($0.traceID) }
                .map { "\($0.traceID) \($0.name) kind \($0.kind) \($0.parentSpanID == Self.producerSpan ? "child of the producer" : "nested")" }
                .sorted()
        }
        #expect(Set(shapes(json)) == Set(shapes(protobuf)), "json \(shapes(json))\nprotobuf \(shapes(protobuf))")
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

/// The fields of one protobuf message, read from the wire format as the OTLP `.proto` files number them: enough
/// to decode an `ExportTraceServiceRequest` without generated code.
struct ProtobufFields {
    private var varints: [Int: [UInt64]] = [:]
    private var lengthDelimited: [Int: [[UInt8]]] = [:]

    init(_ bytes: [UInt8]) throws {
        var index = 0
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.count, shift < 64 else { throw TestSetupError("a protobuf varint runs past its message") }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while index < bytes.count {
            let tag = try varint()
            let field = Int(tag >> 3)
            switch tag & 7 {
            case 0: varints[field, default: []].append(try varint())
            case 1: index += 8
            case 2:
                let length = Int(try varint())
                guard index + length <= bytes.count else { throw TestSetupError("a protobuf field runs past its message") }
                lengthDelimited[field, default: []].append(Array(bytes[index..<index + length]))
                index += length
            case 5: index += 4
            default: throw TestSetupError("protobuf wire type \(tag & 7) is not one OTLP uses")
            }
        }
    }

    func messages(_ field: Int) -> [[UInt8]] { lengthDelimited[field] ?? [] }
    func bytes(_ field: Int) -> [UInt8]? { lengthDelimited[field]?.first }
    func string(_ field: Int) -> String? { bytes(field).map { String(decoding: $0, as: UTF8.self) } }
    func varint(_ field: Int) -> UInt64? { varints[field]?.first }
}
