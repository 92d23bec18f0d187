import Foundation

/// Something that happens to a detection request. The state machine turns a state and an event into the
/// next state, or refuses the event.
public enum RequestEvent: Sendable, Hashable {
    /// A worker claimed the request under a lease.
    case claimed(workerID: String)
    /// The API accepted the request and returned its uuid; the result is still to come.
    case accepted(remoteUUID: String)
    /// A detection an earlier attempt created, whose answer was lost, was found (in List Detects, or by a
    /// genuine callback that came first) and is waited for instead of submitting again.
    case adopted(remoteUUID: String)
    /// The detection result arrived (in the `Prefer: wait` response, a callback confirmed by a GET, or a poll).
    case completed
    /// An attempt failed in a way worth retrying (a network fault, a 429 or 5xx); retried at `retryAt`
    /// while attempts remain.
    case failedRetryably(reason: String, retryAt: Date)
    /// The request can never succeed as it stands (a rejected file, a permanent API error, a remote failure).
    case failedPermanently(reason: String)
    /// The worker holding the lease stopped renewing it.
    case leaseExpired
    /// A worker shutting down gave the claim back before sending anything.
    case released
    /// A user cancelled the request.
    case cancelled
    /// A user asked for a failed request to be tried again.
    case retriedByUser
}

/// The pure transition function of a request: no I/O, so it is tested event by event; the caller performs
/// the UPDATE the result calls for.
public enum RequestStateMachine {
    /// Why an event does not apply in a state.
    public struct IllegalEvent: Error, Sendable, Hashable, CustomStringConvertible {
        public let state: RequestState
        public let event: RequestEvent

        public var description: String {
            "a request that is \(state.rawValue) cannot take the event \(event.name)"
        }
    }

    /// The state `event` moves a request in `state` to. `attemptsLeft` says whether another attempt is
    /// allowed (`attempt < max_attempts`); it decides between retrying and failing.
    public static func transition(
        from state: RequestState, on event: RequestEvent, attemptsLeft: Bool
    ) throws(IllegalEvent) -> RequestState {
        let next: RequestState? = switch (state, event) {
        case (.queued, .claimed), (.retrying, .claimed): .submitting
        case (.submitting, .accepted), (.submitting, .adopted), (.retrying, .adopted): .awaitingResult
        case (.submitting, .completed), (.awaitingResult, .completed): .completed
        case (.submitting, .failedRetryably), (.submitting, .leaseExpired): attemptsLeft ? .retrying : .failed
        case (.submitting, .failedPermanently), (.awaitingResult, .failedPermanently): .failed
        case (.submitting, .released): .queued
        case (.queued, .cancelled), (.submitting, .cancelled), (.awaitingResult, .cancelled), (.retrying, .cancelled): .cancelled
        case (.failed, .retriedByUser): .queued
        default: nil
        }
        guard let next, state.canChange(to: next) else { throw IllegalEvent(state: state, event: event) }
        return next
    }
}

extension RequestEvent {
    /// The event's name, for messages and the event history.
    public var name: String {
        switch self {
        case .claimed: "claimed"
        case .accepted: "accepted"
        case .adopted: "adopted"
        case .completed: "completed"
        case .failedRetryably: "failed (retryable)"
        case .failedPermanently: "failed (permanent)"
        case .leaseExpired: "lease expired"
        case .released: "released"
        case .cancelled: "cancelled"
        case .retriedByUser: "retried by user"
        }
    }
}
