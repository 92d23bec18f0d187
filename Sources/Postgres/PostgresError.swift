/// An error from the PostgreSQL layer: the server's report (with its SQLSTATE and constraint name),
/// a lost or refused connection, or a value that cannot be decoded as the type asked for.
///
/// Its `description` is safe to log: it never contains parameter values. The server's `detail`
/// (which may quote a row's values, as in "Failing row contains …") is kept in its own property and
/// left out of the description, and quoted values in the server's message are masked.
package struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    package enum Kind: Sendable, Equatable {
        /// The server refused or failed the statement; `sqlState` says why.
        case server
        /// The connection could not be opened, or was lost; the statement may or may not have run.
        case connection
        /// A column's value could not be decoded as the Swift type asked for.
        case decoding
        /// The pool or connection was used after it was closed.
        case closed
    }

    package var kind: Kind
    /// The five-character SQLSTATE code, for server errors.
    package var sqlState: SQLState?
    package var severity: String?
    /// The primary message, as the server or libpq gave it.
    package var message: String
    /// The server's detail line. It may contain values from the row, so it is not in `description`.
    package var detail: String?
    package var hint: String?
    package var schema: String?
    package var table: String?
    package var column: String?
    package var dataType: String?
    /// The name of the violated constraint, when a constraint was violated.
    package var constraint: String?

    package init(
        kind: Kind, message: String, sqlState: SQLState? = nil, severity: String? = nil, detail: String? = nil,
        hint: String? = nil, schema: String? = nil, table: String? = nil, column: String? = nil,
        dataType: String? = nil, constraint: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.severity = severity
        self.detail = detail
        self.hint = hint
        self.schema = schema
        self.table = table
        self.column = column
        self.dataType = dataType
        self.constraint = constraint
    }

    /// True when the same statement may well succeed if sent again shortly: the connection was lost or
    /// refused, the server is shutting down or starting up (SQLSTATE classes 08 and 57P), or the transaction
    /// lost a serialization or deadlock race.
    package var isTransient: Bool {
        switch kind {
        case .connection, .closed:
            return true
        case .decoding:
            return false
        case .server:
            guard let sqlState else { return false }
            return sqlState.errorClass == "08" || sqlState.rawValue.hasPrefix("57P")
                || sqlState == .serializationFailure || sqlState == .deadlockDetected
        }
    }

    package var description: String {
        var parts: [String] = []
        switch kind {
        case .server: parts.append("PostgreSQL error")
        case .connection: parts.append("PostgreSQL connection error")
        case .decoding: parts.append("PostgreSQL decoding error")
        case .closed: parts.append("PostgreSQL connection closed")
        }
        if let sqlState { parts.append(sqlState.code) }
        var text = parts.joined(separator: " ") + ": " + maskedMessage
        if let constraint { text += " (constraint \(constraint))" }
        return text
    }

    /// The message with every double-quoted part of a server error masked unless it names an object the error
    /// is about: PostgreSQL quotes the offending input in messages such as `invalid input syntax for type integer: "…"`.
    private var maskedMessage: String {
        let names = Set([schema, table, column, dataType, constraint].compactMap { $0 })
        var result = ""
        var quoted: String?
        for character in message {
            if character == "\"" {
                if let inside = quoted {
                    result += names.contains(inside) || kind != .server ? "\"\(inside)\"" : "\"…\""
                    quoted = nil
                } else {
                    quoted = ""
                }
            } else if quoted != nil {
                quoted!.append(character)
            } else {
                result.append(character)
            }
        }
        if let unterminated = quoted { result += "\"" + unterminated }
        return result
    }

    static func decoding(_ message: String) -> PostgresError {
        PostgresError(kind: .decoding, message: message)
    }
}

/// A SQLSTATE code, with names for the ones callers test for.
package struct SQLState: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package let rawValue: String
    package init(rawValue: String) { self.rawValue = rawValue }

    package var code: String { rawValue }
    package var description: String { rawValue }
    /// The two-character class, such as `23` for integrity constraint violations.
    package var errorClass: Substring { rawValue.prefix(2) }

    package static let uniqueViolation = SQLState(rawValue: "23505")
    package static let checkViolation = SQLState(rawValue: "23514")
    package static let notNullViolation = SQLState(rawValue: "23502")
    package static let foreignKeyViolation = SQLState(rawValue: "23503")
    package static let invalidTextRepresentation = SQLState(rawValue: "22P02")
    package static let numericValueOutOfRange = SQLState(rawValue: "22003")
    package static let queryCanceled = SQLState(rawValue: "57014")
    package static let adminShutdown = SQLState(rawValue: "57P01")
    package static let serializationFailure = SQLState(rawValue: "40001")
    package static let deadlockDetected = SQLState(rawValue: "40P01")
    /// A lock was not granted within `lock_timeout`.
    package static let lockNotAvailable = SQLState(rawValue: "55P03")
    package static let undefinedTable = SQLState(rawValue: "42P01")
}
