import DetectSimulator
import Foundation
import Hummingbird
import NIOCore
import ResembleDetect

/// A simulator and a client pointed at it, with media files made on the spot.
struct SimulatorHarness {
    let simulator: DetectSimulator
    let client: DetectClient
    let media: URL

    static func start(
        _ configuration: SimulatorConfiguration = .init(), clientToken: String? = nil
    ) async throws -> SimulatorHarness {
        let simulator = try await DetectSimulator.startForTest(configuration: configuration)
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
