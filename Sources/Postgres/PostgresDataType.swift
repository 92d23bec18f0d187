/// A PostgreSQL data type, identified by its OID, as libpq reports it for a column or a parameter.
public struct PostgresDataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32

    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Lets the server infer the parameter's type from where it is used (an enum column, say).
    public static let unspecified = PostgresDataType(rawValue: 0)
    public static let bool = PostgresDataType(rawValue: 16)
    public static let bytea = PostgresDataType(rawValue: 17)
    public static let char = PostgresDataType(rawValue: 18)
    public static let name = PostgresDataType(rawValue: 19)
    public static let int8 = PostgresDataType(rawValue: 20)
    public static let int2 = PostgresDataType(rawValue: 21)
    public static let int4 = PostgresDataType(rawValue: 23)
    public static let text = PostgresDataType(rawValue: 25)
    public static let oid = PostgresDataType(rawValue: 26)
    public static let json = PostgresDataType(rawValue: 114)
    public static let float4 = PostgresDataType(rawValue: 700)
    public static let float8 = PostgresDataType(rawValue: 701)
    public static let unknown = PostgresDataType(rawValue: 705)
    public static let bpchar = PostgresDataType(rawValue: 1042)
    public static let varchar = PostgresDataType(rawValue: 1043)
    public static let date = PostgresDataType(rawValue: 1082)
    public static let timestamp = PostgresDataType(rawValue: 1114)
    public static let timestamptz = PostgresDataType(rawValue: 1184)
    public static let numeric = PostgresDataType(rawValue: 1700)
    public static let jsonb = PostgresDataType(rawValue: 3802)

    public static let boolArray = PostgresDataType(rawValue: 1000)
    public static let int2Array = PostgresDataType(rawValue: 1005)
    public static let int4Array = PostgresDataType(rawValue: 1007)
    public static let textArray = PostgresDataType(rawValue: 1009)
    public static let varcharArray = PostgresDataType(rawValue: 1015)
    public static let int8Array = PostgresDataType(rawValue: 1016)
    public static let float4Array = PostgresDataType(rawValue: 1021)
    public static let float8Array = PostgresDataType(rawValue: 1022)
    public static let timestampArray = PostgresDataType(rawValue: 1115)
    public static let timestamptzArray = PostgresDataType(rawValue: 1185)
    public static let numericArray = PostgresDataType(rawValue: 1231)
    public static let jsonArray = PostgresDataType(rawValue: 199)
    public static let jsonbArray = PostgresDataType(rawValue: 3807)

    private static let arrayElements: [PostgresDataType: PostgresDataType] = [
        .boolArray: .bool, .int2Array: .int2, .int4Array: .int4, .int8Array: .int8,
        .textArray: .text, .varcharArray: .varchar, .float4Array: .float4, .float8Array: .float8,
        .timestampArray: .timestamp, .timestamptzArray: .timestamptz, .numericArray: .numeric,
        .jsonArray: .json, .jsonbArray: .jsonb,
    ]
    private static let arraysByElement = Dictionary(uniqueKeysWithValues: arrayElements.map { ($1, $0) })

    /// The element type when this is a built-in one-dimensional array type, else nil.
    public var arrayElementType: PostgresDataType? { Self.arrayElements[self] }

    /// The array type whose elements are of this type, when PostgreSQL has a built-in one.
    public var arrayType: PostgresDataType? { Self.arraysByElement[self] }

    /// True for the built-in types that hold text (and for user-defined types such as enums and domains,
    /// whose OIDs are assigned at creation and whose text form is their value).
    var isTextual: Bool {
        switch self {
        case .text, .varchar, .bpchar, .name, .char, .unknown: return true
        default: return rawValue >= 16_384 && arrayElementType == nil
        }
    }

    public var description: String {
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
