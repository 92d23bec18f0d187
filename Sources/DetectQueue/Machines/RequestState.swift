import Postgres

/// Where a detection request is in its life; the PostgreSQL enum `detectq.request_state` has the same values.
///
/// `successors` is the one table of legal transitions. The database enforces the same table with a trigger
/// (from `detectq.request_state_transitions`), and the test suite checks the two against each other.
package enum RequestState: String, CaseIterable, Sendable, PostgresEncodable, PostgresDecodable {
    /// Waiting to be claimed, at or after `run_at`.
    case queued
    /// Claimed by a worker under a lease: uploading and submitting (in `sync` mode also waiting).
    case submitting
    /// Accepted by the API with its `remote_uuid` stored; waiting for the callback or the poll.
    case awaitingResult = "awaiting_result"
    /// An attempt failed in a way worth retrying; claimed again at `run_at`.
    case retrying
    /// The detection result is stored.
    case completed
    /// Will not be tried again; `error_message` says why.
    case failed
    /// Cancelled by a user before it completed.
    case cancelled

    /// The states this one may change to.
    package var successors: Set<RequestState> {
        switch self {
        // queued -> completed: a request waiting for identical media completes from that one's verdict.
        case .queued: [.submitting, .cancelled, .awaitingResult, .completed]
        case .submitting: [.awaitingResult, .completed, .retrying, .failed, .cancelled, .queued]
        case .awaitingResult: [.completed, .failed, .cancelled]
        case .retrying: [.submitting, .cancelled, .awaitingResult]
        case .failed: [.queued]
        case .completed, .cancelled: []
        }
    }

    /// Whether changing from this state to `next` is legal.
    package func canChange(to next: RequestState) -> Bool {
        successors.contains(next)
    }

    /// True for the states in which a genuine callback's detection is adopted (a request with no `remote_uuid`
    /// that has not ended: any of its attempts may have created the detection the callback names).
    package var adoptsACallback: Bool { self == .queued || self == .submitting || self == .retrying }

    /// True for the states of a request in flight: identical media enqueued meanwhile waits for its verdict.
    package var isInFlight: Bool { self == .submitting || self == .awaitingResult || self == .retrying }

    /// True for states a worker may claim.
    package var isClaimable: Bool { self == .queued || self == .retrying }
}
