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
            log.append(event.message.description)
        }
    }
}
