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
            guard let request = try await store.request(id: id) else {
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
}
