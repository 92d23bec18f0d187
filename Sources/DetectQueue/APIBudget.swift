import Foundation
import Postgres

/// The API's request budget, shared by every worker through the database (`detectq.api_budget`).
///
/// Each request reserves the next free slot in one UPDATE; slots are `1 / ratePerSecond` apart, and after
/// an idle spell at most a tenth of a second's worth may be taken at once, so no one-second window sees
/// more than 110% of the rate, however many workers ask. While demand exceeds the rate, slots are reserved
/// ahead and none is wasted. A 429's `Retry-After` pauses every worker: slots are not granted before the
/// pause ends, and a caller that slept towards its slot checks the pause again before going ahead.
public struct APIBudget: Sendable {
    public let pool: PostgresConnectionPool
    public let ratePerSecond: Double

    /// How far behind now a reservation may start after an idle spell: a tenth of a second.
    public var tolerance: Double { max(1 / ratePerSecond, 0.1) }

    public init(pool: PostgresConnectionPool, ratePerSecond: Double) {
        precondition(ratePerSecond > 0, "the rate limit must be positive")
        self.pool = pool
        self.ratePerSecond = ratePerSecond
    }

    /// Waits for a slot for one more API request. Returns the slot (on the database's clock, shared by every
    /// worker) and how long this caller waited.
    @discardableResult
    public func acquire() async throws -> (slot: Date, waited: Duration) {
        let started = ContinuousClock.now
        let interval = 1 / ratePerSecond
        while true {
            let row = try await pool.query("""
                UPDATE detectq.api_budget SET next_slot_at = GREATEST(
                        next_slot_at, clock_timestamp() - make_interval(secs => \(tolerance)), paused_until
                    ) + make_interval(secs => \(interval))
                RETURNING next_slot_at - make_interval(secs => \(interval)) AS slot,
                          EXTRACT(EPOCH FROM next_slot_at - make_interval(secs => \(interval)) - clock_timestamp())::float8 AS wait
                """)[0]
            let slot = try row.decode("slot", as: Date.self)
            let wait = try row.decode("wait", as: Double.self)
            guard wait > 0 else { return (slot, ContinuousClock.now - started) }
            try await Task.sleep(for: .seconds(wait))
            let paused = try await pool.query("""
                SELECT paused_until > clock_timestamp() AS paused FROM detectq.api_budget
                """)[0].decode("paused", as: Bool.self)
            if !paused {
                let waited = ContinuousClock.now - started
                QueueMetrics.rateLimitWait(waited)
                return (slot, waited)
            }
        }
    }

    /// Stops every worker's API requests until `duration` from now (a 429's `Retry-After`).
    public func pause(for duration: Duration) async throws {
        QueueMetrics.rateLimitPause()
        try await pool.query("""
            UPDATE detectq.api_budget
            SET paused_until = GREATEST(paused_until, clock_timestamp() + make_interval(secs => \(duration.seconds)))
            """)
    }
}
