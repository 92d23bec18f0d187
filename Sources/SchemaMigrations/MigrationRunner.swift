import Foundation
import Postgres

/// Applies pending migrations in order, each in its own transaction (or, when its first line asks, outside one,
/// statement by statement: an index built `CONCURRENTLY`), and records each one with its checksum in
/// `detectq.schema_migrations`. A session-level advisory lock makes concurrent runs from many hosts safe:
/// they queue on the lock, and each later run finds the work done. That lock needs a session of its own, so
/// a transaction-pooling connection (PgBouncer's `pool_mode = transaction`) is refused before anything runs.
///
/// Migrations run beside working workers. A table's lock that a long transaction holds (a report, a backup)
/// would otherwise keep a migration waiting in the lock queue, and every worker's write queued behind it:
/// each statement waits at most `lockTimeout` for its lock, and a migration that did not get it is rolled
/// back and tried again after a pause (growing from half a second to ten), until `lockRetryLimit` has passed.
package struct MigrationRunner: Sendable {
    package let configuration: PostgresConfiguration
    package let migrations: [Migration]
    /// How long one statement may wait for a table's lock, holding the writers queued behind it.
    package let lockTimeout: Duration
    /// How long a migration that keeps meeting a held lock is tried again before `migrate` gives up.
    package let lockRetryLimit: Duration
    /// Told each time a migration gave way to a held lock and will be tried again (one line, for a person).
    package let onLockWait: @Sendable (String) -> Void

    /// The advisory lock key: "detectq" in ASCII.
    static let lockKey = 0x64_65_74_65_63_74_71

    package init(
        configuration: PostgresConfiguration, migrations: [Migration] = DetectqMigrations.all, lockTimeout: Duration = .seconds(2),
        lockRetryLimit: Duration = .seconds(600), onLockWait: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.lockTimeout = lockTimeout
        self.lockRetryLimit = lockRetryLimit
        self.onLockWait = onLockWait
    }

    /// Applies what is pending and reports what was applied.
    package func migrate() async throws -> MigrationReport {
        try validateVersions()
        if try await SessionPooling.of(configuration) == .transaction {
            throw MigrationError.transactionPooling
        }
        let connection = try await PostgresConnection.connect(configuration)
        do {
            // Asked for again and again, never waited for inside a statement: an index built CONCURRENTLY by the
            // run that holds the lock waits for every open transaction, and a statement waiting for the lock is one,
            // which would wait for that run in turn (a deadlock).
            while try await !connection.query("SELECT pg_try_advisory_lock(\(Self.lockKey)) AS taken")[0].decode("taken", as: Bool.self) {
                try await Task.sleep(for: .milliseconds(200))
            }
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
                if migration.runsOutsideATransaction {
                    try await applyOutsideATransaction(migration, on: connection)
                } else {
                    try await givingWayToHeldLocks(migration.name) {
                        try await connection.transaction { connection in
                            try await connection.query("SELECT set_config('lock_timeout', \(milliseconds(lockTimeout)), true)")
                            try await connection.executeScript(migration.sql)
                            try await record(migration, on: connection)
                        }
                    }
                }
            } catch let error as PostgresError {
                throw migration.runsOutsideATransaction
                    ? MigrationError.failedOutsideATransaction(migration.name, error)
                    : MigrationError.failed(migration.name, error)
            }
            report.applied.append(migration)
        }
        return report
    }

    /// Runs a migration's statements one by one, outside a transaction. A run that was interrupted may have
    /// left an index built `CONCURRENTLY` invalid (`IF NOT EXISTS` would then keep it, unusable): such an index
    /// is dropped and built again. Recorded once every statement has run, so a failed run is run again whole.
    private func applyOutsideATransaction(_ migration: Migration, on connection: PostgresConnection) async throws {
        for statement in migration.statements {
            // An index built CONCURRENTLY blocks no writer while it waits for older transactions: it waits as long
            // as they last (a timeout there would leave an invalid index behind, to be built again).
            let index = Self.concurrentIndexName(statement)
            let timeout = index == nil ? milliseconds(lockTimeout) : "0"
            try await connection.query("SELECT set_config('lock_timeout', \(timeout), false)")
            try await givingWayToHeldLocks(migration.name) {
                try await runOutsideATransaction(statement, buildingIndex: index, on: connection)
            }
        }
        try await connection.query("SELECT set_config('lock_timeout', '0', false)")
        try await record(migration, on: connection)
    }

    /// Runs one statement of a migration outside a transaction; an index a broken run left invalid is dropped first.
    private func runOutsideATransaction(_ statement: String, buildingIndex index: String?, on connection: PostgresConnection) async throws {
        if let index {
            let invalid = try await connection.query("""
                SELECT c.relname AS name FROM pg_index i
                JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relname = \(index) AND n.nspname = 'detectq' AND NOT i.indisvalid
                """)
            for row in invalid {
                try await connection.query("DROP INDEX CONCURRENTLY IF EXISTS detectq.\(identifier: try row.decode("name", as: String.self))")
            }
        }
        try await connection.executeScript(statement)
    }

    /// Runs `body` (one migration's transaction, or one statement outside a transaction) again after a pause each
    /// time a lock was not granted within `lockTimeout`, until `lockRetryLimit` has passed.
    private func givingWayToHeldLocks(_ name: String, _ body: () async throws -> Void) async throws {
        let deadline = ContinuousClock.now + lockRetryLimit
        var pause = Duration.milliseconds(500)
        while true {
            do {
                return try await body()
            } catch let error as PostgresError where error.sqlState == .lockNotAvailable && ContinuousClock.now + pause < deadline {
                onLockWait("migration \(name) gave way after waiting \(milliseconds(lockTimeout)) ms for a lock another session holds "
                    + "(a long transaction?), so that the workers' writes do not queue behind it; trying again in \(pause)")
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(10))
            }
        }
    }

    /// A duration as a whole number of milliseconds, as `lock_timeout` takes it.
    private func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(seconds * 1_000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }

    /// The unqualified name of the index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name` builds.
    static func concurrentIndexName(_ statement: String) -> String? {
        let words = statement.split(whereSeparator: \.isWhitespace).map { $0.lowercased() }
        guard let concurrently = words.firstIndex(of: "concurrently"), concurrently >= 2, words[0] == "create",
              words[concurrently - 1] == "index" else { return nil }
        var position = concurrently + 1
        if words.count > position + 3, words[position] == "if", words[position + 1] == "not", words[position + 2] == "exists" {
            position += 3
        }
        guard position < words.count, words[position] != "on" else { return nil }
        return String(words[position].split(separator: ".").last ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    private func record(_ migration: Migration, on connection: PostgresConnection) async throws {
        try await connection.query("""
            INSERT INTO detectq.schema_migrations (version, name, checksum)
            VALUES (\(migration.version), \(migration.name), \(migration.checksum))
            """)
    }

    /// Each of this build's migrations and whether (and when) the database applied it, and the applied ones this
    /// build does not know; reads only.
    package func status() async throws -> [MigrationStatus] {
        let connection = try await PostgresConnection.connect(configuration)
        do {
            let exists = try await connection.query("SELECT to_regclass('detectq.schema_migrations') IS NOT NULL AS e")[0]
                .decode("e", as: Bool.self)
            var applied: [Int: (name: String, at: Date)] = [:]
            if exists {
                for row in try await connection.query("SELECT version, name, applied_at FROM detectq.schema_migrations") {
                    applied[try row.decode("version")] = (try row.decode("name"), try row.decode("applied_at"))
                }
            }
            await connection.close()
            let known = Set(migrations.map(\.version))
            return migrations.map { MigrationStatus(name: $0.name, appliedAt: applied[$0.version]?.at, knownToThisBuild: true) }
                + applied.filter { !known.contains($0.key) }.sorted { $0.key < $1.key }
                    .map { MigrationStatus(name: $0.value.name, appliedAt: $0.value.at, knownToThisBuild: false) }
        } catch {
            await connection.close()
            throw error
        }
    }
}

/// One migration as `detectq migrate --status` lists it.
package struct MigrationStatus: Sendable, Hashable {
    package let name: String
    /// When the database applied it; nil while pending.
    package let appliedAt: Date?
    /// False for a migration a newer detectq applied.
    package let knownToThisBuild: Bool
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
    case failedOutsideATransaction(String, PostgresError)
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
        case .failedOutsideATransaction(let name, let error):
            return "migration \(name) failed (it runs outside a transaction, so what it finished stays; run detectq migrate "
                + "again once the cause is fixed, and it resumes safely): \(error)"
        case .transactionPooling:
            return "migrations need a session connection, and DATABASE_URL lends a server per transaction (a PgBouncer in "
                + "pool_mode = transaction), where the migration lock does not hold; run detectq migrate with DATABASE_URL "
                + "pointing at PostgreSQL itself or at a session-mode pool (the workers may stay behind the pooler)"
        }
    }
}
