import Foundation

/// A Swift value that can be sent to PostgreSQL as a query parameter, in PostgreSQL's text format.
public protocol PostgresEncodable: Sendable {
    /// The parameter's type; `.unspecified` lets the server infer it from the statement.
    static var postgresType: PostgresDataType { get }
    /// The value's text form as PostgreSQL parses it, or nil for SQL NULL.
    var postgresText: String? { get }
}

extension String: PostgresEncodable {
    /// Left for the server to infer, so that a string can fill a text, enum or other textual column.
    public static var postgresType: PostgresDataType { .unspecified }
    public var postgresText: String? { self }
}

extension PostgresEncodable where Self: FixedWidthInteger {
    public var postgresText: String? { String(self) }
}

extension Int: PostgresEncodable {
    public static var postgresType: PostgresDataType { .int8 }
}

extension Int64: PostgresEncodable {
    public static var postgresType: PostgresDataType { .int8 }
}

extension Int32: PostgresEncodable {
    public static var postgresType: PostgresDataType { .int4 }
}

extension Int16: PostgresEncodable {
    public static var postgresType: PostgresDataType { .int2 }
}

extension Bool: PostgresEncodable {
    public static var postgresType: PostgresDataType { .bool }
    public var postgresText: String? { self ? "t" : "f" }
}

extension Double: PostgresEncodable {
    public static var postgresType: PostgresDataType { .float8 }
    public var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return String(self)
    }
}

extension Decimal: PostgresEncodable {
    public static var postgresType: PostgresDataType { .numeric }
    public var postgresText: String? { isNaN ? "NaN" : description }
}

extension Date: PostgresEncodable {
    public static var postgresType: PostgresDataType { .timestamptz }
    public var postgresText: String? { PostgresTimestamp.format(self) }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public static var postgresType: PostgresDataType { Wrapped.postgresType }
    public var postgresText: String? { self?.postgresText }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    public static var postgresType: PostgresDataType { Element.postgresType.arrayType ?? .unspecified }
    public var postgresText: String? { PostgresArrayText.format(map(\.postgresText)) }
}

extension PostgresEncodable where Self: RawRepresentable, RawValue: PostgresEncodable {
    public static var postgresType: PostgresDataType { RawValue.postgresType }
    public var postgresText: String? { rawValue.postgresText }
}
