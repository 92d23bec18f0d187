import Foundation
import InputNumbers
import Postgres

/// One queue's share of the API and its limits, as `detectq.queues` keeps them (CONTRACT section 8). A limit
/// that is nil is no limit.
package struct QueueSettings: Sendable, Hashable {
    package var name: String
    package var weight: Int
    package var maxInFlight: Int?
    package var groupMaxInFlight: Int?
    /// Requests per second of the shared API budget.
    package var rateLimit: Double?
    /// Detections billed per UTC day.
    package var dailyLimit: Int?
    package var pause: QueuePause?

    /// The columns `init(row:)` reads.
    static let columns = "name, weight, max_in_flight, group_max_in_flight, rate_limit, daily_limit, paused_at, paused_by, pause_reason"

    init(row: PostgresRow) throws {
        name = try row.decode("name")
        weight = try row.decode("weight")
        maxInFlight = try row.decode("max_in_flight")
        groupMaxInFlight = try row.decode("group_max_in_flight")
        rateLimit = try row.decode("rate_limit")
        dailyLimit = try row.decode("daily_limit")
        pause = try row.decode("paused_at", as: Date?.self).map {
            QueuePause(at: $0, by: try row.decode("paused_by"), reason: try row.decode("pause_reason"))
        }
    }

    /// Whether `name` may name a queue: 1 to 63 of lowercase letters, digits, `_`, `-` and `.` (the constraint
    /// `requests_queue_name`).
    package static func isValidName(_ name: String) -> Bool {
        (1...63).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
        }
    }
}

/// An operator's pause of one queue: when, by whom, why.
package struct QueuePause: Sendable, Hashable {
    package var at: Date
    package var by: String?
    package var reason: String?
}

/// What `detectq queue set` changes of one setting: left as it is, removed (no limit), or set.
package enum SettingChange<Value: Sendable & Hashable>: Sendable, Hashable {
    case unchanged
    case removed
    case set(Value)

}

/// The changes of one `detectq queue set`.
package struct QueueSettingsChange: Sendable, Hashable {
    package var weight: Int?
    package var maxInFlight: SettingChange<Int> = .unchanged
    package var groupMaxInFlight: SettingChange<Int> = .unchanged
    package var rateLimit: SettingChange<Double> = .unchanged
    package var dailyLimit: SettingChange<Int> = .unchanged

    package init() {}

    /// A setting as an operator names it: `detectq queue set` by its option, the dashboard's form by its field.
    package enum Field: Sendable, CaseIterable {
        case weight, maxInFlight, groupMaxInFlight, rateLimit, dailyLimit

        /// The option of `detectq queue set`.
        package var option: String {
            switch self {
            case .weight: "--weight"
            case .maxInFlight: "--max-in-flight"
            case .groupMaxInFlight: "--group-max-in-flight"
            case .rateLimit: "--rate"
            case .dailyLimit: "--daily-limit"
            }
        }

        /// The column of `detectq.queues`, which the dashboard's form fields are named after.
        package var column: String {
            switch self {
            case .weight: "weight"
            case .maxInFlight: "max_in_flight"
            case .groupMaxInFlight: "group_max_in_flight"
            case .rateLimit: "rate_limit"
            case .dailyLimit: "daily_limit"
            }
        }
    }

    /// The change asked for in text, each value checked: a field with no text (nil) is left as it is, `none`
    /// removes a limit (the weight cannot be removed). Errors name the field as `name` says.
    package init(text: [Field: String], name: (Field) -> String) throws(InputNumberError) {
        func limit<Value>(_ field: Field, _ read: (String, String) throws(InputNumberError) -> Value) throws(InputNumberError) -> SettingChange<Value> {
            guard let value = text[field] else { return .unchanged }
            if value.trimmingCharacters(in: .whitespaces) == "none" { return .removed }
            do {
                return .set(try read(value, name(field)))
            } catch {
                throw InputNumberError(source: error.source, expected: error.expected + ", or none")
            }
        }
        if let weight = text[.weight] { self.weight = try InputNumbers.count(weight, from: name(.weight), in: 1...1_000_000) }
        maxInFlight = try limit(.maxInFlight) { text, source throws(InputNumberError) in try InputNumbers.count(text, from: source, in: 1...1_000_000_000) }
        groupMaxInFlight = try limit(.groupMaxInFlight) { text, source throws(InputNumberError) in
            try InputNumbers.count(text, from: source, in: 1...1_000_000_000)
        }
        rateLimit = try limit(.rateLimit) { text, source throws(InputNumberError) in try InputNumbers.amount(text, from: source, in: 0.001...100_000) }
        dailyLimit = try limit(.dailyLimit) { text, source throws(InputNumberError) in
            try InputNumbers.count(text, from: source, in: 1...1_000_000_000_000)
        }
    }
}

