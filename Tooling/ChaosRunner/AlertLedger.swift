import Crypto
import DetectSimulator
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import TextEncodings

/// A webhook that receives detectq's fake alerts during a chaos run and records every one it accepts. While
/// it is told to fail it answers some deliveries with 500 or cuts the connection, as a flaky sink would.
final class AlertLedger: Sendable {
    /// What the sink saw.
    struct Deliveries: Sendable {
        /// Accepted deliveries of `detection.fake`: request id → the event ids it arrived with.
        var eventIDsByRequest: [Int: [String]] = [:]
        /// The `fake_tracks` of the last accepted alert of each request.
        var fakeTracksByRequest: [Int: [String]] = [:]
        /// Deliveries refused on purpose.
        var injectedFailures = 0
        /// Deliveries whose `X-Detectq-Signature` did not verify, or whose body was not an alert.
        var rejected = 0
    }

    private actor Book {
        var deliveries = Deliveries()
        var failureRate = 0.0
        var random: SystemRandomNumberGenerator = .init()

        func setFailureRate(_ rate: Double) { failureRate = rate }

        /// Rolls the dice: true when this delivery should fail.
        func shouldFail() -> Bool {
            guard failureRate > 0, Double.random(in: 0..<1, using: &random) < failureRate else { return false }
            deliveries.injectedFailures += 1
            return true
        }

        func accept(_ alert: Alert) {
            deliveries.eventIDsByRequest[alert.requestID, default: []].append(alert.eventID)
            deliveries.fakeTracksByRequest[alert.requestID] = alert.fakeTracks
        }
        func reject() { deliveries.rejected += 1 }
    }

    let port: Int
    let secret: String
    private let book: Book
    private let server: InProcessServer

    private init(port: Int, secret: String, book: Book, server: InProcessServer) {
        self.port = port
        self.secret = secret
        self.book = book
        self.server = server
    }

    var url: String { "http://127.0.0.1:\(port)/alerts" }

    /// Starts the sink on a free loopback port; deliveries must be signed with `secret`.
    static func start(secret: String) async throws -> AlertLedger {
        let book = Book()
        let router = Router()
        router.post("/alerts") { request, _ -> Response in
            if await book.shouldFail() {
                return Bool.random()
                    ? Response(status: .internalServerError)
                    : Response(status: .ok, headers: [.contentLength: "64"], body: ResponseBody { _ in throw CancellationError() })
            }
            let body = try await request.body.collect(upTo: 1 << 20)
            let text = String(buffer: body)
            guard verify(request.headers[HTTPField.Name("X-Detectq-Signature")!], body: text, secret: secret),
                  let alert = try? JSONText.decode(Alert.self, from: Data(text.utf8)),
                  alert.eventID == request.headers[HTTPField.Name("X-Detectq-Event-Id")!]
            else {
                await book.reject()
                return Response(status: .badRequest)
            }
            if alert.event == "detection.fake" { await book.accept(alert) }
            return Response(status: .ok)
        }
        let (listening, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "detectq-chaos-sink"),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            },
            logger: Logger(label: "detectq.chaos.sink", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let server = InProcessServer(application)
        var ports = listening.makeAsyncIterator()
        guard let port = await ports.next(), port > 0 else {
            await server.stop()
            throw ChaosError("the alert sink could not start listening")
        }
        return AlertLedger(port: port, secret: secret, book: book, server: server)
    }

    func setFailureRate(_ rate: Double) async { await book.setFailureRate(rate) }
    func deliveries() async -> Deliveries { await book.deliveries }

    func stop() async {
        await server.stop()
    }

    /// The fields of an alert the ledger keeps.
    private struct Alert: Decodable {
        let event: String
        let eventID: String
        let requestID: Int
        let fakeTracks: [String]

        enum CodingKeys: String, CodingKey {
            case event, eventID = "event_id", requestID = "request_id", fakeTracks = "fake_tracks"
        }
    }

    /// Checks `t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">`.
    private static func verify(_ header: String?, body: String, secret: String) -> Bool {
        guard let header else { return false }
        let fields = Dictionary(header.split(separator: ",").compactMap { part -> (String, String)? in
            let pair = part.split(separator: "=", maxSplits: 1)
            return pair.count == 2 ? (String(pair[0]), String(pair[1])) : nil
        }, uniquingKeysWith: { first, _ in first })
        guard let timestamp = fields["t"], let given = fields["v1"] else { return false }
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return Hex.encode(mac) == given
    }
}
