import Logging
import Synchronization

/// The messages a worker logged, kept for a test that must wait until the worker has met something it can see
/// no other way (a database outage, say, while the test's own connections are down too).
package final class CapturedLog: Sendable {
    private let messages = Mutex<[String]>([])

    package init() {}

    /// Whether a logged message contains `text`.
    package func contains(_ text: String) -> Bool {
        messages.withLock { $0.contains { $0.contains(text) } }
    }

    /// Every message kept, one a line, with its metadata: what a failed expectation shows of the worker.
    package var text: String {
        messages.withLock { $0.joined(separator: "\n") }
    }

    /// Runs `body`; an error it throws comes back with the messages kept, so that a wait that timed out shows
    /// what the worker did meanwhile.
    package func explaining<Value>(_ body: () async throws -> Value) async throws -> Value {
        do {
            return try await body()
        } catch {
            throw Explained(error: error, log: text)
        }
    }

    /// An error and the worker's log at the time.
    package struct Explained: Error, CustomStringConvertible {
        package let error: any Error
        package let log: String

        package var description: String { "\(error)\n--- the worker's log:\n\(log)" }
    }

    /// A logger whose messages (at `notice` and above) are kept here.
    package func logger(label: String) -> Logger {
        Logger(label: label) { _ in Handler(log: self) }
    }

    fileprivate func append(_ message: String) {
        messages.withLock { $0.append(message) }
    }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .notice

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let fields = metadata.merging(event.metadata ?? [:]) { $1 }
            let context = fields.isEmpty ? "" : " " + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.append("\(event.level) \(event.message)\(context)")
        }
    }
}
