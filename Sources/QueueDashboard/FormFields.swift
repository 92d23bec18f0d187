import Hummingbird

/// The fields of a URL query or an `application/x-www-form-urlencoded` body, read by Hummingbird's
/// `URLEncodedFormDecoder` (`+` is a space, `%XX` a byte). A form that cannot be read (a name given twice, a
/// nested key, a broken escape) has no fields, so it is refused by whatever it lacks.
struct FormFields: Sendable {
    let values: [String: String]

    /// The fields of `text` (none when it cannot be read).
    init(_ text: String?) {
        values = (try? URLEncodedFormDecoder().decode([String: String].self, from: text ?? "")) ?? [:]
    }

    subscript(name: String) -> String? { values[name] }
}
