import ChildProcesses
import Foundation
import Subprocess
import SystemPackage

/// Runs the built `detectq` executable as a separate process, as a user or a test of process boundaries would.
package enum DetectqExecutable {
    /// The executable: `DETECTQ_BINARY` when set, else the `detectq` built beside the test bundle.
    package static var url: URL {
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
    package struct Outcome: Sendable {
        package let status: Int32
        package let standardOutput: String
        package let standardError: String
    }

    /// Runs `detectq` with `arguments` and `environment` (added to this process's own) and waits for it to exit.
    package static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Outcome {
        // Files, not pipes: a child that prints more than a pipe holds would block until someone reads it.
        let outputFile = try temporaryFile()
        let errorFile = try temporaryFile()
        defer {
            try? FileManager.default.removeItem(at: outputFile)
            try? FileManager.default.removeItem(at: errorFile)
        }
        let result = try await Subprocess.run(
            .path(FilePath(url.path)), arguments: Arguments(arguments),
            environment: .inherit(overriding: environment),
            output: .fileDescriptor(try FileDescriptor.open(FilePath(outputFile.path), .writeOnly, options: .closeOnExec), closeAfterSpawningProcess: true),
            error: .fileDescriptor(try FileDescriptor.open(FilePath(errorFile.path), .writeOnly, options: .closeOnExec), closeAfterSpawningProcess: true)
        )
        return Outcome(
            status: ExitStatus(result.terminationStatus).code,
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
package final class DetectqProcess: Sendable {
    private let process: BackgroundProcess

    private init(process: BackgroundProcess) {
        self.process = process
    }

    /// Where its standard output and error go.
    package var outputFile: URL { process.log }

    /// Starts `detectq` with `arguments`, its output going to a temporary file.
    package static func start(_ arguments: [String], environment: [String: String] = [:]) async throws -> DetectqProcess {
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-process-\(UUID().uuidString)")
        let started = DetectqProcess(process: try await BackgroundProcess.start(
            DetectqExecutable.url.path, arguments: arguments, environment: environment, log: outputFile
        ))
        TestResources.stopAtEnd { await started.stop(signal: SIGKILL) }
        return started
    }

    /// Everything it has printed so far.
    package var output: String {
        (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
    }

    /// Waits until its output has a line containing `text`, and returns that line.
    package func waitForLine(containing text: String, timeout: Duration = generousDeadline) async throws -> String {
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
    package var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits for the process to exit, killing it if it has not exited after `limit`;
    /// returns its exit status. Stopping a process that has exited only reads its status.
    @discardableResult
    package func stop(signal: Int32 = SIGTERM, killAfter limit: Duration = .seconds(60)) async -> Int32 {
        process.signal(signal)
        let killer = Task {
            try await Task.sleep(for: limit)
            process.signal(SIGKILL)
        }
        let status = (try? await process.waitForExit()) ?? .exited(-1)
        killer.cancel()
        try? FileManager.default.removeItem(at: outputFile)
        return status.code
    }
}
