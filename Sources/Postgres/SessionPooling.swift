import Foundation
import Synchronization

/// How the sessions of a connection string reach PostgreSQL: each client keeping one server session for its
/// life (a direct connection, or a session-mode pool), or borrowing one per transaction (PgBouncer's
/// transaction pooling), where `LISTEN`, session advisory locks and session `SET`s do not hold.
package enum SessionPooling: Sendable, Hashable {
    case session
    case transaction

    /// Finds out, in two steps:
    /// - A direct connection is told its server process's id when it opens; a pooler makes one up. When the
    ///   id the connection was given is the one the server reports, the connection is direct: a session.
    /// - Behind a pooler, the question is the one that matters: does a `LISTEN` hear a `NOTIFY`? A session
    ///   (a session-mode pool) hears it at once; through transaction pooling the listening server is lent to
    ///   others and nothing arrives. No notification within `patience` means transaction pooling.
    package static func of(_ configuration: PostgresConfiguration, patience: Duration = .seconds(3)) async throws -> SessionPooling {
        let connection = try await PostgresConnection.connect(configuration)
        do {
            let announced = await connection.backendProcessID()
            let serving = try await connection.query("SELECT pg_backend_pid() AS pid")[0].decode("pid", as: Int32.self)
            let pooling = announced == serving ? .session : try await hearsItsOwnNotification(configuration, sender: connection, patience: patience)
            await connection.close()
            return pooling
        } catch {
            await connection.close()
            throw error
        }
    }

    /// The `application_name` of the probe's listening connection.
    package static let probeName = "detectq session pooling probe"

    private static func hearsItsOwnNotification(
        _ configuration: PostgresConfiguration, sender: PostgresConnection, patience: Duration
    ) async throws -> SessionPooling {
        let channel = "detectq_probe_" + UUID().uuidString.prefix(8).lowercased()
        // Through transaction pooling the LISTEN stays on whichever server the pool lent (pooled sessions are
        // not reset), so that server is named after the probe, not after the worker that asked: the worker
        // itself never listens through the pool.
        let probe = { var probe = configuration; probe.applicationName = Self.probeName; return probe }()
        let listening = ListeningFlag()
        let heard = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in PostgresNotificationListener.listen(probe, channels: [channel]) {
                    switch event {
                    case .listening:
                        listening.set()
                        try await sender.query("SELECT pg_notify(\(channel), 'probe')")
                    case .notification(let notification) where notification.channel == channel:
                        return true
                    case .notification:
                        continue
                    }
                }
                return false
            }
            group.addTask {
                try await Task.sleep(for: patience)
                return false
            }
            defer { group.cancelAll() }
            return try await group.next() ?? false
        }
        if heard { return .session }
        guard listening.isSet else {
            throw PostgresError(kind: .connection, message: "could not LISTEN to find out how the connection pools sessions")
        }
        return .transaction
    }
}

/// Set once the probe's `LISTEN` is in place.
private final class ListeningFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
