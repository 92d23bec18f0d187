import Foundation

/// What a change of a request or a post-task does to its lease.
package enum LeaseEffect: Sendable, Hashable {
    /// The worker takes a lease (a claim).
    case take
    /// The lease stays as it is.
    case keep
    /// The lease ends.
    case release
}

/// What a change of a request or a post-task does to its attempt count.
package enum AttemptEffect: Sendable, Hashable {
    case unchanged
    /// A claim starts an attempt.
    case spendOne
    /// A claim given back unsent (or a run put off) did not use its attempt.
    case giveBackOne
    /// A retry by hand starts over.
    case reset

    /// The count after the change.
    package func applied(to attempt: Int) -> Int {
        switch self {
        case .unchanged: attempt
        case .spendOne: attempt + 1
        case .giveBackOne: attempt - 1
        case .reset: 0
        }
    }

    /// The SQL assignment of the change (nil when the count stays).
    var assignment: String? {
        switch self {
        case .unchanged: nil
        case .spendOne: "attempt = attempt + 1"
        case .giveBackOne: "attempt = attempt - 1"
        case .reset: "attempt = 0"
        }
    }
}

/// One change of a request, with everything it does to the row: the next state, the lease, the attempt count,
/// the columns it sets and whether it creates the request's post-tasks.
///
/// `RequestStateMachine` decides it and the store writes exactly what it says: the claim, the rescue, the
/// submission mark, the completion batch, adoption, failure and every other change are built from a
/// transition, so which columns move with which state is written down once.
package struct RequestTransition: Sendable {
    package let from: RequestState
    package let to: RequestState
    package let lease: LeaseEffect
    package let attempts: AttemptEffect
    /// The columns set besides state, lease and attempt: the machine's own, over the caller's.
    package let changes: RequestChanges
    /// Whether the change creates the request's post-tasks (one per processor that applies).
    package let createsPostTasks: Bool
    /// Whether the change may only be made while the request has no `remote_uuid` (an adoption: a uuid is
    /// adopted once, and never over one the API gave).
    package let requiresNoRemoteUUID: Bool
    /// The callback secret hash the request must still hold as its current one (an adoption by callback from
    /// `submitting`: a newer attempt that marked its send with another secret would be billed a second time).
    package let requiresCallbackSecretHash: String?
    /// Whether the change may only be made while the request it names in `waiting_for` is still in flight (a
    /// request handed back to wait for it): one that ended meanwhile has already woken or completed its waiters.
    package let requiresTwinInFlight: Bool

    /// Whether the state changes (a submission mark keeps it).
    package var changesState: Bool { from != to }
}

