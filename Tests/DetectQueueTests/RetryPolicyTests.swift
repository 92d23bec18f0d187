import DetectQueue
import DetectSimulator
import Testing

@Suite("Retry backoff")
struct RetryPolicyTests {
    @Test(arguments: [1, 2, 3, 42, 1234])
    func backoffGrowsWithEveryAttemptUntilTheCap(seed: UInt64) {
        let policy = RetryPolicy(base: .seconds(1), cap: .seconds(300))
        var random = SeededRandom(seed: seed)
        var previous = Duration.zero
        for attempt in 1...20 {
            let delay = policy.delay(afterAttempt: attempt, using: &random)
            #expect(delay <= .seconds(300))
            #expect(delay >= previous || previous >= .seconds(300) * 0.8, "attempt \(attempt): \(delay) < \(previous)")
            previous = delay
        }
        #expect(previous >= .seconds(240), "the cap is reached")
    }

    @Test func jitterSpreadsTheFirstDelayAroundTheBase() {
        let policy = RetryPolicy(base: .seconds(10), jitter: 0.2)
        var random = SeededRandom(seed: 7)
        let delays = (0..<500).map { _ in policy.delay(afterAttempt: 1, using: &random) }
        #expect(delays.allSatisfy { $0 >= .seconds(8) && $0 <= .seconds(12) })
        #expect(Set(delays).count > 100, "the delays are spread, not all equal")
    }

    @Test(arguments: [1, 3, 10])
    func retryAfterIsAlwaysHonoured(attempt: Int) {
        let policy = RetryPolicy(base: .seconds(1), cap: .seconds(30))
        var random = SeededRandom(seed: UInt64(attempt))
        #expect(policy.delay(afterAttempt: attempt, retryAfter: .seconds(45), using: &random) == .seconds(45))
        #expect(policy.delay(afterAttempt: attempt, retryAfter: .milliseconds(1), using: &random) >= .milliseconds(1))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(5), using: &random) >= .seconds(5))
    }
}
