import DetectQueue
import DetectSimulator
import Foundation
import Postgres

/// The lanes of a chaos run (CONTRACT section 8): the producer spreads its requests over them, one is paused for
/// a while, and the checks hold each lane to its settings under every fault.
enum QueueLanes {
    /// `live` at weight 4, `backfill` at 1 (paused for a while), `imports` with caps per queue and per customer,
    /// `metered` with a daily limit that a long run reaches; the rest go to `default`.
    static let importsMaxInFlight = 6
    static let importsGroupMaxInFlight = 2
    static let meteredDailyLimit = 25
    static let paused = "backfill"

    /// The queue (and group) of the `n`th request, from the run's seeded random.
    static func lane(using random: inout SeededRandom) -> (queue: String, group: String?) {
        let pick = random.next() % 100
        switch pick {
        case ..<20: return ("live", nil)
        case ..<50: return ("backfill", nil)
        case ..<75: return ("imports", "customer-\(random.next() % 8)")
        case ..<80: return ("metered", nil)
        default: return ("default", nil)
        }
    }

    /// Sets the lanes' settings before the run.
    static func configure(_ pool: PostgresConnectionPool) async throws {
        let settings = QueueSettingsStore(pool: pool)
        var live = QueueSettingsChange()
        live.weight = 4
        try await settings.set("live", live)
        try await settings.set("backfill", QueueSettingsChange())
        var imports = QueueSettingsChange()
        imports.maxInFlight = .set(importsMaxInFlight)
        imports.groupMaxInFlight = .set(importsGroupMaxInFlight)
        try await settings.set("imports", imports)
        var metered = QueueSettingsChange()
        metered.dailyLimit = .set(meteredDailyLimit)
        try await settings.set("metered", metered)
    }

    /// A pause of `paused`, on the database's clock: from when it was recorded to just before it was lifted.
    struct PauseWindow: Sendable {
        var from: Date
        var to: Date
    }

