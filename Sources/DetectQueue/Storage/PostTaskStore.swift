import Foundation
import Postgres
import ResembleDetect
import ServiceLifecycle

/// The post-tasks' SQL: the same claim, heartbeat and rescue as requests (`LeaseTable`), and the three ways
/// a run ends, each a conditional UPDATE that re-checks the lease. Successful ends, one for every run that
/// works, are coalesced as the requests' completions are: those that arrive while a batch is written go
/// together in the next statement.
package struct PostTaskStore: Sendable {
    package let pool: PostgresConnectionPool
    private let successes: Coalescer<Success, Bool>

    package init(pool: PostgresConnectionPool) {
        self.pool = pool
        successes = Coalescer(maximumConcurrentBatches: 1) { try await Self.writeSuccesses($0, on: pool) }
    }

    /// The coalesced writer, run as a service beside the worker's loops; where it does not run, each end is
    /// written alone.
    package var writers: [any Service] { [successes] }

    package func claim(workerID: String, limit: Int, lease: Duration) async throws -> [PostTask] {
        guard limit > 0 else { return [] }
        return try await LeaseTable.postTasks().claim(on: pool, workerID: workerID, limit: limit, lease: lease)
            .map(PostTask.init(row:)).sorted { $0.id < $1.id }
    }

    package func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        try await LeaseTable.postTasks().heartbeat(on: pool, workerID: workerID, ids: ids, lease: lease)
    }

    /// Takes back expired leases; returns the tasks now retrying and those that failed for good.
    package func rescueExpiredLeases(limit: Int = 500, retryDelay: Duration = .seconds(1)) async throws -> (retrying: [Int], failed: [Int]) {
        let rescued = try await LeaseTable.postTasks().rescueExpiredLeases(on: pool, limit: limit, retryDelay: retryDelay, sendGrace: .zero)
        return (
            rescued.filter { $0.state == PostTask.State.retrying.rawValue }.map(\.id),
            rescued.filter { $0.state == PostTask.State.failed.rawValue }.map(\.id)
        )
    }

    // Each way a run ends sends the run's `notifications` in the statement that records it, and only if it
    // records it.

    /// The task ran to its end.
    @discardableResult
    package func complete(_ task: PostTask, workerID: String, notifications: [PostgresNotice] = []) async throws -> Bool {
        _ = try PostTaskStateMachine.transition(of: task, on: .succeeded)
        return try await successes.submit(Success(taskID: task.id, workerID: workerID, notifications: notifications))
    }

    /// A run that ended well, waiting to be written with others.
    private struct Success: Sendable {
        let taskID: Int
        let workerID: String
        let notifications: [PostgresNotice]
    }

    /// Writes the successful ends of `batch` in one statement, each only where its worker still holds the
    /// running task's lease, and sends the notifications of those written, in order; returns, for each, whether
    /// it was written.
    private static func writeSuccesses(_ batch: [Success], on pool: PostgresConnectionPool) async throws -> [Bool] {
        let success = try PostTaskStateMachine.transition(from: .running, on: .succeeded, attemptsLeft: true)
        var parameters: [any PostgresEncodable] = [batch.map(\.taskID), batch.map(\.workerID)]
        let assignments = success.assignments(parameters: &parameters)
        let notices = batch.flatMap { success in success.notifications.map { (success.taskID, $0) } }
        let first = parameters.count + 1
        parameters += [notices.map(\.0), notices.map(\.1.channel), notices.map(\.1.payload)]
        let rows = try await pool.query(PostgresQuery(sql: """
            WITH ended AS (
                UPDATE detectq.post_tasks AS t SET \(assignments.joined(separator: ", "))
                FROM unnest($1::bigint[], $2::text[]) AS v(id, worker)
                WHERE t.id = v.id AND t.state = '\(success.from.rawValue)' AND t.locked_by = v.worker
                RETURNING t.id
            ), sent AS (
                SELECT count(pg_notify(channel, payload)) AS n FROM (
                    SELECT n.channel, n.payload
                    FROM unnest($\(first)::bigint[], $\(first + 1)::text[], $\(first + 2)::text[])
                        WITH ORDINALITY AS n(task_id, channel, payload, position)
                    WHERE n.task_id IN (SELECT id FROM ended) ORDER BY n.position
                ) AS ordered
            )
            SELECT id, (SELECT n FROM sent) AS sent FROM ended
            """, parameters: parameters))
        let written = Set(try rows.map { try $0.decode("id", as: Int.self) })
        return batch.map { written.contains($0.taskID) }
    }

    /// The run failed: retried at `retryAt` while attempts remain, else failed for good with `reason`.
    @discardableResult
    package func fail(
        _ task: PostTask, workerID: String, reason: String, retryAt: Date?, notifications: [PostgresNotice] = []
    ) async throws -> Bool {
        try await apply(.failed(reason: reason, retryAt: retryAt), to: task, workerID: workerID, notifications: notifications)
    }

    /// The processor asked to run again at `at` without it counting as an attempt (it waits for something
    /// that has not happened yet, such as a purge): the task goes back to `queued` until then.
    @discardableResult
    package func reschedule(_ task: PostTask, workerID: String, at: Date, notifications: [PostgresNotice] = []) async throws -> Bool {
        try await apply(.rescheduled(at: at), to: task, workerID: workerID, notifications: notifications)
    }

    /// Gives an unrun claim back (a worker shutting down).
    @discardableResult
    package func release(_ task: PostTask, workerID: String) async throws -> Bool {
        try await apply(.released, to: task, workerID: workerID)
    }

    /// Writes what the state machine decides `event` does to `task`, while `workerID` still holds its lease
    /// and it is where the worker saw it; returns false, changing nothing, otherwise. `notifications` go out
    /// only when it is written: the notifying subquery runs once per updated row, and there is one or none.
    private func apply(_ event: PostTaskEvent, to task: PostTask, workerID: String, notifications: [PostgresNotice] = []) async throws -> Bool {
        let transition = try PostTaskStateMachine.transition(of: task, on: event)
        var parameters: [any PostgresEncodable] = [task.id, transition.from.rawValue, workerID]
        let assignments = transition.assignments(parameters: &parameters)
        let update = """
            UPDATE detectq.post_tasks SET \(assignments.joined(separator: ", "))
            WHERE id = $1 AND state = $2::detectq.post_task_state AND locked_by = $3
            """
        guard !notifications.isEmpty else {
            return try await pool.query(PostgresQuery(sql: update, parameters: parameters)).affectedRows == 1
        }
        parameters += [notifications.map(\.channel), notifications.map(\.payload)]
        let count = parameters.count
        return try await pool.query(PostgresQuery(sql: """
            WITH ended AS (\(update) RETURNING id)
            SELECT (SELECT count(pg_notify(n.channel, n.payload)) FROM unnest($\(count - 1)::text[], $\(count)::text[]) AS n(channel, payload)) AS sent
            FROM ended
            """, parameters: parameters)).count == 1
    }
}

