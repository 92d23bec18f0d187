import Foundation
import Postgres

/// Something that happens to a post-task.
package enum PostTaskEvent: Sendable, Hashable {
    /// A worker claimed the task under a lease.
    case claimed
    /// The processor ran to its end.
    case succeeded
    /// The run failed: retried at `retryAt` while attempts remain; for good with no `retryAt` or none left.
    case failed(reason: String, retryAt: Date?)
    /// The processor waits for something that has not happened yet (a purge): it runs again at `at`, and this
    /// run does not count as an attempt.
    case rescheduled(at: Date)
    /// A worker shutting down gave the claim back unrun.
    case released
    /// The worker holding the lease stopped renewing it.
    case leaseExpired

    /// The event's name, for messages.
    package var name: String {
        switch self {
        case .claimed: "claimed"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .rescheduled: "rescheduled"
        case .released: "released"
        case .leaseExpired: "lease expired"
        }
    }
}

/// One change of a post-task, with everything it does to the row.
package struct PostTaskTransition: Sendable, Hashable {
    package let from: PostTask.State
    package let to: PostTask.State
    package let lease: LeaseEffect
    package let attempts: AttemptEffect
    /// The reason kept in `last_error`; nil leaves it, unless `clearsLastError`.
    package let lastError: String?
    package let clearsLastError: Bool
    /// When the task is due again, if the change says.
    package let runAt: Date?
    package let stampsCompletedAt: Bool

    /// The SQL assignments of the change (a lease taken is the claim's to write); values are appended to
    /// `parameters`.
    func assignments(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments = from == to ? [] : ["state = '\(to.rawValue)'"]
        if lease == .release { assignments.append("locked_by = NULL, locked_until = NULL") }
        if let attempt = attempts.assignment { assignments.append(attempt) }
        return assignments + columns(parameters: &parameters)
    }

    /// The assignments of the columns alone, besides state, lease and attempt.
    func columns(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments: [String] = []
        if stampsCompletedAt { assignments.append("completed_at = now()") }
        if let lastError {
            parameters.append(lastError)
            assignments.append("last_error = $\(parameters.count)")
        } else if clearsLastError {
            assignments.append("last_error = NULL")
        }
        if let runAt {
            parameters.append(runAt)
            assignments.append("run_at = $\(parameters.count)")
        }
        return assignments
    }
}

/// The pure transition function of a post-task, as `RequestStateMachine` is for requests: the claim, the
/// rescue and the three ways a run ends are all written from what it returns.
package enum PostTaskStateMachine {
    /// Why an event does not apply in a state.
    package struct IllegalEvent: Error, Sendable, Hashable, CustomStringConvertible {
        package let state: PostTask.State
        package let event: PostTaskEvent

        package var description: String {
            "a post-task that is \(state.rawValue) cannot take the event \(event.name)"
        }
    }

    /// What `event` does to a task in `state`; `attemptsLeft` decides between retrying and failing.
    package static func transition(
        from state: PostTask.State, on event: PostTaskEvent, attemptsLeft: Bool
    ) throws(IllegalEvent) -> PostTaskTransition {
        var lease = LeaseEffect.release
        var attempts = AttemptEffect.unchanged
        var lastError: String?
        var clearsLastError = false
        var runAt: Date?
        var stampsCompletedAt = false
        let next: PostTask.State
        switch (state, event) {
        case (.queued, .claimed), (.retrying, .claimed):
            next = .running
            (lease, attempts) = (.take, .spendOne)
        case (.running, .succeeded):
            next = .completed
            stampsCompletedAt = true
            clearsLastError = true
        case (.running, .failed(let reason, let retryAt)):
            lastError = reason
            if attemptsLeft, let retryAt {
                next = .retrying
                runAt = retryAt
            } else {
                next = .failed
            }
        case (.running, .rescheduled(let at)):
            next = .queued
            attempts = .giveBackOne
            runAt = at
        case (.running, .released):
            next = .queued
            attempts = .giveBackOne
        case (.running, .leaseExpired):
            // The rescue writes the reason (naming the worker) and the retry time in SQL.
            next = attemptsLeft ? .retrying : .failed
        default:
            throw IllegalEvent(state: state, event: event)
        }
        guard state.successors.contains(next) else { throw IllegalEvent(state: state, event: event) }
        return PostTaskTransition(
            from: state, to: next, lease: lease, attempts: attempts, lastError: lastError, clearsLastError: clearsLastError,
            runAt: runAt, stampsCompletedAt: stampsCompletedAt
        )
    }

    /// What `event` does to `task` as the worker saw it.
    package static func transition(of task: PostTask, on event: PostTaskEvent) throws(IllegalEvent) -> PostTaskTransition {
        try transition(from: task.state, on: event, attemptsLeft: task.attemptsLeft)
    }

    /// The claim, as every state that may be claimed takes it.
    static let claims: [PostTaskTransition] = PostTask.State.allCases.compactMap {
        try? transition(from: $0, on: .claimed, attemptsLeft: true)
    }

    /// A lost lease, with an attempt left and without.
    static func leaseLost() throws(IllegalEvent) -> (withAttemptsLeft: PostTaskTransition, onLastAttempt: PostTaskTransition) {
        (
            withAttemptsLeft: try transition(from: .running, on: .leaseExpired, attemptsLeft: true),
            onLastAttempt: try transition(from: .running, on: .leaseExpired, attemptsLeft: false)
        )
    }
}

extension PostTaskEvent {
    /// One event of each kind, for walking the whole state machine.
    package static let everyKind: [PostTaskEvent] = [
        .claimed, .succeeded, .failed(reason: "500", retryAt: Date(timeIntervalSince1970: 0)), .failed(reason: "400", retryAt: nil),
        .rescheduled(at: Date(timeIntervalSince1970: 0)), .released, .leaseExpired,
    ]
}
