import DetectSimulator
import Foundation
import Hummingbird
import NIOCore
import ResembleDetect
import Synchronization

/// A simulator and a client pointed at it, with media files made on the spot.
struct SimulatorHarness {
    let simulator: DetectSimulator
    let client: DetectClient
    let media: URL

    static func start(
        _ configuration: SimulatorConfiguration = .init(), clientToken: String? = nil
    ) async throws -> SimulatorHarness {
        let simulator = try await DetectSimulator.start(configuration: configuration)
        let client = DetectClient(configuration: DetectClientConfiguration(
            baseURL: simulator.baseURL, token: clientToken ?? configuration.requiredToken,
            connectTimeout: .seconds(5), uploadIdleTimeout: .seconds(30), responseTimeout: .seconds(60)
        ))
        let media = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: media, withIntermediateDirectories: true)
        return SimulatorHarness(simulator: simulator, client: client, media: media)
    }

    /// Writes a media file with `contents`.
    func file(_ name: String, _ contents: String) throws -> MediaFile {
        let url = media.appendingPathComponent(name)
        try Data(contents.utf8).write(to: url)
        return try MediaFile(path: url.path)
    }

    /// A sparse file of `size` bytes (zeros, taking no disk space), for large uploads.
    func sparseFile(_ name: String, size: Int64) throws -> MediaFile {
        let url = media.appendingPathComponent(name)
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: UInt64(size))
        try handle.close()
        return try MediaFile(path: url.path)
    }

    func stop() async {
        try? await client.shutdown()
        await simulator.stop()
        try? FileManager.default.removeItem(at: media)
    }
}

/// A local HTTP endpoint that records the callbacks the simulator posts to it.
final class CallbackRecorder: Sendable {
    private let store: CallbackStore
    private let server: Task<Void, any Error>
    let url: String

    private init(store: CallbackStore, server: Task<Void, any Error>, url: String) {
        self.store = store
        self.server = server
        self.url = url
    }

    static func start() async throws -> CallbackRecorder {
        let store = CallbackStore()
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let router = Router()
        router.post("/callbacks/:id") { request, _ in
            store.append(Array(try await request.body.collect(upTo: 1 << 20).readableBytesView))
            return HTTPResponse.Status.noContent
        }
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            }
        )
        let server = Task { try await application.run() }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        return CallbackRecorder(store: store, server: server, url: "http://127.0.0.1:\(port)/callbacks/1")
    }

    /// Waits up to `timeout` for `count` callbacks in all, and returns those received by then.
    func callbacks(count: Int, within timeout: Duration) async -> [[UInt8]] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let bodies = store.bodies
            if bodies.count >= count { return bodies }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return store.bodies
    }

    func stop() async {
        server.cancel()
        _ = await server.result
    }
}

/// The callback bodies received so far.
private final class CallbackStore: Sendable {
    private let received = Mutex<[[UInt8]]>([])

    var bodies: [[UInt8]] { received.withLock { $0 } }

    func append(_ body: [UInt8]) {
        received.withLock { $0.append(body) }
    }
}

/// Peak resident memory of this process (`VmHWM`), which `resetPeak()` sets back to the current size.
enum PeakMemory {
    static func resetPeak() {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }

    /// VmHWM in bytes.
    static func peakBytes() -> Int64 {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = Int64(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kilobytes * 1024
    }
}
