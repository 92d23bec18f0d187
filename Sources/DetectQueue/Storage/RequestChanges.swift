import Foundation
import Postgres
import TextEncodings

/// A column of `detectq.requests` that a change may set to a value of its own (besides the state, the lease,
/// the attempt count and the stamps), with its SQL type: the one list every writer renders from, one
/// request's UPDATE and the batches alike.
enum RequestColumn: String, CaseIterable, Sendable {
    case errorMessage = "error_message"
    case runAt = "run_at"
    case remoteUUID = "remote_uuid"
    case submitPath = "submit_path"
    case mediaType = "media_type"
    case label
    case audioLabel = "audio_label"
    case visualLabel = "visual_label"
    case isFake = "is_fake"
    case aggregatedScore = "aggregated_score"
    case result
    case fileDeletedAt = "file_deleted_at"
    case callbackSecretHash = "callback_secret_hash"
    case reusedFrom = "reused_from"
    case waitingFor = "waiting_for"

    /// The columns of a verdict, which a request that reuses another's copies from it.
    static let verdict: [RequestColumn] = [.mediaType, .label, .audioLabel, .visualLabel, .isFake, .aggregatedScore, .result]

    var sqlType: String {
        switch self {
        case .reusedFrom, .waitingFor: "bigint"
        case .runAt, .fileDeletedAt: "timestamptz"
        case .isFake: "boolean"
        case .aggregatedScore: "double precision"
        case .result: "jsonb"
        case .errorMessage, .remoteUUID, .submitPath, .mediaType, .label, .audioLabel, .visualLabel, .callbackSecretHash: "text"
        }
    }
}

/// A value a change writes into a `RequestColumn`.
enum ColumnValue: Sendable {
    case text(String)
    case bool(Bool)
    case number(Double)
    case integer(Int)
    case timestamp(Date)
    case json(PostgresJSON)

    /// The value as a query parameter.
    var parameter: any PostgresEncodable {
        switch self {
        case .text(let text): text
        case .bool(let bool): bool
        case .number(let number): number
        case .integer(let integer): integer
        case .timestamp(let date): date
        case .json(let json): json
        }
    }

    /// The value as JSON, for a batch's payload: `jsonb_to_record` reads it back as its column's type (a
    /// timestamp from its ISO 8601 text, a JSON document as itself).
    func jsonText() throws -> String {
        switch self {
        case .text(let text): return JSONText.string(text)
        case .bool(let bool): return bool ? "true" : "false"
        case .number(let number):
            guard number.isFinite else {
                throw EncodingError.invalidValue(number, .init(codingPath: [], debugDescription: "\(number) is not a JSON number"))
            }
            return "\(number)"
        case .integer(let integer): return String(integer)
        case .timestamp(let date): return "\"\(ISO8601Timestamp.format(date))\""
        case .json(let json): return json.text
        }
    }
}

