import DetectqTestSupport
import Foundation
import Postgres
import SchemaMigrations
import Testing

/// `schema.sql`: today's schema in one file, as the migrations leave it. The tests fail when a migration
/// changes the schema and the snapshot was not made again
/// (`DETECTQ_UPDATE_SCHEMA_SNAPSHOT=1 scripts/test.sh --filter SchemaSnapshotTests` writes it).
@Suite("schema.sql", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct SchemaSnapshotTests {
    static let snapshot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("schema.sql")

    static var header: String {
        let versions = DetectqMigrations.all.map { String(format: "%04d", $0.version) }
        return """
            -- detectq's schema as the migrations in migrations/ leave it (\(versions.first ?? "") to \(versions.last ?? "")): the
            -- definitions of the schema detectq, then the rows of its two transition tables, which its triggers enforce.
            -- Written by pg_dump --schema-only and normalised; do not edit it. Databases are made and upgraded with
            -- `detectq migrate`, never from this file. After adding a migration:
            --     DETECTQ_UPDATE_SCHEMA_SNAPSHOT=1 scripts/test.sh --filter SchemaSnapshotTests


            """
    }

    @Test func theSnapshotIsWhatTheMigrationsMake() async throws {
        let migrated = try await TestDatabase.createMigratedDatabase()
        let dumped = try await SchemaDump.of(database: try #require(migrated.database))
        if ProcessInfo.processInfo.environment["DETECTQ_UPDATE_SCHEMA_SNAPSHOT"] == "1" {
            try (Self.header + dumped).write(to: Self.snapshot, atomically: true, encoding: .utf8)
        }
        let written = try String(contentsOf: Self.snapshot, encoding: .utf8)
        #expect(written.hasPrefix(Self.header), "schema.sql's header names other migrations than migrations/ holds")
        let difference = Self.firstDifference(written.dropFirst(Self.header.count), dumped)
        #expect(difference == nil, """
            schema.sql is not the schema the migrations make (\(difference ?? "")); \
            write it again with DETECTQ_UPDATE_SCHEMA_SNAPSHOT=1 scripts/test.sh --filter SchemaSnapshotTests
            """)
    }

    /// Loaded into an empty database, the snapshot makes the same schema as the migrations: what a reader sees
    /// in it is what a database holds (whatever pg_dump's version formats it as).
    @Test func theSnapshotLoadedMakesTheSameSchemaAsTheMigrations() async throws {
        let migrated = try await TestDatabase.createMigratedDatabase()
        let loaded = try await TestDatabase.createDatabase()
        let connection = try await PostgresConnection.connect(loaded)
        do {
            // As pg_dump's own output does: a function body may name a table made further down.
            try await connection.executeScript("SET check_function_bodies = false;\n" + (try String(contentsOf: Self.snapshot, encoding: .utf8)))
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
        let difference = Self.firstDifference(
            try await SchemaDump.of(database: try #require(loaded.database)), try await SchemaDump.of(database: try #require(migrated.database))
        )
        #expect(difference == nil, "schema.sql loaded is not the migrated schema: \(difference ?? "")")
    }

    /// The first line where `a` and `b` differ, quoted from each; nil when they are the same.
    static func firstDifference(_ a: some StringProtocol, _ b: some StringProtocol) -> String? {
        let left = a.split(separator: "\n", omittingEmptySubsequences: false)
        let right = b.split(separator: "\n", omittingEmptySubsequences: false)
        for index in 0..<max(left.count, right.count) {
            let l = index < left.count ? String(left[index]) : "(end)"
            let r = index < right.count ? String(right[index]) : "(end)"
            if l != r { return "line \(index + 1): snapshot has \"\(l)\", the migrations make \"\(r)\"" }
        }
        return nil
    }
}
