import Foundation

/// A Swift type that a column's value can be decoded as. Each type accepts only the PostgreSQL types that
/// map onto it, so reading a `text` column as an `Int` is an error that names the column, not a silent guess.
package protocol PostgresDecodable {
    static func decode(from cell: PostgresCell) throws -> Self
}

/// One value of a result: its text form (nil for SQL NULL) and the column it came from.
package struct PostgresCell: Sendable {
    package let text: String?
    package let column: PostgresColumn

    package init(text: String?, column: PostgresColumn) {
        self.text = text
        self.column = column
    }

    /// The text, or a decoding error when the value is NULL.
    package func requireText() throws -> String {
        guard let text else {
            throw PostgresError.decoding("column \"\(column.name)\" is NULL; decode it as an Optional")
        }
        return text
    }

    /// The error for a column whose PostgreSQL type cannot be decoded as `swiftType`.
    package func typeMismatch(_ swiftType: Any.Type) -> PostgresError {
        PostgresError.decoding("column \"\(column.name)\" has type \(column.type), which cannot be decoded as \(swiftType)")
    }

    func invalid(_ swiftType: Any.Type) -> PostgresError {
        PostgresError.decoding("column \"\(column.name)\" holds a value that is not a valid \(swiftType)")
    }
}

/// A result column's name and type.
package struct PostgresColumn: Sendable, Hashable {
    package let name: String
    package let type: PostgresDataType

    package init(name: String, type: PostgresDataType) {
        self.name = name
        self.type = type
    }
}

extension String: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> String {
        guard cell.column.type.isTextual else { throw cell.typeMismatch(String.self) }
        return try cell.requireText()
    }
}

extension FixedWidthInteger where Self: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Self {
        switch cell.column.type {
        case .int2, .int4, .int8, .oid: break
        default: throw cell.typeMismatch(Self.self)
        }
        guard let value = Self(try cell.requireText()) else { throw cell.invalid(Self.self) }
        return value
    }
}

extension Int: PostgresDecodable {}
extension Int64: PostgresDecodable {}
extension Int32: PostgresDecodable {}
extension Int16: PostgresDecodable {}

extension Bool: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Bool {
        guard cell.column.type == .bool else { throw cell.typeMismatch(Bool.self) }
        switch try cell.requireText() {
        case "t": return true
        case "f": return false
        default: throw cell.invalid(Bool.self)
        }
    }
}

extension Double: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Double {
        switch cell.column.type {
        case .float4, .float8, .numeric, .int2, .int4, .int8: break
        default: throw cell.typeMismatch(Double.self)
        }
        guard let value = Double(try cell.requireText()) else { throw cell.invalid(Double.self) }
        return value
    }
}

extension Decimal: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Decimal {
        switch cell.column.type {
        case .numeric, .int2, .int4, .int8: break
        default: throw cell.typeMismatch(Decimal.self)
        }
        let text = try cell.requireText()
        if text == "NaN" { return .nan }
        guard let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")) else {
            throw cell.invalid(Decimal.self)
        }
        return value
    }
}

extension Date: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Date {
        switch cell.column.type {
        case .timestamptz, .timestamp, .date: break
        default: throw cell.typeMismatch(Date.self)
        }
        guard let date = PostgresTimestamp.parse(try cell.requireText()) else { throw cell.invalid(Date.self) }
        return date
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Wrapped? {
        guard cell.text != nil else { return nil }
        return try Wrapped.decode(from: cell)
    }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> [Element] {
        guard let elementType = cell.column.type.arrayElementType else { throw cell.typeMismatch([Element].self) }
        guard let elements = PostgresArrayText.parse(try cell.requireText()) else { throw cell.invalid([Element].self) }
        let elementColumn = PostgresColumn(name: cell.column.name, type: elementType)
        return try elements.map { try Element.decode(from: PostgresCell(text: $0, column: elementColumn)) }
    }
}

extension PostgresDecodable where Self: RawRepresentable, RawValue: PostgresDecodable {
    package static func decode(from cell: PostgresCell) throws -> Self {
        guard let value = Self(rawValue: try RawValue.decode(from: cell)) else { throw cell.invalid(Self.self) }
        return value
    }
}