/// The columns a change writes besides the state, the lease and the attempt count: some set by the state
/// machine for its transition, the rest by the caller (a result, a path).
package struct RequestChanges: Sendable {
    /// What a change does to `unanswered_since`, which says since when an answer from the API is owed.
    package enum AnswerOwed: Sendable, Hashable {
        /// The API answered: nothing is owed.
        case answered
        /// Owed since this time, or not owed (nil): as it was before this attempt.
        case since(Date?)
        /// Owed from now, unless already owed since earlier (a claim: the attempt may reach the API).
        case fromNowUnlessOwed
    }

    var stampsCompletedAt = false
    var clearsCompletedAt = false
    var clearsErrorMessage = false
    var stampsSubmitStarted = false
    var clearsSubmitStarted = false
    /// Forget the stored secure-upload token (the API refused it), so the next attempt uploads the file again.
    package var clearsSecureUpload = false
    /// Changes `unanswered_since`; nil leaves it, but a stored uuid means the API answered.
    package var answerOwed: AnswerOwed?
    package var errorMessage: String?
    package var runAt: Date?
    package var remoteUUID: String?
    package var submitPath: SubmitPath?
    package var mediaType: String?
    package var label: String?
    package var audioLabel: String?
    package var visualLabel: String?
    package var isFake: Bool?
    package var aggregatedScore: Double?
    package var result: PostgresJSON?
    package var fileDeletedAt: Date?
    package var callbackSecretHash: String?
    /// The request whose verdict this one takes (`reused_from`).
    package var reusedFrom: Int?
    /// The request in flight with identical media whose verdict this one waits for (`waiting_for`).
    package var waitingFor: Int?

    package init() {}

    /// The columns given a value, in the table's order (a score that is not a finite number is left out).
    var values: [(column: RequestColumn, value: ColumnValue)] {
        let all: [(RequestColumn, ColumnValue?)] = [
            (.errorMessage, errorMessage.map(ColumnValue.text)), (.runAt, runAt.map(ColumnValue.timestamp)),
            (.remoteUUID, remoteUUID.map(ColumnValue.text)), (.submitPath, submitPath.map { .text($0.rawValue) }),
            (.mediaType, mediaType.map(ColumnValue.text)), (.label, label.map(ColumnValue.text)),
            (.audioLabel, audioLabel.map(ColumnValue.text)), (.visualLabel, visualLabel.map(ColumnValue.text)),
            (.isFake, isFake.map(ColumnValue.bool)), (.aggregatedScore, aggregatedScore.flatMap { $0.isFinite ? .number($0) : nil }),
            (.result, result.map(ColumnValue.json)), (.fileDeletedAt, fileDeletedAt.map(ColumnValue.timestamp)),
            (.callbackSecretHash, callbackSecretHash.map(ColumnValue.text)), (.reusedFrom, reusedFrom.map(ColumnValue.integer)),
            (.waitingFor, waitingFor.map(ColumnValue.integer)),
        ]
        return all.compactMap { column, value in value.map { (column, $0) } }
    }

    /// The assignments that take no value of the change's own: the stamps, the clearings and what the change
    /// says of `unanswered_since`. An owed answer moved to a given time takes a parameter, appended to
    /// `parameters`. Columns are referred to unqualified, so they suit any UPDATE of the table.
    func stamps(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments: [String] = []
        if stampsCompletedAt { assignments.append("completed_at = now()") }
        if clearsCompletedAt { assignments.append("completed_at = NULL") }
        if stampsSubmitStarted { assignments.append("submit_started_at = now()") }
        if clearsSubmitStarted { assignments.append("submit_started_at = NULL") }
        switch answerOwed {
        case .answered?: assignments.append("unanswered_since = NULL")
        case .since(let since?)?:
            parameters.append(since)
            assignments.append("unanswered_since = $\(parameters.count)")
        case .since(nil)?: assignments.append("unanswered_since = NULL")
        case .fromNowUnlessOwed?: assignments.append("unanswered_since = coalesce(unanswered_since, now())")
        case nil: break
        }
        if clearsSecureUpload { assignments.append("secure_upload_token = NULL, secure_upload_token_issued_at = NULL") }
        return assignments
    }

    /// What a uuid given says besides itself: the API accepted the request (`accepted_at`, kept from the first
    /// time) and answered (nothing is owed, unless the change says otherwise).
    /// In a batch, `given` is the SQL that says whether the row's uuid is given.
    func uuidStamps(given: String? = nil) -> [String] {
        guard let given else {
            return ["accepted_at = coalesce(accepted_at, now())"] + (answerOwed == nil ? ["unanswered_since = NULL"] : [])
        }
        var assignments = ["accepted_at = CASE WHEN \(given) THEN coalesce(accepted_at, now()) ELSE accepted_at END"]
        if answerOwed == nil { assignments.append("unanswered_since = CASE WHEN \(given) THEN NULL ELSE unanswered_since END") }
        return assignments
    }

    /// The SQL assignments of these columns, their values appended to `parameters` (numbered after those
    /// already there).
    func assignments(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments = stamps(parameters: &parameters)
        if errorMessage == nil && clearsErrorMessage { assignments.append("error_message = NULL") }
        if remoteUUID != nil { assignments += uuidStamps() }
        for (column, value) in values {
            parameters.append(value.parameter)
            assignments.append("\(column.rawValue) = $\(parameters.count)")
        }
        return assignments
    }
}

