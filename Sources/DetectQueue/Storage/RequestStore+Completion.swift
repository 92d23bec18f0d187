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
        /// `completed`, or `reused` (a verdict of identical media, never sent).
        var event: RequestEvent
        var workerID: String?
        var lease: Duration
        var result: RequestChanges
        var postProcessors: [String]
    }

    /// Completes a batch in one statement: the conditional UPDATE of every request still where its worker saw
    /// it, the post-tasks of those it changed, and the requests waiting for one of them (identical media and
    /// options, queued with `waiting_for` naming it), which complete with its verdict (`queued → completed` on
    /// `reused`, the source being the request that was detected) and get the same processors' post-tasks, queued.
    /// Returns, per completion, how it was written.
    static func writeCompletions(_ batch: [Completion], on pool: PostgresConnectionPool) async throws -> [CompletionWrite] {
        let rows = try await pool.query(try completionStatement(batch))
        var completed: [Int: (at: Date, postTasks: [PostTask], reusedBy: Int)] = [:]
        for row in rows {
            let id = try row.decode("completed_id", as: Int.self)
            var postTasks = completed[id]?.postTasks ?? []
            if try row.decode("id", as: Int?.self) != nil { postTasks.append(try PostTask(row: row)) }
            completed[id] = (try row.decode("request_completed_at", as: Date.self), postTasks, try row.decode("reused_by", as: Int.self))
        }
        // A request completed twice in one batch (a callback racing a poll) counts once.
        return batch.map { completion in
            guard let entry = completed.removeValue(forKey: completion.request.id) else { return .movedOn }
            return .completed(at: entry.at, postTasks: entry.postTasks, reusedBy: entry.reusedBy)
        }
    }

    /// The one statement that writes `batch`: a row per completed request (`completed_id`,
    /// `request_completed_at`, `reused_by`) joined to each of its post-tasks created running.
    static func completionStatement(_ batch: [Completion]) throws -> PostgresQuery {
        let statement = RequestBatch(
            rows: try batch.map { completion in
                var row = RequestBatch.Row(
                    id: completion.request.id, expected: completion.request.state, workerID: completion.workerID,
                    transition: try RequestStateMachine.transition(of: completion.request, on: completion.event, changes: completion.result)
                )
                row.extras = ["lease": .number(completion.lease.seconds), "processors": .json(PostgresJSON(text: "[" + completion.postProcessors.map(JSONText.string).joined(separator: ",") + "]"))]
                return row
            },
            extras: [("lease", "double precision"), ("processors", "jsonb")]
        )
        var parameters: [any PostgresEncodable] = []
        let values = try statement.values(parameters: &parameters)
        let verdictColumns = RequestColumn.verdict
        let doneColumns = (["r.id", "r.completed_at", "r.media_sha256", "r.reused_from"] + verdictColumns.map { "r.\($0.rawValue)" })
            .joined(separator: ", ")
        // The waiters' change is the state machine's (the source's id is a column of `done`, not a parameter).
        let reuse = try RequestStateMachine.transition(from: .queued, on: .reused(from: 0), attemptsLeft: true)
        var none: [any PostgresEncodable] = []
        let waiterAssignments = reuse.stateAssignments + reuse.changes.stamps(parameters: &none)
            + ["submit_path = '\(SubmitPath.reused.rawValue)'", "reused_from = coalesce(done.reused_from, done.id)", "waiting_for = NULL",
               "updated_at = now()"]
            + verdictColumns.map { "\($0.rawValue) = done.\($0.rawValue)" }
        // The waiters are found by `waiting_for` alone: their state is compared as text, from which the planner
        // cannot prove the claim index's predicate (`state IN ('queued', 'retrying')`). Where the statistics say
        // few requests are queued, it would otherwise read that index whole for every batch, and beside a
        // transaction that holds back vacuum the index keeps an entry for every request ever queued (a batch took
        // up to 4 s so, and the workers' completions fell to a fifth).
        // The post-tasks are the completion's (`createsPostTasks`): created running under the completing
        // worker's lease, for it to run at once, or queued when no worker completed the request. A waiter's,
        // the same processors as its source's (its verdict and options are the same), are queued.
        return PostgresQuery(sql: """
            WITH v AS (\(values)), done AS (\(try statement.update(returning: doneColumns))), waiters AS (
                UPDATE detectq.requests AS w SET \(waiterAssignments.joined(separator: ", "))
                FROM done WHERE done.media_sha256 IS NOT NULL AND w.waiting_for = done.id AND w.state::text = 'queued'
                RETURNING w.id, done.id AS source_id
            ), tasks AS (
                INSERT INTO detectq.post_tasks (request_id, processor, state, attempt, locked_by, locked_until)
                SELECT done.id, p.processor,
                       CASE WHEN v.worker IS NULL THEN 'queued' ELSE 'running' END::detectq.post_task_state,
                       CASE WHEN v.worker IS NULL THEN 0 ELSE 1 END, v.worker,
                       CASE WHEN v.worker IS NOT NULL THEN now() + make_interval(secs => v.lease) END
                FROM done JOIN v ON v.id = done.id, jsonb_array_elements_text(v.processors) AS p(processor)
                ON CONFLICT (request_id, processor) DO NOTHING
                RETURNING \(PostTask.columns)
            ), waiter_tasks AS (
                INSERT INTO detectq.post_tasks (request_id, processor, state, attempt)
                SELECT waiters.id, p.processor, 'queued', 0
                FROM waiters JOIN v ON v.id = waiters.source_id, jsonb_array_elements_text(v.processors) AS p(processor)
                ON CONFLICT (request_id, processor) DO NOTHING
            )
            SELECT done.id AS completed_id, done.completed_at AS request_completed_at,
                   (SELECT count(*) FROM waiters WHERE waiters.source_id = done.id) AS reused_by, tasks.*
            FROM done LEFT JOIN tasks ON tasks.request_id = done.id
            """, parameters: parameters)
    }
}

/// How a completion was written.
package enum CompletionWrite: Sendable {
    /// The request had moved on (cancelled, taken over, completed already): nothing changed.
    case movedOn
    /// Completed at `at` (the database's clock); `postTasks` are the ones the completing worker now holds
    /// under its lease, to run at once (none when it completed without a worker); `reusedBy` requests waiting
    /// for its verdict completed with it.
    case completed(at: Date, postTasks: [PostTask], reusedBy: Int)

    /// Whether the request was completed.
    package var completed: Bool {
        if case .completed = self { true } else { false }
    }
}
