import DetectqTestSupport
import Postgres
import SchemaMigrations
import Testing

@Suite("detectq migrate as a process", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct MigrateCommandTests {
    @Test func migrateTwiceThenNothingToDo() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: try #require(configuration.database))]
        let first = try await DetectqExecutable.run(["migrate"], environment: environment)
        #expect(first.status == 0, "\(first.standardError)")
        #expect(first.standardOutput.contains("applied 0001_create_schema.sql"))
        let second = try await DetectqExecutable.run(["migrate"], environment: environment)
        #expect(second.status == 0)
        #expect(!second.standardOutput.contains("applied 0"))
        #expect(second.standardOutput.contains("already applied"))
    }

    @Test func statusListsPendingThenAppliedMigrationsAndChangesNothing() async throws {
        let configuration = try await TestDatabase.createDatabase()
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: try #require(configuration.database))]
        let before = try await DetectqExecutable.run(["migrate", "--status"], environment: environment)
        #expect(before.status == 0, "\(before.standardError)")
        #expect(before.standardOutput.contains("0001_create_schema.sql  pending"))
        #expect(before.standardOutput.contains("\(DetectqMigrations.all.count) pending: run detectq migrate"), "\(before.standardOutput)")
        let again = try await DetectqExecutable.run(["migrate", "--status"], environment: environment)
        #expect(again.standardOutput == before.standardOutput, "--status applied nothing")
        #expect(try await DetectqExecutable.run(["migrate"], environment: environment).status == 0)
        let after = try await DetectqExecutable.run(["migrate", "--status"], environment: environment)
        #expect(after.standardOutput.contains("\(try #require(DetectqMigrations.all.last).name)  applied 20"), "\(after.standardOutput)")
        #expect(after.standardOutput.hasSuffix("schema up to date\n"))
    }

    @Test func anUnreachableDatabaseExitsNonZeroWithOneLine() async throws {
        let outcome = try await DetectqExecutable.run(
            ["migrate"], environment: ["DATABASE_URL": "postgresql://detectq:s3cret-pw@127.0.0.1:1/none?connect_timeout=2"]
        )
        #expect(outcome.status != 0)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(lines.first?.hasPrefix("detectq migrate: ") == true)
        #expect(!outcome.standardError.contains("s3cret-pw"))
    }
}
