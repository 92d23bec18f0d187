import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import SchemaMigrations
import Synchronization
import Testing
import WorkerTestSupport

/// A rolling upgrade (REFERENCE.md section 10): a database on the previous release's schema, holding requests and
/// post-tasks in every state as that release's workers leave them, then `detectq migrate` and this release's
/// workers; and each migration this release adds, tried as an upgrade meets it.
@Suite("A rolling upgrade from the previous release", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct RollingUpgradeTests {
    /// The last migration of the previous release (the release before issue 27 shipped 0001 to 0013); raise it when a
    /// release is cut, so that the migrations after it are what this release adds.
    static let previousReleaseLastMigration = 13

    /// The previous release's migrations.
    static let previousRelease = DetectqMigrations.all.filter { $0.version <= previousReleaseLastMigration }

    /// The migrations this release adds.
    static let added = DetectqMigrations.all.filter { $0.version > previousReleaseLastMigration }

    @Test func everyRequestAndPostTaskThePreviousReleaseLeftIsTakenOverAndNoneIsBilledTwice() async throws {
        let database = try await TestDatabase.createDatabase()
        _ = try await MigrationRunner(configuration: database, migrations: Self.previousRelease).migrate()
        let mediaRoot = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mediaRoot, withIntermediateDirectories: true)
        let harness = WorkerHarness(
            database: database, pool: PostgresConnectionPool(configuration: database, maximumConnections: 4),
            simulator: try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(100))), mediaRoot: mediaRoot
        )
        TestResources.stopAtEnd { await harness.stop() }
        let client = DetectClient(configuration: try harness.configuration().api)
        TestResources.stopAtEnd { try? await client.shutdown() }
        let old = PreviousReleaseRows(pool: harness.pool, client: client)

        // What the previous release's workers leave, written by SQL as they wrote it.
        let queued = [
            try await old.request("queued-sync", waitMode: "sync"), try await old.request("queued-poll", waitMode: "poll"),
            try await old.request("queued-callback", waitMode: "callback"),
        ]
        let retrying = try await old.retrying("retrying")
        let unsent = try await old.submittingAfterItsLease("unsent", billed: false)
        let (lostAnswer, lostUUID) = try await old.submittingAfterItsLease("lost-answer", billed: true)
        let (awaitingPoll, pollUUID) = try await old.awaitingResult("awaiting-poll", waitMode: "poll", pollLeaseExpired: true)
        let (awaitingCallback, callbackUUID) = try await old.awaitingResult("awaiting-callback", waitMode: "callback", pollLeaseExpired: false)
        let postTaskQueued = try await old.completed("fake-post-task-queued", postTask: .queued)
        let postTaskRunning = try await old.completed("fake-post-task-running", postTask: .runningAfterItsLease)
        let postTaskRetrying = try await old.completed("fake-post-task-retrying", postTask: .retrying)
        let failed = try await old.failed("failed")
        let cancelled = try await old.cancelled("cancelled")
        let billedBefore = await harness.simulator.state.snapshot().submissions
        #expect(billedBefore == 6, "the previous release had six detections billed")

        // The upgrade: this release's migrations, then its workers.
        let report = try await MigrationRunner(configuration: database).migrate()
        #expect(report.applied.map(\.name) == Self.added.map(\.name))
        let workers = try ["new-1", "new-2"].map { harness.startWorker(try harness.configuration(workerID: $0)) }
        let everything = queued + [retrying, unsent.id, lostAnswer, awaitingPoll, awaitingCallback, postTaskQueued, postTaskRunning,
                                   postTaskRetrying, failed, cancelled]
        try await harness.waitUntilProcessed(everything)
        for worker in workers { await worker.stop() }

        for id in queued + [retrying, unsent.id, lostAnswer, awaitingPoll, awaitingCallback, postTaskQueued, postTaskRunning, postTaskRetrying] {
            #expect(try await harness.row(id).decode("state", as: String.self) == "completed", "request \(id)")
        }
        #expect(try await harness.row(failed).decode("state", as: String.self) == "failed")
        #expect(try await harness.row(cancelled).decode("state", as: String.self) == "cancelled")
        #expect(try await harness.row(lostAnswer).decode("remote_uuid", as: String?.self) == lostUUID, "the lost answer was found, not sent again")
        #expect(try await harness.row(awaitingPoll).decode("remote_uuid", as: String?.self) == pollUUID)
        #expect(try await harness.row(awaitingCallback).decode("remote_uuid", as: String?.self) == callbackUUID)
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.submissionsByMedia.values.allSatisfy { $0 == 1 }, "no media billed twice: \(stats.submissionsByMedia)")
        #expect(stats.submissions == billedBefore + 5, "five requests were never billed before: \(stats.submissions)")
        let postTasks = try await harness.pool.query("""
            SELECT request_id, state::text AS state FROM detectq.post_tasks WHERE request_id = ANY(\([postTaskQueued, postTaskRunning, postTaskRetrying]))
            """).map { (try $0.decode("request_id", as: Int.self), try $0.decode("state", as: String.self)) }
        #expect(postTasks.count == 3 && postTasks.allSatisfy { $0.1 == "completed" }, "each post-task ran once, to its end: \(postTasks)")
        let counts = try await KeptCounts.both(harness.pool)
        #expect(counts.kept == counts.counted, "the kept counts agree with count(*) by state")
    }

    @Test(arguments: Self.added.map(\.name))
    func eachAddedMigrationNeitherRewritesATableNorHoldsWritersBehindIt(name: String) async throws {
        let migration = try #require(Self.added.first { $0.name == name })
        let before = DetectqMigrations.all.filter { $0.version < migration.version }
        let problems = try await MigrationSafetyCheck.run(migration, after: before)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test func theCheckCatchesAMigrationThatRewritesATableOrLocksItWhileItWorks() async throws {
        func migration(_ name: String, _ sql: String) -> Migration { Migration(fileName: name, bytes: Array(sql.utf8)) }
        let rewrite = migration("9001_rewrite.sql", "ALTER TABLE detectq.requests ADD COLUMN noted_at timestamptz DEFAULT clock_timestamp();")
        let rewrites = try await MigrationSafetyCheck.run(rewrite, after: DetectqMigrations.all)
        #expect(rewrites.contains { $0.contains("rewrote detectq.requests") }, "\(rewrites)")
        let index = migration("9002_index.sql", "CREATE INDEX requests_by_label ON detectq.requests (label);")
        let indexed = try await MigrationSafetyCheck.run(index, after: DetectqMigrations.all)
        #expect(indexed.contains { $0.contains("CONCURRENTLY") && $0.contains("detectq.requests") }, "\(indexed)")
        let validated = migration("9003_check.sql", "ALTER TABLE detectq.requests ADD CONSTRAINT requests_label_short CHECK (length(label) < 100);")
        let validates = try await MigrationSafetyCheck.run(validated, after: DetectqMigrations.all)
        #expect(validates.contains { $0.contains("NOT VALID") }, "\(validates)")
        let dropped = migration("9005_drop.sql", "ALTER TABLE detectq.requests DROP COLUMN traceparent;")
        let drops = try await MigrationSafetyCheck.run(dropped, after: DetectqMigrations.all)
        #expect(drops.contains { $0.contains("expand, then contract") }, "\(drops)")
        let queued = try await MigrationSafetyCheck.run(
            migration("9004_column.sql", "ALTER TABLE detectq.requests ADD COLUMN note text;"), after: DetectqMigrations.all, lockTimeout: .seconds(30)
        )
        #expect(queued.contains { $0.contains("waited") }, "a runner that waits for its lock for long holds writers behind it: \(queued)")
    }
}

