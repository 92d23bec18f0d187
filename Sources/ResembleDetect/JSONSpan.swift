/// Finds where values lie in a JSON document's bytes without decoding them, so an item's exact text can be
/// kept as the API sent it. It assumes well-formed JSON (the typed decoding that follows checks that).
enum JSONSpan {
    /// The byte range of the value stored at `key` in the top-level object.
    static func topLevelValue(forKey key: String, in bytes: [UInt8]) -> Range<Int>? {
        var index = skipWhitespace(bytes, 0)
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        while true {
            index = skipWhitespace(bytes, index)
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
            guard let keyEnd = skipValue(bytes, index) else { return nil }
            let name = String(decoding: bytes[(index + 1)..<(keyEnd - 1)], as: UTF8.self)
            index = skipWhitespace(bytes, keyEnd)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            let valueStart = skipWhitespace(bytes, index + 1)
            guard let valueEnd = skipValue(bytes, valueStart) else { return nil }
            if name == key { return valueStart..<valueEnd }
            index = skipWhitespace(bytes, valueEnd)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ",") else { return nil }
            index += 1
        }
    }

    /// The byte ranges of the elements of the array at `span`.
    static func arrayElements(in bytes: [UInt8], span: Range<Int>) -> [Range<Int>] {
        guard span.count >= 2, bytes[span.lowerBound] == UInt8(ascii: "[") else { return [] }
        var elements: [Range<Int>] = []
        var index = skipWhitespace(bytes, span.lowerBound + 1)
        while index < span.upperBound - 1 {
            guard let end = skipValue(bytes, index) else { return elements }
            elements.append(index..<end)
            index = skipWhitespace(bytes, end)
            if index < bytes.count, bytes[index] == UInt8(ascii: ",") { index = skipWhitespace(bytes, index + 1) }
        }
        return elements
    }

    private static func skipWhitespace(_ bytes: [UInt8], _ start: Int) -> Int {
        var index = start
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
        return index
    }

    /// The index just past the value starting at `start`.
    private static func skipValue(_ bytes: [UInt8], _ start: Int) -> Int? {
        guard start < bytes.count else { return nil }
        switch bytes[start] {
        case UInt8(ascii: "\""):
            var index = start + 1
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\\") { index += 2; continue }
                if bytes[index] == UInt8(ascii: "\"") { return index + 1 }
                index += 1
            }
            return nil
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var index = start
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    guard let end = skipValue(bytes, index) else { return nil }
                    index = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return index + 1 }
                default:
                    break
                }
                index += 1
            }
            return nil
        default:
            var index = start
            while index < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x0A, 0x0D, 0x09]
                .contains(bytes[index]) { index += 1 }
            return index > start ? index : nil
        }
    }
}