/// The pure transition function of a request: no I/O, so it is tested event by event, and every write of the
/// worker is derived from what it returns.
package enum RequestStateMachine {
    /// Why an event does not apply in a state.
    package struct IllegalEvent: Error, Sendable, Hashable, CustomStringConvertible {
        package let state: RequestState
        package let event: RequestEvent

        package var description: String {
            "a request that is \(state.rawValue) cannot take the event \(event.name)"
        }
    }

    /// What `event` does to a request in `state`. `attemptsLeft` says whether another attempt is allowed
    /// (`attempt < max_attempts`); it decides between retrying and failing. `changes` are the caller's columns
    /// (a result, a path), to which the machine adds its own.
    package static func transition(
        from state: RequestState, on event: RequestEvent, attemptsLeft: Bool, changes: RequestChanges = .init()
    ) throws(IllegalEvent) -> RequestTransition {
        var changes = changes
        var lease = LeaseEffect.release
        var attempts = AttemptEffect.unchanged
        var createsPostTasks = false
        var requiresNoRemoteUUID = false
        var requiresCallbackSecretHash: String?
        var requiresTwinInFlight = false
        let next: RequestState
        switch (state, event) {
        case (.queued, .claimed), (.retrying, .claimed):
            next = .submitting
            (lease, attempts) = (.take, .spendOne)
            changes.clearsErrorMessage = true
            changes.stampsSubmitStarted = true
            // The attempt may reach the API: an answer is owed from now, unless one already is.
            changes.answerOwed = .fromNowUnlessOwed
        case (.submitting, .sending(let path, let callbackSecretHash)):
            next = .submitting
            lease = .keep
            changes.stampsSubmitStarted = true
            changes.submitPath = path
            changes.callbackSecretHash = callbackSecretHash
        case (.submitting, .accepted(let uuid)):
            next = .awaitingResult
            changes.remoteUUID = uuid
        case (.submitting, .adopted(let uuid, _, let secretHash)), (.retrying, .adopted(let uuid, _, let secretHash)),
             (.queued, .adopted(let uuid, _, let secretHash)):
            next = .awaitingResult
            changes.remoteUUID = uuid
            changes.runAt = Date()
            requiresNoRemoteUUID = true
            if state == .submitting { requiresCallbackSecretHash = secretHash }
        case (.submitting, .completed), (.awaitingResult, .completed):
            next = .completed
            changes.stampsCompletedAt = true
            changes.answerOwed = .answered
            createsPostTasks = true
        case (.submitting, .failedRetryably(let reason, let retryAt)):
            next = attemptsLeft ? .retrying : .failed
            changes.errorMessage = reason
            if attemptsLeft { changes.runAt = retryAt }
        case (.submitting, .answerLost(let reason, let retryAt)):
            // Even on the last attempt: the detection it may have created is looked for before the request fails.
            next = .retrying
            changes.errorMessage = reason
            changes.runAt = retryAt
        case (.submitting, .leaseExpired):
            // The rescue writes the reason (naming the worker and the attempt) and the retry time in SQL.
            next = attemptsLeft ? .retrying : .failed
        case (.submitting, .failedPermanently(let reason)), (.awaitingResult, .failedPermanently(let reason)):
            next = .failed
            changes.errorMessage = reason
        case (.submitting, .released(let answerOwedSince)):
            next = .queued
            attempts = .giveBackOne
            changes.clearsSubmitStarted = true
            // Nothing was sent in this attempt: an answer is owed since an earlier one, if any.
            changes.answerOwed = .since(answerOwedSince)
        case (.submitting, .reused(let source)), (.queued, .reused(let source)):
            // Claimed and matched, or waiting and completed by its source's completion: never sent.
            next = .completed
            changes.stampsCompletedAt = true
            changes.answerOwed = .answered
            changes.submitPath = .reused
            changes.reusedFrom = source
            createsPostTasks = true
        case (.submitting, .waitingForIdenticalMedia(let inFlight, let answerOwedSince)):
            next = .queued
            attempts = .giveBackOne
            changes.clearsSubmitStarted = true
            changes.answerOwed = .since(answerOwedSince)
            changes.waitingFor = inFlight
            // Claimable again when that one ends; the release of its end (or its completion) is what wakes it, and
            // this is only the latest time it looks again should that never come (the request deleted by hand).
            changes.runAt = Date().addingTimeInterval(RequestStateMachine.identicalMediaRecheck.seconds)
            requiresTwinInFlight = true
        case (.queued, .cancelled), (.submitting, .cancelled), (.awaitingResult, .cancelled), (.retrying, .cancelled):
            next = .cancelled
        case (.failed, .retriedByUser):
            next = .queued
            attempts = .reset
            changes.runAt = Date()
            changes.clearsErrorMessage = true
            changes.clearsCompletedAt = true
        default:
            throw IllegalEvent(state: state, event: event)
        }
        guard next == state || state.canChange(to: next) else { throw IllegalEvent(state: state, event: event) }
        return RequestTransition(
            from: state, to: next, lease: lease, attempts: attempts, changes: changes,
            createsPostTasks: createsPostTasks, requiresNoRemoteUUID: requiresNoRemoteUUID,
            requiresCallbackSecretHash: requiresCallbackSecretHash, requiresTwinInFlight: requiresTwinInFlight
        )
    }

    /// How long a request waiting for identical media in flight stays unclaimed if nothing wakes it first.
    package static let identicalMediaRecheck: Duration = .seconds(600)

    /// What `event` does to `request` as the worker saw it.
    package static func transition(
        of request: DetectionRequest, on event: RequestEvent, changes: RequestChanges = .init()
    ) throws(IllegalEvent) -> RequestTransition {
        try transition(from: request.state, on: event, attemptsLeft: request.attemptsLeft, changes: changes)
    }

    /// The claim, as every state that may be claimed takes it; the claim's SQL is built from it.
    package static let claims: [RequestTransition] = RequestState.allCases.compactMap {
        try? transition(from: $0, on: .claimed, attemptsLeft: true)
    }

    /// A lost lease of a request being submitted, with an attempt left and without, and on the last attempt when
    /// its answer may have been lost (an answer is owed and no uuid is stored: the worker died while it waited);
    /// the rescue's SQL is built from them.
    static func leaseLost() throws(IllegalEvent) -> (
        withAttemptsLeft: RequestTransition, onLastAttempt: RequestTransition, onLastAttemptOwingAnswer: RequestTransition
    ) {
        (
            withAttemptsLeft: try transition(from: .submitting, on: .leaseExpired, attemptsLeft: true),
            onLastAttempt: try transition(from: .submitting, on: .leaseExpired, attemptsLeft: false),
            onLastAttemptOwingAnswer: try transition(
                from: .submitting, on: .answerLost(reason: "", retryAt: Date(timeIntervalSince1970: 0)), attemptsLeft: false
            )
        )
    }
}
