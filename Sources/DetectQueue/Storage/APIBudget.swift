import Foundation
import Logging
import Postgres
import ResembleDetect
import ServiceLifecycle
import Synchronization

/// The API's request budget, shared by every worker through the database (`detectq.api_budget`, and the
/// rate-limit pause in `detectq.pauses`).
///
/// Each request reserves the next free slot in one UPDATE; slots are `1 / ratePerSecond` apart, and after
/// an idle spell at most one slot may lie in the past, so no one-second window is granted more than the
/// rate plus one, however many workers ask. While demand exceeds the rate, slots are reserved
/// ahead and none is wasted. A 429 pauses every worker (for its `Retry-After`, capped at
/// `DETECTQ_RETRY_AFTER_MAX_SECONDS`, or for a doubling backoff when it gave none): slots are not granted
/// before the pause ends, and a caller that slept towards its slot checks the pause again before going ahead.
///
/// Reservations are coalesced: the callers that ask while one UPDATE is in flight reserve their slots
/// together in the next, consecutive slots each, exactly as if they had asked one by one.
package struct APIBudget: Sendable {
    package let ratePerSecond: Double
    /// The pauses a 429 sets and every call honours.
    package let pauses: any PauseStorage
    /// `DETECTQ_RETRY_AFTER_MAX_SECONDS`: the longest pause a 429's `Retry-After` may ask for.
    package let longestRetryAfter: Duration
    private let logger: Logger
    private let slots: any SlotStorage
    private let reservations: Coalescer<Bool, (slot: Date, wait: Double)>
    private let pauseChecks: Coalescer<Bool, Bool>

    /// How far behind now a reservation may start after an idle spell: one slot (at most a tenth of a second),
    /// so that a burst after idling adds at most one request to any one-second window.
    static func tolerance(_ ratePerSecond: Double) -> Double { min(1 / ratePerSecond, 0.1) }

    /// The coalesced writers, run as services beside the worker's loops; where they do not run, each
    /// reservation and pause check goes alone.
    package var writers: [any Service] { [reservations, pauseChecks] }

    /// A budget kept in the database behind `pool`.
    package init(
        pool: PostgresConnectionPool, ratePerSecond: Double, longestRetryAfter: Duration = .seconds(3_600),
        logger: Logger = Logger(label: "detectq.budget")
    ) {
        self.init(
            slots: PostgresSlots(pool: pool), pauses: SharedPause(pool: pool), ratePerSecond: ratePerSecond,
            longestRetryAfter: longestRetryAfter, logger: logger
        )
    }

    /// A budget whose slots and pauses are kept by `slots` and `pauses`.
    package init(
        slots: any SlotStorage, pauses: any PauseStorage, ratePerSecond: Double, longestRetryAfter: Duration = .seconds(3_600),
        logger: Logger = Logger(label: "detectq.budget")
    ) {
        precondition(ratePerSecond > 0, "the rate limit must be positive")
        self.slots = slots
        self.pauses = pauses
        self.ratePerSecond = ratePerSecond
        self.longestRetryAfter = longestRetryAfter
        self.logger = logger
        reservations = Coalescer(maximumConcurrentBatches: 1) { batch in
            try await slots.reserve(batch.count, ratePerSecond: ratePerSecond)
        }
        pauseChecks = Coalescer(maximumConcurrentBatches: 1) { batch in
            Array(repeating: try await pauses.isRateLimited(), count: batch.count)
        }
    }

    /// A slot a claim reserved for the first API call of the attempt this task runs (`SlotGrant`): that call
    /// takes it instead of reserving one.
    @TaskLocal package static var granted: SlotGrant?

    /// Waits for a slot for one more API request: the slot the claim reserved for this attempt's first call, or
    /// the next free one. Returns the slot (on the database's clock, shared by every worker) and how long this
    /// caller waited.
    @discardableResult
    package func acquire() async throws -> (slot: Date, waited: Duration) {
        let started = ContinuousClock.now
        if let slot = Self.granted?.take() {
            slots.noteGranted(slot.at)
            guard slot.due > started else { return (slot.at, .zero) }
            try await Task.sleep(until: slot.due)
            // A 429 may have paused every worker meanwhile: then this call waits for a slot after the pause.
            if try await !pauseChecks.submit(true) {
                let waited = ContinuousClock.now - started
                QueueMetrics.rateLimitWait(waited)
                return (slot.at, waited)
            }
        }
        while true {
            let (slot, wait) = try await reservations.submit(true)
            guard wait > 0 else { return (slot, ContinuousClock.now - started) }
            try await Task.sleep(for: .seconds(wait))
            let paused = try await pauseChecks.submit(true)
            if !paused {
                let waited = ContinuousClock.now - started
                QueueMetrics.rateLimitWait(waited)
                return (slot, waited)
            }
        }
    }

    /// Records a 429 for every worker: the shared pause, for `retryAfter` (capped at `longestRetryAfter`, with
    /// one log line saying so) or, without one, for the doubling backoff. Returns when the pause ends.
    @discardableResult
    package func throttled(retryAfter: Duration?, by workerID: String?) async throws -> Date {
        QueueMetrics.rateLimitPause()
        var asked = retryAfter
        if let retryAfter, retryAfter > longestRetryAfter {
            logger.warning("the API asked for a Retry-After of \(Int(retryAfter.seconds)) s; pausing for DETECTQ_RETRY_AFTER_MAX_SECONDS (\(Int(longestRetryAfter.seconds)) s) instead")
            asked = longestRetryAfter
        }
        return try await pauses.pauseRateLimited(retryAfter: asked, by: workerID)
    }

    /// `throttled`, for a caller that goes on either way: a pause the database could not record is logged (with
    /// the caller's request) and counted, and the caller goes on as if the pause ended now.
    func throttled(retryAfter: Duration?, by workerID: String?, logger: Logger) async -> Date {
        do {
            return try await throttled(retryAfter: retryAfter, by: workerID)
        } catch {
            QueueMetrics.databaseFailed(.recordThrottle)
            logger.error("could not record the API's 429 as the shared pause, so other workers may call into it: \(error)")
            return Date()
        }
    }

    /// Makes one API call on the budget: waits for a slot, calls, and when the API answers 429 (it created
    /// nothing) records the shared pause and asks again once the pause lets it, for as long as the throttle
    /// lasts and `goOn` says yes. A 429 met when `goOn` says no is thrown, like any other failure.
    package func call<Result>(
        by workerID: String?, while goOn: () -> Bool = { true }, _ body: () async throws -> Result
    ) async throws -> Result {
        while true {
            try await acquire()
            do {
                return try await body()
            } catch let error as DetectAPIError {
                guard case .retryable(_, .some(429), let retryAfter) = error else { throw error }
                try await throttled(retryAfter: retryAfter, by: workerID)
                guard goOn() else { throw error }
            }
        }
    }
}

