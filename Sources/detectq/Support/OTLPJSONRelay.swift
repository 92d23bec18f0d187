import AsyncHTTPClient
import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import ServiceLifecycle

/// A relay on loopback between swift-otel's OTLP/HTTP exporter and the collector, for `http/json` alone.
///
/// swift-otel 1.6 writes the JSON export request with the plain protobuf JSON mapping, which renders `bytes`
/// fields as base64; the OTLP specification makes trace and span ids an exception (hex, case-insensitive), and
/// the OpenTelemetry Collector answers 400 to base64 ids. The exporter offers no hook for its encoding, so the
/// worker points it at this relay, which rewrites `traceId`, `spanId` and `parentSpanId` (in spans and in their
/// links) to lowercase hex and forwards the request to the real endpoint with the exporter's headers, answering
/// with the collector's status and body. The fix belongs upstream, in swift-otel's JSON encoding; the relay goes
/// when a release of it writes hex ids.
struct OTLPJSONRelay: Service {
    /// The real traces endpoint (`…/v1/traces`).
    let upstream: String
    /// The loopback port the exporter posts to.
    let port: Int
    let logger: Logger

    /// The endpoint the exporter is given instead of the collector's.
    var endpoint: String { "http://127.0.0.1:\(port)/v1/traces" }

    func run() async throws {
        let router = Router()
        let upstream = upstream
        router.post("/v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 << 20)
            let received = Data(body.readableBytesView)
            let rewritten = (try? Self.hexIDs(received)) ?? received
            var forwarded = HTTPClientRequest(url: upstream)
            forwarded.method = .POST
            for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
                forwarded.headers.add(name: field.name.rawName, value: field.value)
            }
            forwarded.body = .bytes(ByteBuffer(bytes: rewritten))
            let answer = try await HTTPClient.shared.execute(forwarded, timeout: .seconds(30))
            let answerBody = try await answer.body.collect(upTo: 4 << 20)
            var headers = HTTPFields()
            if let type = answer.headers.first(name: "Content-Type") { headers[.contentType] = type }
            return Response(status: .init(code: Int(answer.status.code)), headers: headers, body: .init(byteBuffer: answerBody))
        }
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger
        )
        try await application.run()
    }

    /// Headers that belong to one connection, not to the request: the relay's own connection sets them.
    static let hopByHop: Set<String> = ["host", "content-length", "connection", "transfer-encoding", "keep-alive"]

    /// The export request with every trace and span id of its spans and links as lowercase hex.
    static func hexIDs(_ json: Data) throws -> Data {
        guard var request = try JSONSerialization.jsonObject(with: json) as? [String: Any] else { return json }
        request["resourceSpans"] = (request["resourceSpans"] as? [[String: Any]])?.map { resource in
            var resource = resource
            resource["scopeSpans"] = (resource["scopeSpans"] as? [[String: Any]])?.map { scope in
                var scope = scope
                scope["spans"] = (scope["spans"] as? [[String: Any]])?.map { span in
                    var span = hexIDs(of: span)
                    span["links"] = (span["links"] as? [[String: Any]])?.map(hexIDs(of:))
                    return span
                }
                return scope
            }
            return resource
        }
        return try JSONSerialization.data(withJSONObject: request)
    }

    /// One span or link with its ids as hex; an id already hex (of the right length) is kept.
    private static func hexIDs(of object: [String: Any]) -> [String: Any] {
        var object = object
        for (key, bytes) in [("traceId", 16), ("spanId", 8), ("parentSpanId", 8)] {
            guard let text = object[key] as? String, !text.isEmpty else { continue }
            if text.count == bytes * 2, text.allSatisfy(\.isHexDigit) {
                object[key] = text.lowercased()
            } else if let data = Data(base64Encoded: text), data.count == bytes {
                object[key] = data.map { String(format: "%02x", $0) }.joined()
            }
        }
        return object
    }
}