extension PostTaskStore {
    /// The outcome of completed request `requestID`, read back for a post-task that was not handed it, and the
    /// trace its spans continue; nil when the request has no stored result.
    func outcome(of requestID: Int, fakeThreshold: Double?) async throws -> (DetectionOutcome, traceparent: String?)? {
        let rows = try await pool.query("""
            SELECT coalesce(remote_uuid, result->>'uuid') AS remote_uuid, result, metadata, zero_retention_mode, intelligence,
                   completed_at, traceparent, reused_from
            FROM detectq.requests WHERE id = \(requestID) AND state = 'completed'
            """)
        guard let row = rows.first, let result = try row.decode("result", as: PostgresJSON?.self),
              let remoteUUID = try row.decode("remote_uuid", as: String?.self)
        else { return nil }
        let outcome = DetectionOutcome(
            requestID: requestID, remoteUUID: remoteUUID, item: try DetectionItem(json: result.text),
            metadata: try row.decode("metadata"), zeroRetentionMode: try row.decode("zero_retention_mode"),
            intelligenceRequested: try row.decode("intelligence"), completedAt: try row.decode("completed_at"),
            fakeThreshold: fakeThreshold, reusedFrom: try row.decode("reused_from")
        )
        return (outcome, try row.decode("traceparent"))
    }
}
