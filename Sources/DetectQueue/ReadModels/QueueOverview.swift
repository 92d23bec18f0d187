import Foundation
import Postgres
import TextEncodings

/// Where each queue stands (CONTRACT section 8): its settings, what is due, in flight and billed today, and
/// whether it waits and why. `detectq queue list`, `detectq status` and the dashboard's Queues page read it.
package struct QueueOverview: Sendable, Hashable {
    /// Why a queue's due requests are not claimed now.
    package enum Hold: Sendable, Hashable {
        /// An operator paused it.
        case paused(QueuePause)
        /// It has `max_in_flight` requests in flight.
        case atMaxInFlight(Int)
        /// It billed its `daily_limit` today; it has room again at the next UTC midnight.
        case atDailyLimit(Int, until: Date)
        /// Its next slot of `rate_limit` per second is still to come.
        case atRateLimit(Double)

        /// The reason in words, for a person.
        package var description: String {
            switch self {
            case .paused(let pause):
                "paused by \(pause.by ?? "unknown") at \(ISO8601Timestamp.format(pause.at))\(pause.reason.map { ": \($0)" } ?? "")"
            case .atMaxInFlight(let cap): "at its max_in_flight (\(cap) in flight)"
            case .atDailyLimit(let limit, let until): "at its daily_limit (\(limit) billed today) until \(ISO8601Timestamp.format(until))"
            case .atRateLimit(let rate): "at its rate_limit (\(rate.formatted()) a second)"
            }
        }

        /// A short name for the reason, for metrics and JSON.
        package var kind: String {
            switch self {
            case .paused: "paused"
            case .atMaxInFlight: "max_in_flight"
            case .atDailyLimit: "daily_limit"
            case .atRateLimit: "rate_limit"
            }
        }
    }

    package var settings: QueueSettings
    /// Requests queued or retrying whose time has come.
    package var due: Int
    /// Requests submitting or awaiting their result.
    package var inFlight: Int
    /// Detections billed since the last UTC midnight.
    package var billedToday: Int
    /// Why its due requests wait, when they do (empty when it has none due, or room for them).
    package var holds: [Hold]

    /// Every queue, by name.
    package static func read(_ pool: PostgresConnectionPool) async throws -> [QueueOverview] {
        try await pool.query(PostgresQuery(sql: """
            SELECT \(QueueSettings.columns.split(separator: ",").map { "q." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                   (SELECT count(*) FROM detectq.requests AS r
                    WHERE r.queue = q.name AND r.state IN ('queued', 'retrying') AND r.run_at <= now())::int8 AS due,
                   (SELECT count(*) FROM detectq.requests AS r
                    WHERE r.queue = q.name AND r.state IN ('submitting', 'awaiting_result'))::int8 AS in_flight,
                   coalesce((SELECT sum(b.n) FROM detectq.queue_billing AS b
                             WHERE b.queue = q.name AND b.day = (now() AT TIME ZONE 'UTC')::date), 0)::int8 AS billed_today,
                   q.rate_limit IS NOT NULL AND q.next_slot_at > now() AS at_rate,
                   ((now() AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC' AS next_day
            FROM detectq.queues AS q
            ORDER BY q.name
            """, parameters: [])).map { row in
            let settings = try QueueSettings(row: row)
            var overview = QueueOverview(
                settings: settings, due: try row.decode("due"), inFlight: try row.decode("in_flight"),
                billedToday: try row.decode("billed_today"), holds: []
            )
            guard overview.due > 0 else { return overview }
            if let pause = settings.pause { overview.holds.append(.paused(pause)) }
            if let cap = settings.maxInFlight, overview.inFlight >= cap { overview.holds.append(.atMaxInFlight(cap)) }
            if let limit = settings.dailyLimit, overview.billedToday >= limit {
                overview.holds.append(.atDailyLimit(limit, until: try row.decode("next_day")))
            }
            if let rate = settings.rateLimit, try row.decode("at_rate", as: Bool.self) { overview.holds.append(.atRateLimit(rate)) }
            return overview
        }
    }
}
