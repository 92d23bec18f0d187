import CLibPQ
import Foundation

extension PostgresConfiguration {
    /// Opens a blocking libpq connection (call it off Swift's cooperative pool); throws a `.connection`
    /// error with libpq's message, which never includes the password.
    func openLibPQConnection() throws -> OpaquePointer {
        let parameters = connectionParameters
        let keywords = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        guard let connection = PQconnectdbParams(
            keywords.map { UnsafePointer($0) } + [nil], values.map { UnsafePointer($0) } + [nil], 1
        ) else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = libpqErrorMessage(connection)
            PQfinish(connection)
            throw PostgresError(kind: .connection, message: message)
        }
        // libpq's default prints NOTICEs to stderr; a server process reports through its own logs instead.
        PQsetNoticeReceiver(connection, { _, _ in }, nil)
        return connection
    }
}

/// libpq's last error message for a connection, on one line.
func libpqErrorMessage(_ connection: OpaquePointer) -> String {
    String(cString: PQerrorMessage(connection))
        .split(whereSeparator: \.isNewline)
        .map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }
        .joined(separator: "; ")
}
