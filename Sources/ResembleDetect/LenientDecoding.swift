import Foundation
import TextEncodings

/// Decoding that never lets a surprising field fail a whole response: the typed view is a convenience, and
/// the raw JSON beside it keeps what the types could not read.
extension KeyedDecodingContainer {
    /// The value at `key` as JSON; nil when absent or unreadable.
    private func json(_ key: Key) -> JSONValue? {
        (try? decodeIfPresent(JSONValue.self, forKey: key)) ?? nil
    }

    /// A number sent as a number or as a numeric string; nil when absent, null or not numeric.
    func lenientDouble(_ key: Key) -> Double? {
        json(key)?.doubleValue
    }

    /// An array of numbers, each sent as a number or a string; non-numeric elements are skipped.
    func lenientDoubles(_ key: Key) -> [Double]? {
        guard case .array(let values)? = json(key) else { return nil }
        return values.compactMap(\.doubleValue)
    }

    /// A string, or a number written as text; nil when absent or of another type.
    func lenientString(_ key: Key) -> String? {
        json(key)?.stringValue
    }

    /// A boolean (or the strings "true"/"false"); nil otherwise.
    func lenientBool(_ key: Key) -> Bool? {
        switch json(key) {
        case .bool(let value)?: value
        case .string(let text)?: ["true": true, "false": false][text.lowercased()]
        default: nil
        }
    }

    /// An ISO 8601 timestamp, with or without fractional seconds; nil when absent or unreadable.
    func lenientDate(_ key: Key) -> Date? {
        lenientString(key).flatMap(ISO8601Timestamp.parse)
    }

    /// A nested value decoded as `T`, or nil when absent, null or of another shape.
    func lenient<T: Decodable>(_ type: T.Type, _ key: Key) -> T? {
        (try? decodeIfPresent(T.self, forKey: key)) ?? nil
    }
}

/// A coding key made from any string, for reading the API's keys that are not Swift names ("certainty (%)").
struct AnyCodingKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