extension RequestTransition {
    /// The assignments of the state, the lease and the attempt count (a lease taken is the claim's to write,
    /// with its worker and duration).
    var stateAssignments: [String] {
        var assignments = changesState ? ["state = '\(to.rawValue)'"] : []
        if lease == .release { assignments.append("locked_by = NULL, locked_until = NULL") }
        if let attempt = attempts.assignment { assignments.append(attempt) }
        return assignments
    }

    /// The SQL assignments of the state, the attempt count and the columns; values are appended to `parameters`.
    func assignments(parameters: inout [any PostgresEncodable]) -> [String] {
        stateAssignments + changes.assignments(parameters: &parameters)
    }

    /// The condition under which a worker may write this change: the request is still in `from` and, in a
    /// leased state, `workerID` still holds it (a poll lease may also have lapsed); a request that must not
    /// have a uuid yet has none. `state`, `lockedBy` and `remoteUUID` name the row's columns; `worker` the SQL
    /// of the worker's id.
    static func guardCondition(expected: String, worker: String, row: String) -> String {
        """
        \(row).state = \(expected) AND (\(worker) IS NULL OR \(expected) NOT IN ('submitting', 'awaiting_result') \
        OR \(row).locked_by = \(worker) OR (\(expected) = 'awaiting_result' AND \(row).locked_by IS NULL))
        """
    }

    /// The conditional UPDATE of one request: made only while it is still in `from` and, for leased states,
    /// while `workerID` (when given) still holds it (a poll lease may also have lapsed).
    func update(id: Int, workerID: String?) -> PostgresQuery {
        var parameters: [any PostgresEncodable] = [id, from.rawValue, workerID]
        let assignments = assignments(parameters: &parameters)
        var condition = "r.id = $1 AND " + Self.guardCondition(expected: "$2::detectq.request_state", worker: "$3::text", row: "r")
        if requiresNoRemoteUUID { condition += " AND r.remote_uuid IS NULL" }
        if let requiresCallbackSecretHash {
            parameters.append(requiresCallbackSecretHash)
            condition += " AND r.callback_secret_hash = $\(parameters.count)"
        }
        if requiresTwinInFlight, let twin = changes.waitingFor {
            // Locked for share: the end of that one's flight, in progress, is waited for and then seen; one that
            // comes after waits for this hand-back, and then finds this request waiting.
            parameters.append(twin)
            condition += """
                 AND EXISTS (SELECT 1 FROM detectq.requests t WHERE t.id = $\(parameters.count) \
                AND (t.state IN ('submitting', 'awaiting_result', 'retrying') OR (t.state = 'queued' AND t.unanswered_since IS NOT NULL)) \
                AND t.waiting_for IS NULL FOR SHARE)
                """
        }
        // Setting updated_at here spares the row its trigger call (requests_touch).
        return PostgresQuery(
            sql: "UPDATE detectq.requests AS r SET \((assignments + ["updated_at = now()"]).joined(separator: ", ")) WHERE \(condition)",
            parameters: parameters
        )
    }
}

/// Many requests changed in one statement by transitions of one shape (the same target state, lease, attempt
/// count and stamps: the completions, the submission marks), each row written only where its worker saw it.
/// The statement is rendered from the transitions and the column table, as one request's UPDATE is: no
/// column is listed by hand.
struct RequestBatch {
    /// One request of the batch: where the worker saw it, its worker, and the change's own values.
    struct Row {
        let id: Int
        let expected: RequestState
        let workerID: String?
        let transition: RequestTransition
        /// Values of the batch's `extras`, by name.
        var extras: [String: ColumnValue] = [:]
    }

    /// Transitions of different shapes were put in one batch: a mistake of the caller, refused whole.
    struct MixedShapes: Error, CustomStringConvertible {
        let description: String
    }

