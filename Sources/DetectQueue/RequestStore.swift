import Foundation
import Postgres
import ResembleDetect

/// The worker's SQL over `detectq.requests`: claiming, leases, rescue and every state change.
///
/// Each state change is decided by `RequestStateMachine` and written by one conditional UPDATE that
/// re-checks the state the worker saw and, for leased states, that the worker still holds the lease, so a
/// worker whose lease was taken over can never overwrite the new owner's work. The trigger in the
/// database enforces the same transition table again.
///
/// Completions and submission marks, written for every request, are coalesced: the ones that arrive while a
/// batch is being written go together in one statement (River's batched completer), which turns a round
/// trip per request into one per batch under load and costs nothing when idle.
public struct RequestStore: Sendable {
    public let pool: PostgresConnectionPool
    private let completions: Coalescer<Completion, Bool>
    private let submitStarts: Coalescer<SubmitStart, Bool>

    public init(pool: PostgresConnectionPool) {
        self.pool = pool
        completions = Coalescer { try await Self.writeCompletions($0, on: pool) }
        submitStarts = Coalescer { try await Self.writeSubmitStarts($0, on: pool) }
    }

    /// Claims up to `limit` claimable requests (queued or retrying, `run_at` due), highest priority first,
    /// under a lease of `lease`, in one statement; rows other workers hold are skipped, not waited for.
    /// `submit_started_at` is stamped here: a request sent at once needs no second write, and one that waits
    /// (for the rate limit, for an upload) is stamped again just before it is sent.
    public func claim(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        guard limit > 0 else { return [] }
        let rows = try await LeaseTable.requests.claim(on: pool, workerID: workerID, limit: limit, lease: lease, prior: "unanswered_since")
        for row in rows {
            QueueMetrics.transition(from: try row.decode("claimed_from", as: RequestState.self), to: .submitting)
        }
        return try rows.map { row in
            var request = try DetectionRequest(row: row)
            request.unansweredSince = try row.decode("prior_unanswered_since")
            return request
        }.sorted { $0.id < $1.id }
    }

