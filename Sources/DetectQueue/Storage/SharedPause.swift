import Foundation
import Postgres

/// The shared pause of the API's use, one row per kind in `detectq.pauses`, seen by every worker on the
/// database: a 429 (every API call waits, for its `Retry-After` or a doubling backoff; `APIBudget` honours it), an account out of credit
/// (a 402: submitting waits, and one submission probes again every `DETECTQ_CREDIT_RECHECK_SECONDS`), and an
/// operator's `detectq pause` (submitting waits until `detectq resume`). Callbacks, polls and
/// post-processing go on under the last two. Each pause keeps who set it, when and why.
package struct SharedPause: PauseStorage {
    /// Why the API's use is paused.
    package enum Kind: String, Sendable, CaseIterable, PostgresDecodable {
        /// The API answered 429: every call waits for its `Retry-After`, or a backoff when it gave none.
        case rateLimited = "rate_limited"
        /// The API answered 402: submitting waits; a probe goes at `until`.
        case outOfCredit = "out_of_credit"
        /// `detectq pause` (or the dashboard): submitting waits until resumed.
        case `operator`
    }

    /// One pause in force.
    package struct Entry: Sendable, Hashable {
        package var kind: Kind
        package var reason: String
        package var pausedBy: String?
        package var pausedAt: Date
        /// When a rate-limit pause ends, or when an out-of-credit pause probes again; nil for an operator's.
        package var until: Date?
    }

    /// What a worker may submit now.
    package enum Gate: Sendable, Equatable {
        case open
        /// Submitting is paused (out of credit, or by an operator).
        case closed
        /// Out of credit, and this caller holds the probe: it may submit one request to see if credit is back.
        case probe
    }

    package let pool: PostgresConnectionPool

    package init(pool: PostgresConnectionPool) {
        self.pool = pool
    }

    /// Whether the caller may submit now; when an out-of-credit pause is due to probe again, exactly one
    /// caller across all workers gets `.probe`, and the next probe is pushed `recheck` ahead.
    package func gate(recheck: Duration) async throws -> Gate {
        let row = try await pool.query("""
            WITH probe AS (
                UPDATE detectq.pauses SET until = clock_timestamp() + make_interval(secs => \(recheck.seconds))
                WHERE kind = 'out_of_credit' AND until <= clock_timestamp()
                  AND NOT EXISTS (SELECT 1 FROM detectq.pauses WHERE kind = 'operator')
                RETURNING kind
            )
            SELECT EXISTS (SELECT 1 FROM detectq.pauses WHERE kind = 'operator') AS operator,
                   EXISTS (SELECT 1 FROM detectq.pauses WHERE kind = 'out_of_credit') AS out_of_credit,
                   EXISTS (SELECT 1 FROM probe) AS probe
            """)[0]
        if try row.decode("operator", as: Bool.self) { return .closed }
        guard try row.decode("out_of_credit", as: Bool.self) else { return .open }
        return try row.decode("probe", as: Bool.self) ? .probe : .closed
    }

    /// Whether a 429's pause is in force now.
    package func isRateLimited() async throws -> Bool {
        try await pool.query("""
            SELECT EXISTS (SELECT 1 FROM detectq.pauses WHERE kind = 'rate_limited' AND until > clock_timestamp()) AS paused
            """)[0].decode("paused", as: Bool.self)
    }

    /// The pauses in force.
    package func current() async throws -> [Entry] {
        try await pool.query("""
            SELECT kind, reason, paused_by, paused_at, until FROM detectq.pauses
            WHERE kind <> 'rate_limited' OR until > clock_timestamp()
            ORDER BY kind
            """).map(Entry.init(row:))
    }

    /// The longest pause a 429 without `Retry-After` sets: the backoff doubles up to it while the 429s go on.
    package static let longestThrottleBackoff: Duration = .seconds(60)
    /// How soon after a pause ends a 429 must come to count as the same throttle going on (the probes sent as
    /// the pause ends are answered within it); a later one starts the backoff again at one second.
    package static let throttleContinues: Duration = .seconds(5)

    /// Why a 429's pause is in force, as `detectq status` and the dashboard show it.
    static func throttleReason(retryAfter: Duration?) -> String {
        retryAfter.map { "the API answered 429 Too Many Requests (Retry-After \(Int($0.seconds.rounded(.up))) s)" }
            ?? "the API answered 429 Too Many Requests without Retry-After: every worker backs off, from 1 s doubling to 60 s while the 429s go on"
    }

    /// Pauses every API call after a 429: until `retryAfter` from now when the API gave one (or longer, if a
    /// pause already lasts longer), else for a backoff that starts at one second and doubles, up to a minute,
    /// while the 429s go on (a 429 within `throttleContinues` of the last pause's end). A 429 that answers a
    /// call sent before the pause in force leaves that pause as it is. Returns when the pause ends.
    @discardableResult
    package func pauseRateLimited(retryAfter: Duration?, by workerID: String?) async throws -> Date {
        let reason = Self.throttleReason(retryAfter: retryAfter)
        let longest = Self.longestThrottleBackoff.seconds
        return try await pool.query(PostgresQuery(sql: """
            INSERT INTO detectq.pauses AS p (kind, reason, paused_by, until, backoff_seconds)
            VALUES ('rate_limited', $1, $2, clock_timestamp() + make_interval(secs => coalesce($3, 1)),
                    CASE WHEN $3::float8 IS NULL THEN 1 END)
            ON CONFLICT (kind) DO UPDATE SET
                paused_at = CASE WHEN p.until > clock_timestamp() THEN p.paused_at ELSE clock_timestamp() END,
                reason = CASE WHEN $3::float8 IS NULL AND p.until > clock_timestamp() THEN p.reason ELSE EXCLUDED.reason END,
                paused_by = CASE WHEN $3::float8 IS NULL AND p.until > clock_timestamp() THEN p.paused_by ELSE EXCLUDED.paused_by END,
                backoff_seconds = CASE
                    WHEN $3::float8 IS NOT NULL OR p.until > clock_timestamp() THEN p.backoff_seconds
                    WHEN p.until > clock_timestamp() - make_interval(secs => $5) THEN least($4, coalesce(p.backoff_seconds, 0.5) * 2)
                    ELSE 1 END,
                until = CASE
                    WHEN $3::float8 IS NOT NULL THEN GREATEST(p.until, EXCLUDED.until)
                    WHEN p.until > clock_timestamp() THEN p.until
                    WHEN p.until > clock_timestamp() - make_interval(secs => $5)
                        THEN clock_timestamp() + make_interval(secs => least($4, coalesce(p.backoff_seconds, 0.5) * 2))
                    ELSE clock_timestamp() + make_interval(secs => 1) END
            RETURNING until
            """, parameters: [reason, workerID, retryAfter?.seconds, longest, Self.throttleContinues.seconds]))[0].decode("until", as: Date.self)
    }

    /// Pauses submitting for every worker because the account is out of credit, the next probe `recheck`
    /// from now. Returns true when this call started the pause (it was not already in force).
    @discardableResult
    package func pauseOutOfCredit(reason: String, by workerID: String?, recheck: Duration) async throws -> Bool {
        try await pool.query(PostgresQuery(sql: """
            INSERT INTO detectq.pauses AS p (kind, reason, paused_by, until)
            VALUES ('out_of_credit', $1, $2, clock_timestamp() + make_interval(secs => $3))
            ON CONFLICT (kind) DO UPDATE SET until = EXCLUDED.until
            RETURNING xmax = 0 AS started
            """, parameters: [reason, workerID, recheck.seconds]))[0].decode("started", as: Bool.self)
    }

    /// Ends an out-of-credit pause (a probe was accepted). Returns true when one was in force.
    @discardableResult
    package func endOutOfCredit() async throws -> Bool {
        try await pool.query("DELETE FROM detectq.pauses WHERE kind = 'out_of_credit'").affectedRows > 0
    }

    /// An operator's pause of submitting for every worker, until `resume`; `operatorName` nil records the
    /// connection's actor (`detectq.current_actor()`, as the event history does). Returns false (changing nothing)
    /// when an operator's pause is already in force.
    @discardableResult
    package func pause(reason: String, by operatorName: String?) async throws -> Bool {
        try await pool.query(PostgresQuery(sql: """
            INSERT INTO detectq.pauses (kind, reason, paused_by)
            VALUES ('operator', $1, coalesce($2, detectq.current_actor()))
            ON CONFLICT (kind) DO NOTHING
            """, parameters: [reason, operatorName])).affectedRows == 1
    }

    /// Ends an operator's pause. Returns false when there was none.
    @discardableResult
    package func resume() async throws -> Bool {
        try await pool.query("DELETE FROM detectq.pauses WHERE kind = 'operator'").affectedRows > 0
    }
}

extension SharedPause.Entry {
    init(row: PostgresRow) throws {
        kind = try row.decode("kind")
        reason = try row.decode("reason")
        pausedBy = try row.decode("paused_by")
        pausedAt = try row.decode("paused_at")
        until = try row.decode("until")
    }
}
