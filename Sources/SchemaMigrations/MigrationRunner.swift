import Postgres

/// Applies pending migrations in order, each in its own transaction, and records each one with its checksum
/// in `detectq.schema_migrations`. A session-level advisory lock makes concurrent runs from many hosts safe:
/// they queue on the lock, and each later run finds the work done. That lock needs a session of its own, so
/// a transaction-pooling connection (PgBouncer's `pool_mode = transaction`) is refused before anything runs.
package struct MigrationRunner: Sendable {
    package let configuration: PostgresConfiguration
    package let migrations: [Migration]

    /// The advisory lock key: "detectq" in ASCII.
    static let lockKey = 0x64_65_74_65_63_74_71

    package init(configuration: PostgresConfiguration, migrations: [Migration] = DetectqMigrations.all) {
        self.configuration = configuration
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Applies what is pending and reports what was applied.
    package func migrate() async throws -> MigrationReport {
        try validateVersions()
        if try await SessionPooling.of(configuration) == .transaction {
            throw MigrationError.transactionPooling
        }
        let connection = try await PostgresConnection.connect(configuration)
        do {
            try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))")
            let report = try await applyPending(on: connection)
            await connection.close()
            return report
        } catch {
            // Closing the session releases its advisory lock, whatever state the session is in.
            await connection.close()
            throw error
        }
    }

    private func validateVersions() throws {
        var seen = Set<Int>()
        for migration in migrations where !seen.insert(migration.version).inserted {
            throw MigrationError.duplicateVersion(migration.version)
        }
    }

    private func applyPending(on connection: PostgresConnection) async throws -> MigrationReport {
        try await connection.executeScript("""
            CREATE SCHEMA IF NOT EXISTS detectq;
            CREATE TABLE IF NOT EXISTS detectq.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """)
        var applied: [Int: (name: String, checksum: String)] = [:]
        for row in try await connection.query("SELECT version, name, checksum FROM detectq.schema_migrations") {
            applied[try row.decode("version")] = (try row.decode("name"), try row.decode("checksum"))
        }
        for migration in migrations {
            if let recorded = applied[migration.version], recorded.checksum != migration.checksum {
                throw MigrationError.changedAfterApplying(migration.name, recorded: recorded.checksum, current: migration.checksum)
            }
        }
        let known = Set(migrations.map(\.version))
        let unknown = applied.keys.filter { !known.contains($0) }.sorted().map { applied[$0]!.name }
        var report = MigrationReport(applied: [], alreadyApplied: applied.count - unknown.count, unknownToThisBuild: unknown)
        for migration in migrations where applied[migration.version] == nil {
            do {
                try await connection.transaction { connection in
                    try await connection.executeScript(migration.sql)
                    try await connection.query("""
                        INSERT INTO detectq.schema_migrations (version, name, checksum)
                        VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                        """)
                }
            } catch let error as PostgresError {
                throw MigrationError.failed(migration.name, error)
            }
            report.applied.append(migration)
        }
        return report
    }
}

/// What a migration run did.
package struct MigrationReport: Sendable {
    /// Migrations applied by this run, in order.
    package var applied: [Migration]
    /// How many of this build's migrations were applied before.
    package var alreadyApplied: Int
    /// Migrations recorded in the database that this build does not have (applied by a newer detectq).
    package var unknownToThisBuild: [String]
}

/// Why migrations could not be applied; each description is one line a person can act on.
package enum MigrationError: Error, CustomStringConvertible {
    case duplicateVersion(Int)
    case changedAfterApplying(String, recorded: String, current: String)
    case failed(String, PostgresError)
    case transactionPooling

    package var description: String {
        switch self {
        case .duplicateVersion(let version):
            return "two migrations share version \(version); give each file its own number"
        case .changedAfterApplying(let name, let recorded, let current):
            return "migration \(name) was edited after it was applied (checksum \(recorded.prefix(12)) in the database, "
                + "\(current.prefix(12)) in this build); restore it and put the change in a new migration"
        case .failed(let name, let error):
            return "migration \(name) failed and was rolled back: \(error)"
        case .transactionPooling:
            return "migrations need a session connection, and DATABASE_URL lends a server per transaction (a PgBouncer in "
                + "pool_mode = transaction), where the migration lock does not hold; run detectq migrate with DATABASE_URL "
                + "pointing at PostgreSQL itself or at a session-mode pool (the workers may stay behind the pooler)"
        }
    }
}
