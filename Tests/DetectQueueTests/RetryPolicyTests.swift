import DetectQueue
import DetectSimulator
import PropertyBased
import Testing

@Suite("Retry backoff, as properties over random policies, attempts and dice")
struct RetryPolicyTests {
    /// Any policy the type accepts: a factor of at least two and a jitter of at most a third.
    static let policy = zip(
        Gen.double(in: 0.01...10), Gen.double(in: 2...4), Gen.double(in: 1...1_000), Gen.double(in: 0...(1.0 / 3))
    ).map { base, multiplier, cap, jitter in
        RetryPolicy(base: .seconds(base), multiplier: multiplier, cap: .seconds(cap), jitter: jitter)
    }

    @Test func theDelayNeverShrinksFromOneAttemptToALaterOne() async {
        await propertyCheck(count: 2_000, input: Self.policy, Gen.int(in: 1...80), Gen.int(in: 1...80), Gen.uint64(in: 0 ... .max)) {
            policy, first, second, seed in
            var random = SeededRandom(seed: seed)
            let (earlier, later) = (min(first, second), max(first, second) + (first == second ? 1 : 0))
            let earlierDelay = policy.delay(afterAttempt: earlier, using: &random)
            let laterDelay = policy.delay(afterAttempt: later, using: &random)
            #expect(earlierDelay <= laterDelay, "attempt \(earlier): \(earlierDelay), attempt \(later): \(laterDelay)")
            #expect(laterDelay <= policy.cap && earlierDelay >= .zero)
        }
    }

    @Test func retryAfterIsAlwaysHonouredEvenAboveTheCap() async {
        await propertyCheck(count: 2_000, input: Self.policy, Gen.int(in: 1...80), Gen.double(in: 0...3_600), Gen.uint64(in: 0 ... .max)) {
            policy, attempt, retryAfter, seed in
            var random = SeededRandom(seed: seed)
            let delay = policy.delay(afterAttempt: attempt, retryAfter: .seconds(retryAfter), using: &random)
            #expect(delay >= .seconds(retryAfter))
            #expect(delay <= max(policy.cap, .seconds(retryAfter)))
        }
    }

    @Test func theCapIsReachedAndHeld() async {
        await propertyCheck(count: 500, input: Self.policy, Gen.uint64(in: 0 ... .max)) { policy, seed in
            var random = SeededRandom(seed: seed)
            #expect(policy.delay(afterAttempt: 200, using: &random) == policy.cap)
            #expect(policy.delay(afterAttempt: Int.max, using: &random) == policy.cap, "no overflow at absurd attempts")
        }
    }

    @Test func jitterSpreadsTheFirstDelayAroundTheBase() {
        let policy = RetryPolicy(base: .seconds(10), jitter: 0.2)
        var random = SeededRandom(seed: 7)
        let delays = (0..<500).map { _ in policy.delay(afterAttempt: 1, using: &random) }
        #expect(delays.allSatisfy { $0 >= .seconds(8) && $0 <= .seconds(12) })
        #expect(Set(delays).count > 100, "the delays are spread, not all equal")
    }
}
