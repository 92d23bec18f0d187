import Foundation
import Postgres

/// Scenario 10: how fast producers can enqueue. A backfill of `rows` requests goes in by one
/// `INSERT … SELECT` and by `COPY`, into `detectq.requests` and into a copy of it without triggers (the same
/// columns, defaults, constraints and indexes); single-row INSERTs from several connections go into both too.
/// Each trigger's cost is what the `INSERT … SELECT` saves per row with that trigger alone disabled.
extension Scenarios {
    /// Rows per second into the queue and into its trigger-free copy, measured alike.
    package struct EnqueueRates: Sendable {
        package var queue: Double
        package var plain: Double
    }

    /// What an enqueue run showed.
    package struct EnqueueResult: Sendable {
        package var rows: Int
        package var insertSelect: EnqueueRates
        package var copy: EnqueueRates
        package var singleRows: EnqueueRates
        package var singleRowInserts: Int
        package var connections: Int
        /// Microseconds a row spends in each insert trigger, by trigger name, in firing order.
        package var triggerCosts: [(name: String, microseconds: Double)]
    }

    package func bulkEnqueue(rows: Int, singleRowInserts: Int, connections: Int = 8) async throws -> EnqueueResult {
        let database = try await context.freshDatabase("enqueue")
        let pool = database.pool
        try await pool.query("CREATE TABLE public.requests_plain (LIKE detectq.requests INCLUDING ALL)")
        let tables = (queue: "detectq.requests", plain: "public.requests_plain")
        let triggers = try await pool.query("""
            SELECT tgname FROM pg_trigger
            WHERE tgrelid = 'detectq.requests'::regclass AND NOT tgisinternal AND tgtype & 4 <> 0
            ORDER BY tgname
            """).map { try $0.decode("tgname", as: String.self) }

        /// Empties both tables (and what hangs off the queue), so every measure starts alike.
        func empty() async throws {
            try await pool.query("TRUNCATE detectq.requests, detectq.request_events, public.requests_plain CASCADE")
            try await pool.query("SELECT detectq.recount_states()")
        }
        /// Seconds one statement takes, from an empty table; the best of `rounds`.
        func timed(rounds: Int = 2, _ body: () async throws -> Void) async throws -> Double {
            var best = Double.infinity
            for _ in 0..<rounds {
                try await empty()
                let started = ContinuousClock.now
                try await body()
                best = min(best, (ContinuousClock.now - started).seconds)
            }
            return best
        }
        func insertSelect(into table: String) async throws {
            try await pool.query(PostgresQuery(sql: """
                INSERT INTO \(table) (media_url, wait_mode, metadata)
                SELECT 'https://bench.invalid/backfill-' || n || '.wav', 'callback', jsonb_build_object('customer', 'c-' || n % 100, 'n', n)
                FROM generate_series(1, $1) AS n
                """, parameters: [rows]))
        }
        let copyData = Data((1...rows).map { "https://bench.invalid/copy-\($0).wav\tcallback\t{\"customer\": \"c-\($0 % 100)\", \"n\": \($0)}\n" }.joined().utf8)
        func copy(into table: String) async throws {
            let copied = try await pool.withConnection { connection in
                try await connection.copyIn("COPY \(table) (media_url, wait_mode, metadata) FROM STDIN", data: copyData)
            }
            guard copied == rows else { throw BenchError("COPY copied \(copied) rows, not \(rows)") }
        }

        var insertSelectSeconds = (queue: 0.0, plain: 0.0)
        var copySeconds = (queue: 0.0, plain: 0.0)
        insertSelectSeconds.plain = try await timed { try await insertSelect(into: tables.plain) }
        insertSelectSeconds.queue = try await timed { try await insertSelect(into: tables.queue) }
        copySeconds.plain = try await timed { try await copy(into: tables.plain) }
        copySeconds.queue = try await timed { try await copy(into: tables.queue) }

        var costs: [(name: String, microseconds: Double)] = []
        for trigger in triggers {
            try await pool.query(PostgresQuery(sql: "ALTER TABLE detectq.requests DISABLE TRIGGER \(trigger)", parameters: []))
            let without = try await timed { try await insertSelect(into: tables.queue) }
            try await pool.query(PostgresQuery(sql: "ALTER TABLE detectq.requests ENABLE TRIGGER \(trigger)", parameters: []))
            costs.append((trigger, max(0, insertSelectSeconds.queue - without) / Double(rows) * 1e6))
        }

        let writers = PostgresConnectionPool(
            configuration: PostgresConfiguration(connectionString: database.uri, applicationName: "detectq bench producers"),
            maximumConnections: connections
        )
        func singleRows(into table: String) async throws {
            let each = singleRowInserts / connections
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<connections {
                    group.addTask {
                        for number in 0..<each {
                            try await writers.query(PostgresQuery(
                                sql: "INSERT INTO \(table) (media_url, wait_mode) VALUES ($1, 'callback')",
                                parameters: ["https://bench.invalid/single-\(writer)-\(number).wav"]
                            ))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let singleSeconds = (
            plain: try await timed(rounds: 1) { try await singleRows(into: tables.plain) },
            queue: try await timed(rounds: 1) { try await singleRows(into: tables.queue) }
        )
        await writers.close()
        await context.drop(database)
        let inserted = Double(singleRowInserts / connections * connections)
        return EnqueueResult(
            rows: rows,
            insertSelect: EnqueueRates(queue: Double(rows) / insertSelectSeconds.queue, plain: Double(rows) / insertSelectSeconds.plain),
            copy: EnqueueRates(queue: Double(rows) / copySeconds.queue, plain: Double(rows) / copySeconds.plain),
            singleRows: EnqueueRates(queue: inserted / singleSeconds.queue, plain: inserted / singleSeconds.plain),
            singleRowInserts: Int(inserted), connections: connections, triggerCosts: costs
        )
    }
}
