import Foundation

/// The preferred HTTP date format of RFC 9110 (`Sun, 06 Nov 1994 08:49:37 GMT`).
enum HTTPDate {
    static func parse(_ text: String) -> Date? {
        // A fixed-length format: anything longer is not a date, and is not handed to the formatter.
        guard text.utf8.count == 29, text.hasSuffix(" GMT") else { return nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}
