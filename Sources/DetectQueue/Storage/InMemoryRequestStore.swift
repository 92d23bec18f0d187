import Foundation
import Postgres
import ResembleDetect
import Synchronization

/// `detectq.requests` in memory, for tests of the worker's policy that need no database: every change is the
/// state machine's transition, applied under the same guards as the SQL (the state the worker saw, its lease,
/// no uuid yet for an adoption), and refused when the schema's transition table would refuse it. It is
/// checked against `RequestStore` by the conformance suite.
package final class InMemoryRequestStore: RequestStorage {
    /// One row: the request as a worker reads it and the columns it writes.
    struct Row {
        var request: DetectionRequest
        var priority: Int
        var runAt: Date
        var lockedUntil: Date?
        var errorMessage: String?
        var submitStartedAt: Date?
        var completedAt: Date?
        var submitPath: SubmitPath?
        var callbackSecretHash: String?
        var earlierCallbackSecretHashes: [String] = []
        var values: [RequestColumn: ColumnValue] = [:]
        var postTasks: [PostTask] = []
        /// `reused_from` and `waiting_for`.
        var reusedFrom: Int?
        var waitingFor: Int?

        /// Whether identical media waits for it: on its way to the API, or queued while an earlier attempt's answer
        /// is owed (a zero-retention request waiting for the callback that may name its detection).
        var isInFlight: Bool { request.state.isInFlight || (request.state == .queued && request.unansweredSince != nil) }
    }

    /// A change the schema would refuse (its transition table, or a uuid another request holds).
    package struct Refused: Error, CustomStringConvertible {
        package let description: String
    }

    private struct Table {
        var rows: [Int: Row] = [:]
        var nextID = 1
        var nextPostTaskID = 1
    }

    private let table = Mutex(Table())

    package init() {}

    package func enqueue(_ requests: [NewRequest]) async throws -> [Int] {
        table.withLock { table in
            requests.map { new in
                let id = table.nextID
                table.nextID += 1
                var request = DetectionRequest(id: id, media: new.media.detectionMedia, attempt: 0, maxAttempts: new.maxAttempts ?? 8)
                request.state = .queued
                request.waitMode = new.waitMode.flatMap(DetectionRequest.WaitMode.init(rawValue:)) ?? .auto
                request.options.zeroRetentionMode = new.zeroRetentionMode ? true : nil
                request.options.intelligence = new.intelligence ? true : nil
                request.queue = new.queue ?? "default"
                request.groupKey = new.groupKey
                request.mediaSHA256 = new.mediaSHA256?.lowercased()
                request.reuseVerdict = new.reuseVerdict
                table.rows[id] = Row(request: request, priority: new.priority ?? 0, runAt: new.runAt ?? Date())
                return id
            }
        }
    }

    /// Claims by priority aged as the fair claim ages it (one higher for each `priorityAging` a request has been
    /// due), oldest first; the shares and limits of queues, and the budget's pacing, are the database's alone
    /// (there is one lane here, and a worker's calls reserve their slots as they go).
    package func claim(
        workerID: String, limit: Int, lease: Duration, priorityAging: Duration, pacing: ClaimPacing?
    ) async throws -> RequestClaim {
        try table.withLock { table in
            let now = Date()
            func aged(_ row: Row) -> Double {
                Double(row.priority) + (now.timeIntervalSince(row.runAt) / priorityAging.seconds).rounded(.down)
            }
            let due = table.rows.values
                .filter { RequestStateMachine.claims.map(\.from).contains($0.request.state) && $0.runAt <= now }
                .sorted { (aged($0), $1.runAt, $1.request.id) > (aged($1), $0.runAt, $0.request.id) }
            let claimed = try due.prefix(limit).map { row in
                let prior = row.request.unansweredSince
                let transition = try RequestStateMachine.transition(of: row.request, on: .claimed)
                var written = row
                try Self.write(transition, to: &written, workerID: workerID, lease: lease, in: table)
                table.rows[row.request.id] = written
                var claimed = written.request
                claimed.unansweredSince = prior
                return claimed
            }.sorted { $0.id < $1.id }
            return RequestClaim(requests: claimed, claimAgain: due.count > limit ? .now : .whenAnnounced)
        }
    }

    package func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        table.withLock { table in
            Set(ids.filter { id in
                guard table.rows[id]?.request.lockedBy == workerID else { return false }
                table.rows[id]?.lockedUntil = Date().addingTimeInterval(lease.seconds)
                return true
            })
        }
    }

    package func rescueExpiredLeases(limit: Int, retryDelay: Duration, sendGrace: Duration) async throws -> RescueReport {
        try table.withLock { table in
            var report = RescueReport()
            let now = Date()
            let lost = try RequestStateMachine.leaseLost()
            let expired = table.rows.values.filter { row in
                row.request.lockedBy != nil && (row.lockedUntil ?? now) < now && [.submitting, .awaitingResult].contains(row.request.state)
            }.prefix(limit)
            for row in expired {
                var written = row
                defer { table.rows[row.request.id] = written }
                guard row.request.state == .submitting else {
                    (written.request.lockedBy, written.lockedUntil) = (nil, nil)
                    continue
                }
                let owed = row.request.unansweredSince != nil && row.request.remoteUUID == nil && row.request.attempt <= row.request.maxAttempts
                let transition = row.request.attemptsLeft ? lost.withAttemptsLeft : owed ? lost.onLastAttemptOwingAnswer : lost.onLastAttempt
                // As the rescue's SQL does: the reason names the worker and the attempt, over the transition's own.
                let reason = "the worker \(row.request.lockedBy ?? "") stopped renewing its lease during attempt \(row.request.attempt)"
                    + (row.request.attemptsLeft ? "; retrying" : owed ? "; its answer may have been lost, so the detection it may have created is looked for before the request fails" : "; no attempts left")
                written.errorMessage = reason
                try Self.write(transition, to: &written, workerID: nil, lease: nil, in: table)
                written.errorMessage = reason
                written.runAt = now.addingTimeInterval(owed ? max(retryDelay, sendGrace).seconds : retryDelay.seconds)
                if written.request.state == .failed { report.failed.append(row.request.id) } else { report.retrying.append(row.request.id) }
            }
            return report
        }
    }

    package func apply(
        _ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges = .init(), detail: String? = nil
    ) async throws -> Bool {
        let transition = try RequestStateMachine.transition(of: request, on: event, changes: changes)
        if transition.createsPostTasks {
            return try await complete(request, on: event, workerID: workerID, lease: .seconds(60), result: changes, postProcessors: []).completed
        }
        return try table.withLock { table in
            guard var row = table.rows[request.id], Self.guards(transition, row: row, workerID: workerID) else { return false }
            if transition.requiresTwinInFlight {
                guard let twin = transition.changes.waitingFor.flatMap({ table.rows[$0] }), twin.isInFlight, twin.waitingFor == nil
                else { return false }
            }
            let wasInFlight = row.isInFlight
            try Self.write(transition, to: &row, workerID: workerID, lease: nil, in: table)
            table.rows[request.id] = row
            // As the schema's trigger does: a request with a hash that leaves flight wakes the ones waiting for it.
            if wasInFlight, !row.isInFlight, row.request.mediaSHA256 != nil {
                for waiter in table.rows.values where waiter.waitingFor == request.id && waiter.request.state == .queued {
                    table.rows[waiter.request.id]?.runAt = Date()
                    table.rows[waiter.request.id]?.waitingFor = nil
                }
            }
            return true
        }
    }

    package func complete(
        _ request: DetectionRequest, on event: RequestEvent, workerID: String?, lease: Duration = .seconds(60), result: RequestChanges,
        postProcessors: [String]
    ) async throws -> CompletionWrite {
        let transition = try RequestStateMachine.transition(of: request, on: event, changes: result)
        return try table.withLock { table in
            guard var row = table.rows[request.id], Self.guards(transition, row: row, workerID: workerID) else { return .movedOn }
            try Self.write(transition, to: &row, workerID: workerID, lease: nil, in: table)
            let created = Self.addPostTasks(postProcessors, to: &row, running: workerID != nil, in: &table)
            table.rows[request.id] = row
            // The requests waiting for this verdict complete with it, as the completion's statement completes them.
            var reusedBy = 0
            if row.request.mediaSHA256 != nil {
                let source = row.reusedFrom ?? request.id
                for var waiter in table.rows.values where waiter.waitingFor == request.id && waiter.request.state == .queued {
                    for column in RequestColumn.verdict {
                        if let value = row.values[column] { waiter.values[column] = value }
                    }
                    let reuse = try RequestStateMachine.transition(of: waiter.request, on: .reused(from: source))
                    try Self.write(reuse, to: &waiter, workerID: nil, lease: nil, in: table)
                    waiter.waitingFor = nil
                    _ = Self.addPostTasks(postProcessors, to: &waiter, running: false, in: &table)
                    table.rows[waiter.request.id] = waiter
                    reusedBy += 1
                }
            }
            return .completed(at: row.completedAt ?? Date(), postTasks: workerID == nil ? [] : created, reusedBy: reusedBy)
        }
    }

    /// Creates the post-tasks of `processors` the row does not have yet, running under the completing worker or
    /// queued; returns those created.
    private static func addPostTasks(_ processors: [String], to row: inout Row, running: Bool, in table: inout Table) -> [PostTask] {
        var created: [PostTask] = []
        for processor in processors where !row.postTasks.contains(where: { $0.processor == processor }) {
            created.append(PostTask(
                id: table.nextPostTaskID, requestID: row.request.id, processor: processor,
                state: running ? .running : .queued, attempt: running ? 1 : 0, maxAttempts: 10, lastError: nil
            ))
            table.nextPostTaskID += 1
        }
        row.postTasks += created
        return created
    }

    package func findIdenticalMedia(
        _ request: DetectionRequest, sha256: String, within: Duration, mayReuse: Bool, workerID: String
    ) async throws -> IdenticalMediaFinding {
        table.withLock { table in
            guard var row = table.rows[request.id], row.request.state == .submitting, row.request.lockedBy == workerID else { return .movedOn }
            row.request.mediaSHA256 = sha256.lowercased()
            row.waitingFor = nil
            table.rows[request.id] = row
            guard mayReuse else { return .send }
            let identical = table.rows.values.filter { other in
                other.request.id != request.id && other.reusedFrom == nil && other.request.mediaSHA256 == row.request.mediaSHA256
                    && other.request.options == row.request.options
            }
            let since = Date().addingTimeInterval(-within.seconds)
            if let source = identical.filter({ $0.request.state == .completed && ($0.completedAt ?? .distantPast) >= since })
                .max(by: { ($0.completedAt ?? .distantPast) < ($1.completedAt ?? .distantPast) }) {
                return .reuse(source: source.request.id)
            }
            guard let inFlight = identical.filter({ $0.isInFlight && $0.waitingFor == nil }).min(by: { $0.request.id < $1.request.id })
            else { return .send }
            table.rows[request.id]?.waitingFor = inFlight.request.id
            return .wait(inFlight: inFlight.request.id)
        }
    }

    package func detectedVerdict(of id: Int) async throws -> PostgresJSON? {
        table.withLock { table in
            guard let row = table.rows[id], row.request.state == .completed, row.reusedFrom == nil,
                  case .json(let result)? = row.values[.result] else { return nil }
            return result
        }
    }

    package func adopt(
        _ uuid: String, for request: DetectionRequest, workerID: String?, via: String, callbackSecretHash: String?
    ) async throws -> Bool {
        do {
            return try await apply(.adopted(remoteUUID: uuid, via: via, callbackSecretHash: callbackSecretHash), to: request, workerID: workerID)
        } catch is Refused {
            return false
        }
    }

    package func markSubmitStarted(
        _ request: DetectionRequest, workerID: String, path: SubmitPath, callbackSecretHash: String? = nil
    ) async throws -> Bool {
        var seen = request
        seen.state = .submitting
        return try await apply(.sending(path: path, callbackSecretHash: callbackSecretHash), to: seen, workerID: workerID)
    }

    package func storeSecureUpload(_ token: SecureUploadToken, for request: DetectionRequest, workerID: String) async throws {
        table.withLock { table in
            guard table.rows[request.id]?.request.state == .submitting, table.rows[request.id]?.request.lockedBy == workerID else { return }
            table.rows[request.id]?.request.secureUpload = token
        }
    }

    package func moveAnswerOwed(of request: DetectionRequest, workerID: String, to since: Date) async throws -> Bool {
        table.withLock { table in
            guard let row = table.rows[request.id], row.request.state == .submitting, row.request.lockedBy == workerID,
                  row.request.remoteUUID == nil else { return false }
            table.rows[request.id]?.request.unansweredSince = since
            return true
        }
    }

    package func remoteUUIDsHeld(_ uuids: [String], byOtherThan id: Int) async throws -> Set<String> {
        table.withLock { table in
            Set(table.rows.values.compactMap { row in row.request.id != id ? row.request.remoteUUID : nil }.filter(uuids.contains))
        }
    }

    package func claimDuePolls(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        table.withLock { table in
            let now = Date()
            let due = table.rows.values
                .filter { $0.request.state == .awaitingResult && $0.runAt <= now && $0.request.lockedBy == nil }
                .sorted { ($0.runAt, $0.request.id) < ($1.runAt, $1.request.id) }
                .prefix(limit)
            return due.map { row in
                table.rows[row.request.id]?.request.lockedBy = workerID
                table.rows[row.request.id]?.lockedUntil = now.addingTimeInterval(lease.seconds)
                return table.rows[row.request.id]!.request
            }
        }
    }

    package func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date, counting: Bool = true) async throws -> Bool {
        table.withLock { table in
            guard var row = table.rows[request.id], row.request.state == .awaitingResult,
                  row.request.lockedBy == workerID || row.request.lockedBy == nil else { return false }
            row.runAt = at
            row.request.pollCount += counting ? 1 : 0
            (row.request.lockedBy, row.lockedUntil) = (nil, nil)
            table.rows[request.id] = row
            return true
        }
    }

    package func request(id: Int) async throws -> DetectionRequest? {
        table.withLock { $0.rows[id]?.request }
    }

    package func awaitingCallback(id: Int) async throws -> (DetectionRequest, [String])? {
        table.withLock { table in
            table.rows[id].map { ($0.request, $0.earlierCallbackSecretHashes + [$0.callbackSecretHash].compactMap { $0 }) }
        }
    }

    package func stored(id: Int) async throws -> StoredRequest? {
        table.withLock { table in
            table.rows[id].map { row in
                var label: String?
                var isFake: Bool?
                if case .text(let text)? = row.values[.label] { label = text }
                if case .bool(let bool)? = row.values[.isFake] { isFake = bool }
                return StoredRequest(
                    state: row.request.state, attempt: row.request.attempt, runAt: row.runAt, lockedBy: row.request.lockedBy,
                    remoteUUID: row.request.remoteUUID, errorMessage: row.errorMessage, submitPath: row.submitPath, label: label,
                    isFake: isFake, submitStarted: row.submitStartedAt != nil, unansweredSince: row.request.unansweredSince,
                    completed: row.completedAt != nil, postTasks: row.postTasks.map(\.processor).sorted(),
                    reusedFrom: row.reusedFrom, waitingFor: row.waitingFor
                )
            }
        }
    }

    /// The SQL's guards: the request is where the worker saw it, a leased one is still the worker's (a poll
    /// lease may have lapsed), and an adoption finds no uuid yet.
    private static func guards(_ transition: RequestTransition, row: Row, workerID: String?) -> Bool {
        guard row.request.state == transition.from else { return false }
        if let workerID, [.submitting, .awaitingResult].contains(transition.from) {
            guard row.request.lockedBy == workerID || (transition.from == .awaitingResult && row.request.lockedBy == nil) else { return false }
        }
        if let hash = transition.requiresCallbackSecretHash, row.callbackSecretHash != hash { return false }
        return !transition.requiresNoRemoteUUID || row.request.remoteUUID == nil
    }

    /// Writes `transition` into `row` as its SQL does, refusing what the schema refuses.
    private static func write(_ transition: RequestTransition, to row: inout Row, workerID: String?, lease: Duration?, in table: Table) throws {
        guard !transition.changesState || transition.from.canChange(to: transition.to) else {
            throw Refused(description: "request \(row.request.id) cannot move from \(transition.from.rawValue) to \(transition.to.rawValue)")
        }
        let changes = transition.changes
        if let uuid = changes.remoteUUID, table.rows.values.contains(where: { $0.request.id != row.request.id && $0.request.remoteUUID == uuid }) {
            throw Refused(description: "another request holds \(uuid) (requests_remote_uuid_unique)")
        }
        let now = Date()
        row.request.state = transition.to
        switch transition.lease {
        case .take: (row.request.lockedBy, row.lockedUntil) = (workerID, now.addingTimeInterval((lease ?? .seconds(60)).seconds))
        case .release: (row.request.lockedBy, row.lockedUntil) = (nil, nil)
        case .keep: break
        }
        row.request.attempt = transition.attempts.applied(to: row.request.attempt)
        if changes.stampsCompletedAt { row.completedAt = now }
        if changes.clearsCompletedAt { row.completedAt = nil }
        if changes.errorMessage == nil && changes.clearsErrorMessage { row.errorMessage = nil }
        if changes.stampsSubmitStarted { row.submitStartedAt = now }
        if changes.clearsSubmitStarted { row.submitStartedAt = nil }
        switch changes.answerOwed {
        case .answered?: row.request.unansweredSince = nil
        case .since(let since)?: row.request.unansweredSince = since
        case .fromNowUnlessOwed?: row.request.unansweredSince = row.request.unansweredSince ?? now
        case nil: break
        }
        if changes.clearsSecureUpload { row.request.secureUpload = nil }
        if let uuid = changes.remoteUUID {
            row.request.remoteUUID = uuid
            row.request.acceptedAt = row.request.acceptedAt ?? now
            if changes.answerOwed == nil { row.request.unansweredSince = nil }
        }
        for (column, value) in changes.values {
            switch (column, value) {
            case (.errorMessage, .text(let text)): row.errorMessage = text
            case (.runAt, .timestamp(let date)): row.runAt = date
            case (.submitPath, .text(let text)): row.submitPath = SubmitPath(rawValue: text)
            case (.reusedFrom, .integer(let id)): row.reusedFrom = id
            case (.waitingFor, .integer(let id)): row.waitingFor = id
            case (.callbackSecretHash, .text(let hash)):
                // The schema's trigger keeps the hash an attempt replaces.
                if let earlier = row.callbackSecretHash, earlier != hash { row.earlierCallbackSecretHashes.append(earlier) }
                row.callbackSecretHash = hash
            default: row.values[column] = value
            }
        }
        try checkConstraints(of: row)
    }

    /// The schema's CHECK constraints on a request's state.
    private static func checkConstraints(of row: Row) throws {
        let state = row.request.state
        let broken = [
            ("requests_awaiting_result_has_remote_uuid", state == .awaitingResult && row.request.remoteUUID == nil),
            ("requests_completed_has_result", state == .completed && (row.values[.result] == nil || row.completedAt == nil)),
            ("requests_failed_has_reason", state == .failed && row.errorMessage == nil),
            ("requests_lease_only_while_working", row.request.lockedBy != nil && ![.submitting, .awaitingResult].contains(state)),
            ("requests_submitting_has_lease", state == .submitting && row.request.lockedBy == nil),
        ].first { $0.1 }
        if let (constraint, _) = broken {
            throw Refused(description: "request \(row.request.id) violates \(constraint)")
        }
    }
}

extension NewRequest.Media {
    /// The request's media as a worker reads it.
    var detectionMedia: DetectionRequest.Media {
        switch self {
        case .url(let url): .url(url)
        case .path(let path): .path(path)
        case .token(let token): .token(token)
        }
    }
}
