import DetectqTestSupport
import Foundation
import InputNumbers
import Testing

/// Mutated numbers, durations and `Retry-After` values: every reader answers inside its range or with an
/// error naming the source, and none traps. Seeded and bounded like the other fuzzers (`DETECTQ_FUZZ_SECONDS`).
@Suite("Fuzzing the readers of outside numbers")
struct InputNumberFuzzTests {
    static let corpus = ["30", "0.25", "90m", "24h", "7d", "1e300", "-0", "inf", "nan", "0x1p3", "120",
                         "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999", "1_000", "+5", "5s", " 7 "]

    @Test func mutatedNumbersNeverTrapAndStayInRange() {
        var mutator = Mutator(corpus: Self.corpus.map { Array($0.utf8) })
        // Said first, so that a crash (which ends the process before the summary) still names its seed.
        print("fuzzing the number readers (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        let range = Duration.milliseconds(1)...Duration.seconds(86_400)
        let budget = fuzzBudget(defaultSeconds: 4)
        let deadline = ContinuousClock.now + budget
        var executions = 0
        while ContinuousClock.now < deadline {
            let text = String(decoding: mutator.input().prefix(256), as: UTF8.self)
            for policy in [InputNumbers.OutOfRange.refuse, .clamp] {
                check { try InputNumbers.seconds(text, from: "FUZZ", in: range, outOfRange: policy) } inRange: { range.contains($0) }
                check { try InputNumbers.duration(text, from: "FUZZ", in: range, outOfRange: policy) } inRange: { range.contains($0) }
                check { try InputNumbers.count(text, from: "FUZZ", in: -5...5, outOfRange: policy) } inRange: { (-5...5).contains($0) }
                check { try InputNumbers.amount(text, from: "FUZZ", in: 0.001...100_000, outOfRange: policy) } inRange: { (0.001...100_000).contains($0) }
            }
            if let wait = InputNumbers.retryAfter(text, longest: .seconds(3_600)) {
                #expect(wait >= .zero && wait <= .seconds(3_600), "Retry-After \(text.debugDescription) → \(wait)")
            }
            executions += 1
        }
        print("fuzzed the number readers with \(executions) inputs in \(budget) (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        #expect(executions > 1_000)
    }

    private func check<Value>(_ read: () throws -> Value, inRange: (Value) -> Bool) {
        do {
            let value = try read()
            #expect(inRange(value), "\(value) is outside the range")
        } catch let error as InputNumberError {
            #expect(error.source == "FUZZ" && error.description.hasPrefix("FUZZ must be"))
        } catch {
            Issue.record("an error that is not an InputNumberError: \(error)")
        }
    }
}
