import Foundation
@testable import QueueDashboard
import Testing

/// The dashboard writes times with the C library's `gmtime_r` rather than a `DateFormatter` per value; they
/// must read the same, to the millisecond.
@Suite("Times as the dashboard writes them")
struct FormattingTests {
    @Test func theSameAsADateFormatterInUTC() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
        var random = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let milliseconds = Double(Int.random(in: 0...4_102_444_800_000, using: &random))
            let date = Date(timeIntervalSince1970: milliseconds / 1000)
            #expect(Formatting.preciseTime(date) == formatter.string(from: date), "\(milliseconds)")
        }
        let date = Date(timeIntervalSince1970: 1_763_821_805.25)
        #expect(Formatting.compactTime(date, separator: "T") == "2025-11-22T14:30:05")
        #expect(Formatting.minute(date) == "14:30")
        #expect(Formatting.time(date) == "2025-11-22 14:30:05 UTC")
    }

    @Test func agesAndExpiries() {
        #expect(Formatting.age(4.25) == "4.2 s" || Formatting.age(4.25) == "4.3 s")
        #expect(Formatting.age(192) == "3 min 12 s")
        #expect(Formatting.age(-2) == "0.0 s", "a clock a little behind is not a negative age")
        #expect(Formatting.age(90_000) == "1 d 1 h")
    }
}
