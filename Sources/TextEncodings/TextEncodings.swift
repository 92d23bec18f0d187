import Foundation

/// ISO 8601 timestamps, the one way detectq writes and reads them: as the API writes them
/// (`2024-01-15T10:30:00Z`, `2025-12-10T15:30:00.000Z`), in alerts, plugin input, logs and command output.
package enum ISO8601Timestamp {
    /// A timestamp with or without fractional seconds; nil when the text is not one.
    package static func parse(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// The timestamp in UTC with milliseconds.
    package static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

/// Lower-case hexadecimal, the one way detectq writes bytes as text: digests, signatures, secrets.
package enum Hex {
    package static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// The one JSON text configuration: keys sorted and slashes left alone, so the same value always gives the
/// same bytes (signatures, event ids and stored results depend on it); pretty-printed for people to read.
package enum JSONText {
    /// An encoder with the configuration.
    package static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// `text` as a JSON string, quoted and escaped as `encoder()` writes it (`"`, `\\` and control characters
    /// escaped, slashes and everything else as they are), without an encoder: a `JSONEncoder` made for each
    /// value of a batch's payload cost the worker more CPU than the value itself.
    package static func string(_ text: String) -> String {
        var bytes: [UInt8] = [UInt8(ascii: "\"")]
        bytes.reserveCapacity(text.utf8.count + 2)
        let digits = Array("0123456789abcdef".utf8)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x08: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0..<0x20: bytes += Array("\\u00".utf8) + [digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The deepest nesting of arrays and objects detectq reads. Nothing it reads comes near it (the API's items
    /// nest a few levels), and Foundation's decoder traps on one malformed input just past its own limit of
    /// 512 (a body of exactly 513 `[`), so every JSON from outside is measured against this first.
    package static let deepestNesting = 256

    /// Decodes `T` from JSON `bytes`, refusing (as a `DecodingError`) JSON nested deeper than `deepestNesting`.
    package static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try refuseDeepNesting(bytes)
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    }

    /// The `JSONSerialization` object of `bytes` (fragments allowed), with the same refusal.
    package static func object(from bytes: some Collection<UInt8>) throws -> Any {
        try refuseDeepNesting(bytes)
        return try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    }

    /// Whether `bytes` open more than `limit` arrays or objects at once, strings aside.
    package static func nesting(of bytes: some Sequence<UInt8>, exceeds limit: Int) -> Bool {
        var depth = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return false
    }

    private static func refuseDeepNesting(_ bytes: some Collection<UInt8>) throws {
        guard nesting(of: bytes, exceeds: deepestNesting) else { return }
        throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "JSON nested deeper than \(deepestNesting) levels"))
    }

    /// `object` (from `JSONSerialization`) as text with the same configuration.
    package static func serialize(_ object: Any, pretty: Bool = false) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes])
    }
}
