import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// `detectq queue list|set|pause|resume` as processes, against a real database.
@Suite("detectq queue as a process", .enabled(if: TestDatabase.isEnabled))
struct QueueCommandTests {
    @Test func setPauseResumeAndListAQueueAndRefuseWhatNoQueueCouldTake() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!)]
        func run(_ arguments: [String]) async throws -> DetectqExecutable.Outcome {
            try await DetectqExecutable.run(["queue"] + arguments, environment: environment)
        }
        let created = try await run(["set", "backfill"])
        #expect(created.status == 0, "\(created.standardError)")
        #expect(created.standardOutput.contains("queue backfill: weight 1, max_in_flight none"))
        let set = try await run(["set", "backfill", "--weight", "3", "--max-in-flight", "20", "--rate", "2.5", "--daily-limit", "1000"])
        #expect(set.status == 0, "\(set.standardError)")
        let row = try await pool.query("SELECT weight, max_in_flight, rate_limit, daily_limit FROM detectq.queues WHERE name = 'backfill'")[0]
        #expect(try row.decode("weight", as: Int.self) == 3 && row.decode("max_in_flight", as: Int.self) == 20)
        #expect(try row.decode("rate_limit", as: Double.self) == 2.5 && row.decode("daily_limit", as: Int.self) == 1_000)
        #expect(try await run(["set", "backfill", "--rate", "none"]).status == 0)
        #expect(try await pool.query("SELECT rate_limit FROM detectq.queues WHERE name = 'backfill'")[0].decode("rate_limit", as: Double?.self) == nil)

        try await pool.query("INSERT INTO detectq.requests (media_url, queue) VALUES ('https://cdn.example.com/a.wav', 'backfill')")
        let paused = try await run(["pause", "backfill", "--reason", "incident 42"])
        #expect(paused.status == 0 && paused.standardOutput.contains("queue backfill paused: incident 42"))
        let list = try await run(["list"])
        let line = try #require(list.standardOutput.split(separator: "\n").first { $0.hasPrefix("backfill ") })
        #expect(line.contains("waits: paused by detectq queue pause") && line.contains("incident 42"), "\(list.standardOutput)")
        let status = try await DetectqExecutable.run(["status"], environment: environment)
        #expect(status.standardOutput.contains("backfill (weight 3): 1 due, 0 in flight, 0 billed today; waits: paused by"))
        #expect(try await run(["resume", "backfill"]).standardOutput.contains("queue backfill resumed"))
        #expect(try await run(["resume", "backfill"]).standardOutput.contains("was not paused"))

        for (arguments, complaint) in [
            (["set", "Live Uploads"], "requests_queue_name"), (["set", "live", "--weight", "0"], "--weight"), (["set", "live", "--weight", "none"], "--weight"),
            (["set", "live", "--max-in-flight", "lots"], "--max-in-flight"), (["set", "live", "--rate", "-1"], "--rate"),
            (["pause", "live", "--reason", " "], "--reason"),
        ] {
            let refused = try await run(arguments)
            #expect(refused.status != 0 && refused.standardError.contains(complaint), "\(arguments): \(refused.standardError)")
        }
        #expect(try await pool.query("SELECT count(*)::int8 AS n FROM detectq.queues WHERE name = 'live'")[0].decode("n", as: Int.self) == 0)
        await pool.close()
    }
}
