import CSpawn
import DetectQueue
import Foundation
import ResembleDetect
import Synchronization

/// An executable in the plugins directory (`DETECTQ_PLUGINS_DIR`), run as a post-processor for every
/// completed request: it gets the outcome as JSON on standard input and a time limit. Exit 0 is done, 75
/// (EX_TEMPFAIL) is "retry later", anything else fails the task with its standard error as the reason; one
/// that outlives its time limit is killed (with its children) and retried.
public struct ExecutablePlugin: PostProcessor {
    public let name: String
    public let executable: URL
    public let timeLimit: Duration

    public init(executable: URL, timeLimit: Duration) {
        self.executable = executable
        self.timeLimit = timeLimit
        name = "exec." + executable.lastPathComponent
    }

    /// Every executable regular file directly in `directory`, in name order.
    public static func discover(in directory: URL, timeLimit: Duration) -> [ExecutablePlugin] {
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

    public func applies(to outcome: DetectionOutcome) -> Bool { true }

    public func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-plugin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let inputFile = scratch.appendingPathComponent("outcome.json")
        try PluginInput(outcome).json().write(to: inputFile)
        let errorFile = scratch.appendingPathComponent("stderr")

        let input = open(inputFile.path, O_RDONLY | O_CLOEXEC)
        let output = open("/dev/null", O_WRONLY | O_CLOEXEC)
        let error = open(errorFile.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { [input, output, error].forEach { if $0 >= 0 { close($0) } } }
        guard input >= 0, output >= 0, error >= 0 else { throw PluginError("cannot prepare the plugin's input and output") }

        let argv = [strdup(executable.path)]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = detectq_spawn_with_descriptors(&pid, executable.path, argv + [nil], input, output, error)
        guard spawned == 0 else {
            return .failed(reason: "\(name) could not be started: \(String(cString: strerror(spawned)))")
        }
        let child = pid
        let killed = Mutex(false)
        let killer = Task {
            try await Task.sleep(for: timeLimit)
            killed.withLock { $0 = true }
            kill(-child, SIGKILL)
        }
        let status: Int32 = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var status: Int32 = 0
                while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                continuation.resume(returning: status)
            }
        }
        killer.cancel()
        let stderr = ((try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines).suffix(2_000)
        if killed.withLock({ $0 }) {
            return .retry(after: .zero, reason: "\(name) was killed after its time limit of \(timeLimit)")
        }
        let signal = status & 0x7f
        if signal != 0 { return .retry(after: .zero, reason: "\(name) was killed by signal \(signal)") }
        switch (status >> 8) & 0xff {
        case 0: return .done
        case 75: return .retry(after: .zero, reason: stderr.isEmpty ? "\(name) asked to be retried later (exit 75)" : String(stderr))
        case let code: return .failed(reason: stderr.isEmpty ? "\(name) exited with status \(code)" : String(stderr))
        }
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
        metadata = try? JSONDecoder().decode(JSONValue.self, from: Data(outcome.metadata.text.utf8))
        result = try? JSONDecoder().decode(JSONValue.self, from: Data(outcome.item.rawJSON.utf8))
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}

/// The plugin could not be prepared; the task is retried.
struct PluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
