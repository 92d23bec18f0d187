import Foundation
import ResembleDetect

/// How long to wait before the next attempt: exponential backoff with jitter, capped, and never sooner than
/// the server's `Retry-After`.
///
/// The jitter is at most a third of the delay either way, so with a factor of at least two the ranges of two
/// successive attempts never overlap; the cap is applied after the jitter, which keeps that order. So the
/// delay never shrinks from one attempt to the next, whatever the dice say: it grows until it reaches the cap
/// and stays there.
package struct RetryPolicy: Sendable, Hashable {
    /// The delay after the first failed attempt.
    package var base: Duration
    /// The factor from one attempt's delay to the next.
    package var multiplier: Double
    /// The longest backoff (a `Retry-After` may ask for longer, and is honoured).
    package var cap: Duration
    /// The spread of the jitter, as a fraction of the delay (0 to 1/3).
    package var jitter: Double

    package init(base: Duration = .seconds(2), multiplier: Double = 2, cap: Duration = .seconds(600), jitter: Double = 0.2) {
        precondition(multiplier >= 2 || jitter == 0, "overlapping jitter would make the backoff non-monotone")
        precondition((0...(1.0 / 3)).contains(jitter), "jitter is a fraction from 0 to 1/3")
        self.base = base
        self.multiplier = multiplier
        self.cap = cap
        self.jitter = jitter
    }

    /// The delay after attempt `attempt` (1 for the first) failed.
    package func delay(
        afterAttempt attempt: Int, retryAfter: Duration? = nil, using random: inout some RandomNumberGenerator
    ) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let nominal = base.seconds * pow(multiplier, exponent)
        // The longest delay the attempt before could have drawn: a floor, so that rounding at the very edge
        // of the two jitter ranges cannot put this attempt's delay a hair below the last one.
        let previousLongest = attempt > 1 ? base.seconds * pow(multiplier, exponent - 1) * (1 + jitter) : 0
        let backoff: Duration
        if nominal.isFinite, nominal * (1 - jitter) < cap.seconds {
            let jittered = nominal * (1 + Double.random(in: -jitter...jitter, using: &random))
            backoff = .seconds(min(max(jittered, previousLongest, 0), cap.seconds))
        } else {
            backoff = cap
        }
        guard let retryAfter else { return backoff }
        return max(backoff, retryAfter)
    }

    /// The delay after attempt `attempt`, with the system's random numbers.
    package func delay(afterAttempt attempt: Int, retryAfter: Duration? = nil) -> Duration {
        var random = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, retryAfter: retryAfter, using: &random)
    }
}
