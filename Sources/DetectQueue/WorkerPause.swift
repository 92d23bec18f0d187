import Synchronization

/// Whether a worker has stopped claiming because of its own configuration (the API refused its token), and
/// why. Requests are never failed for it; the worker says so loudly and `/readyz` reports it.
final class WorkerPause: Sendable {
    private let reason = Mutex<String?>(nil)

    var isPaused: Bool { reason.withLock { $0 != nil } }
    var currentReason: String? { reason.withLock { $0 } }

    /// Pauses with `text` unless already paused; returns true for the call that paused.
    @discardableResult
    func pause(reason text: String) -> Bool {
        reason.withLock { current in
            guard current == nil else { return false }
            current = text
            return true
        }
    }
}
