import Foundation

/// Runs the built `detectq` executable as a separate process, as a user or a test of process boundaries would.
public enum DetectqExecutable {
    /// The executable: `DETECTQ_BINARY` when set, else the `detectq` built beside the test bundle.
    public static var url: URL {
        if let path = ProcessInfo.processInfo.environment["DETECTQ_BINARY"] {
            return URL(fileURLWithPath: path)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("detectq")
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue {
                return candidate
            }
            directory.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: ".build/debug/detectq")
    }

    /// What a finished run printed and how it exited.
    public struct Outcome: Sendable {
        public let status: Int32
        public let standardOutput: String
        public let standardError: String
    }

    /// Runs `detectq` with `arguments` and `environment` (added to this process's own) and waits for it to exit.
    public static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Outcome {
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        // Files, not pipes: a child that prints more than a pipe holds would block until someone reads it.
        let outputFile = try temporaryFile()
        let errorFile = try temporaryFile()
        defer {
            try? FileManager.default.removeItem(at: outputFile)
            try? FileManager.default.removeItem(at: errorFile)
        }
        process.standardOutput = try FileHandle(forWritingTo: outputFile)
        process.standardError = try FileHandle(forWritingTo: errorFile)
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        return Outcome(
            status: status,
            standardOutput: try String(contentsOf: outputFile, encoding: .utf8),
            standardError: try String(contentsOf: errorFile, encoding: .utf8)
        )
    }

    private static func temporaryFile() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-run-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw TestSetupError("could not create \(url.path)")
        }
        return url
    }
}

/// A `detectq` process left running (a worker, the simulator), stopped with a signal by the test, and in
/// any case when the test ends (`.stopsWhatItStarts`).
public final class DetectqProcess: Sendable {
    private let process: Process
    /// Where its standard output and error go.
    public let outputFile: URL

    private init(process: Process, outputFile: URL) {
        self.process = process
        self.outputFile = outputFile
    }

    /// Starts `detectq` with `arguments`, its output going to a temporary file.
    public static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> DetectqProcess {
        let process = Process()
        process.executableURL = DetectqExecutable.url
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-process-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: outputFile.path, contents: nil) else {
            throw TestSetupError("could not create \(outputFile.path)")
        }
        let handle = try FileHandle(forWritingTo: outputFile)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let started = DetectqProcess(process: process, outputFile: outputFile)
        TestResources.stopAtEnd { await started.stop(signal: SIGKILL) }
        return started
    }

    /// Everything it has printed so far.
    public var output: String {
        (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
    }

    /// Waits until its output has a line containing `text`, and returns that line.
    public func waitForLine(containing text: String, timeout: Duration = generousDeadline) async throws -> String {
        do {
            return try await waitFor("detectq prints \"\(text)\"", timeout: timeout) {
                if let line = output.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
                guard process.isRunning else { throw TestSetupError("detectq exited before printing \"\(text)\"") }
                return nil
            }
        } catch let error as TestSetupError {
            throw TestSetupError("\(error): \(output)")
        }
    }

    /// Whether it is still running.
    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits for the process to exit, killing it if it has not exited after `limit`;
    /// returns its exit status. Stopping a process that has exited only reads its status.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, killAfter limit: Duration = .seconds(60)) async -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = ContinuousClock.now + limit
        while process.isRunning {
            if ContinuousClock.now >= deadline { kill(process.processIdentifier, SIGKILL) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        try? FileManager.default.removeItem(at: outputFile)
        return process.terminationStatus
    }
}
