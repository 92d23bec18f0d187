import Synchronization

/// A worker's view of the shared pause before it claims: read from the database again at most every
/// `freshness` while submitting is open, and at every claim while it is not (so the probe is never missed).
final class SubmissionGate: Sendable {
    /// The shared pauses this view reads.
    let pause: any PauseStorage
    private let recheck: Duration
    private let freshness: Duration
    /// The gate as last seen, when, and whether this worker closed it itself (`close`).
    private let cached = Mutex<(at: ContinuousClock.Instant, gate: SharedPause.Gate, closedHere: Bool)?>(nil)

    init(pause: any PauseStorage, recheck: Duration, freshness: Duration = .milliseconds(250)) {
        self.pause = pause
        self.recheck = recheck
        self.freshness = freshness
    }

    func current() async throws -> SharedPause.Gate {
        // Open: read again after `freshness`. Closed by this worker's own 402: not read again before the pause
        // it is writing can be in the database.
        if let seen = cached.withLock({ $0 }), ContinuousClock.now - seen.at < freshness, seen.gate == .open || seen.closedHere {
            return seen.gate
        }
        let gate = try await pause.gate(recheck: recheck)
        cached.withLock { $0 = (ContinuousClock.now, gate, false) }
        return gate
    }

    /// Closes this worker's gate at once, without waiting for its next read: the worker has just met a 402,
    /// and its claims already under way must not go out behind it (each would meet the same 402), nor may the
    /// claims it gives back be claimed again before the shared pause is in the database.
    func close() {
        cached.withLock { $0 = (ContinuousClock.now, .closed, true) }
    }

    /// Whether the gate, as last seen, lets a claim that is not the probe be sent.
    var isOpen: Bool { cached.withLock { $0.map { $0.gate == .open } ?? true } }
}
