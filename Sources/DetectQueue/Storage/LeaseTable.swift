import Foundation
import Postgres

/// The claim, heartbeat and rescue SQL of a table of leased work, written once for both queues of
/// detectq: `detectq.requests` and `detectq.post_tasks`. A table is described by its columns and by what its
/// state machine says a claim and a lost lease do; the names interpolated into the SQL are these fixed
/// descriptions, never values.
struct LeaseTable: Sendable {
    /// The table, schema-qualified.
    let table: String
    /// Its state enum type.
    let stateType: String
    /// The call that finds and locks the next claimable rows, in claim order: the states the state machine
    /// claims from, due now, rows others hold skipped. It reads the limit as `$3` and the claim's parameters from
    /// `$4` on, and returns `claimable_id`, `claimed_from` and `claimExtras`.
    let claimable: String
    /// What else the claimable rows carry, returned with each claimed row.
    let claimExtras: [String]
    /// Expressions over the claimed row (`r`, as updated) returned with it, each with its name (`… AS name`).
    var claimReturns: [String] = []
    /// Whether `claimable` also says when to claim again (`claim_again_at`, on every row, and on a row with no
    /// id when it took nothing).
    let claimSaysWhenAgain: Bool
    /// The state of a claimed row.
    let runningState: String
    /// What else a claim sets (unqualified assignments, no parameters).
    let claimAssignments: [String]
    /// The state a lost lease leaves a running row in, with attempts left and on its last.
    let retryingState: String
    let failedState: String
    /// The state a lost lease leaves a running row in on its last attempt when the row says an answer may have
    /// been lost (`answerOwedCondition`): requests are then looked for before they fail. Nil for post-tasks.
    let answerOwed: (condition: String, state: String)?
    /// Other states whose rows may hold a lease (a request being polled); an expired one is just cleared.
    let pollingStates: [String]
    /// The column holding the last failure's reason.
    let errorColumn: String
    /// The columns a claim returns.
    let columns: String

    /// A machine whose claim or lost lease this table's SQL cannot write (claims that differ, a claim with
    /// values of its own, a lost lease that keeps the lease).
    struct Unwritable: Error, CustomStringConvertible {
        let description: String
    }

    /// `detectq.requests`, derived once (a claim, a heartbeat and a rescue each ask for it).
    static func requests() throws -> LeaseTable { try derivedRequests.get() }
    /// `detectq.post_tasks`, derived once.
    static func postTasks() throws -> LeaseTable { try derivedPostTasks.get() }

    private static let derivedRequests = Result { try deriveRequests() }
    private static let derivedPostTasks = Result { try derivePostTasks() }

    /// `detectq.requests`, as `RequestStateMachine`'s claim and lost lease say.
    private static func deriveRequests() throws -> LeaseTable {
        let claims = RequestStateMachine.claims
        guard let claim = claims.first, claims.allSatisfy({ $0.to == claim.to && $0.lease == .take && $0.attempts == .spendOne }) else {
            throw Unwritable(description: "the request claims are not alike")
        }
        var parameters: [any PostgresEncodable] = []
        let assignments = claim.changes.assignments(parameters: &parameters)
        let lost = try RequestStateMachine.leaseLost()
        guard parameters.isEmpty, lost.withAttemptsLeft.lease == .release, lost.onLastAttempt.lease == .release else {
            throw Unwritable(description: "a request claim sets a value of its own, or a lost lease keeps it")
        }
        return LeaseTable(
            table: "detectq.requests", stateType: "detectq.request_state", claimable: "detectq.next_fair_claims($3, $4, $5, $6)",
            claimExtras: ["prior_unanswered_since", "slot_at", "slot_in"], claimReturns: [IdenticalMediaLookup.aloneAtClaim],
            claimSaysWhenAgain: true,
            runningState: claim.to.rawValue, claimAssignments: assignments,
            retryingState: lost.withAttemptsLeft.to.rawValue, failedState: lost.onLastAttempt.to.rawValue,
            // Within max_attempts only: the claim after the last attempt searches, and one that dies ends.
            answerOwed: (
                "r.unanswered_since IS NOT NULL AND r.remote_uuid IS NULL AND r.attempt <= r.max_attempts",
                lost.onLastAttemptOwingAnswer.to.rawValue
            ),
            pollingStates: [RequestState.awaitingResult.rawValue],
            errorColumn: "error_message", columns: DetectionRequest.columns
        )
    }

    /// `detectq.post_tasks`, as `PostTaskStateMachine`'s claim and lost lease say.
    private static func derivePostTasks() throws -> LeaseTable {
        let claims = PostTaskStateMachine.claims
        guard let claim = claims.first, claims.allSatisfy({ $0.to == claim.to && $0.lease == .take && $0.attempts == .spendOne }) else {
            throw Unwritable(description: "the post-task claims are not alike")
        }
        var parameters: [any PostgresEncodable] = []
        let assignments = claim.columns(parameters: &parameters)
        guard parameters.isEmpty else { throw Unwritable(description: "a post-task claim sets a value of its own") }
        let lost = try PostTaskStateMachine.leaseLost()
        return LeaseTable(
            table: "detectq.post_tasks", stateType: "detectq.post_task_state", claimable: "detectq.next_claimable_post_tasks($3)",
            claimExtras: [], claimSaysWhenAgain: false,
            runningState: claim.to.rawValue, claimAssignments: assignments,
            retryingState: lost.withAttemptsLeft.to.rawValue, failedState: lost.onLastAttempt.to.rawValue, answerOwed: nil, pollingStates: [],
            errorColumn: "last_error", columns: PostTask.columns
        )
    }

