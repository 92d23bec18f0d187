import Foundation
import Postgres
import Synchronization

/// The writes post-processors may make, through their context's capabilities: the SQL is here, bound to one
/// request at a time, so no processor holds the pool or writes against the schema itself.
struct PostProcessingEffects: Sendable {
    let pool: PostgresConnectionPool
    /// The names of the registered processors that deliver each kind of alert.
    let sinks: [AlertKind: [String]]

    init(pool: PostgresConnectionPool, processors: [any PostProcessor]) {
        self.pool = pool
        sinks = Dictionary(grouping: processors.compactMap { processor in processor.deliveredAlert.map { ($0, processor.name) } }) { $0.0 }
            .mapValues { $0.map(\.1).sorted() }
    }

    func recordFileDeleted(requestID: Int, at date: Date) async throws {
        try await pool.query(NonStateWrite.fileDeleted(id: requestID, at: date))
    }

    func raise(_ kind: AlertKind, requestID: Int) async throws {
        guard let names = sinks[kind], !names.isEmpty else { return }
        try await pool.query(NonStateWrite.alertRaised(requestID: requestID, sinks: names))
    }

    func archiveIntelligence(_ json: String, remoteUUID: String, requestID: Int) async throws {
        try await pool.query("""
            INSERT INTO detectq.intelligence_archive (request_id, remote_uuid, intelligence)
            VALUES (\(requestID), \(remoteUUID), \(PostgresJSON(text: json)))
            ON CONFLICT (request_id) DO UPDATE SET intelligence = EXCLUDED.intelligence, remote_uuid = EXCLUDED.remote_uuid,
                archived_at = now()
            """)
    }
}

/// A `pg_notify` to send: its channel and payload.
package struct PostgresNotice: Sendable, Hashable {
    package let channel: String
    package let payload: String

    package init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
}

/// The notifications one post-task run has sent so far, to go out with the run's end.
final class PendingNotifications: Sendable {
    private let sent = Mutex<[PostgresNotice]>([])

    func add(_ notice: PostgresNotice) {
        sent.withLock { $0.append(notice) }
    }

    var all: [PostgresNotice] { sent.withLock { $0 } }
}
