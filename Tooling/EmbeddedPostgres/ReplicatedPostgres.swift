import Foundation
import Postgres

/// A throwaway primary with a streaming standby, on two loopback ports that one multi-host URL names
/// (`target_session_attrs=read-write`), for the chaos suite's failovers: after each, the promoted standby is
/// the primary and a new standby, made from it, takes the old primary's port, so the URL never changes.
package actor ReplicatedPostgres {
    package private(set) var primary: ThrowawayPostgresCluster
    package private(set) var standby: ThrowawayPostgresCluster
    /// A libpq URI naming both servers, which finds whichever one accepts writes.
    package nonisolated let connectionString: String

    private init(primary: ThrowawayPostgresCluster, standby: ThrowawayPostgresCluster) {
        self.primary = primary
        self.standby = standby
        connectionString = "postgresql://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(standby.port)/postgres"
            + "?target_session_attrs=read-write&connect_timeout=2"
    }

    /// Starts a primary (see `ThrowawayPostgresCluster.start`) and a standby of it.
    package static func start(durableCommits: Bool = false) async throws -> ReplicatedPostgres {
        let primary = try await ThrowawayPostgresCluster.start(durableCommits: durableCommits)
        do {
            return ReplicatedPostgres(primary: primary, standby: try await primary.makeStandby())
        } catch {
            await primary.destroy()
            throw error
        }
    }

    /// Once the standby streams, stops the primary (a fast shutdown, which first sends a streaming standby
    /// every WAL record it wrote), promotes the standby, and makes a new standby of it on the old primary's
    /// port. Returns how long writes had no server: from the stop to the end of the promotion.
    ///
    /// The wait is what makes it a failover that loses nothing: a standby that is not streaming (it is still
    /// reconnecting after the primary restarted) would be promoted without the commits it has not received,
    /// which is asynchronous replication's own window, not the queue's.
    package func failOver() async throws -> Duration {
        try await waitForStreamingStandby()
        let started = ContinuousClock.now
        try await primary.stopServer(.fast)
        try await standby.promote()
        let unavailable = ContinuousClock.now - started
        let retired = primary
        primary = standby
        await retired.destroy()
        standby = try await primary.makeStandby(port: retired.port)
        return unavailable
    }

    private func waitForStreamingStandby() async throws {
        let connection = try await PostgresConnection.connect(PostgresConfiguration(connectionString: primary.connectionString))
        do {
            try await waitUntil(deadline: .now + .seconds(60)) {
                try await connection.query("SELECT count(*)::int8 AS n FROM pg_stat_replication WHERE state = 'streaming'")[0]
                    .decode("n", as: Int.self) > 0
            }
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
    }

    private func waitUntil(deadline: ContinuousClock.Instant, _ condition: () async throws -> Bool) async throws {
        while try await !condition() {
            guard ContinuousClock.now < deadline else {
                throw ClusterError("the standby on port \(standby.port) did not stream from the primary within 60 s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Stops both servers and deletes their directories.
    package func destroy() async {
        await standby.destroy()
        await primary.destroy()
    }
}
