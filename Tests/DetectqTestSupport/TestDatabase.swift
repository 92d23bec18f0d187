import Foundation
import Postgres
import SchemaMigrations

/// The PostgreSQL server the tests run against: `scripts/test.sh` starts a throwaway cluster and sets
/// `DATABASE_URL`. Each suite makes databases of its own on it, so suites never see each other's rows.
package enum TestDatabase {
    /// The server's connection string, when one is configured.
    package static let connectionString = ProcessInfo.processInfo.environment["DATABASE_URL"]

    /// True when tests that need the database should run: a server is configured, or this is CI, where a
    /// missing server must fail those tests rather than skip them.
    package static let isEnabled = connectionString != nil || ProcessInfo.processInfo.environment["CI"] != nil

    /// The configuration of the server's default database.
    package static func serverConfiguration(applicationName: String? = nil) throws -> PostgresConfiguration {
        guard let connectionString else {
            throw TestSetupError("DATABASE_URL is not set: run the tests with scripts/test.sh")
        }
        return PostgresConfiguration(connectionString: connectionString, applicationName: applicationName)
    }

    /// A new, empty database on the test server.
    package static func createDatabase() async throws -> PostgresConfiguration {
        let server = try serverConfiguration()
        let name = "detectq_test_" + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
        let admin = try await PostgresConnection.connect(server)
        do {
            try await admin.query("CREATE DATABASE \(identifier: name)")
            await admin.close()
        } catch {
            await admin.close()
            throw error
        }
        return PostgresConfiguration(connectionString: server.connectionString, database: name)
    }

    /// A connection URI for another database on the test server (for child processes, which read `DATABASE_URL`).
    package static func connectionURI(database: String) throws -> String {
        guard let connectionString, var components = URLComponents(string: connectionString) else {
            throw TestSetupError("DATABASE_URL must be a postgresql:// URI for tests that start processes")
        }
        components.path = "/" + database
        return try components.string ?? { throw TestSetupError("could not build a URI for \(database)") }()
    }

    /// PgBouncer in transaction pooling mode in front of the test server, which `scripts/test.sh` starts.
    package static let pgBouncerURL = ProcessInfo.processInfo.environment["DETECTQ_PGBOUNCER_URL"]

    /// True when tests behind PgBouncer should run: it is started, or this is CI, where it must be.
    package static let isPgBouncerEnabled = pgBouncerURL != nil || ProcessInfo.processInfo.environment["CI"] != nil

    /// A connection URI for `database` on the test server through PgBouncer.
    package static func pgBouncerURI(database: String) throws -> String {
        guard let pgBouncerURL, var components = URLComponents(string: pgBouncerURL) else {
            throw TestSetupError("DETECTQ_PGBOUNCER_URL is not set: run the tests with scripts/test.sh, which starts PgBouncer")
        }
        components.path = "/" + database
        return try components.string ?? { throw TestSetupError("could not build a URI for \(database)") }()
    }

    /// A new database with detectq's schema migrated in.
    package static func createMigratedDatabase() async throws -> PostgresConfiguration {
        let configuration = try await createDatabase()
        _ = try await MigrationRunner(configuration: configuration).migrate()
        return configuration
    }
}

/// The test environment is not what the tests need; the message says how to fix it.
package struct TestSetupError: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}
