import Foundation
import Postgres
import ResembleDetect

/// The worker's view of `detectq.requests`: every read and write a worker makes of a request, and a
/// producer's insert. `RequestStore` is the PostgreSQL implementation; `InMemoryRequestStore` follows the same
/// state machine and transition table in memory, for tests of the worker's policy that need no database. One
/// conformance suite (`RequestStorageConformanceTests`) runs against both.
package protocol RequestStorage: Sendable {
    /// Inserts `requests` as a producer would; returns their new ids.
    func enqueue(_ requests: [NewRequest]) async throws -> [Int]
    /// Claims up to `limit` claimable requests (queued or retrying, due) under a lease, shared fairly among the
    /// queues (a priority aged by `priorityAging`), no more than `pacing`'s budget lets be sent soon (nil: no
    /// budget), and says when claiming again may find more.
    func claim(workerID: String, limit: Int, lease: Duration, priorityAging: Duration, pacing: ClaimPacing?) async throws -> RequestClaim
    /// Extends the leases `workerID` still holds among `ids`; returns the ids it still holds.
    func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int>
    /// Takes back expired leases (`RequestStateMachine`'s lost lease), retrying after `retryDelay`, or after
    /// `sendGrace` if longer for a request that may have been sent.
    func rescueExpiredLeases(limit: Int, retryDelay: Duration, sendGrace: Duration) async throws -> RescueReport
    /// Writes what the state machine decides `event` does to `request`, as the worker saw it; false, changing
    /// nothing, when the request moved on.
    @discardableResult
    func apply(_ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges, detail: String?) async throws -> Bool
    /// Completes `request` with `result` on `event` (`completed`, or `reused` for a verdict of identical media),
    /// creates one post-task per processor, and completes the requests waiting for its verdict (identical media
    /// and options) with it.
    @discardableResult
    func complete(
        _ request: DetectionRequest, on event: RequestEvent, workerID: String?, lease: Duration, result: RequestChanges,
        postProcessors: [String]
    ) async throws -> CompletionWrite
    /// Stores `sha256` with `request`, which `workerID` holds, and, when `mayReuse`, looks for a request with the
    /// same hash and options that completed with a detection of its own within `within`, else one in flight
    /// (marking `request` as waiting for it).
    func findIdenticalMedia(
        _ request: DetectionRequest, sha256: String, within: Duration, mayReuse: Bool, workerID: String
    ) async throws -> IdenticalMediaFinding
    /// The verdict (the API's item) request `id` completed with by a detection of its own; nil when it did not.
    func detectedVerdict(of id: Int) async throws -> PostgresJSON?
    /// Adopts `uuid`, found for a request whose answer was lost; false when the request moved on or another
    /// request holds the uuid. A callback's adoption passes the hash of its secret: a request in submission adopts
    /// it only while that secret is still its current attempt's.
    func adopt(_ uuid: String, for request: DetectionRequest, workerID: String?, via: String, callbackSecretHash: String?) async throws -> Bool
    /// Marks the request as about to be sent; false when `workerID` no longer holds it.
    @discardableResult
    func markSubmitStarted(_ request: DetectionRequest, workerID: String, path: SubmitPath, callbackSecretHash: String?) async throws -> Bool
    /// Keeps a secure-upload token beside a request in submission.
    func storeSecureUpload(_ token: SecureUploadToken, for request: DetectionRequest, workerID: String) async throws
    /// Moves since when `request` owes an answer; only while `workerID` holds it.
    func moveAnswerOwed(of request: DetectionRequest, workerID: String, to since: Date) async throws -> Bool
    /// Which of `uuids` other requests than `id` hold.
    func remoteUUIDsHeld(_ uuids: [String], byOtherThan id: Int) async throws -> Set<String>
    /// Claims up to `limit` accepted requests whose next poll is due, under a poll lease.
    func claimDuePolls(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest]
    /// Sets an accepted request's next poll and gives up its poll lease.
    @discardableResult
    func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date, counting: Bool) async throws -> Bool
    /// One request.
    func request(id: Int) async throws -> DetectionRequest?
    /// The request a callback names, with the hashes of every callback secret its attempts were sent with.
    func awaitingCallback(id: Int) async throws -> (DetectionRequest, [String])?
    /// What is stored of one request beyond what a worker reads: its state's columns, for tests and tools.
    func stored(id: Int) async throws -> StoredRequest?
}

extension RequestStorage {
    /// `complete` on the API's verdict.
    @discardableResult
    package func complete(
        _ request: DetectionRequest, workerID: String?, lease: Duration = .seconds(60), result: RequestChanges, postProcessors: [String]
    ) async throws -> CompletionWrite {
        try await complete(request, on: .completed, workerID: workerID, lease: lease, result: result, postProcessors: postProcessors)
    }

    /// `claim` with the default priority aging and no budget, for callers that only want the requests (tests,
    /// benchmarks).
    package func claim(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        try await claim(workerID: workerID, limit: limit, lease: lease, priorityAging: WorkerConfiguration.defaultPriorityAging, pacing: nil)
            .requests
    }

    /// `adopt` of a detection found in List Detects (no callback secret to match).
    package func adopt(_ uuid: String, for request: DetectionRequest, workerID: String?, via: String) async throws -> Bool {
        try await adopt(uuid, for: request, workerID: workerID, via: via, callbackSecretHash: nil)
    }

    /// `apply` with no columns of the caller's and no detail for the history.
    @discardableResult
    package func apply(_ event: RequestEvent, to request: DetectionRequest, workerID: String?) async throws -> Bool {
        try await apply(event, to: request, workerID: workerID, changes: RequestChanges(), detail: nil)
    }

    /// `apply` with the caller's columns.
    @discardableResult
    package func apply(_ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges) async throws -> Bool {
        try await apply(event, to: request, workerID: workerID, changes: changes, detail: nil)
    }

    /// `apply` with a detail for the history.
    @discardableResult
    package func apply(_ event: RequestEvent, to request: DetectionRequest, workerID: String?, detail: String?) async throws -> Bool {
        try await apply(event, to: request, workerID: workerID, changes: RequestChanges(), detail: detail)
    }

    /// The next poll, counted (the interval grows).
    @discardableResult
    package func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date) async throws -> Bool {
        try await schedulePoll(request, workerID: workerID, at: at, counting: true)
    }

    /// A submission mark with no callback secret.
    package func markSubmitStarted(_ request: DetectionRequest, workerID: String, path: SubmitPath) async throws -> Bool {
        try await markSubmitStarted(request, workerID: workerID, path: path, callbackSecretHash: nil)
    }
}

/// What is stored of a request beyond `DetectionRequest`: the columns a worker writes and people read.
package struct StoredRequest: Sendable, Hashable {
    package var state: RequestState
    package var attempt: Int
    package var runAt: Date
    package var lockedBy: String?
    package var remoteUUID: String?
    package var errorMessage: String?
    package var submitPath: SubmitPath?
    package var label: String?
    package var isFake: Bool?
    package var submitStarted: Bool
    package var unansweredSince: Date?
    package var completed: Bool
    package var postTasks: [String]
    /// The request whose verdict this one took, and the one in flight whose verdict it waits for (section 9).
    package var reusedFrom: Int?
    package var waitingFor: Int?
}