/// Tries one migration as a rolling upgrade meets it, on a database migrated to `after`: while a long report
/// holds every table of the schema (an open transaction that read them), the migration runs, and a writer inserts
/// and updates requests and post-tasks, each allowed to wait 2 s for its lock. Returns what went wrong, one line
/// each: a writer that waited longer (the migration queued for a table's lock and held writers behind it), a
/// table whose storage the migration rewrote (its `relfilenode` changed: an `ALTER COLUMN … TYPE`, a volatile
/// default), statements that hold writers off for as long as the table is large (an index built, or a
/// constraint validated, inside the transaction), and a column dropped or renamed that the previous release's
/// workers may still read (0006 dropped one the first release read on every API call).
private enum MigrationSafetyCheck {
    static func run(_ migration: Migration, after base: [Migration], lockTimeout: Duration = .milliseconds(300)) async throws -> [String] {
        let database = try await TestDatabase.createDatabase()
        _ = try await MigrationRunner(configuration: database, migrations: base).migrate()
        let seed = try await PostgresConnection.connect(database)
        try await seed.executeScript("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/safety-' || n || '.wav' FROM generate_series(1, 50) AS n;
            UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_by = 'w', locked_until = now() WHERE id <= 2;
            UPDATE detectq.requests SET state = 'completed', result = '{}', completed_at = now(), locked_by = NULL, locked_until = NULL
            WHERE id <= 2;
            INSERT INTO detectq.post_tasks (request_id, processor) VALUES (1, 'safety'), (2, 'safety');
            """)
        let tables = try await storage(seed)

        // A long report: it read every table, and its transaction stays open while the migration runs.
        let report = try await PostgresConnection.connect(database)
        try await report.query("BEGIN")
        for table in tables.keys.sorted() {
            try await report.query(PostgresQuery(sql: "SELECT count(*) FROM detectq.\(table)", parameters: []))
        }
        let (gaveWay, finished) = (Flag(), Flag())
        let runner = MigrationRunner(configuration: database, migrations: base + [migration], lockTimeout: lockTimeout) { _ in gaveWay.raise() }
        let migrating = Task {
            defer { finished.raise() }
            return try await runner.migrate()
        }
        var problems: [String] = []
        try await waitUntil("the migration finished, waits for a lock, or gave way to one") {
            if gaveWay.isRaised || finished.isRaised { return true }
            return try await seed.query("""
                SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                """)[0].decode("n", as: Int.self) > 0
        }
        await seed.close()
        let writer = try await PostgresConnection.connect(database)
        try await writer.query("SET lock_timeout = '2s'")
        for (what, sql) in [
            ("an insert into detectq.requests", "INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/during.wav')"),
            ("an update of detectq.requests", "UPDATE detectq.requests SET priority = 1 WHERE id = 10"),
            ("an update of detectq.post_tasks", "UPDATE detectq.post_tasks SET run_at = now() WHERE request_id = 1"),
        ] {
            do {
                try await writer.query(PostgresQuery(sql: sql, parameters: []))
            } catch let error as PostgresError where error.sqlState == .lockNotAvailable {
                problems.append("\(migration.name): \(what) waited more than 2 s for its lock while the migration waited behind a long report")
            }
        }
        await writer.close()
        try await report.query("COMMIT")
        await report.close()
        _ = try await migrating.value

        let after = try await PostgresConnection.connect(database)
        let now = try await storage(after)
        await after.close()
        for (table, file) in tables where now[table] != file {
            problems.append("\(migration.name) rewrote detectq.\(table) (a copy of the whole table under an exclusive lock)")
        }
        problems += statementsThatHurtAnUpgrade(migration, existing: Set(tables.keys))
        return problems
    }

    /// Each table of the schema and the file its rows are stored in.
    private static func storage(_ connection: PostgresConnection) async throws -> [String: Int] {
        var files: [String: Int] = [:]
        for row in try await connection.query("""
            SELECT relname::text AS name, relfilenode::int8 AS file FROM pg_class
            WHERE relnamespace = 'detectq'::regnamespace AND relkind IN ('r', 'p')
            """) {
            files[try row.decode("name", as: String.self)] = try row.decode("file", as: Int.self)
        }
        return files
    }

    /// Statements that hold a table's writers off for as long as the table is large (an index built without
    /// `CONCURRENTLY`, a constraint validated as it is added, not `NOT VALID`, a column made `NOT NULL`), or that
    /// take away what the previous release's workers read (a column dropped or renamed).
    private static func statementsThatHurtAnUpgrade(_ migration: Migration, existing: Set<String>) -> [String] {
        let text = migration.sql.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }
            .joined(separator: "\n").lowercased()
        var problems: [String] = []
        for statement in text.split(separator: ";").map({ $0.split(whereSeparator: \.isWhitespace).joined(separator: " ") }) {
            guard let table = existing.first(where: { statement.contains("detectq.\($0) ") || statement.contains("detectq.\($0)(") }) else { continue }
            if statement.hasPrefix("create index") || statement.hasPrefix("create unique index"), !statement.contains(" concurrently ") {
                problems.append("\(migration.name) builds an index on detectq.\(table) holding its writers off while it builds; "
                    + "build it CONCURRENTLY, in a migration whose first line is '\(Migration.noTransactionMarker)'")
            }
            if statement.hasPrefix("alter table"), statement.contains("add constraint"),
               statement.contains(" check ") || statement.contains(" check(") || statement.contains("foreign key"), !statement.contains("not valid") {
                problems.append("\(migration.name) validates a constraint on detectq.\(table) holding its writers off while it reads every row; "
                    + "add it NOT VALID, and VALIDATE CONSTRAINT in a later statement")
            }
            if statement.hasPrefix("alter table"), statement.contains(" drop column") || statement.contains(" rename ") {
                problems.append("\(migration.name) drops or renames what the previous release's workers may still read on "
                    + "detectq.\(table), so beside the new schema they fail every attempt; add the new one now, and drop the old "
                    + "one a release later (expand, then contract)")
            }
            if statement.hasPrefix("alter table"), statement.contains("set not null") {
                problems.append("\(migration.name) makes a column of detectq.\(table) NOT NULL, reading every row under an exclusive lock; "
                    + "add a CHECK (… IS NOT NULL) NOT VALID and validate it first")
            }
        }
        return problems
    }
}

/// A flag raised once, read from any task.
private final class Flag: Sendable {
    private let raised = Mutex(false)
    func raise() { raised.withLock { $0 = true } }
    var isRaised: Bool { raised.withLock { $0 } }
}

/// Rows as the previous release's workers wrote them: each request inserted as a producer would, claimed, sent
/// (its detection created in the simulator, so that it is billed) and moved on by plain SQL.
private struct PreviousReleaseRows {
    let pool: PostgresConnectionPool
    let client: DetectClient
    let oldWorker = "previous-release-worker"

    /// Where a completed request's post-task was left.
    enum PostTaskLeft {
        case queued
        case runningAfterItsLease
        case retrying
    }

    func url(_ name: String) -> String { "https://cdn.example.com/upgrade-\(name).wav" }

    /// A queued request, as a producer inserts it.
    func request(_ name: String, waitMode: String = "sync") async throws -> Int {
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\(url(name)), \(waitMode)) RETURNING id
            """)[0].decode("id", as: Int.self)
    }

