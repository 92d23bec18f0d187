/// How the sessions of a connection string reach PostgreSQL: each client keeping one server session for its
/// life (a direct connection, or a session-mode pool), or borrowing one per transaction (PgBouncer's
/// transaction pooling), where `LISTEN`, session advisory locks and session `SET`s do not hold.
package enum SessionPooling: Sendable, Hashable {
    case session
    case transaction

    /// Finds out by watching the server process behind one client connection while a second client holds a
    /// transaction open. A session keeps its server process; a transaction pool lends the first client's
    /// idle server to the second, or gives the first another one. Opens two connections for a moment.
    ///
    /// A session-mode pool with room for a single server makes the second client wait for a server; the
    /// answer then comes when the pooler gives up on it (`query_wait_timeout`).
    package static func of(_ configuration: PostgresConfiguration) async throws -> SessionPooling {
        let first = try await PostgresConnection.connect(configuration)
        let second: PostgresConnection
        do {
            second = try await PostgresConnection.connect(configuration)
        } catch {
            await first.close()
            throw error
        }
        do {
            let pooling = try await compare(first, second)
            await first.close()
            await second.close()
            return pooling
        } catch {
            await first.close()
            await second.close()
            throw error
        }
    }

    private static func compare(_ first: PostgresConnection, _ second: PostgresConnection) async throws -> SessionPooling {
        let backend: PostgresQuery = "SELECT pg_backend_pid() AS pid"
        let firstBackend = try await first.query(backend)[0].decode("pid", as: Int.self)
        try await second.query("BEGIN")
        let secondBackend = try await second.query(backend)[0].decode("pid", as: Int.self)
        var pooling = secondBackend == firstBackend ? SessionPooling.transaction : .session
        // A pooler lending servers round robin may hand the first client its old server again by chance.
        for _ in 0..<3 where pooling == .session {
            if try await first.query(backend)[0].decode("pid", as: Int.self) != firstBackend { pooling = .transaction }
        }
        try await second.query("ROLLBACK")
        return pooling
    }
}
