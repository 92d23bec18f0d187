import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("Connections, transactions and the pool", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ConnectionTests {
    @Test func aTransactionThatThrowsLeavesNoRows() async throws {
        struct Abort: Error {}
        let pool = PostgresConnectionPool(configuration: try await TestDatabase.createDatabase(), maximumConnections: 2)
        try await pool.query("CREATE TABLE items (name text NOT NULL)")
        await #expect(throws: Abort.self) {
            try await pool.transaction { connection in
                try await connection.query("INSERT INTO items VALUES (\("a")), (\("b"))")
                throw Abort()
            }
        }
        await #expect(throws: PostgresError.self) {
            try await pool.transaction { connection in
                try await connection.query("INSERT INTO items VALUES (\("c"))")
                try await connection.query("INSERT INTO items VALUES (NULL)")
            }
        }
        #expect(try await pool.query("SELECT count(*) AS n FROM items")[0].decode("n", as: Int.self) == 0)
        let committed = try await pool.transaction { connection in
            try await connection.query("INSERT INTO items VALUES (\("d")), (\("e"))").affectedRows
        }
        #expect(committed == 2)
        #expect(try await pool.query("SELECT count(*) AS n FROM items")[0].decode("n", as: Int.self) == 2)
    }

    @Test func twoHundredConcurrentQueriesThroughFourConnections() async throws {
        let applicationName = "pool-test-\(UUID().uuidString.prefix(8))"
        let pool = PostgresConnectionPool(
            configuration: try TestDatabase.serverConfiguration(applicationName: applicationName), maximumConnections: 4
        )
        let observer = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let rows = try await pool.query("""
                        SELECT pg_sleep(0.005), \(index)::int8 AS index,
                               (SELECT count(*) FROM pg_stat_activity WHERE application_name = \(applicationName)) AS open
                        """)
                    #expect(try rows[0].decode("index", as: Int.self) == index)
                    return try rows[0].decode("open", as: Int.self)
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(counts.count == 200)
        #expect(counts.max()! <= 4, "the pool opened \(counts.max()!) connections")
        #expect(counts.max()! >= 2, "the queries ran concurrently")
        let open = try await observer.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = \(applicationName)"
        )
        #expect(try open[0].decode("n", as: Int.self) <= 4)
        await pool.close()
        await observer.close()
    }

    @Test func aCancelledTaskCancelsItsStatementAndTheConnectionStaysUsable() async throws {
        let connection = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        let started = ContinuousClock.now
        let task = Task { try await connection.query("SELECT pg_sleep(30)") }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        // On a busy machine the statement may not have reached the server yet: then it is never sent.
        let error = await #expect(throws: (any Error).self) { try await task.value }
        #expect((error as? PostgresError)?.sqlState == .queryCanceled || error is CancellationError, "\(String(describing: error))")
        // Well short of the sleep's 30 s, which is what an uncancelled statement would take (beside two CPU-bound
        // processes the cancel's own round trip once took 14 s).
        #expect(ContinuousClock.now - started < .seconds(25))
        #expect(try await connection.query("SELECT 2 AS two")[0].decode("two", as: Int.self) == 2)
        await connection.close()
    }

    @Test func aStatementCancelledWhileQueuedIsNeverSent() async throws {
        let connection = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        let observer = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        let backend = try #require(await connection.backendProcessID())
        // The first statement waits on a lock the observer holds, so it runs for as long as the test needs.
        let key = Int.random(in: 1...1_000_000_000)
        try await observer.query("SELECT pg_advisory_lock(\(key))")
        let first = Task { try await connection.query("SELECT pg_advisory_xact_lock(\(key))") }
        // Only once the first statement runs on the server is the second one sure to queue behind it.
        try await waitUntil("the first statement runs on the server") {
            try await observer.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE pid = \(backend) AND state = 'active'
                """)[0].decode("n", as: Int.self) > 0
        }
        // The queued statement, had it run, would leave its session holding a lock of its own.
        let trace = key + 1
        let queued = Task { try await connection.query("SELECT pg_advisory_lock(\(trace))") }
        try await Task.sleep(for: .milliseconds(100))
        queued.cancel()
        // The connection runs one statement at a time: the cancelled one is dropped when its turn comes.
        try await observer.query("SELECT pg_advisory_unlock(\(key))")
        _ = try await first.value
        await #expect(throws: CancellationError.self) { try await queued.value }
        // This one comes after the cancelled one in the connection's order, so the trace is there by now if ever.
        #expect(try await connection.query("SELECT 2 AS two")[0].decode("two", as: Int.self) == 2)
        let traces = try await observer.query("""
            SELECT count(*)::int8 AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = \(backend) AND objid = \(trace)
            """)[0].decode("n", as: Int.self)
        #expect(traces == 0, "the cancelled statement never ran")
        await connection.close()
        await observer.close()
    }

    @Test func waitersGiveUpTheirPlaceWhenCancelled() async throws {
        let name = "detectq-test-waiters-\(UUID().uuidString.prefix(8))"
        let pool = PostgresConnectionPool(configuration: try TestDatabase.serverConfiguration(applicationName: name), maximumConnections: 1)
        let observer = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        // The holder waits on a lock the observer holds, so the pool's one connection stays taken.
        let key = Int.random(in: 1...1_000_000_000)
        try await observer.query("SELECT pg_advisory_lock(\(key))")
        let holder = Task { try await pool.query("SELECT pg_advisory_xact_lock(\(key))") }
        try await waitUntil("the holder's statement runs") {
            try await observer.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE application_name = \(name) AND state = 'active'
                """)[0].decode("n", as: Int.self) > 0
        }
        let waiter = Task { try await pool.query("SELECT 1") }
        try await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        try await observer.query("SELECT pg_advisory_unlock(\(key))")
        await observer.close()
        _ = try await holder.value
        #expect(try await pool.query("SELECT 3 AS three")[0].decode("three", as: Int.self) == 3)
        await pool.close()
    }

    @Test func aConnectionLeftInsideATransactionIsNotReused() async throws {
        let pool = PostgresConnectionPool(configuration: try TestDatabase.serverConfiguration(), maximumConnections: 1)
        let first = try await pool.withConnection { connection in
            try await connection.query("BEGIN")
            return await connection.backendProcessID()
        }
        let second = try await pool.withConnection { await $0.backendProcessID() }
        #expect(first != nil && second != nil && first != second)
        await pool.close()
    }
}
