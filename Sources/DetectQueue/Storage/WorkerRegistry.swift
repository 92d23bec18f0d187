import Foundation
import Postgres

/// The `detectq.workers` table, from a worker's side: it announces itself when it starts, refreshes its
/// heartbeat with its leases, and marks itself stopped when it drains cleanly, so that the dashboard can tell
/// live workers from silent ones.
struct WorkerRegistry: Sendable {
    let pool: PostgresConnectionPool
    let configuration: WorkerConfiguration

    /// Rows of workers that have been stopped or silent this long are removed when a worker starts.
    static let forgottenAfter: Duration = .seconds(86_400)

    /// Writes this worker's row as new: started now, heartbeat now, not stopped. Then forgets old rows.
    func announce() async throws {
        try await write(starting: true)
        try await pool.query("""
            DELETE FROM detectq.workers
            WHERE heartbeat_at < now() - make_interval(secs => \(Self.forgottenAfter.seconds))
            """)
    }

    /// Refreshes the heartbeat, writing the row again if it is missing (an announcement that failed, or a
    /// row removed by hand).
    func heartbeat() async throws {
        try await write(starting: false)
    }

    private func write(starting: Bool) async throws {
        try await pool.query("""
            INSERT INTO detectq.workers (worker_id, host, pid, concurrency, lease_seconds)
            VALUES (\(configuration.workerID), \(ProcessInfo.processInfo.hostName), \(Int(getpid())),
                    \(configuration.concurrency), \(configuration.lease.seconds))
            ON CONFLICT (worker_id) DO UPDATE SET
                host = EXCLUDED.host, pid = EXCLUDED.pid, concurrency = EXCLUDED.concurrency,
                lease_seconds = EXCLUDED.lease_seconds, heartbeat_at = now(), stopped_at = NULL,
                started_at = CASE WHEN \(starting) THEN now() ELSE detectq.workers.started_at END
            """)
    }

    func stopped() async throws {
        try await pool.query("""
            UPDATE detectq.workers SET heartbeat_at = now(), stopped_at = now() WHERE worker_id = \(configuration.workerID)
            """)
    }
}
