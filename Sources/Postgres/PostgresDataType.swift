/// A PostgreSQL data type, identified by its OID, as libpq reports it for a column or a parameter.
package struct PostgresDataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package let rawValue: UInt32

    package init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Lets the server infer the parameter's type from where it is used (an enum column, say).
    package static let unspecified = PostgresDataType(rawValue: 0)
    package static let bool = PostgresDataType(rawValue: 16)
    package static let bytea = PostgresDataType(rawValue: 17)
    package static let char = PostgresDataType(rawValue: 18)
    package static let name = PostgresDataType(rawValue: 19)
    package static let int8 = PostgresDataType(rawValue: 20)
    package static let int2 = PostgresDataType(rawValue: 21)
    package static let int4 = PostgresDataType(rawValue: 23)
    package static let text = PostgresDataType(rawValue: 25)
    package static let oid = PostgresDataType(rawValue: 26)
    package static let json = PostgresDataType(rawValue: 114)
    package static let float4 = PostgresDataType(rawValue: 700)
    package static let float8 = PostgresDataType(rawValue: 701)
    package static let unknown = PostgresDataType(rawValue: 705)
    package static let bpchar = PostgresDataType(rawValue: 1042)
    package static let varchar = PostgresDataType(rawValue: 1043)
    package static let date = PostgresDataType(rawValue: 1082)
    package static let timestamp = PostgresDataType(rawValue: 1114)
    package static let timestamptz = PostgresDataType(rawValue: 1184)
    package static let numeric = PostgresDataType(rawValue: 1700)
    package static let jsonb = PostgresDataType(rawValue: 3802)

    package static let boolArray = PostgresDataType(rawValue: 1000)
    package static let int2Array = PostgresDataType(rawValue: 1005)
    package static let int4Array = PostgresDataType(rawValue: 1007)
    package static let textArray = PostgresDataType(rawValue: 1009)
    package static let varcharArray = PostgresDataType(rawValue: 1015)
    package static let int8Array = PostgresDataType(rawValue: 1016)
    package static let float4Array = PostgresDataType(rawValue: 1021)
    package static let float8Array = PostgresDataType(rawValue: 1022)
    package static let timestampArray = PostgresDataType(rawValue: 1115)
    package static let timestamptzArray = PostgresDataType(rawValue: 1185)
    package static let numericArray = PostgresDataType(rawValue: 1231)
    package static let jsonArray = PostgresDataType(rawValue: 199)
    package static let jsonbArray = PostgresDataType(rawValue: 3807)

    private static let arrayElements: [PostgresDataType: PostgresDataType] = [
        .boolArray: .bool, .int2Array: .int2, .int4Array: .int4, .int8Array: .int8,
        .textArray: .text, .varcharArray: .varchar, .float4Array: .float4, .float8Array: .float8,
        .timestampArray: .timestamp, .timestamptzArray: .timestamptz, .numericArray: .numeric,
        .jsonArray: .json, .jsonbArray: .jsonb,
    ]
    private static let arraysByElement = Dictionary(uniqueKeysWithValues: arrayElements.map { ($1, $0) })

    /// The element type when this is a built-in one-dimensional array type, else nil.
    package var arrayElementType: PostgresDataType? { Self.arrayElements[self] }

    /// The array type whose elements are of this type, when PostgreSQL has a built-in one.
    package var arrayType: PostgresDataType? { Self.arraysByElement[self] }

    /// True for the built-in types that hold text (and for user-defined types such as enums and domains,
    /// whose OIDs are assigned at creation and whose text form is their value).
    var isTextual: Bool {
        switch self {
        case .text, .varchar, .bpchar, .name, .char, .unknown: return true
        default: return rawValue >= 16_384 && arrayElementType == nil
        }
    }

    package var description: String {
        switch self {
        case .bool: return "bool"
        case .bytea: return "bytea"
        case .char: return "char"
        case .name: return "name"
        case .int8: return "int8"
        case .int2: return "int2"
        case .int4: return "int4"
        case .text: return "text"
        case .oid: return "oid"
        case .json: return "json"
        case .float4: return "float4"
        case .float8: return "float8"
        case .unknown: return "unknown"
        case .bpchar: return "bpchar"
        case .varchar: return "varchar"
        case .date: return "date"
        case .timestamp: return "timestamp"
        case .timestamptz: return "timestamptz"
        case .numeric: return "numeric"
        case .jsonb: return "jsonb"
        default:
            if let element = arrayElementType { return "\(element)[]" }
            return "type \(rawValue)"
        }
    }
}
