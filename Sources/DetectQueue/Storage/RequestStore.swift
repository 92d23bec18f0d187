import Foundation
import Postgres
import ResembleDetect
import ServiceLifecycle

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
package struct RequestStore: RequestStorage {
    package let pool: PostgresConnectionPool
    private let completions: Coalescer<Completion, CompletionWrite>
    private let submitStarts: Coalescer<SubmitStart, Bool>
    private let identicalMedia: Coalescer<IdenticalMediaLookup, IdenticalMediaFinding>

    package init(pool: PostgresConnectionPool) {
        self.pool = pool
        completions = Coalescer(maximumConcurrentBatches: 1) { try await Self.writeCompletions($0, on: pool) }
        submitStarts = Coalescer { try await Self.writeSubmitStarts($0, on: pool) }
        identicalMedia = Coalescer { try await Self.findIdenticalMedia($0, on: pool) }
    }

    /// The coalesced writers, run as services beside the worker's loops; where they do not run, each write
    /// goes alone.
    package var writers: [any Service] { [completions, submitStarts, identicalMedia] }

    /// Stores `sha256` with `request` (which `workerID` holds) and looks for identical media and options that
    /// completed within `within` or is in flight, when `mayReuse`; batched with the other lookups of the moment.
    package func findIdenticalMedia(
        _ request: DetectionRequest, sha256: String, within: Duration, mayReuse: Bool, workerID: String
    ) async throws -> IdenticalMediaFinding {
        try await identicalMedia.submit(IdenticalMediaLookup(id: request.id, workerID: workerID, sha256: sha256, within: within, mayReuse: mayReuse))
    }

    /// Claims up to `limit` due requests (queued or retrying) under a lease of `lease`, in one statement, shared
    /// fairly among the queues and their groups (migration 0016: weights, priority aged by `priorityAging`,
    /// groups in turn, each queue's pause and limits), and with `pacing` no more than the shared budget's slots
    /// due soon, one reserved for each (`apiSlot`); rows other workers hold are skipped, not waited for.
    /// `submit_started_at` is stamped here: a request sent at once needs no second write, and one that waits
    /// (for the rate limit, for an upload) is stamped again just before it is sent.
    package func claim(
        workerID: String, limit: Int, lease: Duration, priorityAging: Duration, pacing: ClaimPacing?
    ) async throws -> RequestClaim {
        guard limit > 0 else { return RequestClaim(requests: [], claimAgain: .whenAnnounced) }
        let rows = try await LeaseTable.requests().claim(
            on: pool, workerID: workerID, limit: limit, lease: lease,
            parameters: [max(priorityAging.seconds, 0.001), pacing?.ratePerSecond, pacing?.horizon.seconds]
        )
        let claimed = ContinuousClock.now
        var requests: [DetectionRequest] = []
        var claimAgain = ClaimAgain.whenAnnounced
        for row in rows {
            claimAgain = ClaimAgain(claimAgainIn: try row.decode("claim_again_in"))
            guard try row.decode("id", as: Int?.self) != nil else { continue }
            QueueMetrics.transition(from: try row.decode("claimed_from", as: RequestState.self), to: .submitting)
            var request = try DetectionRequest(row: row)
            request.unansweredSince = try row.decode("prior_unanswered_since")
            request.hashAlone = try row.decode("hash_alone", as: Bool?.self) ?? false
            if let at = try row.decode("slot_at", as: Date?.self), let slotIn = try row.decode("slot_in", as: Double?.self) {
                request.apiSlot = APISlot(at: at, due: claimed + .seconds(slotIn))
            }
            requests.append(request)
        }
        return RequestClaim(requests: requests.sorted { $0.id < $1.id }, claimAgain: claimAgain)
    }

    /// Extends the leases `workerID` still holds among `ids`; returns the ids whose lease it still holds.
    package func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        try await LeaseTable.requests().heartbeat(on: pool, workerID: workerID, ids: ids, lease: lease)
    }

    /// Takes back leases that expired: a `submitting` request goes to `retrying` (or `failed` when its
    /// attempts are spent) after `retryDelay`, or after `sendGrace` when it may have been sent (its answer is
    /// owed): a worker that stopped renewing may be stalled rather than dead, its send still on its way, and the
    /// next attempt's search for a lost answer must not look before that send can have reached the API. A poll
    /// lease on an `awaiting_result` request is just cleared. The UPDATE re-checks state and expiry, so a
    /// request that moved on meanwhile is left alone.
    package func rescueExpiredLeases(limit: Int = 500, retryDelay: Duration = .seconds(1), sendGrace: Duration) async throws -> RescueReport {
        var report = RescueReport()
        for (id, state) in try await LeaseTable.requests().rescueExpiredLeases(
            on: pool, limit: limit, retryDelay: retryDelay, sendGrace: sendGrace
        ) {
            switch state {
            case RequestState.retrying.rawValue: report.retrying.append(id)
            case RequestState.failed.rawValue: report.failed.append(id)
            default: break
            }
        }
        QueueMetrics.transition(from: .submitting, to: .retrying, count: report.retrying.count)
        QueueMetrics.transition(from: .submitting, to: .failed, count: report.failed.count)
        for _ in report.retrying { QueueMetrics.retry(cause: .leaseExpired) }
        return report
    }

    /// Writes what the state machine decides `event` does to `request`. `request` is the request as the worker
    /// saw it; `workerID` (for leased states) must still hold the lease. `detail` goes into the event history.
    /// Returns false, changing nothing, when the request moved on (cancelled by a user, taken over after a lost
    /// lease, already holding a uuid).
    @discardableResult
    package func apply(
        _ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges = .init(), detail: String? = nil
    ) async throws -> Bool {
        let transition = try RequestStateMachine.transition(of: request, on: event, changes: changes)
        if transition.createsPostTasks {
            return try await complete(request, on: event, workerID: workerID, result: changes, postProcessors: []).completed
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
        if applied && request.acceptedAt == nil && (changes.remoteUUID != nil || event.givesRemoteUUID) {
            QueueMetrics.billed(inQueue: request.queue)
        }
        return applied
    }

    /// Stores the result and marks the request completed, and records one post-task per processor in
    /// `postProcessors`, all in one statement (batched with other completions). The post-tasks are created
    /// running under `workerID`'s lease of `lease`, handed to that worker to run at once with the outcome it
    /// has in hand; without a worker they are queued for any worker to claim.
    @discardableResult
    package func complete(
        _ request: DetectionRequest, on event: RequestEvent, workerID: String?, lease: Duration = .seconds(60), result: RequestChanges,
        postProcessors: [String]
    ) async throws -> CompletionWrite {
        _ = try RequestStateMachine.transition(of: request, on: event)
        let written = try await completions.submit(Completion(
            request: request, event: event, workerID: workerID, lease: lease, result: result, postProcessors: postProcessors
        ))
        if case .completed(_, _, let reusedBy) = written, reusedBy > 0 { QueueMetrics.reused(count: reusedBy) }
        if written.completed {
            if case .reused = event { QueueMetrics.reused(count: 1) }
            QueueMetrics.transition(from: request.state, to: .completed)
            if request.acceptedAt == nil && result.remoteUUID != nil { QueueMetrics.billed(inQueue: request.queue) }
            if result.isFake == true { QueueMetrics.fakeFound() }
        }
        return written
    }

    /// Which of `uuids` are the remote uuids of requests other than `id`.
    package func remoteUUIDsHeld(_ uuids: [String], byOtherThan id: Int) async throws -> Set<String> {
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
    package func adopt(
        _ uuid: String, for request: DetectionRequest, workerID: String?, via: String, callbackSecretHash: String?
    ) async throws -> Bool {
        let detail = "adopted via \(via): detection \(uuid), created by an earlier attempt whose answer was lost, is waited for instead of submitting again"
        do {
            let event = RequestEvent.adopted(remoteUUID: uuid, via: via, callbackSecretHash: callbackSecretHash)
            let adopted = try await apply(event, to: request, workerID: workerID, detail: detail)
            if adopted { QueueMetrics.adopted(via: via) }
            return adopted
        } catch let error as PostgresError where error.constraint == "requests_remote_uuid_unique" {
            return false
        }
    }

    /// Moves the time since which `request` owes an answer to `since`, after a search that read back to its
    /// cutoff and found nothing older to adopt; only while `workerID` holds the request. Returns whether it did.
    package func moveAnswerOwed(of request: DetectionRequest, workerID: String, to since: Date) async throws -> Bool {
        try await pool.query(NonStateWrite.answerOwedMoved(id: request.id, workerID: workerID, to: since)).affectedRows == 1
    }

    /// Claims up to `limit` accepted requests whose next poll is due, under a short poll lease.
    package func claimDuePolls(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        guard limit > 0 else { return [] }
        return try await pool.query(NonStateWrite.pollLease(workerID: workerID, limit: limit, lease: lease)).map(DetectionRequest.init(row:))
    }

    /// Sets the next poll of an accepted request and gives up its poll lease; `counting` false leaves the
    /// poll count (and so the growing interval) as it was, for a poll the API throttled.
    @discardableResult
    package func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date, counting: Bool = true) async throws -> Bool {
        try await pool.query(NonStateWrite.pollScheduled(id: request.id, workerID: workerID, at: at, counting: counting)).affectedRows == 1
    }

    /// Stores a secure-upload token beside a request in submission, so that a retry within its hour reuses it.
    package func storeSecureUpload(_ token: SecureUploadToken, for request: DetectionRequest, workerID: String) async throws {
        try await pool.query(NonStateWrite.secureUploadKept(token, id: request.id, workerID: workerID))
    }

    /// Records that the request is about to be sent to the API (the window in which a lost response could
    /// leave an accepted request unknown to us is then visible). Returns false when the worker no longer holds
    /// it (cancelled, or taken over), and then it must not be sent.
    /// `callbackSecretHash` is stored with it, so that a callback that comes before the answer is recognised.
    package func markSubmitStarted(
        _ request: DetectionRequest, workerID: String, path: SubmitPath, callbackSecretHash: String? = nil
    ) async throws -> Bool {
        try await submitStarts.submit(SubmitStart(id: request.id, workerID: workerID, path: path, callbackSecretHash: callbackSecretHash))
    }

    /// One submission about to start.
    struct SubmitStart: Sendable {
        var id: Int
        var workerID: String
        var path: SubmitPath
        var callbackSecretHash: String?
    }

    /// Writes a batch of submission marks in one statement, each rendered from the state machine's `sending`
    /// transition, each only where its worker still holds the request.
    static func writeSubmitStarts(_ batch: [SubmitStart], on pool: PostgresConnectionPool) async throws -> [Bool] {
        let statement = RequestBatch(
            rows: try batch.map { mark in
                RequestBatch.Row(
                    id: mark.id, expected: .submitting, workerID: mark.workerID,
                    transition: try RequestStateMachine.transition(
                        from: .submitting, on: .sending(path: mark.path, callbackSecretHash: mark.callbackSecretHash), attemptsLeft: true
                    )
                )
            },
            extras: []
        )
        var parameters: [any PostgresEncodable] = []
        let values = try statement.values(parameters: &parameters)
        let rows = try await pool.query(PostgresQuery(
            sql: "WITH v AS (\(values)) \(try statement.update(returning: "r.id"))", parameters: parameters
        ))
        let marked = Set(try rows.map { try $0.decode("id", as: Int.self) })
        return batch.map { marked.contains($0.id) }
    }

    /// The request a callback names, with the hashes of every callback secret its attempts were sent with
    /// (each stays valid until the request ends).
    package func awaitingCallback(id: Int) async throws -> (DetectionRequest, [String])? {
        let rows = try await pool.query(PostgresQuery(
            sql: """
                SELECT \(DetectionRequest.columns),
                       array_remove(coalesce(earlier_callback_secret_hashes, '{}') || callback_secret_hash, NULL) AS secret_hashes
                FROM detectq.requests WHERE id = $1
                """,
            parameters: [id]
        ))
        guard let row = rows.first else { return nil }
        return (try DetectionRequest(row: row), try row.decode("secret_hashes", as: [String].self))
    }

    /// What is stored of one request beyond what a worker reads.
    package func stored(id: Int) async throws -> StoredRequest? {
        let rows = try await pool.query("""
            SELECT state, attempt, run_at, locked_by, remote_uuid, error_message, submit_path, label, is_fake,
                   submit_started_at IS NOT NULL AS submit_started, unanswered_since, completed_at IS NOT NULL AS completed,
                   reused_from, waiting_for,
                   coalesce((SELECT array_agg(processor ORDER BY processor) FROM detectq.post_tasks WHERE request_id = r.id), '{}') AS post_tasks
            FROM detectq.requests r WHERE id = \(id)
            """)
        return try rows.first.map { row in
            StoredRequest(
                state: try row.decode("state"), attempt: try row.decode("attempt"), runAt: try row.decode("run_at"),
                lockedBy: try row.decode("locked_by"), remoteUUID: try row.decode("remote_uuid"), errorMessage: try row.decode("error_message"),
                submitPath: try row.decode("submit_path"), label: try row.decode("label"), isFake: try row.decode("is_fake"),
                submitStarted: try row.decode("submit_started"), unansweredSince: try row.decode("unanswered_since"),
                completed: try row.decode("completed"), postTasks: try row.decode("post_tasks"),
                reusedFrom: try row.decode("reused_from"), waitingFor: try row.decode("waiting_for")
            )
        }
    }

    /// Reads one request.
    package func request(id: Int) async throws -> DetectionRequest? {
        let rows = try await pool.query(PostgresQuery(
            sql: "SELECT \(DetectionRequest.columns) FROM detectq.requests WHERE id = $1", parameters: [id]
        ))
        return try rows.first.map(DetectionRequest.init(row:))
    }

    /// Reads one request with its tokens withheld, for a command that changes its state and never sends it.
    package func requestWithoutTokens(id: Int) async throws -> DetectionRequest? {
        let rows = try await pool.query(PostgresQuery(
            sql: "SELECT \(DetectionRequest.columnsWithoutTokens) FROM detectq.requests WHERE id = $1", parameters: [id]
        ))
        return try rows.first.map(DetectionRequest.init(row:))
    }
}

/// What a rescue pass did.
package struct RescueReport: Sendable, Hashable {
    /// Requests whose submitting lease expired, now waiting to be retried.
    package var retrying: [Int] = []
    /// Requests whose submitting lease expired on their last attempt.
    package var failed: [Int] = []

    package init() {}
}