    let rows: [Row]
    /// More fields each row carries in `v`, for the caller's own use of it (a completion's post-tasks).
    let extras: [(name: String, type: String)]

    /// The `v` the UPDATE reads from: one row per change (its id, expected state, worker, extras and column
    /// values) from one JSON parameter, appended to `parameters`. The rows go in `id` order: the UPDATE joins
    /// them one by one to the primary key, so it locks the requests in the order a lease renewal does
    /// (`NonStateWrite.leaseRenewal`), and the two never deadlock.
    func values(parameters: inout [any PostgresEncodable]) throws -> String {
        let objects = try rows.sorted { $0.id < $1.id }.map { row in
            var fields = [
                "\"id\":\(row.id)", "\"expected\":\"\(row.expected.rawValue)\"",
                "\"worker\":" + (try row.workerID.map { try ColumnValue.text($0).jsonText() } ?? "null"),
            ]
            for (name, value) in row.extras { fields.append("\"\(name)\":\(try value.jsonText())") }
            for (column, value) in row.transition.changes.values { fields.append("\"\(column.rawValue)\":\(try value.jsonText())") }
            return "{" + fields.joined(separator: ",") + "}"
        }
        parameters.append(PostgresJSON(text: "[" + objects.joined(separator: ",") + "]"))
        let types = ["id bigint", "expected detectq.request_state", "worker text"] + extras.map { "\($0.name) \($0.type)" }
            + RequestColumn.allCases.map { "\($0.rawValue) \($0.sqlType)" }
        return "SELECT f.* FROM jsonb_array_elements($\(parameters.count)) AS e, jsonb_to_record(e) AS f(\(types.joined(separator: ", ")))"
    }

    /// The conditional UPDATE of every row from `v`, returning `returning`. A column a row gives no value
    /// keeps its own (or is cleared, where the transition clears it).
    func update(returning: String) throws -> String {
        guard let shape = rows.first?.transition else { throw MixedShapes(description: "an empty batch") }
        var none: [any PostgresEncodable] = []
        let stamps = shape.changes.stamps(parameters: &none)
        for row in rows {
            var parameters: [any PostgresEncodable] = []
            let same = row.transition.to == shape.to && row.transition.lease == shape.lease && row.transition.attempts == shape.attempts
                && row.transition.changes.stamps(parameters: &parameters) == stamps && parameters.isEmpty
                && row.transition.changes.answerOwed == shape.changes.answerOwed
                && row.transition.changes.clearsErrorMessage == shape.changes.clearsErrorMessage
                && row.transition.requiresNoRemoteUUID == shape.requiresNoRemoteUUID && row.transition.from == row.expected
                && !row.transition.requiresTwinInFlight
            guard same else {
                throw MixedShapes(description: "request \(row.id)'s change \(row.transition.from.rawValue) → \(row.transition.to.rawValue) is not shaped like the batch's")
            }
        }
        var given = Set(rows.flatMap { $0.transition.changes.values.map(\.column) })
        // A change that clears the error message sets it to the row's own, or to nothing.
        if shape.changes.clearsErrorMessage { given.insert(.errorMessage) }
        let columns = RequestColumn.allCases.filter(given.contains).map { column in
            column == .errorMessage && shape.changes.clearsErrorMessage
                ? "error_message = v.error_message"
                : "\(column.rawValue) = coalesce(v.\(column.rawValue), r.\(column.rawValue))"
        }
        let uuidStamps = given.contains(.remoteUUID) ? shape.changes.uuidStamps(given: "v.remote_uuid IS NOT NULL") : []
        let assignments = shape.stateAssignments + stamps + uuidStamps + columns + ["updated_at = now()"]
        var condition = "r.id = v.id AND " + RequestTransition.guardCondition(expected: "v.expected", worker: "v.worker", row: "r")
        if shape.requiresNoRemoteUUID { condition += " AND r.remote_uuid IS NULL" }
        return """
            UPDATE detectq.requests AS r SET \(assignments.joined(separator: ", "))
            FROM v WHERE \(condition)
            RETURNING \(returning)
            """
    }
}