/// The slot a claim reserved for the first API call of one attempt, taken once by that call.
package final class SlotGrant: Sendable {
    private let slot: Mutex<APISlot?>

    package init(_ slot: APISlot) {
        self.slot = Mutex(slot)
    }

    /// The slot, the first time it is asked for; nil after.
    func take() -> APISlot? {
        slot.withLock { slot in
            defer { slot = nil }
            return slot
        }
    }
}

/// The rate limit's slot schedule in `detectq.api_budget`.
package struct PostgresSlots: SlotStorage {
    let pool: PostgresConnectionPool

    package init(pool: PostgresConnectionPool) {
        self.pool = pool
    }

    /// Reserves `count` consecutive slots in one UPDATE; returns each slot and how long until it.
    package func reserve(_ count: Int, ratePerSecond: Double) async throws -> [(slot: Date, wait: Double)] {
        let interval = 1 / ratePerSecond
        let span = interval * Double(count)
        let row = try await pool.query("""
            UPDATE detectq.api_budget SET next_slot_at = GREATEST(
                    next_slot_at, clock_timestamp() - make_interval(secs => \(APIBudget.tolerance(ratePerSecond))),
                    (SELECT until FROM detectq.pauses WHERE kind = 'rate_limited')
                ) + make_interval(secs => \(span))
            RETURNING next_slot_at - make_interval(secs => \(span)) AS slot,
                      EXTRACT(EPOCH FROM next_slot_at - make_interval(secs => \(span)) - clock_timestamp())::float8 AS wait
            """)[0]
        let first = try row.decode("slot", as: Date.self)
        let wait = try row.decode("wait", as: Double.self)
        return (0..<count).map { index in
            (first.addingTimeInterval(interval * Double(index)), wait + interval * Double(index))
        }
    }
}