/// Reads and changes `detectq.queues`: the settings and pauses `detectq queue` and the dashboard's Queues page
/// set. A queue's row is made with the defaults when a request first names it, or when an operator sets or
/// pauses it first.
package struct QueueSettingsStore: Sendable {
    package let pool: PostgresConnectionPool

    package init(pool: PostgresConnectionPool) {
        self.pool = pool
    }

    /// Every queue's settings, by name.
    package func all() async throws -> [QueueSettings] {
        try await pool.query(PostgresQuery(sql: "SELECT \(QueueSettings.columns) FROM detectq.queues ORDER BY name", parameters: [])).map(QueueSettings.init(row:))
    }

    /// Changes `name`'s settings (making the queue with the defaults first, if it has no row); returns them, and
    /// whether this call made the queue.
    @discardableResult
    package func set(_ name: String, _ change: QueueSettingsChange) async throws -> (settings: QueueSettings, created: Bool) {
        var parameters: [any PostgresEncodable] = [name]
        var assignments: [String] = []
        func assign<Value: PostgresEncodable & Sendable & Hashable>(_ column: String, _ value: SettingChange<Value>) {
            switch value {
            case .unchanged: return
            case .removed: assignments.append("\(column) = NULL")
            case .set(let value):
                parameters.append(value)
                assignments.append("\(column) = $\(parameters.count)")
            }
        }
        if let weight = change.weight { assign("weight", SettingChange.set(weight)) }
        assign("max_in_flight", change.maxInFlight)
        assign("group_max_in_flight", change.groupMaxInFlight)
        assign("rate_limit", change.rateLimit)
        assign("daily_limit", change.dailyLimit)
        return try await pool.transaction { connection in
            let created = try await connection.query(PostgresQuery(
                sql: "INSERT INTO detectq.queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", parameters: [name]
            )).affectedRows == 1
            let sql = assignments.isEmpty
                ? "SELECT \(QueueSettings.columns) FROM detectq.queues WHERE name = $1"
                : "UPDATE detectq.queues SET \(assignments.joined(separator: ", ")) WHERE name = $1 RETURNING \(QueueSettings.columns)"
            return (try QueueSettings(row: try await connection.query(PostgresQuery(sql: sql, parameters: parameters))[0]), created)
        }
    }

    /// Pauses `name` (making it, paused, if it has no row): its requests are not claimed until it is resumed.
    /// False, changing nothing, when it was paused already.
    /// `actor` nil is the session's actor (`detectq.current_actor()`: its worker id or application name).
    package func pause(_ name: String, reason: String, by actor: String?) async throws -> Bool {
        try await pool.transaction { connection in
            try await connection.query("INSERT INTO detectq.queues (name) VALUES (\(name)) ON CONFLICT (name) DO NOTHING")
            return try await connection.query(PostgresQuery(sql: """
                UPDATE detectq.queues SET paused_at = now(), paused_by = coalesce($3, detectq.current_actor()), pause_reason = $2
                WHERE name = $1 AND paused_at IS NULL
                """, parameters: [name, reason, actor])).affectedRows == 1
        }
    }

    /// Ends `name`'s pause; false when it was not paused (or there is no such queue).
    package func resume(_ name: String) async throws -> Bool {
        try await pool.query("""
            UPDATE detectq.queues SET paused_at = NULL, paused_by = NULL, pause_reason = NULL WHERE name = \(name) AND paused_at IS NOT NULL
            """).affectedRows == 1
    }

    /// Whether a queue named `name` has a row.
    package func exists(_ name: String) async throws -> Bool {
        try await pool.query("SELECT EXISTS (SELECT 1 FROM detectq.queues WHERE name = \(name)) AS found")[0].decode("found")
    }
}
