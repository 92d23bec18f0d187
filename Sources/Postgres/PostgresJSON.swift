import Foundation

/// A `json` or `jsonb` value, kept as its JSON text so that nothing in it is lost on the way through.
public struct PostgresJSON: Sendable, Hashable, PostgresEncodable, PostgresDecodable {
    /// The JSON document's text.
    public var text: String

    public init(text: String) {
        self.text = text
    }

    /// Encodes a value as JSON (keys sorted, so equal values give equal text).
    public init(encoding value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes the JSON text as `type`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    public static var postgresType: PostgresDataType { .jsonb }
    public var postgresText: String? { text }

    public static func decode(from cell: PostgresCell) throws -> PostgresJSON {
        guard cell.column.type == .json || cell.column.type == .jsonb else { throw cell.typeMismatch(Self.self) }
        return PostgresJSON(text: try cell.requireText())
    }
}
