import Foundation
import Postgres

/// What people do to requests by hand (`detectq retry`, `detectq cancel`), through the same state machine
/// as the workers, so a command can never move a request where a worker could not.
package struct RequestAdministration: Sendable {
    package let store: RequestStore

    package init(store: RequestStore) {
        self.store = store
    }

    /// What happened to one request.
    package enum Outcome: Sendable, Hashable {
        case changed(from: RequestState, to: RequestState)
        /// Refused, with the reason in words.
        case refused(String)
    }

    /// Turns failed requests back into claimable ones, with their attempts given back.
    package func retry(_ ids: [Int]) async throws -> [(Int, Outcome)] {
        try await apply(.retriedByUser, to: ids) { state in
            "it is \(state.rawValue); only a failed request can be retried"
        }
    }

    /// Cancels unfinished requests.
    package func cancel(_ ids: [Int]) async throws -> [(Int, Outcome)] {
        try await apply(.cancelled, to: ids) { state in
            "it is already \(state.rawValue); only an unfinished request can be cancelled"
        }
    }

    private func apply(_ event: RequestEvent, to ids: [Int], refusal: (RequestState) -> String) async throws -> [(Int, Outcome)] {
        var outcomes: [(Int, Outcome)] = []
        for id in ids {
            guard let request = try await store.requestWithoutTokens(id: id) else {
                outcomes.append((id, .refused("there is no request \(id)")))
                continue
            }
            guard let next = try? RequestStateMachine.transition(of: request, on: event).to else {
                outcomes.append((id, .refused(refusal(request.state))))
                continue
            }
            if try await store.apply(event, to: request, workerID: nil) {
                outcomes.append((id, .changed(from: request.state, to: next)))
            } else {
                outcomes.append((id, .refused("it changed while the command ran; try again")))
            }
        }
        return outcomes
    }

    /// Deletes finished requests (completed, failed, cancelled) last updated more than `age` ago, with their
    /// events and post-tasks, `batchSize` per statement so no lock is held for long; rows a worker holds are
    /// skipped. Returns how many were deleted.
    package func prune(olderThan age: Duration, batchSize: Int) async throws -> Int {
        var deleted = 0
        while true {
            let batch = try await store.pool.query(NonStateWrite.pruned(olderThan: age, limit: batchSize)).affectedRows
            deleted += batch
            if batch < batchSize { return deleted }
        }
    }

    /// One request as `detectq show` prints it, each field as PostgreSQL writes it, and its history; nil when
    /// there is no such request.
    package func describe(id: Int) async throws -> (fields: PostgresRow, history: PostgresRows)? {
        guard let row = try await store.pool.query("""
            SELECT id, state::text AS state, coalesce(media_url, media_path, '(media token)') AS media, wait_mode, priority, attempt,
                   max_attempts, remote_uuid, submit_path, media_type, label, is_fake, aggregated_score, error_message,
                   file_deleted_at::text AS file_deleted_at, created_at::text AS created_at, completed_at::text AS completed_at,
                   metadata::text AS metadata
            FROM detectq.requests WHERE id = \(id)
            """).first else { return nil }
        let history = try await store.pool.query("""
            SELECT at::text AS at, coalesce(from_state::text, '-') AS from_state, to_state::text AS to_state,
                   coalesce(worker_id, '-') AS worker_id, detail
            FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
            """)
        return (row, history)
    }
}
