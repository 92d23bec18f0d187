import DetectqTestSupport
import Foundation
import Postgres
import SchemaMigrations
import Testing

@Suite("detectq migrate", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct MigrationTests {
    func migration(_ version: Int, _ sql: String) -> Migration {
        Migration(fileName: String(format: "%04d_test.sql", version), bytes: Array(sql.utf8))
    }

    @Test func theEmbeddedMigrationsAreExactlyTheFilesInMigrations() throws {
        let directory = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(DetectqMigrations.all.map(\.name) == files)
        for migration in DetectqMigrations.all {
            let bytes = try Data(contentsOf: directory.appendingPathComponent(migration.name))
            #expect(Migration(fileName: migration.name, bytes: Array(bytes)).checksum == migration.checksum)
        }
        #expect(DetectqMigrations.all.map(\.version) == DetectqMigrations.all.map(\.version).sorted())
    }

    /// An index built `CONCURRENTLY` holds no lock against writers, and cannot be built inside a transaction; a
    /// build that breaks (here on duplicates, as an interrupted one would) leaves an invalid index, which the next
    /// run drops and builds again rather than keeping it for `IF NOT EXISTS`.
    @Test func aMigrationOutsideATransactionBuildsAnIndexConcurrentlyAndResumesAfterABrokenRun() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let setup = migration(1, "CREATE TABLE detectq.t (x int); INSERT INTO detectq.t VALUES (1), (1), (2);")
        let concurrent = migration(2, """
            -- detectq: no transaction
            -- One statement per line ending in a semicolon.
            CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x
                ON detectq.t (x);
            SELECT 1;
            """)
        #expect(concurrent.runsOutsideATransaction && concurrent.statements.count == 2)
        #expect(!setup.runsOutsideATransaction)
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        func indexIsValid() async throws -> Bool? {
            try await pool.query("""
                SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 't_x'
                """).first?.decode("indisvalid", as: Bool.self)
        }
        await #expect(throws: MigrationError.self) {
            try await MigrationRunner(configuration: configuration, migrations: [setup, concurrent]).migrate()
        }
        #expect(try await indexIsValid() == false, "the broken build left an invalid index")
        try await pool.query("DELETE FROM detectq.t a USING detectq.t b WHERE a.x = b.x AND a.ctid > b.ctid")
        let report = try await MigrationRunner(configuration: configuration, migrations: [setup, concurrent]).migrate()
        #expect(report.applied.map(\.version) == [2])
        #expect(try await indexIsValid() == true, "dropped and built again")
        await pool.close()
    }

    @Test func aSecondRunIsANoOp() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let first = try await MigrationRunner(configuration: configuration).migrate()
        #expect(first.applied.map(\.name) == DetectqMigrations.all.map(\.name))
        let second = try await MigrationRunner(configuration: configuration).migrate()
        #expect(second.applied.isEmpty)
        #expect(second.alreadyApplied == DetectqMigrations.all.count)
    }

    @Test func concurrentRunsApplyEachMigrationOnce() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let migrations = [
            migration(1, "CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (1);"),
            migration(2, "SELECT pg_sleep(0.2); UPDATE counter SET n = n + 1;"),
            migration(3, "UPDATE counter SET n = n + 10;"),
        ]
        let reports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
            for _ in 0..<4 {
                group.addTask { try await MigrationRunner(configuration: configuration, migrations: migrations).migrate() }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reports.map(\.applied.count).reduce(0, +) == 3)
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        #expect(try await pool.query("SELECT n FROM counter")[0].decode("n", as: Int.self) == 12)
        #expect(try await pool.query("SELECT count(*) AS n FROM detectq.schema_migrations")[0].decode("n", as: Int.self) == 3)
        await pool.close()

        let real = try await TestDatabase.createDatabase()
        let realReports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
            for _ in 0..<3 { group.addTask { try await MigrationRunner(configuration: real).migrate() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(realReports.map(\.applied.count).reduce(0, +) == DetectqMigrations.all.count)
    }

    @Test func anEditedAppliedMigrationIsAnError() async throws {
        let configuration = try await TestDatabase.createDatabase()
        _ = try await MigrationRunner(configuration: configuration, migrations: [migration(1, "CREATE TABLE a (x int);")]).migrate()
        let edited = [migration(1, "CREATE TABLE a (x bigint);"), migration(2, "CREATE TABLE b (x int);")]
        let error = try await #require(throws: MigrationError.self) {
            try await MigrationRunner(configuration: configuration, migrations: edited).migrate()
        }
        #expect(error.description.contains("0001_test.sql was edited after it was applied"))
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        #expect(try await pool.query("SELECT to_regclass('b')::text AS b")[0].decode("b", as: String?.self) == nil,
                "nothing after the edited migration runs")
        await pool.close()
    }

    @Test func aFailingMigrationIsRolledBackWhole() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let broken = [migration(1, "CREATE TABLE a (x int);"), migration(2, "CREATE TABLE b (x int); SELEC oops;")]
        let error = try await #require(throws: MigrationError.self) {
            try await MigrationRunner(configuration: configuration, migrations: broken).migrate()
        }
        #expect(error.description.hasPrefix("migration 0002_test.sql failed and was rolled back"))
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let tables = try await pool.query("SELECT to_regclass('a')::text AS a, to_regclass('b')::text AS b")[0]
        #expect(try tables.decode("a", as: String?.self) == "a")
        #expect(try tables.decode("b", as: String?.self) == nil)
        let fixed = [broken[0], migration(2, "CREATE TABLE b (x int);")]
        #expect(try await MigrationRunner(configuration: configuration, migrations: fixed).migrate().applied.map(\.version) == [2])
        await pool.close()
    }

    /// Migration 0005 makes media_url https only: a request still waiting with another URL, which the API could
    /// only refuse, is cancelled with the reason, and no such URL can be inserted afterwards.
    @Test func aWaitingRequestWhoseURLIsNotHTTPSIsCancelledByMigration5() async throws {
        let configuration = try await TestDatabase.createDatabase()
        _ = try await MigrationRunner(configuration: configuration, migrations: DetectqMigrations.all.filter { $0.version < 5 }).migrate()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let plain = try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('http://cdn.example.com/a.wav') RETURNING id")[0]
            .decode("id", as: Int.self)
        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/b.wav')")
        #expect(try await MigrationRunner(configuration: configuration).migrate().applied.map(\.version).contains(5))
        let rows = try await pool.query("SELECT id, state::text AS state, error_message FROM detectq.requests ORDER BY id")
        #expect(try rows.map { try $0.decode("state", as: String.self) } == ["cancelled", "queued"])
        #expect(try rows[0].decode("error_message", as: String?.self)?.contains("https://") == true)
        let event = try await pool.query("SELECT detail FROM detectq.request_events WHERE request_id = \(plain) AND to_state = 'cancelled'")
        #expect(try event.first?.decode("detail", as: String?.self)?.contains("migration 0005") == true)
        await #expect(throws: PostgresError.self) {
            try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('http://cdn.example.com/c.wav')")
        }
        await pool.close()
    }
}
