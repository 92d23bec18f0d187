import Foundation
import Postgres
import ResembleDetect
import TextEncodings

/// The completion batch: what the store writes when requests complete, many in one statement.
extension RequestStore {
    /// One completion to write: the request as the worker saw it, its result columns and its post-tasks.
    /// With a `workerID`, the post-tasks are created running under that worker's lease of `lease`, for it to
    /// run at once; without one they are created queued, for any worker to claim.
    struct Completion: Sendable {
        var request: DetectionRequest
        var workerID: String?
        var lease: Duration
        var result: RequestChanges
        var postProcessors: [String]

        /// `{"f": {the columns}, "r": result, "p": [processors]}`, the result spliced in as the API sent it.
        func json() throws -> String {
            struct Fields: Encodable {
                var id: Int
                var expected: String
                var worker: String?
                var lease: Double
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
                id: request.id, expected: request.state.rawValue, worker: workerID, lease: lease.seconds, remote_uuid: result.remoteUUID,
                media_type: result.mediaType, label: result.label, audio_label: result.audioLabel, visual_label: result.visualLabel,
                is_fake: result.isFake,
                aggregated_score: result.aggregatedScore.flatMap { $0.isFinite ? $0 : nil },
                file_deleted_at: result.fileDeletedAt.map { ISO8601Timestamp.format($0) }, submit_path: result.submitPath?.rawValue,
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
    /// it, and the post-tasks of those it changed. Returns, per completion, how it was written.
    static func writeCompletions(_ batch: [Completion], on pool: PostgresConnectionPool) async throws -> [CompletionWrite] {
        let payload = "[" + (try batch.map { try $0.json() }).joined(separator: ",") + "]"
        let rows = try await pool.query("""
            WITH v AS (
                SELECT f.*, nullif(e->'r', 'null'::jsonb) AS result, e->'p' AS processors
                FROM jsonb_array_elements(\(PostgresJSON(text: payload))) AS e,
                     jsonb_to_record(e->'f') AS f(id bigint, expected detectq.request_state, worker text, lease double precision, remote_uuid text,
                         media_type text, label text, audio_label text, visual_label text, is_fake boolean,
                         aggregated_score double precision,
                         file_deleted_at timestamptz, submit_path text, callback_secret_hash text)
            ), done AS (
                UPDATE detectq.requests AS r SET
                    state = \(completion.to.rawValue)::detectq.request_state, completed_at = now(), updated_at = now(),
                    locked_by = NULL, locked_until = NULL, result = v.result,
                    unanswered_since = NULL,
                    remote_uuid = coalesce(v.remote_uuid, r.remote_uuid), accepted_at = coalesce(r.accepted_at, now()),
                    media_type = v.media_type, label = v.label, audio_label = v.audio_label, visual_label = v.visual_label,
                    is_fake = v.is_fake, aggregated_score = v.aggregated_score,
                    file_deleted_at = v.file_deleted_at, submit_path = coalesce(v.submit_path, r.submit_path),
                    callback_secret_hash = coalesce(v.callback_secret_hash, r.callback_secret_hash)
                FROM v
                WHERE r.id = v.id AND r.state = v.expected
                  AND (v.worker IS NULL OR r.locked_by = v.worker OR (v.expected = 'awaiting_result' AND r.locked_by IS NULL))
                RETURNING r.id, r.completed_at
            ), tasks AS (
                INSERT INTO detectq.post_tasks (request_id, processor, state, attempt, locked_by, locked_until)
                SELECT done.id, p.processor,
                       CASE WHEN v.worker IS NULL THEN 'queued' ELSE 'running' END::detectq.post_task_state,
                       CASE WHEN v.worker IS NULL THEN 0 ELSE 1 END, v.worker,
                       CASE WHEN v.worker IS NOT NULL THEN now() + make_interval(secs => v.lease) END
                FROM done JOIN v ON v.id = done.id, jsonb_array_elements_text(v.processors) AS p(processor)
                ON CONFLICT (request_id, processor) DO NOTHING
                RETURNING *
            )
            SELECT done.id AS completed_id, done.completed_at AS request_completed_at, tasks.* FROM done LEFT JOIN tasks ON tasks.request_id = done.id
            """)
        var completed: [Int: (at: Date, postTasks: [PostTask])] = [:]
        for row in rows {
            let id = try row.decode("completed_id", as: Int.self)
            var postTasks = completed[id]?.postTasks ?? []
            if try row.decode("id", as: Int?.self) != nil { postTasks.append(try PostTask(row: row)) }
            completed[id] = (try row.decode("request_completed_at", as: Date.self), postTasks)
        }
        // A request completed twice in one batch (a callback racing a poll) counts once.
        return batch.map { completion in
            guard let entry = completed.removeValue(forKey: completion.request.id) else { return .movedOn }
            return .completed(at: entry.at, postTasks: entry.postTasks)
        }
    }
}

/// How a completion was written.
package enum CompletionWrite: Sendable {
    /// The request had moved on (cancelled, taken over, completed already): nothing changed.
    case movedOn
    /// Completed at `at` (the database's clock); `postTasks` are the ones the completing worker now holds
    /// under its lease, to run at once (none when it completed without a worker).
    case completed(at: Date, postTasks: [PostTask])

    /// Whether the request was completed.
    package var completed: Bool {
        if case .completed = self { true } else { false }
    }
}