    /// The previous release's claim: an attempt spent, a lease, an answer owed from now.
    private func claim(_ id: Int, leaseEnds: String = "now() + interval '30 seconds'") async throws {
        try await pool.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'submitting', attempt = attempt + 1, locked_by = $2, locked_until = \(leaseEnds),
                   submit_started_at = now(), unanswered_since = coalesce(unanswered_since, now())
            WHERE id = $1
            """, parameters: [id, oldWorker]))
    }

    /// A request whose attempt met a 503 and waits for its next.
    func retrying(_ name: String) async throws -> Int {
        let id = try await request(name)
        try await claim(id)
        try await pool.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'retrying', locked_by = NULL, locked_until = NULL, run_at = now(),
                   error_message = 'HTTP 503: the service is unavailable'
            WHERE id = $1
            """, parameters: [id]))
        return id
    }

    /// A request whose worker died in submission, its lease run out: before sending, or after the API billed it
    /// and before its answer came back (the detection's uuid is returned).
    func submittingAfterItsLease(_ name: String, billed: Bool) async throws -> (id: Int, billedUUID: String?) {
        let id = try await request(name)
        try await claim(id, leaseEnds: "now() - interval '1 minute'")
        guard billed else { return (id, nil) }
        return (id, try await client.submit(.url(url(name)), wait: false).uuid)
    }

    /// A request the API accepted, waiting for its verdict: by poll (its poll lease held by the worker that died),
    /// or by callback (which went to that worker's receiver, now gone).
    func awaitingResult(_ name: String, waitMode: String, pollLeaseExpired: Bool) async throws -> (id: Int, uuid: String) {
        let id = try await request(name, waitMode: waitMode)
        try await claim(id)
        let uuid = try await client.submit(.url(url(name)), wait: false).uuid
        let lease = pollLeaseExpired ? "locked_by = $3, locked_until = now() - interval '1 minute'" : "locked_by = NULL, locked_until = NULL"
        try await pool.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'awaiting_result', remote_uuid = $2, accepted_at = now(), submit_path = 'url',
                   unanswered_since = NULL, run_at = now() + interval '1 second', \(lease),
                   callback_secret_hash = CASE WHEN wait_mode = 'callback' THEN repeat('ab', 32) END
            WHERE id = $1
            """, parameters: pollLeaseExpired ? [id, uuid, oldWorker] as [any PostgresEncodable] : [id, uuid]))
        return (id, uuid)
    }

    /// A fake completed under `Prefer: wait`, with its alert's post-task left where `postTask` says.
    func completed(_ name: String, postTask: PostTaskLeft) async throws -> Int {
        let id = try await request(name)
        try await claim(id)
        let item = try await client.submit(.url(url(name)), wait: true)
        try await pool.query(PostgresQuery(sql: """
            WITH done AS (
                UPDATE detectq.requests SET state = 'completed', remote_uuid = $2, result = $3::jsonb, label = $4, is_fake = true,
                       completed_at = now(), submit_path = 'url', unanswered_since = NULL, locked_by = NULL, locked_until = NULL
                WHERE id = $1 RETURNING id
            )
            INSERT INTO detectq.post_tasks (request_id, processor) SELECT id, 'test.alert' FROM done
            """, parameters: [id, item.uuid, item.rawJSON, item.label ?? "fake"]))
        switch postTask {
        case .queued:
            break
        case .runningAfterItsLease:
            try await pool.query(PostgresQuery(sql: """
                UPDATE detectq.post_tasks SET state = 'running', attempt = 1, locked_by = $2, locked_until = now() - interval '1 minute'
                WHERE request_id = $1
                """, parameters: [id, oldWorker]))
        case .retrying:
            try await pool.query(PostgresQuery(sql: """
                UPDATE detectq.post_tasks SET state = 'running', attempt = 1, locked_by = $2, locked_until = now() + interval '30 seconds'
                WHERE request_id = $1
                """, parameters: [id, oldWorker]))
            try await pool.query(PostgresQuery(sql: """
                UPDATE detectq.post_tasks SET state = 'retrying', locked_by = NULL, locked_until = NULL, run_at = now(),
                       last_error = 'the alert sink answered 502'
                WHERE request_id = $1
                """, parameters: [id]))
        }
        return id
    }

    /// A request the API refused for good.
    func failed(_ name: String) async throws -> Int {
        let id = try await request(name)
        try await claim(id)
        try await pool.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'failed', locked_by = NULL, locked_until = NULL, unanswered_since = NULL,
                   error_message = 'HTTP 400: the media could not be fetched'
            WHERE id = $1
            """, parameters: [id]))
        return id
    }

    /// A request cancelled while queued.
    func cancelled(_ name: String) async throws -> Int {
        let id = try await request(name)
        try await pool.query(PostgresQuery(sql: "UPDATE detectq.requests SET state = 'cancelled' WHERE id = $1", parameters: [id]))
        return id
    }
}
