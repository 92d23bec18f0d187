import Foundation

/// Something that happens to a detection request. The state machine (`RequestStateMachine`) turns a state and
/// an event into a transition, or refuses the event.
package enum RequestEvent: Sendable, Hashable {
    /// A worker claimed the request under a lease.
    case claimed
    /// The worker is about to send the request (by `path`: url, multipart or secure upload); the window in
    /// which an answer may be lost opens. `callbackSecretHash` is stored first, so an early callback is known.
    case sending(path: SubmitPath, callbackSecretHash: String?)
    /// The API accepted the request and returned its uuid; the result is still to come.
    case accepted(remoteUUID: String)
    /// A detection an earlier attempt created, whose answer was lost, was found (in List Detects, or by a
    /// genuine callback that came first) and is waited for instead of submitting again. A callback's adoption
    /// carries the hash of the secret it came with: a request in submission adopts it only while that secret is
    /// its current attempt's, since an attempt that marked its send with a newer secret may be sending now.
    case adopted(remoteUUID: String, via: String, callbackSecretHash: String? = nil)
    /// The detection result arrived (in the `Prefer: wait` response, a callback confirmed by a GET, or a poll).
    case completed
    /// An attempt failed in a way worth retrying (a network fault, a 429 or 5xx); retried at `retryAt`
    /// while attempts remain.
    case failedRetryably(reason: String, retryAt: Date)
    /// The request can never succeed as it stands (a rejected file, a permanent API error, a remote failure).
    case failedPermanently(reason: String)
    /// An attempt that may have reached the API lost its answer (a cut connection, a timeout): retried while
    /// attempts remain; on the last attempt it is retried too, by a claim that only looks for the detection
    /// the attempt may have created (List Detects and callback) and fails the request when none is found.
    /// The worker sends it only for an attempt within `max_attempts`.
    case answerLost(reason: String, retryAt: Date)
    /// The worker holding the lease stopped renewing it.
    case leaseExpired
    /// A worker gave the claim back before sending anything (shutting down, paused, out of credit); an answer
    /// is owed since `answerOwedSince` by an earlier attempt, if any.
    case released(answerOwedSince: Date?)
    /// The request's media and options are identical to those of request `source`, whose detection's verdict it
    /// takes without calling the API (claimed and looked up, or waiting for it while it was in flight).
    case reused(from: Int)
    /// The request's media and options are identical to those of request `inFlight`, still in flight: the claim
    /// is handed back unsent, its attempt unspent, and the request waits for that one's verdict (an answer is
    /// owed since `answerOwedSince` by an earlier attempt, if any).
    case waitingForIdenticalMedia(inFlight: Int, answerOwedSince: Date?)
    /// A user cancelled the request.
    case cancelled
    /// A user asked for a failed request to be tried again.
    case retriedByUser
}

extension RequestEvent {
    /// The event's name, for messages and the event history.
    package var name: String {
        switch self {
        case .claimed: "claimed"
        case .sending: "sending"
        case .accepted: "accepted"
        case .adopted: "adopted"
        case .completed: "completed"
        case .failedRetryably: "failed (retryable)"
        case .failedPermanently: "failed (permanent)"
        case .answerLost: "answer lost"
        case .leaseExpired: "lease expired"
        case .released: "released"
        case .reused: "verdict reused"
        case .waitingForIdenticalMedia: "waiting for identical media"
        case .cancelled: "cancelled"
        case .retriedByUser: "retried by user"
        }
    }

    /// Whether the event stores a detection's uuid: the API accepted (and billed) the request.
    package var givesRemoteUUID: Bool {
        switch self {
        case .accepted, .adopted: true
        default: false
        }
    }
}

extension RequestEvent {
    /// One event of each kind, for walking the whole state machine (its tests, and the start-up check that
    /// the schema's transition table allows every change it makes).
    package static let everyKind: [RequestEvent] = [
        .claimed, .sending(path: .url, callbackSecretHash: nil), .accepted(remoteUUID: "u"), .adopted(remoteUUID: "u", via: "list"),
        .completed, .failedRetryably(reason: "503", retryAt: Date(timeIntervalSince1970: 0)), .failedPermanently(reason: "400"),
        .answerLost(reason: "network error", retryAt: Date(timeIntervalSince1970: 0)),
        .leaseExpired, .released(answerOwedSince: nil), .reused(from: 1), .waitingForIdenticalMedia(inFlight: 1, answerOwedSince: nil),
        .cancelled, .retriedByUser,
    ]
}
