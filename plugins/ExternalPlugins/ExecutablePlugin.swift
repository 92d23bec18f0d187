import ChildProcesses
import DetectQueue
import Foundation
import ResembleDetect
import Subprocess
import Synchronization
import SystemPackage
import TextEncodings

/// An executable in the plugins directory (`DETECTQ_PLUGINS_DIR`), run as a post-processor for every
/// completed request: it gets the outcome as JSON on standard input and a time limit. Exit 0 is done, 75
/// (EX_TEMPFAIL) is "retry later", anything else fails the task with its standard error as the reason; one
/// that outlives its time limit is killed (with its children) and retried.
package struct ExecutablePlugin: PostProcessor {
    package let name: String
    package let executable: URL
    package let timeLimit: Duration

    package init(executable: URL, timeLimit: Duration) {
        self.executable = executable
        self.timeLimit = timeLimit
        name = "exec." + executable.lastPathComponent
    }

    /// Every executable regular file directly in `directory`, in name order.
    package static func discover(in directory: URL, timeLimit: Duration) -> [ExecutablePlugin] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().compactMap { name in
            let url = directory.appendingPathComponent(name)
            var info = stat()
            guard !name.hasPrefix("."), stat(url.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
                  access(url.path, X_OK) == 0
            else { return nil }
            return ExecutablePlugin(executable: url, timeLimit: timeLimit)
        }
    }

    package func applies(to outcome: DetectionOutcome) -> Bool { true }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-plugin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let inputFile = scratch.appendingPathComponent("outcome.json")
        try PluginInput(outcome).json().write(to: inputFile)
        let errorFile = scratch.appendingPathComponent("stderr")
        let input = try FileDescriptor.open(FilePath(inputFile.path), .readOnly, options: .closeOnExec)
        let error = try FileDescriptor.open(
            FilePath(errorFile.path), .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: .ownerReadWrite
        )

        // The plugin leads a process group of its own, so that the limit (or a cancelled task) kills its
        // children with it. Its standard error goes to a file, not a pipe: a child it leaves behind cannot
        // hold its end up.
        let options = {
            var options = PlatformOptions()
            options.processGroupID = 0
            return options
        }()
        let group = ProcessGroup()
        let ending: Ending
        do {
            ending = try await withTaskCancellationHandler {
                try await withThrowingTaskGroup(of: Ending?.self) { tasks in
                    tasks.addTask {
                        let result = try await Subprocess.run(
                            .path(FilePath(executable.path)), platformOptions: options,
                            input: .fileDescriptor(input, closeAfterSpawningProcess: true), output: .discarded,
                            error: .fileDescriptor(error, closeAfterSpawningProcess: true)
                        ) { execution in
                            group.leader.withLock { $0 = execution.processIdentifier.value }
                        }
                        return .exited(ExitStatus(result.terminationStatus))
                    }
                    tasks.addTask {
                        try await Task.sleep(for: timeLimit)
                        group.kill()
                        return nil
                    }
                    var killedAtLimit = false
                    while let next = try await tasks.next() {
                        guard let next else {
                            killedAtLimit = true
                            continue
                        }
                        tasks.cancelAll()
                        return killedAtLimit ? .killedAtLimit : next
                    }
                    return .killedAtLimit
                }
            } onCancel: {
                group.kill()
            }
        } catch let failure as SubprocessError {
            return .failed(reason: "\(name) could not be started: \(failure)")
        }
        let stderr = ((try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines).suffix(2_000)
        switch ending {
        case .killedAtLimit:
            return .retry(after: .zero, reason: "\(name) was killed after its time limit of \(timeLimit)")
        case .exited(.signaled(let signal)):
            return .retry(after: .zero, reason: "\(name) was killed by signal \(signal)")
        case .exited(.exited(0)):
            return .done
        case .exited(.exited(75)):
            return .retry(after: .zero, reason: stderr.isEmpty ? "\(name) asked to be retried later (exit 75)" : String(stderr))
        case .exited(.exited(let code)):
            return .failed(reason: stderr.isEmpty ? "\(name) exited with status \(code)" : String(stderr))
        }
    }

    /// The plugin's process group, once it has started: killed whole at the limit or on cancellation.
    private final class ProcessGroup: Sendable {
        let leader = Mutex<pid_t?>(nil)

        func kill() {
            if let leader = leader.withLock({ $0 }) { Glibc.kill(-leader, SIGKILL) }
        }
    }

    /// How a plugin's run ended.
    private enum Ending: Sendable {
        case exited(ExitStatus)
        case killedAtLimit
    }
}

/// What an external plugin reads on standard input: the outcome as one JSON object.
struct PluginInput: Encodable {
    let request_id: Int
    let remote_uuid: String
    let media_type: String?
    let label: String?
    let is_fake: Bool?
    let score: Double?
    let zero_retention_mode: Bool
    let intelligence_requested: Bool
    let completed_at: String
    let metadata: JSONValue?
    /// The API's whole item, as stored in `detectq.requests.result`.
    let result: JSONValue?

    init(_ outcome: DetectionOutcome) {
        request_id = outcome.requestID
        remote_uuid = outcome.remoteUUID
        media_type = outcome.item.mediaType?.description
        label = outcome.item.label
        is_fake = outcome.item.isFake
        score = outcome.item.aggregatedScore
        zero_retention_mode = outcome.zeroRetentionMode
        intelligence_requested = outcome.intelligenceRequested
        completed_at = ISO8601Timestamp.format(outcome.completedAt)
        metadata = outcome.metadata
        result = try? JSONText.decode(JSONValue.self, from: Data(outcome.item.rawJSON.utf8))
    }

    func json() throws -> Data {
        let encoder = JSONText.encoder()
        return try encoder.encode(self)
    }
}

/// The plugin could not be prepared; the task is retried.
struct PluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
