import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("LISTEN/NOTIFY as an AsyncSequence", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct NotificationTests {
    @Test func aNotifySentAfterListenArrivesAndSurvivesALostConnection() async throws {
        let channel = "test_channel_\(UUID().uuidString.prefix(8).lowercased())"
        let listenerName = "listener-\(channel)"
        let events = PostgresNotificationListener.listen(
            try TestDatabase.serverConfiguration(applicationName: listenerName), channels: [channel, "other"]
        )
        let pool = PostgresConnectionPool(configuration: try TestDatabase.serverConfiguration(), maximumConnections: 2)
        var iterator = events.makeAsyncIterator()
        #expect(await iterator.next() == .listening)

        try await pool.query("SELECT pg_notify(\(channel), \("first ünïcode payload"))")
        guard case .notification(let first)? = await iterator.next() else {
            Issue.record("expected a notification")
            return
        }
        #expect(first.channel == channel)
        #expect(first.payload == "first ünïcode payload")

        let terminated = try await pool.query(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = \(listenerName)"
        )
        #expect(try terminated[0].decode("n", as: Int.self) == 1)
        #expect(await iterator.next() == .listening, "the listener reconnects and listens again")

        try await pool.query("SELECT pg_notify(\(channel), \("second"))")
        guard case .notification(let second)? = await iterator.next() else {
            Issue.record("expected a notification after reconnecting")
            return
        }
        #expect(second.payload == "second")
        await pool.close()
    }
}
