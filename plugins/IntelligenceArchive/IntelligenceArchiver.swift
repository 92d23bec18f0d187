import DetectQueue
import Foundation
import ResembleDetect
import TextEncodings

/// Archives the intelligence report of every request that asked for one: once the report's own status is
/// completed (it may finish after the detection; then the API is polled for it, on a growing interval),
/// it is upserted into `detectq.intelligence_archive` and, when an archive directory is set, written to
/// `<dir>/<yyyy>/<mm>/<dd>/<remote_uuid>.json` atomically (temporary file, fsync, rename). A report that has
/// not completed `maximumWait` after the detection (the API's own ten minutes plus a margin) is given up on,
/// and the task fails saying why, instead of being looked for forever.
package struct IntelligenceArchiver: PostProcessor {
    package let name = "archive.intelligence"
    package let effects: Set<PostProcessingEffect> = [.archiveIntelligence]
    /// `DETECTQ_ARCHIVE_DIR`, when set.
    package let directory: URL?
    /// How long after the detection completed a report may still be waited for.
    package let maximumWait: Duration

    /// The API gives an intelligence report ten minutes; five more allow for its lag and ours.
    package static let defaultMaximumWait: Duration = .seconds(15 * 60)

    package init(directory: URL?, maximumWait: Duration = IntelligenceArchiver.defaultMaximumWait) {
        self.directory = directory
        self.maximumWait = maximumWait
    }

    package func applies(to outcome: DetectionOutcome) -> Bool {
        outcome.intelligenceRequested
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        var item = outcome.item
        if item.intelligence?.isCompleted != true {
            item = try await context.api.detection(uuid: outcome.remoteUUID)
        }
        guard let intelligence = item.intelligence else {
            return notYet(outcome, status: "no intelligence object")
        }
        if intelligence.status == .failed {
            return .failed(reason: "the API reports the intelligence report failed: \(intelligence.errorMessage ?? "no reason given")")
        }
        guard intelligence.isCompleted, let text = try Self.intelligenceJSON(of: item) else {
            return notYet(outcome, status: "status \(intelligence.status.map { "\($0)" } ?? "none")")
        }
        try await context.archiveIntelligence(text, remoteUUID: outcome.remoteUUID)
        if let directory {
            try AtomicFile.write(Data(text.utf8), to: Self.path(in: directory, for: outcome))
        }
        return .done
    }

    /// A report not finished yet: looked for again, unless `maximumWait` has passed since the detection.
    private func notYet(_ outcome: DetectionOutcome, status: String) -> PostProcessingResult {
        let waited = Date().timeIntervalSince(outcome.completedAt)
        guard waited < maximumWait.seconds else {
            return .failed(reason: "the intelligence report had not completed \(Int(waited.rounded())) s after the detection (\(status)); "
                + "the API gives a report ten minutes, so it was given up on after \(Int(maximumWait.seconds)) s")
        }
        return .reschedule(at: min(nextCheck(after: outcome.completedAt), outcome.completedAt.addingTimeInterval(maximumWait.seconds)))
    }

    /// The next look for a report still in progress: a quarter of the time since the detection completed,
    /// from 2 seconds to 1 minute.
    private func nextCheck(after completedAt: Date) -> Date {
        Date().addingTimeInterval(min(60, max(2, Date().timeIntervalSince(completedAt) / 4)))
    }

    /// `<dir>/<yyyy>/<mm>/<dd>/<remote_uuid>.json`, dated by the detection's completion (UTC).
    static func path(in directory: URL, for outcome: DetectionOutcome) -> URL {
        let parts = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: outcome.completedAt)
        let safeName = outcome.remoteUUID.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
        return directory
            .appendingPathComponent(String(format: "%04d", parts.year!))
            .appendingPathComponent(String(format: "%02d", parts.month!))
            .appendingPathComponent(String(format: "%02d", parts.day!))
            .appendingPathComponent("\(safeName).json")
    }

    /// The item's intelligence object as JSON text (keys sorted): the same bytes go to the table and the file.
    static func intelligenceJSON(of item: DetectionItem) throws -> String? {
        let object = try JSONText.decode([String: JSONValue].self, from: Data(item.rawJSON.utf8))
        let value: JSONValue? = switch object["intelligence"] {
        case .array(let experts)?: experts.first
        case .object?: object["intelligence"]
        default: nil
        }
        guard let value else { return nil }
        let encoder = JSONText.encoder()
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

/// Writes a file so that readers see either nothing or all of it: a temporary file beside it, flushed to
/// disk, renamed into place, and the directory flushed too.
enum AtomicFile {
    static func write(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ArchiveError("cannot create \(temporary.path): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == data.count, synced, rename(temporary.path, url.path) == 0 else {
            unlink(temporary.path)
            throw ArchiveError("cannot write \(url.path): \(String(cString: strerror(errno)))")
        }
        let directoryDescriptor = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }
}

/// The archive could not be written; the task is retried.
struct ArchiveError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