    /// Extends the leases `workerID` still holds among `ids`; returns the ids whose lease it still holds.
    public func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        try await LeaseTable.requests.heartbeat(on: pool, workerID: workerID, ids: ids, lease: lease)
    }

    /// Takes back leases that expired: a `submitting` request goes to `retrying` (or `failed` when its
    /// attempts are spent) at `retryAt`; a poll lease on an `awaiting_result` request is just cleared. The
    /// UPDATE re-checks state and expiry, so a request that moved on meanwhile is left alone.
    public func rescueExpiredLeases(limit: Int = 500, retryDelay: Duration = .seconds(1)) async throws -> RescueReport {
        var report = RescueReport()
        for (id, state) in try await LeaseTable.requests.rescueExpiredLeases(on: pool, limit: limit, retryDelay: retryDelay) {
            switch state {
            case RequestState.retrying.rawValue: report.retrying.append(id)
            case RequestState.failed.rawValue: report.failed.append(id)
            default: report.pollLeasesCleared.append(id)
            }
        }
        QueueMetrics.transition(from: .submitting, to: .retrying, count: report.retrying.count)
        QueueMetrics.transition(from: .submitting, to: .failed, count: report.failed.count)
        for _ in report.retrying { QueueMetrics.retry(cause: "lease_expired") }
        return report
    }

    /// Writes what the state machine decides `event` does to `request`. `request` is the request as the worker
    /// saw it; `workerID` (for leased states) must still hold the lease. `detail` goes into the event history.
    /// Returns false, changing nothing, when the request moved on (cancelled by a user, taken over after a lost
    /// lease, already holding a uuid).
    @discardableResult
    public func apply(
        _ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges = .init(), detail: String? = nil
    ) async throws -> Bool {
        let transition = try RequestStateMachine.transition(of: request, on: event, changes: changes)
        if transition.createsPostTasks {
            return try await complete(request, workerID: workerID, result: changes, postProcessors: [])
        }
        let update = transition.update(id: request.id, workerID: workerID)
        let applied: Bool
        if let detail {
            applied = try await pool.transaction { connection in
                try await connection.query("SELECT set_config('detectq.event_detail', \(detail), true)")
                return try await connection.query(update).affectedRows == 1
            }
        } else {
            applied = try await pool.query(update).affectedRows == 1
        }
        if applied && transition.changesState { QueueMetrics.transition(from: request.state, to: transition.to) }
        return applied
    }

    /// Stores the result and marks the request completed, and records one post-task per processor in
    /// `postProcessors`, all in one statement (batched with other completions). Returns false, changing
    /// nothing, when the request moved on.
    @discardableResult
    public func complete(
        _ request: DetectionRequest, workerID: String?, result: RequestChanges, postProcessors: [String]
    ) async throws -> Bool {
        _ = try RequestStateMachine.transition(of: request, on: .completed)
        let completed = try await completions.submit(Completion(
            request: request, workerID: workerID, result: result, postProcessors: postProcessors
        ))
        if completed {
            QueueMetrics.transition(from: request.state, to: .completed)
            if result.isFake == true { QueueMetrics.fakeFound() }
        }
        return completed
    }

    /// One completion to write: the request as the worker saw it, its result columns and its post-tasks.
    struct Completion: Sendable {
        var request: DetectionRequest
        var workerID: String?
        var result: RequestChanges
        var postProcessors: [String]

        /// `{"f": {the columns}, "r": result, "p": [processors]}`, the result spliced in as the API sent it.
        func json() throws -> String {
            struct Fields: Encodable {
                var id: Int
                var expected: String
                var worker: String?
                var remote_uuid: String?
                var media_type: String?
                var label: String?
                var audio_label: String?
                var visual_label: String?
                var is_fake: Bool?
                var aggregated_score: Double?
                var file_deleted_at: String?
                var submit_path: String?
                var callback_secret_hash: String?
            }
            let fields = Fields(
                id: request.id, expected: request.state.rawValue, worker: workerID, remote_uuid: result.remoteUUID,
                media_type: result.mediaType, label: result.label, audio_label: result.audioLabel, visual_label: result.visualLabel,
                is_fake: result.isFake,
                aggregated_score: result.aggregatedScore.flatMap { $0.isFinite ? $0 : nil },
                file_deleted_at: result.fileDeletedAt.map { ISO8601Timestamp.format($0) }, submit_path: result.submitPath,
                callback_secret_hash: result.callbackSecretHash
            )
            let encoder = JSONEncoder()
            let encodedFields = String(decoding: try encoder.encode(fields), as: UTF8.self)
            let processors = String(decoding: try encoder.encode(postProcessors), as: UTF8.self)
            return #"{"f":\#(encodedFields),"r":\#(result.result?.text ?? "null"),"p":\#(processors)}"#
        }
    }

    /// The completion as the state machine has it (from `awaiting_result`; from `submitting` it is the same):
    /// the batch's SQL writes its state, lease, columns and post-tasks.
    static let completion: RequestTransition = {
        let completion = try! RequestStateMachine.transition(from: .awaitingResult, on: .completed, attemptsLeft: true)
        precondition(completion.lease == .release && completion.attempts == .unchanged && completion.createsPostTasks
            && completion.changes.stampsCompletedAt && completion.changes.answerOwed == .answered,
            "the completion batch writes what the state machine's completion does")
        return completion
    }()

    /// Completes a batch in one statement: the conditional UPDATE of every request still where its worker saw
    /// it, and the post-tasks of those it changed. Returns, per completion, whether its request was changed.
    static func writeCompletions(_ batch: [Completion], on pool: PostgresConnectionPool) async throws -> [Bool] {
        let payload = "[" + (try batch.map { try $0.json() }).joined(separator: ",") + "]"
        let rows = try await pool.query("""
            WITH v AS (
                SELECT f.*, nullif(e->'r', 'null'::jsonb) AS result, e->'p' AS processors
                FROM jsonb_array_elements(\(PostgresJSON(text: payload))) AS e,
                     jsonb_to_record(e->'f') AS f(id bigint, expected detectq.request_state, worker text, remote_uuid text,
                         media_type text, label text, audio_label text, visual_label text, is_fake boolean,
                         aggregated_score double precision,
                         file_deleted_at timestamptz, submit_path text, callback_secret_hash text)
            ), done AS (
                UPDATE detectq.requests AS r SET
                    state = \(completion.to.rawValue)::detectq.request_state, completed_at = now(), locked_by = NULL, locked_until = NULL, result = v.result,
                    unanswered_since = NULL,
                    remote_uuid = coalesce(v.remote_uuid, r.remote_uuid), accepted_at = coalesce(r.accepted_at, now()),
                    media_type = v.media_type, label = v.label, audio_label = v.audio_label, visual_label = v.visual_label,
                    is_fake = v.is_fake, aggregated_score = v.aggregated_score,
                    file_deleted_at = v.file_deleted_at, submit_path = coalesce(v.submit_path, r.submit_path),
                    callback_secret_hash = coalesce(v.callback_secret_hash, r.callback_secret_hash)
                FROM v
                WHERE r.id = v.id AND r.state = v.expected
                  AND (v.worker IS NULL OR r.locked_by = v.worker OR (v.expected = 'awaiting_result' AND r.locked_by IS NULL))
                RETURNING r.id
            ), tasks AS (
                INSERT INTO detectq.post_tasks (request_id, processor)
                SELECT done.id, p.processor
                FROM done JOIN v ON v.id = done.id, jsonb_array_elements_text(v.processors) AS p(processor)
                ON CONFLICT (request_id, processor) DO NOTHING
            )
            SELECT id FROM done
            """)
        var changed = Set(try rows.map { try $0.decode("id", as: Int.self) })
        // A request completed twice in one batch (a callback racing a poll) counts once.
        return batch.map { changed.remove($0.request.id) != nil }
    }

    /// Which of `uuids` are the remote uuids of requests other than `id`.
    func remoteUUIDsHeld(_ uuids: [String], byOtherThan id: Int) async throws -> Set<String> {
        guard !uuids.isEmpty else { return [] }
        return Set(try await pool.query("""
            SELECT remote_uuid FROM detectq.requests WHERE remote_uuid = ANY(\(uuids)) AND id <> \(id)
            """).map { try $0.decode("remote_uuid", as: String.self) })
    }

    /// Adopts `uuid`, found for a request whose earlier answer was lost, as the request's remote uuid: the
    /// request waits for it as for an accepted one (its next poll due now), and its history says how it was
    /// found. Returns false, changing nothing, when the request moved on or another request holds the uuid.
    /// `workerID` is the lease holder that found it (List Detects); nil for a callback, which may come while
    /// any worker, or none, holds the request.
    public func adopt(_ uuid: String, for request: DetectionRequest, workerID: String?, via: String) async throws -> Bool {
        let detail = "adopted via \(via): detection \(uuid), created by an earlier attempt whose answer was lost, is waited for instead of submitting again"
        do {
            let adopted = try await apply(.adopted(remoteUUID: uuid, via: via), to: request, workerID: workerID, detail: detail)
            if adopted { QueueMetrics.adopted(via: via) }
            return adopted
        } catch let error as PostgresError where error.constraint == "requests_remote_uuid_unique" {
            return false
        }
    }

    /// Claims up to `limit` accepted requests whose next poll is due, under a short poll lease.
    public func claimDuePolls(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        guard limit > 0 else { return [] }
        let rows = try await pool.query(PostgresQuery(sql: """
            UPDATE detectq.requests AS r
            SET locked_by = $1, locked_until = now() + make_interval(secs => $2)
            FROM (
                SELECT id FROM detectq.requests
                WHERE state = 'awaiting_result' AND run_at <= now() AND locked_by IS NULL
                ORDER BY run_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ) AS due
            WHERE r.id = due.id
            RETURNING \(DetectionRequest.columns.replacingOccurrences(of: "id,", with: "r.id,", options: .anchored))
            """, parameters: [workerID, lease.seconds, limit]))
        return try rows.map(DetectionRequest.init(row:))
    }

    /// Sets the next poll of an accepted request and gives up its poll lease.
    @discardableResult
    public func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date) async throws -> Bool {
        try await pool.query("""
            UPDATE detectq.requests
            SET run_at = \(at), poll_count = poll_count + 1, locked_by = NULL, locked_until = NULL
            WHERE id = \(request.id) AND state = 'awaiting_result' AND (locked_by = \(workerID) OR locked_by IS NULL)
            """).affectedRows == 1
    }

    /// Stores a secure-upload token beside a request in submission, so that a retry within its hour reuses it.
    public func storeSecureUpload(_ token: SecureUploadToken, for request: DetectionRequest, workerID: String) async throws {
        try await pool.query("""
            UPDATE detectq.requests SET secure_upload_token = \(token.token), secure_upload_token_issued_at = \(token.issuedAt)
            WHERE id = \(request.id) AND state = 'submitting' AND locked_by = \(workerID)
            """)
    }

    /// Records that the request is about to be sent to the API (the window in which a lost response could
    /// leave an accepted request unknown to us is then visible). Returns false when the worker no longer holds
    /// it (cancelled, or taken over), and then it must not be sent.
    /// `callbackSecretHash` is stored with it, so that a callback that comes before the answer is recognised.
    public func markSubmitStarted(
        _ request: DetectionRequest, workerID: String, path: String, callbackSecretHash: String? = nil
    ) async throws -> Bool {
        try await submitStarts.submit(SubmitStart(id: request.id, workerID: workerID, path: path, callbackSecretHash: callbackSecretHash))
    }

    /// One submission about to start.
    struct SubmitStart: Sendable {
        var id: Int
        var workerID: String
        var path: String
        var callbackSecretHash: String?
    }

    /// The submission mark as the state machine has it: the request stays where it is, under its lease, and
    /// its start, path and callback secret are stamped; the batch's SQL writes exactly that.
    static let sending: RequestTransition = {
        let sending = try! RequestStateMachine.transition(from: .submitting, on: .sending(path: "", callbackSecretHash: ""), attemptsLeft: true)
        precondition(!sending.changesState && sending.lease == .keep && sending.attempts == .unchanged && sending.changes.stampsSubmitStarted,
                      "the submission-mark batch writes what the state machine's mark does")
        return sending
    }()

    static func writeSubmitStarts(_ batch: [SubmitStart], on pool: PostgresConnectionPool) async throws -> [Bool] {
        let rows = try await pool.query("""
            UPDATE detectq.requests AS r SET submit_started_at = now(), submit_path = v.path,
                callback_secret_hash = coalesce(v.secret_hash, r.callback_secret_hash)
            FROM unnest(\(batch.map(\.id))::bigint[], \(batch.map(\.workerID))::text[], \(batch.map(\.path))::text[],
                        \(batch.map { $0.callbackSecretHash ?? "" })::text[])
                 AS u(id, worker, path, secret), LATERAL (SELECT u.id, u.worker, u.path, nullif(u.secret, '') AS secret_hash) AS v
            WHERE r.id = v.id AND r.state = \(sending.from.rawValue)::detectq.request_state AND r.locked_by = v.worker
            RETURNING r.id
            """)
        let marked = Set(try rows.map { try $0.decode("id", as: Int.self) })
        return batch.map { marked.contains($0.id) }
    }

    /// The request a callback names, with its callback secret's hash, if it is waiting for a result.
    public func awaitingCallback(id: Int) async throws -> (DetectionRequest, String?)? {
        let rows = try await pool.query(PostgresQuery(
            sql: "SELECT \(DetectionRequest.columns), callback_secret_hash FROM detectq.requests WHERE id = $1",
            parameters: [id]
        ))
        guard let row = rows.first else { return nil }
        return (try DetectionRequest(row: row), try row.decode("callback_secret_hash", as: String?.self))
    }

    /// Reads one request.
    public func request(id: Int) async throws -> DetectionRequest? {
        let rows = try await pool.query(PostgresQuery(
            sql: "SELECT \(DetectionRequest.columns) FROM detectq.requests WHERE id = $1", parameters: [id]
        ))
        return try rows.first.map(DetectionRequest.init(row:))
    }
}

