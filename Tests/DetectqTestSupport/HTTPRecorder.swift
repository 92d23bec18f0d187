import Foundation
import HTTPTypes
import DetectSimulator
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// A local HTTP endpoint that records every POST it receives (path, headers, body), standing in for a
/// callback receiver or an alert sink. It can refuse deliveries on purpose: every other one with 503.
package final class HTTPRecorder: Sendable {
    /// One request received.
    package struct Delivery: Sendable {
        package let path: String
        package let headers: [String: String]
        package let body: [UInt8]
        /// Whether the recorder refused it (with 503).
        package let refused: Bool

        package var text: String { String(decoding: body, as: UTF8.self) }

        /// A header's value, whatever the case of its name.
        package func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    private let store: DeliveryStore
    private let server: InProcessServer
    /// The recorder's base URL, `http://127.0.0.1:<port>`.
    package let baseURL: String

    private init(store: DeliveryStore, server: InProcessServer, baseURL: String) {
        self.store = store
        self.server = server
        self.baseURL = baseURL
    }

    /// Starts a recorder; with `refuseEveryOther`, the 1st, 3rd, 5th… deliveries get 503; the first
    /// `stallFirst` deliveries are recorded at once but answered only after `stall` (a sink that hangs).
    package static func start(refuseEveryOther: Bool = false, stallFirst: Int = 0, stall: Duration = .seconds(30)) async throws -> HTTPRecorder {
        let store = DeliveryStore()
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let router = Router()
        router.post("**") { request, _ -> HTTPResponse.Status in
            let body = Array(try await request.body.collect(upTo: 1 << 20).readableBytesView)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName.lowercased()] = field.value }
            let position = store.count
            let refuse = refuseEveryOther && position % 2 == 0
            store.append(Delivery(path: request.uri.path, headers: headers, body: body, refused: refuse))
            if position < stallFirst { try await Task.sleep(for: stall) }
            return refuse ? .serviceUnavailable : .noContent
        }
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: Logger(label: "http-recorder", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let server = InProcessServer(application)
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        let recorder = HTTPRecorder(store: store, server: server, baseURL: "http://127.0.0.1:\(port)")
        TestResources.stopAtEnd { await recorder.stop() }
        return recorder
    }

    /// Everything received so far.
    package var deliveries: [Delivery] { store.all }

    /// Waits up to `timeout` until `count` deliveries have arrived, and returns all received by then.
    package func deliveries(count: Int, within timeout: Duration = generousDeadline) async -> [Delivery] {
        (try? await waitFor("\(count) deliveries arrive", timeout: timeout) { store.count >= count ? store.all : nil }) ?? store.all
    }

    /// Stops serving; a stalled delivery is cut after a few seconds.
    package func stop() async {
        await server.stop(within: .seconds(5))
    }
}

/// The deliveries received so far.
private final class DeliveryStore: Sendable {
    private let received = Mutex<[HTTPRecorder.Delivery]>([])

    var all: [HTTPRecorder.Delivery] { received.withLock { $0 } }
    var count: Int { received.withLock { $0.count } }

    func append(_ delivery: HTTPRecorder.Delivery) {
        received.withLock { $0.append(delivery) }
    }
}
