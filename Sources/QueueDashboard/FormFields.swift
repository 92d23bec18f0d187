import Foundation

/// The fields of a URL query or an `application/x-www-form-urlencoded` body: `+` is a space, `%XX` a byte.
/// A name given twice keeps its first value; fields that cannot be decoded are dropped.
struct FormFields: Sendable {
    let values: [String: String]

    init(body: String) {
        var values: [String: String] = [:]
        for pair in body.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]), let value = Self.decode(parts.count > 1 ? parts[1] : "") else { continue }
            if values[name] == nil { values[name] = value }
        }
        self.values = values
    }

    init(query: String?) {
        self.init(body: query ?? "")
    }

    subscript(name: String) -> String? { values[name] }

    private static func decode(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