    /// Pauses `paused` after `delay` for `length`, through whatever the database is going through (asking
    /// again until it answers); returns the window, or nil when the run was cancelled first.
    static func pauseOnce(_ pool: PostgresConnectionPool, after delay: Duration, for length: Duration) async -> PauseWindow? {
        try? await Task.sleep(for: delay)
        let settings = QueueSettingsStore(pool: pool)
        var from: Date?
        while !Task.isCancelled && from == nil {
            if (try? await settings.pause(paused, reason: "chaos: a lane paused for a while", by: "detectq chaos")) != nil {
                from = try? await pool.query("SELECT paused_at FROM detectq.queues WHERE name = \(paused)")[0].decode("paused_at", as: Date.self)
            }
            if from == nil { try? await Task.sleep(for: .milliseconds(200)) }
        }
        try? await Task.sleep(for: length)
        while !Task.isCancelled {
            if let now = try? await pool.query("SELECT clock_timestamp() AS now")[0].decode("now", as: Date.self),
               (try? await settings.resume(paused)) != nil {
                return from.map { PauseWindow(from: $0, to: now) }
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }
}

extension InvariantChecks {
    /// The most requests in flight at once in `queue` (and, with `byGroup`, in any one of its groups), replayed
    /// from the history: a claim in, an end out.
    private func peakInFlight(_ queue: String, byGroup: Bool) async throws -> Int {
        let rows = try await pool.query(PostgresQuery(sql: """
            SELECT CASE WHEN $2 THEN coalesce(r.group_key, '') ELSE '' END AS lane,
                   CASE WHEN e.to_state IN ('submitting', 'awaiting_result') AND e.from_state NOT IN ('submitting', 'awaiting_result') THEN 1
                        WHEN e.from_state IN ('submitting', 'awaiting_result') AND e.to_state NOT IN ('submitting', 'awaiting_result') THEN -1
                        ELSE 0 END::int8 AS change
            FROM detectq.request_events AS e JOIN detectq.requests AS r ON r.id = e.request_id
            WHERE r.queue = $1 AND e.from_state IS NOT NULL
            ORDER BY e.id
            """, parameters: [queue, byGroup]))
        var current: [String: Int] = [:]
        var peak = 0
        for row in rows {
            let lane: String = try row.decode("lane")
            current[lane, default: 0] += try row.decode("change", as: Int.self)
            peak = max(peak, current[lane, default: 0])
        }
        return peak
    }

    /// No queue ever had more in flight than its cap, nor any group more than its queue's group cap.
    func queuesKeptTheirCaps() async throws -> ChaosReport.Invariant {
        let queue = try await peakInFlight("imports", byGroup: false)
        let group = try await peakInFlight("imports", byGroup: true)
        return .init(
            name: "no queue over its cap",
            held: queue <= QueueLanes.importsMaxInFlight && group <= QueueLanes.importsGroupMaxInFlight,
            detail: "imports: peak \(queue) in flight (max_in_flight \(QueueLanes.importsMaxInFlight)), "
                + "peak \(group) for one customer (group_max_in_flight \(QueueLanes.importsGroupMaxInFlight))"
        )
    }

    /// The metered queue's requests that wait for the next UTC day: queued or retrying once its daily limit is
    /// reached (by the database's count of what it billed today).
    func heldForTheDay() async throws -> Set<Int> {
        Set(try await pool.query("""
            SELECT r.id FROM detectq.requests AS r
            WHERE r.queue = 'metered' AND r.state IN ('queued', 'retrying')
              AND (SELECT coalesce(sum(n), 0) FROM detectq.queue_billing WHERE queue = 'metered' AND day = (now() AT TIME ZONE 'UTC')::date)
                  >= \(QueueLanes.meteredDailyLimit)
            """).map { try $0.decode("id", as: Int.self) })
    }

    /// No queue was billed more detections in a UTC day than its daily limit, counting what the API created for
    /// each request (the simulator's record, lost answers included), not only what the database stored; what the
    /// limit held back waits, unfailed.
    func dailyLimitsHeld(_ rows: [Row], held: Set<Int>) async throws -> ChaosReport.Invariant {
        let metered = Set(try await pool.query("SELECT id FROM detectq.requests WHERE queue = 'metered'").map { try $0.decode("id", as: Int.self) })
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        var billedByDay: [DateComponents: Int] = [:]
        for row in rows where metered.contains(row.id) {
            for uuid in detectionsByMedia[row.mediaKey] ?? [] {
                guard let at = createdAt[uuid] else { continue }
                billedByDay[utc.dateComponents([.year, .month, .day], from: at), default: 0] += 1
            }
        }
        let worst = billedByDay.values.max() ?? 0
        return .init(
            name: "no daily limit exceeded",
            held: worst <= QueueLanes.meteredDailyLimit,
            detail: "metered: \(metered.count) requests; at most \(worst) detections created in one UTC day "
                + "(daily_limit \(QueueLanes.meteredDailyLimit)); \(held.count) waiting for the next day"
        )
    }

    /// A paused queue claimed nothing while it was paused (from its pause plus 2 s, for a claim that read the
    /// queue before the pause committed, to just before its resume).
    func pausedQueueClaimedNothing(_ window: QueueLanes.PauseWindow?) async throws -> ChaosReport.Invariant {
        guard let window else {
            return .init(name: "a paused queue claimed nothing", held: false, detail: "the run ended before its pause: nothing was checked")
        }
        let from = window.from.addingTimeInterval(2)
        let claims = try await pool.query("""
            SELECT count(*)::int8 AS n FROM detectq.request_events AS e JOIN detectq.requests AS r ON r.id = e.request_id
            WHERE r.queue = \(QueueLanes.paused) AND e.to_state = 'submitting' AND e.at > \(from) AND e.at < \(window.to)
            """)[0].decode("n", as: Int.self)
        let waiting = try await pool.query("""
            SELECT count(*)::int8 AS n FROM detectq.requests AS r
            WHERE r.queue = \(QueueLanes.paused) AND r.created_at < \(window.to)
              AND NOT EXISTS (SELECT 1 FROM detectq.request_events AS e WHERE e.request_id = r.id AND e.to_state = 'submitting' AND e.at < \(window.to))
            """)[0].decode("n", as: Int.self)
        return .init(
            name: "a paused queue claimed nothing",
            held: claims == 0,
            detail: "\(QueueLanes.paused) paused for \(String(format: "%.0f", window.to.timeIntervalSince(window.from))) s: "
                + "\(claims) claims in the pause, \(waiting) requests waited for it to end"
        )
    }
}
