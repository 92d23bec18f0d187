import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import Postgres
import Testing

/// These tests stop and start a PostgreSQL server of their own, so the shared test server is never disturbed.
@Suite("Recovering from a server restart", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct ServerRestartTests {
    @Test(arguments: [ThrowawayPostgresCluster.ShutdownMode.fast, .immediate])
    func theQueryAfterARestartWorksOrFailsOnceThenWorks(mode: ThrowawayPostgresCluster.ShutdownMode) async throws {
        let cluster = try await ThrowawayPostgresCluster.startForTest()
        let configuration = PostgresConfiguration(connectionString: cluster.connectionString)
        let connection = try await PostgresConnection.connect(configuration)
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        do {
            #expect(try await connection.query("SELECT 1 AS one")[0].decode("one", as: Int.self) == 1)
            _ = try await pool.query("SELECT 1")

            try await cluster.stopServer(mode)
            let whileDown = await #expect(throws: PostgresError.self) { try await connection.query("SELECT 1") }
            #expect(whileDown?.kind == .connection)
            try await cluster.startServer()

            for client in [QueryClient.connection(connection), .pool(pool)] {
                var failures = 0
                while true {
                    do {
                        _ = try await client.query("SELECT 1")
                        break
                    } catch let error as PostgresError {
                        #expect(error.kind == .connection, "\(error)")
                        failures += 1
                        #expect(failures <= 1, "more than one failure after the server came back: \(error)")
                        if failures > 1 { break }
                    }
                }
            }
        } catch {
            Issue.record(error)
        }
        await connection.close()
        await pool.close()
        await cluster.destroy()
    }

    @Test func theListenerComesBackAfterARestart() async throws {
        let cluster = try await ThrowawayPostgresCluster.startForTest()
        let configuration = PostgresConfiguration(connectionString: cluster.connectionString)
        var events = PostgresNotificationListener.listen(configuration, channels: ["restart_test"]).makeAsyncIterator()
        #expect(await events.next() == .listening)
        try await cluster.stopServer(.fast)
        try await cluster.startServer()
        #expect(await events.next() == .listening)
        let connection = try await PostgresConnection.connect(configuration)
        try await connection.query("NOTIFY restart_test, 'back'")
        guard case .notification(let notification)? = await events.next() else {
            Issue.record("expected the notification sent after the restart")
            return
        }
        #expect(notification.channel == "restart_test")
        #expect(notification.payload == "back")
        #expect(notification.senderProcessID == (await connection.backendProcessID()))
        await connection.close()
        await cluster.destroy()
    }
}

/// A connection or a pool, queried the same way.
private enum QueryClient {
    case connection(PostgresConnection)
    case pool(PostgresConnectionPool)

    func query(_ query: PostgresQuery) async throws -> PostgresRows {
        switch self {
        case .connection(let connection): try await connection.query(query)
        case .pool(let pool): try await pool.query(query)
        }
    }
}
