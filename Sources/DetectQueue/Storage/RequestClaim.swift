import Foundation

/// One claim of requests, and when claiming again may find more: the fair claim (migration 0016) says so, so
/// that a queue held back by its rate or by a cap is claimed again when it has room, not at the next idle check.
package struct RequestClaim: Sendable {
    package var requests: [DetectionRequest]
    package var claimAgain: ClaimAgain

    package init(requests: [DetectionRequest], claimAgain: ClaimAgain) {
        self.requests = requests
        self.claimAgain = claimAgain
    }
}

/// When a claim loop should claim again, as its last claim saw the queues.
package enum ClaimAgain: Sendable, Equatable {
    /// Nothing more was in sight: when work is announced (a notification, the idle check).
    case whenAnnounced
    /// The claim stopped at its limit with more in sight.
    case now
    /// A queue's rate or daily limit held work back for this long; or the claim started at a queue's floor (migration
    /// 0026), which a request may have come below unseen, and found less than it asked for: when that floor is a
    /// second old.
    case after(Duration)
    /// A cap on requests in flight held work back: when a request this worker holds ends (or work is announced).
    case whenARequestEnds

    /// Reads the fair claim's `claim_again_in`: NULL, seconds from now on the database's clock, or infinity.
    init(claimAgainIn seconds: Double?) {
        switch seconds {
        case nil: self = .whenAnnounced
        case let seconds? where !seconds.isFinite: self = .whenARequestEnds
        case let seconds? where seconds <= 0: self = .now
        case let seconds?: self = .after(.seconds(seconds))
        }
    }
}

/// How a claim spends the shared API budget: it takes no more requests than the budget's slots due within
/// `horizon`, and reserves one slot for each (migration 0016), so that the queues' shares hold where the API is
/// called rather than only where requests are claimed.
package struct ClaimPacing: Sendable, Hashable {
    package var ratePerSecond: Double
    package var horizon: Duration

    /// The pacing of `ratePerSecond`: claims book no slot more than 20 ms ahead. That is less than one slot at the
    /// API's 40 a second (and a queue whose turn it is may take one slot early), yet enough at a high rate for a
    /// claim that takes a while on a busy database to keep up: a claim only takes the slots due within the
    /// horizon, and a slot that passes unclaimed is gone.
    package init(ratePerSecond: Double) {
        self.ratePerSecond = ratePerSecond
        horizon = .milliseconds(20)
    }
}

/// A slot of the shared API budget a claim reserved for a request's first API call: when it is, on the
/// database's clock, and when it comes on this process's clock.
package struct APISlot: Sendable, Hashable {
    package var at: Date
    package var due: ContinuousClock.Instant
}
