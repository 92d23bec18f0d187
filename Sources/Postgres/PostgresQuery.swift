/// A SQL statement and its parameters. Built from a string literal, every interpolated value becomes a
/// `$n` parameter and never part of the SQL text, so a query cannot be injected into:
///
/// ```swift
/// let rows = try await pool.query("SELECT id FROM detectq.requests WHERE state = \(state) LIMIT \(limit)")
/// ```
///
/// Identifiers (for `LISTEN`, `CREATE DATABASE` and the like, which take no parameters) are interpolated
/// with `\(identifier: name)`, which quotes them.
public struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    /// The SQL text, with `$1`, `$2`, … in place of the values.
    public private(set) var sql: String
    /// The values, in `$n` order.
    public private(set) var parameters: [PostgresParameter]

    public init(stringLiteral value: String) {
        sql = value
        parameters = []
    }

    public init(stringInterpolation: StringInterpolation) {
        sql = stringInterpolation.sql
        parameters = stringInterpolation.parameters
    }

    /// A query from SQL text that already contains `$n` placeholders, and the values for them.
    public init(sql: String, parameters: [any PostgresEncodable]) {
        self.sql = sql
        self.parameters = parameters.map(PostgresParameter.init)
    }

    /// Collects the literal SQL text and turns each interpolated value into a numbered parameter.
    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var parameters: [PostgresParameter] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            parameters.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Binds a value as the next `$n` parameter.
        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            parameters.append(PostgresParameter(value))
            sql += "$\(parameters.count)"
        }

        /// Writes a quoted identifier (a table, channel or database name) into the SQL text.
        public mutating func appendInterpolation(identifier: String) {
            sql += "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
    }
}

/// One parameter of a query in PostgreSQL's text format: its text (nil for SQL NULL) and its type.
public struct PostgresParameter: Sendable {
    public var text: String?
    public var type: PostgresDataType

    public init(text: String?, type: PostgresDataType) {
        self.text = text
        self.type = type
    }

    init(_ value: any PostgresEncodable) {
        self.init(text: value.postgresText, type: Swift.type(of: value).postgresType)
    }
}
