import Foundation
import TextEncodings

/// A `json` or `jsonb` value, kept as its JSON text so that nothing in it is lost on the way through.
package struct PostgresJSON: Sendable, Hashable, PostgresEncodable, PostgresDecodable {
    /// The JSON document's text.
    package var text: String

    package init(text: String) {
        self.text = text
    }

    /// Encodes a value as JSON (keys sorted, so equal values give equal text).
    package init(encoding value: some Encodable) throws {
        let encoder = JSONText.encoder()
        text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes the JSON text as `type`.
    package func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONText.decode(T.self, from: Data(text.utf8))
    }

    package static var postgresType: PostgresDataType { .jsonb }
    package var postgresText: String? { text }

    package static func decode(from cell: PostgresCell) throws -> PostgresJSON {
        guard cell.column.type == .json || cell.column.type == .jsonb else { throw cell.typeMismatch(Self.self) }
        return PostgresJSON(text: try cell.requireText())
    }
}