/// What a rescue pass did.
public struct RescueReport: Sendable, Hashable {
    /// Requests whose submitting lease expired, now waiting to be retried.
    public var retrying: [Int] = []
    /// Requests whose submitting lease expired on their last attempt.
    public var failed: [Int] = []
    /// Accepted requests whose poll lease expired, free to be polled again.
    public var pollLeasesCleared: [Int] = []

    public init() {}
}

/// The columns a change writes besides the state, the lease and the attempt count: some set by the state
/// machine for its transition, the rest by the caller (a result, a path).
public struct RequestChanges: Sendable {
    /// What a change does to `unanswered_since`, which says since when an answer from the API is owed.
    public enum AnswerOwed: Sendable, Hashable {
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
    public var clearsSecureUpload = false
    /// Changes `unanswered_since`; nil leaves it, but a stored uuid means the API answered.
    public var answerOwed: AnswerOwed?
    public var errorMessage: String?
    public var runAt: Date?
    public var remoteUUID: String?
    public var submitPath: String?
    public var mediaType: String?
    public var label: String?
    public var audioLabel: String?
    public var visualLabel: String?
    public var isFake: Bool?
    public var aggregatedScore: Double?
    public var result: PostgresJSON?
    public var fileDeletedAt: Date?
    public var callbackSecretHash: String?

    public init() {}

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
        return PostgresQuery(sql: "UPDATE detectq.requests SET \(assignments.joined(separator: ", ")) WHERE \(condition)", parameters: parameters)
    }
}
