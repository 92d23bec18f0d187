import Synchronization

/// Whether a worker has stopped claiming because the API refused its token, and why. Requests are never
/// failed for it; the worker says so loudly, `/readyz` reports it, and it is not final: a probe every
/// `DETECTQ_AUTH_RECHECK_SECONDS` (`resume`) ends it once the API accepts the token again.
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

    /// Ends the pause; returns true when one was in force.
    @discardableResult
    func resume() -> Bool {
        reason.withLock { current in
            defer { current = nil }
            return current != nil
        }
    }
}
