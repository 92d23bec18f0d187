import Foundation
import Postgres

/// One post-processing task: a processor to run on one completed request (`detectq.post_tasks`).
package struct PostTask: Sendable, Hashable {
    /// Where a post-task is; the PostgreSQL enum `detectq.post_task_state` has the same values.
    package enum State: String, Sendable, CaseIterable, PostgresEncodable, PostgresDecodable {
        case queued, running, retrying, completed, failed

        /// The states this one may change to; the database's trigger enforces the same table.
        package var successors: Set<State> {
            switch self {
            case .queued: [.running]
            case .running: [.completed, .retrying, .failed, .queued]
            case .retrying: [.running]
            case .failed: [.queued]
            case .completed: []
            }
        }
    }

    package let id: Int
    package let requestID: Int
    package let processor: String
    package var state: State
    package var attempt: Int
    package var maxAttempts: Int
    package var lastError: String?

    /// Whether a failure of the current attempt may be retried.
    package var attemptsLeft: Bool { attempt < maxAttempts }

    static let columns = "id, request_id, processor, state, attempt, max_attempts, last_error"

    init(id: Int, requestID: Int, processor: String, state: State, attempt: Int, maxAttempts: Int, lastError: String?) {
        self.id = id
        self.requestID = requestID
        self.processor = processor
        self.state = state
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.lastError = lastError
    }

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        requestID = try row.decode("request_id")
        processor = try row.decode("processor")
        state = try row.decode("state")
        attempt = try row.decode("attempt")
        maxAttempts = try row.decode("max_attempts")
        lastError = try row.decode("last_error")
    }
}
