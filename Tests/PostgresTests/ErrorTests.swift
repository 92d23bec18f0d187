import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("Errors carry SQLSTATE and constraint, and never the values", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ErrorTests {
    @Test func constraintViolationsNameTheConstraintButNotTheValue() async throws {
        let pool = PostgresConnectionPool(configuration: try await TestDatabase.createDatabase(), maximumConnections: 1)
        try await pool.query("CREATE TABLE secrets (token text CONSTRAINT secrets_token_unique UNIQUE, n int CHECK (n > 0))")
        let secret = "tok-super-secret-4242"
        try await pool.query("INSERT INTO secrets (token, n) VALUES (\(secret), 1)")
        let duplicate = try await #require(throws: PostgresError.self) {
            try await pool.query("INSERT INTO secrets (token, n) VALUES (\(secret), 2)")
        }
        #expect(duplicate.kind == .server)
        #expect(duplicate.sqlState == .uniqueViolation)
        #expect(duplicate.constraint == "secrets_token_unique")
        #expect(duplicate.detail?.contains(secret) == true, "the detail keeps the server's words for the caller")
        #expect(!duplicate.description.contains(secret))
        #expect(!String(reflecting: duplicate.description).contains(secret))

        let check = try await #require(throws: PostgresError.self) {
            try await pool.query("INSERT INTO secrets (token, n) VALUES (\("other-secret-777"), -1)")
        }
        #expect(check.sqlState == .checkViolation)
        #expect(check.constraint == "secrets_n_check")
        #expect(check.table == "secrets")
        #expect(!check.description.contains("other-secret-777"))
        #expect(check.description.contains("secrets_n_check"))
    }

    @Test func invalidInputIsMaskedInTheDescription() async throws {
        let pool = PostgresConnectionPool(configuration: try TestDatabase.serverConfiguration(), maximumConnections: 1)
        let error = try await #require(throws: PostgresError.self) {
            try await pool.query("SELECT \("card-4111-1111")::int")
        }
        #expect(error.sqlState == .invalidTextRepresentation)
        #expect(error.message.contains("card-4111-1111"))
        #expect(!error.description.contains("card-4111-1111"))
    }

    @Test func syntaxErrorsAreServerErrorsAndTheConnectionLivesOn() async throws {
        let connection = try await PostgresConnection.connect(try TestDatabase.serverConfiguration())
        let error = try await #require(throws: PostgresError.self) { try await connection.query("SELEC 1") }
        #expect(error.kind == .server)
        #expect(error.sqlState?.code == "42601")
        let rows = try await connection.query("SELECT 1 AS one")
        #expect(try rows[0].decode("one", as: Int.self) == 1)
        await connection.close()
        let closed = try await #require(throws: PostgresError.self) { try await connection.query("SELECT 1") }
        #expect(closed.kind == .closed)
    }

    @Test func unreachableServerIsAConnectionError() async throws {
        let error = try await #require(throws: PostgresError.self) {
            try await PostgresConnection.connect(PostgresConfiguration(
                connectionString: "postgresql://detectq:hunter2-password@127.0.0.1:1/none?connect_timeout=2"
            ))
        }
        #expect(error.kind == .connection)
        #expect(error.description.contains("127.0.0.1"))
        #expect(!error.description.contains("hunter2-password"))
    }
}
