import Foundation
import Postgres

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

    package init() {}

    /// The SQL assignments of these columns, their values appended to `parameters` (numbered after those
    /// already there). Columns are referred to unqualified, so the assignments suit any UPDATE of the table.
    func assignments(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments: [String] = []
        func set(_ column: String, _ value: some PostgresEncodable) {
            parameters.append(value)
            assignments.append("\(column) = $\(parameters.count)")
        }
        if stampsCompletedAt { assignments.append("completed_at = now()") }
        if clearsCompletedAt { assignments.append("completed_at = NULL") }
        if let errorMessage { set("error_message", errorMessage) } else if clearsErrorMessage { assignments.append("error_message = NULL") }
        if stampsSubmitStarted { assignments.append("submit_started_at = now()") }
        if clearsSubmitStarted { assignments.append("submit_started_at = NULL") }
        switch answerOwed ?? (remoteUUID != nil ? .answered : nil) {
        case .answered?: assignments.append("unanswered_since = NULL")
        case .since(let since?)?: set("unanswered_since", since)
        case .since(nil)?: assignments.append("unanswered_since = NULL")
        case .fromNowUnlessOwed?: assignments.append("unanswered_since = coalesce(unanswered_since, now())")
        case nil: break
        }
        if clearsSecureUpload { assignments.append("secure_upload_token = NULL, secure_upload_token_issued_at = NULL") }
        if let runAt { set("run_at", runAt) }
        if let remoteUUID {
            set("remote_uuid", remoteUUID)
            assignments.append("accepted_at = coalesce(accepted_at, now())")
        }
        if let submitPath { set("submit_path", submitPath) }
        if let mediaType { set("media_type", mediaType) }
        if let label { set("label", label) }
        if let audioLabel { set("audio_label", audioLabel) }
        if let visualLabel { set("visual_label", visualLabel) }
        if let isFake { set("is_fake", isFake) }
        if let aggregatedScore { set("aggregated_score", aggregatedScore) }
        if let result { set("result", result) }
        if let fileDeletedAt { set("file_deleted_at", fileDeletedAt) }
        if let callbackSecretHash { set("callback_secret_hash", callbackSecretHash) }
        return assignments
    }
}

extension RequestTransition {
    /// The SQL assignments of the state, the attempt count and the columns (a lease taken is the claim's to
    /// write, with its worker and duration); values are appended to `parameters`.
    func assignments(parameters: inout [any PostgresEncodable]) -> [String] {
        var assignments = changesState ? ["state = '\(to.rawValue)'"] : []
        if lease == .release { assignments.append("locked_by = NULL, locked_until = NULL") }
        if let attempt = attempts.assignment { assignments.append(attempt) }
        return assignments + changes.assignments(parameters: &parameters)
    }

    /// The conditional UPDATE of one request: made only while it is still in `from` and, for leased states,
    /// while `workerID` (when given) still holds it (a poll lease may also have lapsed).
    func update(id: Int, workerID: String?) -> PostgresQuery {
        var parameters: [any PostgresEncodable] = [id, from.rawValue]
        let assignments = assignments(parameters: &parameters)
        var condition = "id = $1 AND state = $2::detectq.request_state"
        if let workerID, [.submitting, .awaitingResult].contains(from) {
            parameters.append(workerID)
            condition += " AND (locked_by = $\(parameters.count)" + (from == .awaitingResult ? " OR locked_by IS NULL)" : ")")
        }
        if requiresNoRemoteUUID { condition += " AND remote_uuid IS NULL" }
        // Setting updated_at here spares the row its trigger call (requests_touch).
        return PostgresQuery(
            sql: "UPDATE detectq.requests SET \((assignments + ["updated_at = now()"]).joined(separator: ", ")) WHERE \(condition)", parameters: parameters
        )
    }
}
