import Foundation

/// A Swift value that can be sent to PostgreSQL as a query parameter, in PostgreSQL's text format.
package protocol PostgresEncodable: Sendable {
    /// The parameter's type; `.unspecified` lets the server infer it from the statement.
    static var postgresType: PostgresDataType { get }
    /// The value's text form as PostgreSQL parses it, or nil for SQL NULL.
    var postgresText: String? { get }
}

extension String: PostgresEncodable {
    /// Left for the server to infer, so that a string can fill a text, enum or other textual column.
    package static var postgresType: PostgresDataType { .unspecified }
    package var postgresText: String? { self }
}

extension PostgresEncodable where Self: FixedWidthInteger {
    package var postgresText: String? { String(self) }
}

extension Int: PostgresEncodable {
    package static var postgresType: PostgresDataType { .int8 }
}

extension Int64: PostgresEncodable {
    package static var postgresType: PostgresDataType { .int8 }
}

extension Int32: PostgresEncodable {
    package static var postgresType: PostgresDataType { .int4 }
}

extension Int16: PostgresEncodable {
    package static var postgresType: PostgresDataType { .int2 }
}

extension Bool: PostgresEncodable {
    package static var postgresType: PostgresDataType { .bool }
    package var postgresText: String? { self ? "t" : "f" }
}

extension Double: PostgresEncodable {
    package static var postgresType: PostgresDataType { .float8 }
    package var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return String(self)
    }
}

extension Decimal: PostgresEncodable {
    package static var postgresType: PostgresDataType { .numeric }
    package var postgresText: String? { isNaN ? "NaN" : description }
}

extension Date: PostgresEncodable {
    package static var postgresType: PostgresDataType { .timestamptz }
    package var postgresText: String? { PostgresTimestamp.format(self) }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    package static var postgresType: PostgresDataType { Wrapped.postgresType }
    package var postgresText: String? { self?.postgresText }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    package static var postgresType: PostgresDataType { Element.postgresType.arrayType ?? .unspecified }
    package var postgresText: String? { PostgresArrayText.format(map(\.postgresText)) }
}

extension PostgresEncodable where Self: RawRepresentable, RawValue: PostgresEncodable {
    package static var postgresType: PostgresDataType { RawValue.postgresType }
    package var postgresText: String? { rawValue.postgresText }
}
