import DetectqTestSupport
import Postgres

/// One migrated database shared by the schema suites; every test works on rows of its own.
actor SchemaDatabase {
    static let shared = SchemaDatabase()

    private var created: (PostgresConfiguration, PostgresConnectionPool)?

    func configuration() async throws -> PostgresConfiguration {
        try await database().0
    }

    func pool() async throws -> PostgresConnectionPool {
        try await database().1
    }

    private func database() async throws -> (PostgresConfiguration, PostgresConnectionPool) {
        if let created { return created }
        let configuration = try await TestDatabase.createMigratedDatabase()
        let database = (configuration, PostgresConnectionPool(configuration: configuration, maximumConnections: 8))
        created = database
        return database
    }
}
