import Foundation
import Testing
import TextEncodings

@Suite("The one way to write timestamps, hex and JSON")
struct TextEncodingsTests {
    @Test func hexIsLowerCaseTwoDigitsAByte() {
        #expect(Hex.encode([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
        #expect(Hex.encode([UInt8]()) == "")
    }

    @Test func timestampsRoundTripWithAndWithoutFractions() throws {
        let date = try #require(ISO8601Timestamp.parse("2025-12-10T15:30:00.250Z"))
        #expect(ISO8601Timestamp.format(date) == "2025-12-10T15:30:00.250Z")
        #expect(ISO8601Timestamp.parse("2024-01-15T10:30:00Z") != nil)
        #expect(ISO8601Timestamp.parse("yesterday") == nil)
    }

    @Test func theEncoderSortsKeysAndLeavesSlashes() throws {
        let text = String(decoding: try JSONText.encoder().encode(["b": "https://x/y", "a": "1"]), as: UTF8.self)
        #expect(text == #"{"a":"1","b":"https://x/y"}"#)
    }

    /// Foundation's decoder traps on exactly 513 unclosed `[` (found by the response fuzzer): a callback body
    /// could have taken a worker down. Every JSON detectq reads is measured first and refused past 256 levels.
    @Test func deepNestingIsRefusedBeforeFoundationSeesIt() throws {
        for count in [257, 512, 513, 514, 100_000] {
            let unclosed = Array(repeating: UInt8(ascii: "["), count: count)
            #expect(throws: DecodingError.self, "\(count) unclosed") { try JSONText.decode([String].self, from: unclosed) }
            #expect(throws: DecodingError.self) { try JSONText.object(from: unclosed) }
        }
        let deepButAllowed = String(repeating: "[", count: 256) + String(repeating: "]", count: 256)
        #expect(throws: Never.self) { try JSONText.object(from: Array(deepButAllowed.utf8)) }
        let bracketsInAString = #"{"a": "\#(String(repeating: "[{", count: 1_000))\" ]"}"#
        #expect(!JSONText.nesting(of: Array(bracketsInAString.utf8), exceeds: 2), "brackets inside strings, escaped quotes too, do not count")
        #expect(try JSONText.decode([String: String].self, from: Array(bracketsInAString.utf8))["a"]?.count == 2_003)
    }

    /// RFC 8259: a string is quoted, with `"`, `\\` and every control character below U+0020 escaped; anything
    /// else may stand as itself. Read back by Foundation's decoder, each comes out as it went in.
    @Test func aStringIsWrittenAsAJSONStringThatReadsBackTheSame() throws {
        let samples = ["", "plain", "say \"hi\"", #"back\slash"#, "a/b", "tab\tnew\nline\rret", "\u{08}\u{0C}\u{00}\u{1F}\u{7F}",
                       "é ü 日本 🎭", "\u{2028}\u{2029}", String((0..<32).map { Character(Unicode.Scalar(UInt8($0))) })]
        for sample in samples {
            let written = JSONText.string(sample)
            #expect(written.first == "\"" && written.last == "\"", "\(written)")
            #expect(!written.unicodeScalars.contains { $0.value < 0x20 }, "no raw control character in \(written.debugDescription)")
            #expect(try JSONDecoder().decode(String.self, from: Data(written.utf8)) == sample, "\(written)")
            #expect(written == String(decoding: try JSONText.encoder().encode(sample), as: UTF8.self), "the same bytes as the encoder's")
        }
        #expect(JSONText.string("a/b") == #""a/b""#)
        #expect(JSONText.string("q\"\\") == #""q\"\\""#)
    }
}
