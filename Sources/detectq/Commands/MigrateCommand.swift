import ArgumentParser
import Foundation
import Postgres
import SchemaMigrations

/// `detectq migrate`: applies pending schema migrations; safe to run from many hosts at once.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending schema migrations (safe to run from many hosts at once).",
        discussion: "Connects with DATABASE_URL (a libpq connection string or URI) and the standard PG* variables."
    )

    func run() async throws {
        let configuration = PostgresConfiguration.fromEnvironment(applicationName: "detectq migrate")
        let report: MigrationReport
        do {
            report = try await MigrationRunner(configuration: configuration).migrate()
        } catch {
            FileHandle.standardError.write(Data("detectq migrate: \(error)\n".utf8))
            throw ExitCode.failure
        }
        for migration in report.applied {
            print("applied \(migration.name)")
        }
        for name in report.unknownToThisBuild {
            print("note: the database has migration \(name), which this build does not know (a newer detectq applied it)")
        }
        let total = report.applied.count + report.alreadyApplied
        print(report.applied.isEmpty
            ? "schema up to date: all \(total) migrations were already applied"
            : "schema up to date: applied \(report.applied.count) of \(total) migrations")
    }
}
