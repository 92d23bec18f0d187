import ArgumentParser
import Foundation
import Postgres
import SchemaMigrations
import TextEncodings

/// `detectq migrate`: applies pending schema migrations; safe to run from many hosts at once.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending schema migrations (safe to run from many hosts at once).",
        discussion: "Connects with DATABASE_URL (a libpq connection string or URI) and the standard PG* variables."
    )

    @Flag(help: "List the applied and pending migrations, changing nothing.")
    var status = false

    func run() async throws {
        let configuration = PostgresConfiguration.fromEnvironment(applicationName: "detectq migrate")
        if status {
            return try await printStatus(configuration)
        }
        let report: MigrationReport
        do {
            report = try await MigrationRunner(configuration: configuration) { line in
                FileHandle.standardError.write(Data("detectq migrate: \(line)\n".utf8))
            }.migrate()
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

    /// `--status`: one line per migration, applied (with when) or pending, and the ones this build does not know.
    private func printStatus(_ configuration: PostgresConfiguration) async throws {
        let statuses: [MigrationStatus]
        do {
            statuses = try await MigrationRunner(configuration: configuration).status()
        } catch {
            FileHandle.standardError.write(Data("detectq migrate: \(error)\n".utf8))
            throw ExitCode.failure
        }
        for status in statuses {
            let state = status.appliedAt.map { "applied \(ISO8601Timestamp.format($0))" } ?? "pending"
            print("\(status.name)  \(state)\(status.knownToThisBuild ? "" : "  (unknown to this build: a newer detectq applied it)")")
        }
        let pending = statuses.filter { $0.appliedAt == nil }.count
        print(pending == 0 ? "schema up to date" : "\(pending) pending: run detectq migrate")
    }
}
