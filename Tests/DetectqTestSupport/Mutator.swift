import DetectSimulator
import Foundation
import InputNumbers

/// A seeded mutation fuzzer for the parsers of outside input: it takes a corpus of well-formed examples and
/// breaks them the ways a hostile or broken peer would (flipped and lost bytes, cut documents, spliced
/// documents, JSON tokens in the wrong place, deep nesting, huge numbers, injected strings).
///
/// A run is bounded in time (`DETECTQ_FUZZ_SECONDS`, default `defaultSeconds`) and repeatable: it prints its
/// seed, and `DETECTQ_FUZZ_SEED` replays it. A crash found this way is kept as a file in the test's
/// regression corpus, which every run replays first.
package struct Mutator: RandomNumberGenerator {
    private var random: SeededRandom
    package let seed: UInt64
    private let corpus: [[UInt8]]
    /// Byte strings worth dropping into a document: JSON syntax, edge numbers, escapes, and the caller's own.
    private let tokens: [[UInt8]]

    package init(corpus: [[UInt8]], tokens extra: [String] = [], seed: UInt64? = nil) {
        let chosen = seed ?? ProcessInfo.processInfo.environment["DETECTQ_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1 ... .max)
        self.seed = chosen
        random = SeededRandom(seed: chosen)
        self.corpus = corpus.isEmpty ? [[]] : corpus
        tokens = ([
            "{", "}", "[", "]", "\"", "\\", ":", ",", "null", "true", "false", "0", "-0", "1e999", "-1e999", "NaN", "Infinity",
            "18446744073709551616", "-9223372036854775809", "0.0000000000000000000000001", "\"\\u0000\"", "\"\\ud800\"",
            "\\u", "\u{FEFF}", "\u{0}", "é", "𝄞", "\"item\":", "\"items\":", "\"metrics\":", "\"label\":", "\"score\":",
            "\"aggregated_score\":", "\"status\":", "\"uuid\":", "\"success\":", "\"message\":", "\"errors\":",
            String(repeating: "[", count: 600), String(repeating: "{\"a\":", count: 300), String(repeating: "9", count: 400),
            "'; DROP TABLE detectq.requests; --",
        ] + extra).map { Array($0.utf8) }
    }

    package mutating func next() -> UInt64 { random.next() }

    /// A new input: a corpus entry with one to eight mutations stacked.
    package mutating func input() -> [UInt8] {
        var bytes = corpus.randomElement(using: &self)!
        for _ in 0..<Int.random(in: 1...8, using: &self) { mutate(&bytes) }
        return bytes
    }

    /// A short string of the same kind, for header values and path segments.
    package mutating func shortString(from examples: [String]) -> String {
        var bytes = Array((examples.randomElement(using: &self) ?? "").utf8)
        for _ in 0..<Int.random(in: 0...3, using: &self) { mutate(&bytes) }
        return String(decoding: bytes.prefix(300), as: UTF8.self)
    }

    private mutating func mutate(_ bytes: inout [UInt8]) {
        let position = bytes.isEmpty ? 0 : Int.random(in: 0...bytes.count, using: &self)
        switch Int.random(in: 0..<9, using: &self) {
        case 0 where !bytes.isEmpty:
            let index = min(position, bytes.count - 1)
            bytes[index] ^= UInt8(1 << Int.random(in: 0..<8, using: &self))
        case 1:
            bytes.insert(UInt8.random(in: .min ... .max, using: &self), at: position)
        case 2 where !bytes.isEmpty:
            let end = min(bytes.count, position + Int.random(in: 1...16, using: &self))
            bytes.removeSubrange(min(position, end)..<end)
        case 3:
            bytes.insert(contentsOf: tokens.randomElement(using: &self)!, at: position)
        case 4:
            bytes = Array(bytes.prefix(position))
        case 5 where !bytes.isEmpty:
            let start = Int.random(in: 0..<bytes.count, using: &self)
            let end = min(bytes.count, start + Int.random(in: 1...64, using: &self))
            bytes.insert(contentsOf: bytes[start..<end], at: position)
        case 6:
            let other = corpus.randomElement(using: &self)!
            let cut = other.isEmpty ? 0 : Int.random(in: 0..<other.count, using: &self)
            bytes = Array(bytes.prefix(position)) + other[cut...]
        case 7 where !bytes.isEmpty:
            let index = min(position, bytes.count - 1)
            bytes[index] = [0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x00, 0xFF].randomElement(using: &self)!
        default:
            bytes.insert(contentsOf: tokens.randomElement(using: &self)!, at: position)
        }
    }
}

/// How long one fuzz target runs: `DETECTQ_FUZZ_SECONDS`, or the caller's default.
package func fuzzBudget(defaultSeconds: Double) -> Duration {
    let fallback = Duration.milliseconds(Int64(defaultSeconds * 1000))
    guard let text = ProcessInfo.processInfo.environment["DETECTQ_FUZZ_SECONDS"] else { return fallback }
    return (try? InputNumbers.seconds(text, from: "DETECTQ_FUZZ_SECONDS", in: .zero...(.seconds(86_400)), outOfRange: .clamp)) ?? fallback
}
