import Foundation
import ResembleDetect

/// How long to wait before the next attempt: exponential backoff with jitter, capped, and never sooner than
/// the server's `Retry-After`.
///
/// The jitter is at most a third of the delay either way, so with the default doubling the ranges of two
/// successive attempts never overlap: the delay grows with every attempt until it reaches the cap.
public struct RetryPolicy: Sendable, Hashable {
    /// The delay after the first failed attempt.
    public var base: Duration
    /// The factor from one attempt's delay to the next.
    public var multiplier: Double
    /// The longest backoff (a `Retry-After` may ask for longer, and is honoured).
    public var cap: Duration
    /// The spread of the jitter, as a fraction of the delay (0 to 1/3).
    public var jitter: Double

    public init(base: Duration = .seconds(2), multiplier: Double = 2, cap: Duration = .seconds(600), jitter: Double = 0.2) {
        precondition(multiplier >= 2 || jitter == 0, "overlapping jitter would make the backoff non-monotone")
        precondition((0...(1.0 / 3)).contains(jitter), "jitter is a fraction from 0 to 1/3")
        self.base = base
        self.multiplier = multiplier
        self.cap = cap
        self.jitter = jitter
    }

    /// The delay after attempt `attempt` (1 for the first) failed.
    public func delay(
        afterAttempt attempt: Int, retryAfter: Duration? = nil, using random: inout some RandomNumberGenerator
    ) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let nominal = min(base.seconds * pow(multiplier, exponent), cap.seconds)
        let spread = nominal * jitter
        let jittered = nominal + Double.random(in: -spread...spread, using: &random)
        let backoff = Duration.seconds(min(max(jittered, 0), cap.seconds))
        guard let retryAfter else { return backoff }
        return max(backoff, retryAfter)
    }

    /// The delay after attempt `attempt`, with the system's random numbers.
    public func delay(afterAttempt attempt: Int, retryAfter: Duration? = nil) -> Duration {
        var random = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, retryAfter: retryAfter, using: &random)
    }
}
