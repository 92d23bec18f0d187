@testable import DetectQueue
import Foundation
import Postgres
import ResembleDetect
import Synchronization

/// An in-memory request store whose database goes away for the calls a rule picks: each picked call throws
/// the connection error libpq gives while a server is down (a failover, a restart) and changes nothing; the
/// rest go through to an `InMemoryRequestStore`.
final class OutageStore: RequestStorage {
    /// A call the worker makes of its store, as the rule sees it.
    enum Call: Sendable, Equatable {
        case apply(RequestEvent)
        case markSubmitStarted
        case other
    }

    let inner = InMemoryRequestStore()
    /// Whether `call` meets the outage, given how many calls the outage has refused before it.
    private let refuses: @Sendable (Call, _ refusedBefore: Int) -> Bool
    private let refused = Mutex(0)

    init(refuses: @escaping @Sendable (Call, _ refusedBefore: Int) -> Bool) {
        self.refuses = refuses
    }

    /// How many calls the outage refused.
    var refusedCalls: Int { refused.withLock { $0 } }

    private func check(_ call: Call) throws {
        let refusing = refused.withLock { count in
            guard refuses(call, count) else { return false }
            count += 1
            return true
        }
        if refusing {
            throw PostgresError(kind: .connection, message: "connection to server at \"127.0.0.1\" failed: Connection refused")
        }
    }

    func enqueue(_ requests: [NewRequest]) async throws -> [Int] { try await inner.enqueue(requests) }
    func claim(workerID: String, limit: Int, lease: Duration, priorityAging: Duration, pacing: ClaimPacing?) async throws -> RequestClaim {
        try check(.other)
        return try await inner.claim(workerID: workerID, limit: limit, lease: lease, priorityAging: priorityAging, pacing: pacing)
    }
    func heartbeat(workerID: String, ids: [Int], lease: Duration) async throws -> Set<Int> {
        try check(.other)
        return try await inner.heartbeat(workerID: workerID, ids: ids, lease: lease)
    }
    func rescueExpiredLeases(limit: Int, retryDelay: Duration, sendGrace: Duration) async throws -> RescueReport {
        try check(.other)
        return try await inner.rescueExpiredLeases(limit: limit, retryDelay: retryDelay, sendGrace: sendGrace)
    }
    func apply(_ event: RequestEvent, to request: DetectionRequest, workerID: String?, changes: RequestChanges, detail: String?) async throws -> Bool {
        try check(.apply(event))
        return try await inner.apply(event, to: request, workerID: workerID, changes: changes, detail: detail)
    }
    func complete(
        _ request: DetectionRequest, on event: RequestEvent, workerID: String?, lease: Duration, result: RequestChanges, postProcessors: [String]
    ) async throws -> CompletionWrite {
        try check(.other)
        return try await inner.complete(request, on: event, workerID: workerID, lease: lease, result: result, postProcessors: postProcessors)
    }
    func findIdenticalMedia(
        _ request: DetectionRequest, sha256: String, within: Duration, mayReuse: Bool, workerID: String
    ) async throws -> IdenticalMediaFinding {
        try check(.other)
        return try await inner.findIdenticalMedia(request, sha256: sha256, within: within, mayReuse: mayReuse, workerID: workerID)
    }
    func detectedVerdict(of id: Int) async throws -> PostgresJSON? {
        try check(.other)
        return try await inner.detectedVerdict(of: id)
    }
    func adopt(_ uuid: String, for request: DetectionRequest, workerID: String?, via: String, callbackSecretHash: String?) async throws -> Bool {
        try check(.other)
        return try await inner.adopt(uuid, for: request, workerID: workerID, via: via, callbackSecretHash: callbackSecretHash)
    }
    func markSubmitStarted(_ request: DetectionRequest, workerID: String, path: SubmitPath, callbackSecretHash: String?) async throws -> Bool {
        try check(.markSubmitStarted)
        return try await inner.markSubmitStarted(request, workerID: workerID, path: path, callbackSecretHash: callbackSecretHash)
    }
    func storeSecureUpload(_ token: SecureUploadToken, for request: DetectionRequest, workerID: String) async throws {
        try check(.other)
        try await inner.storeSecureUpload(token, for: request, workerID: workerID)
    }
    func moveAnswerOwed(of request: DetectionRequest, workerID: String, to since: Date) async throws -> Bool {
        try check(.other)
        return try await inner.moveAnswerOwed(of: request, workerID: workerID, to: since)
    }
    func remoteUUIDsHeld(_ uuids: [String], byOtherThan id: Int) async throws -> Set<String> {
        try check(.other)
        return try await inner.remoteUUIDsHeld(uuids, byOtherThan: id)
    }
    func claimDuePolls(workerID: String, limit: Int, lease: Duration) async throws -> [DetectionRequest] {
        try check(.other)
        return try await inner.claimDuePolls(workerID: workerID, limit: limit, lease: lease)
    }
    func schedulePoll(_ request: DetectionRequest, workerID: String, at: Date, counting: Bool) async throws -> Bool {
        try check(.other)
        return try await inner.schedulePoll(request, workerID: workerID, at: at, counting: counting)
    }
    func request(id: Int) async throws -> DetectionRequest? { try await inner.request(id: id) }
    func awaitingCallback(id: Int) async throws -> (DetectionRequest, [String])? { try await inner.awaitingCallback(id: id) }
    func stored(id: Int) async throws -> StoredRequest? { try await inner.stored(id: id) }
}
