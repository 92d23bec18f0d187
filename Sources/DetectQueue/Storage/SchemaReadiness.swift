import Postgres

/// The start-up check that the database's transition tables (`detectq.request_state_transitions`,
/// `detectq.post_task_state_transitions`), which its triggers enforce, allow every change the worker's state
/// machines make: a schema older than the worker would otherwise refuse a change mid-run.
package enum TransitionTables {
    /// The changes the machines make that the database's tables do not allow, described; empty when they agree.
    package static func disallowedChanges(on connection: PostgresConnection) async throws -> [String] {
        let requests = Set(try await connection.query("SELECT from_state::text AS f, to_state::text AS t FROM detectq.request_state_transitions")
            .map { "\(try $0.decode("f", as: String.self)) → \(try $0.decode("t", as: String.self))" })
        let postTasks = Set(try await connection.query("SELECT from_state::text AS f, to_state::text AS t FROM detectq.post_task_state_transitions")
            .map { "\(try $0.decode("f", as: String.self)) → \(try $0.decode("t", as: String.self))" })
        return RequestStateMachine.stateChanges.map(\.description).filter { !requests.contains($0) }.sorted().map { "request \($0)" }
            + PostTaskStateMachine.stateChanges.map(\.description).filter { !postTasks.contains($0) }.sorted().map { "post-task \($0)" }
    }
}

/// What a worker finds in the database it is given, checked once at start.
package enum SchemaReadiness: Sendable, Equatable {
    /// The schema is there and allows every change the worker makes.
    case ready
    /// There is no detectq schema: `detectq migrate` has not run.
    case notMigrated
    /// The schema is older than the worker: its transition tables refuse these changes.
    case refuses([String])

    /// The readiness of the database behind `connection`.
    package static func check(on connection: PostgresConnection) async throws -> SchemaReadiness {
        let migrated = try await connection.query("SELECT to_regclass('detectq.workers') IS NOT NULL AS ready")[0].decode("ready", as: Bool.self)
        guard migrated else { return .notMigrated }
        let refused = try await TransitionTables.disallowedChanges(on: connection)
        return refused.isEmpty ? .ready : .refuses(refused)
    }
}
