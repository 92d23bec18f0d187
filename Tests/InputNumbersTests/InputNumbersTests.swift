import Foundation
import InputNumbers
import Testing

@Suite("Numbers from outside: clamped or refused, never a trap")
struct InputNumbersTests {
    static let hostile = ["1e300", "-1e300", "inf", "-inf", "Infinity", "nan", "NaN", "-0", "0x1p1023", "1e-300",
                          String(repeating: "9", count: 40), "-" + String(repeating: "9", count: 40), "", " ", "12abc", "٣"]

    @Test func countsAreWholeNumbersInRange() throws {
        #expect(try InputNumbers.count(" 100 ", from: "N", in: 1...1_000) == 100)
        #expect(throws: InputNumberError(source: "DETECTQ_HTTP_PORT", expected: "a whole number from 0 to 65535")) {
            try InputNumbers.count("70000", from: "DETECTQ_HTTP_PORT", in: 0...65_535)
        }
        for text in Self.hostile {
            #expect(throws: InputNumberError.self, "\(text)") { try InputNumbers.count(text, from: "N", in: 1...10) }
        }
        #expect(try InputNumbers.count(String(repeating: "9", count: 40), from: "N", in: 1...10, outOfRange: .clamp) == 10)
        #expect(try InputNumbers.count("-" + String(repeating: "9", count: 40), from: "N", in: 1...10, outOfRange: .clamp) == 1)
    }

    @Test func secondsBecomeDurationsInRangeWhateverTheText() throws {
        let range = Duration.milliseconds(1)...Duration.seconds(86_400)
        #expect(try InputNumbers.seconds("0.25", from: "S", in: range) == .milliseconds(250))
        for text in Self.hostile {
            let error = #expect(throws: InputNumberError.self, "\(text)") { try InputNumbers.seconds(text, from: "DETECTQ_LEASE_SECONDS", in: range) }
            #expect(error?.description == "DETECTQ_LEASE_SECONDS must be a number of seconds from 0.001 to 86400")
        }
        #expect(try InputNumbers.seconds("1e300", from: "S", in: range, outOfRange: .clamp) == .seconds(86_400))
        #expect(try InputNumbers.seconds("inf", from: "S", in: range, outOfRange: .clamp) == .seconds(86_400))
        #expect(try InputNumbers.seconds("-inf", from: "S", in: range, outOfRange: .clamp) == .milliseconds(1))
        #expect(throws: InputNumberError.self) { try InputNumbers.seconds("nan", from: "S", in: range, outOfRange: .clamp) }
    }

    @Test func durationsTakeUnits() throws {
        let range = Duration.seconds(1)...Duration.seconds(31_536_000)
        #expect(try InputNumbers.duration("90m", from: "D", in: range) == .seconds(5_400))
        #expect(try InputNumbers.duration("7d", from: "D", in: range) == .seconds(604_800))
        #expect(try InputNumbers.duration("3600", from: "D", in: range) == .seconds(3_600))
        for text in ["1e300d", "infh", "nanm", "d", "5w", "-1h"] {
            #expect(throws: InputNumberError.self, "\(text)") { try InputNumbers.duration(text, from: "D", in: range) }
        }
    }

    @Test func retryAfterIsWholeSecondsOrADateAndNeverBeyondTheLongest() throws {
        let longest = Duration.seconds(86_400)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(InputNumbers.retryAfter("7", now: now, longest: longest) == .seconds(7))
        #expect(InputNumbers.retryAfter(String(repeating: "9", count: 40), now: now, longest: longest) == longest)
        for text in ["1e300", "inf", "nan", "-1", "0.5", "soon", "", "Wed, 21 Oct 2015 07:28:00 UTC"] {
            #expect(InputNumbers.retryAfter(text, now: now, longest: longest) == nil, "\(text)")
        }
        #expect(InputNumbers.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT", now: now, longest: longest) == .zero, "a date in the past")
        #expect(InputNumbers.retryAfter("Fri, 15 Jan 2027 08:02:00 GMT", now: now, longest: longest) == .seconds(120))
        #expect(InputNumbers.retryAfter("Sat, 15 May 2027 08:00:00 GMT", now: now, longest: longest) == longest, "months ahead waits the longest")
        #expect(InputNumbers.retryAfter("Sun, 06 Nov 1994 08:51:37 GMT", now: Date(timeIntervalSince1970: 784_111_777), longest: longest) == .seconds(120))
    }
}