    private func list(_ states: [String]) -> String {
        states.map { "'\($0)'" }.joined(separator: ", ")
    }

    /// Claims up to `limit` due rows in claim order under a lease, skipping rows others hold. Each row also
    /// carries `claimed_from`, the state it was claimed from, and `claimExtras`. Where the claim says when to claim
    /// again, there is always one row at least, each with `claim_again_in` (seconds, on the database's clock):
    /// a row whose `id` is NULL carries only that.
    func claim(
        on pool: PostgresConnectionPool, workerID: String, limit: Int, lease: Duration, parameters: [any PostgresEncodable] = []
    ) async throws -> PostgresRows {
        let extras = claimExtras.map { ", claimable.\($0)" }.joined() + claimReturns.map { ", " + $0 }.joined()
        let update = """
            UPDATE \(table) AS r
            SET state = '\(runningState)', locked_by = $1, locked_until = now() + make_interval(secs => $2),
                attempt = r.attempt + 1, updated_at = now()\(claimAssignments.map { ", " + $0 }.joined())
            FROM claimable
            WHERE r.id = claimable.claimable_id
            RETURNING \(columns.replacingOccurrences(of: "id,", with: "r.id,", options: .anchored)), claimable.claimed_from\(extras)
            """
        let sql = claimSaysWhenAgain
            ? """
                WITH claimable AS MATERIALIZED (SELECT * FROM \(claimable)), claimed AS (\(update))
                SELECT claimed.*, CASE WHEN isfinite(again.at) THEN extract(EPOCH FROM again.at - clock_timestamp())::float8
                                       WHEN again.at IS NOT NULL THEN 'Infinity'::float8 END AS claim_again_in
                FROM (SELECT max(claim_again_at) AS at FROM claimable) AS again LEFT JOIN claimed ON true
                """
            : "WITH claimable AS MATERIALIZED (SELECT * FROM \(claimable)) \(update)"
        return try await pool.query(PostgresQuery(sql: sql, parameters: [workerID, lease.seconds, limit] + parameters))
    }

    /// Extends the leases `workerID` still holds among `ids`; returns the ids it still holds.
    func heartbeat(on pool: PostgresConnectionPool, workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        guard !ids.isEmpty else { return [] }
        let rows = try await pool.query(NonStateWrite.leaseRenewal(table: table, workerID: workerID, ids: ids, lease: lease))
        return Set(try rows.map { try $0.decode("id", as: Int.self) })
    }

    /// Takes back expired leases: a running row goes to retrying (or failed on its last attempt, unless its
    /// answer may have been lost) after `retryDelay`, or after `sendGrace` if longer when its answer may be owed
    /// (the worker that lost the lease may be stalled, not dead, with its send still on its way: the next
    /// attempt's search for a lost answer must come after that send has reached the API); a polling lease is
    /// cleared. The UPDATE re-checks state and expiry, so a row that moved on meanwhile is left alone. Returns
    /// each rescued row's id and new state.
    func rescueExpiredLeases(
        on pool: PostgresConnectionPool, limit: Int, retryDelay: Duration, sendGrace: Duration
    ) async throws -> [(id: Int, state: String)] {
        let leased = list([runningState] + pollingStates)
        let owedState = answerOwed.map { "WHEN \($0.condition) THEN '\($0.state)'::\(stateType)" } ?? ""
        let owedDelay = answerOwed.map { "CASE WHEN \($0.condition) THEN greatest($2, $3) ELSE $2 END" } ?? "$2"
        let owedReason = answerOwed.map {
            "WHEN \($0.condition) THEN '; its answer may have been lost, so the detection it may have created is looked for before the request fails'"
        } ?? ""
        let rows = try await pool.query(PostgresQuery(sql: """
            WITH expired AS (
                SELECT id FROM \(table)
                WHERE locked_by IS NOT NULL AND locked_until < now() AND state IN (\(leased))
                ORDER BY locked_until
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE \(table) AS r SET
                state = CASE
                    WHEN r.state <> '\(runningState)' THEN r.state
                    WHEN r.attempt < r.max_attempts THEN '\(retryingState)'::\(stateType)
                    \(owedState)
                    ELSE '\(failedState)'::\(stateType) END,
                \(errorColumn) = CASE WHEN r.state = '\(runningState)'
                    THEN 'the worker ' || r.locked_by || ' stopped renewing its lease during attempt ' || r.attempt
                         || CASE WHEN r.attempt < r.max_attempts THEN '; retrying' \(owedReason) ELSE '; no attempts left' END
                    ELSE r.\(errorColumn) END,
                run_at = CASE WHEN r.state = '\(runningState)' THEN now() + make_interval(secs => \(owedDelay)) ELSE r.run_at END,
                locked_by = NULL, locked_until = NULL
            FROM expired
            WHERE r.id = expired.id AND r.locked_until < now() AND r.state IN (\(leased))
            RETURNING r.id, r.state::text AS state
            """, parameters: [limit, retryDelay.seconds, sendGrace.seconds]))
        return try rows.map { (try $0.decode("id", as: Int.self), try $0.decode("state", as: String.self)) }
    }
}
