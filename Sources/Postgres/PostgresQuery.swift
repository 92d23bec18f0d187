/// A SQL statement and its parameters. Built from a string literal, every interpolated value becomes a
/// `$n` parameter and never part of the SQL text, so a query cannot be injected into:
///
/// ```swift
/// let rows = try await pool.query("SELECT id FROM detectq.requests WHERE state = \(state) LIMIT \(limit)")
/// ```
///
/// Identifiers (for `LISTEN`, `CREATE DATABASE` and the like, which take no parameters) are interpolated
/// with `\(identifier: name)`, which quotes them.
package struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    /// The SQL text, with `$1`, `$2`, … in place of the values.
    package private(set) var sql: String
    /// The values, in `$n` order.
    package private(set) var parameters: [PostgresParameter]

    package init(stringLiteral value: String) {
        sql = value
        parameters = []
    }

    package init(stringInterpolation: StringInterpolation) {
        sql = stringInterpolation.sql
        parameters = stringInterpolation.parameters
    }

    /// A query from SQL text that already contains `$n` placeholders, and the values for them.
    package init(sql: String, parameters: [any PostgresEncodable]) {
        self.sql = sql
        self.parameters = parameters.map(PostgresParameter.init)
    }

    /// Collects the literal SQL text and turns each interpolated value into a numbered parameter.
    package struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var parameters: [PostgresParameter] = []

        package init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            parameters.reserveCapacity(interpolationCount)
        }

        package mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Binds a value as the next `$n` parameter.
        package mutating func appendInterpolation(_ value: some PostgresEncodable) {
            parameters.append(PostgresParameter(value))
            sql += "$\(parameters.count)"
        }

        /// Writes a quoted identifier (a table, channel or database name) into the SQL text.
        package mutating func appendInterpolation(identifier: String) {
            sql += "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
    }
}

/// One parameter of a query in PostgreSQL's text format: its text (nil for SQL NULL) and its type.
package struct PostgresParameter: Sendable {
    package var text: String?
    package var type: PostgresDataType

    package init(text: String?, type: PostgresDataType) {
        self.text = text
        self.type = type
    }

    init(_ value: any PostgresEncodable) {
        self.init(text: value.postgresText, type: Swift.type(of: value).postgresType)
    }
}
