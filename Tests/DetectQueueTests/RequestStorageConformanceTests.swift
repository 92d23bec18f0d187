@testable import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// One suite for both request stores: `RequestStore` on PostgreSQL and `InMemoryRequestStore` must do the same
/// thing for every call a worker makes, so that tests of the worker's policy may run on the second.
@Suite("Request storage: PostgreSQL and in memory alike", .stopsWhatItStarts)
struct RequestStorageConformanceTests {
    enum Kind: String, CustomTestStringConvertible, CaseIterable {
        case memory, postgres

        var testDescription: String { rawValue }

        /// The kinds this run can test: PostgreSQL where a server is configured (always in CI).
        static var available: [Kind] { TestDatabase.isEnabled ? [.memory, .postgres] : [.memory] }

        func makeStore() async throws -> any RequestStorage {
            switch self {
            case .memory:
                return InMemoryRequestStore()
            case .postgres:
                let pool = PostgresConnectionPool(configuration: try await TestDatabase.createMigratedDatabase(), maximumConnections: 4)
                TestResources.stopAtEnd { await pool.close() }
                return RequestStore(pool: pool)
            }
        }
    }

    func enqueue(
        _ store: any RequestStorage, _ url: String, priority: Int = 0, runAt: Date? = nil, maxAttempts: Int? = nil, mediaSHA256: String? = nil,
        intelligence: Bool = false
    ) async throws -> Int {
        var request = NewRequest(media: .url(url))
        request.priority = priority
        request.runAt = runAt
        request.maxAttempts = maxAttempts
        request.mediaSHA256 = mediaSHA256
        request.intelligence = intelligence
        return try await store.enqueue([request])[0]
    }

    @Test(arguments: Kind.available)
    func claimsTheHighestPriorityFirstNothingEarlyAndNothingTwice(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let plain = try await enqueue(store, "https://cdn.example.com/plain.wav")
        let urgent = try await enqueue(store, "https://cdn.example.com/urgent.wav", priority: 5)
        let later = try await enqueue(store, "https://cdn.example.com/later.wav", runAt: Date().addingTimeInterval(3600))
        let first = try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30))
        #expect(first.map(\.id) == [urgent])
        #expect(first.first?.state == .submitting && first.first?.attempt == 1 && first.first?.lockedBy == "w1")
        #expect(try await store.claim(workerID: "w2", limit: 10, lease: .seconds(30)).map(\.id) == [plain])
        #expect(try await store.claim(workerID: "w3", limit: 10, lease: .seconds(30)).isEmpty, "held or not due: \(later)")
        #expect(try await store.stored(id: later)?.state == .queued)
    }

    @Test(arguments: Kind.available)
    func aWorkerThatLostItsLeaseWritesNothing(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let id = try await enqueue(store, "https://cdn.example.com/a.wav")
        let claimed = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        let retryAt = Date().addingTimeInterval(60)
        let failure = RequestEvent.failedRetryably(reason: "HTTP 503", retryAt: retryAt)
        #expect(try await !store.apply(failure, to: claimed, workerID: "w2", changes: .init(), detail: nil))
        #expect(try await store.apply(failure, to: claimed, workerID: "w1", changes: .init(), detail: nil))
        #expect(try await !store.apply(failure, to: claimed, workerID: "w1", changes: .init(), detail: nil), "it moved on")
        let stored = try #require(try await store.stored(id: id))
        #expect(stored.state == .retrying && stored.errorMessage == "HTTP 503" && stored.lockedBy == nil && stored.attempt == 1)
        #expect(abs(stored.runAt.timeIntervalSince(retryAt)) < 0.01)
    }

    @Test(arguments: Kind.available)
    func aCompletionStoresTheVerdictOnceWithItsPostTasks(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let id = try await enqueue(store, "https://cdn.example.com/fake.wav")
        let claimed = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        var result = RequestChanges()
        result.remoteUUID = "u-\(id)"
        result.label = "fake"
        result.isFake = true
        result.result = PostgresJSON(text: #"{"uuid": "u-\#(id)", "status": "completed", "metrics": {"label": "fake"}}"#)
        let written = try await store.complete(claimed, workerID: "w1", lease: .seconds(30), result: result, postProcessors: ["alert", "archive"])
        guard case .completed(_, let postTasks, _) = written else { Issue.record("not completed: \(written)"); return }
        #expect(Set(postTasks.map(\.processor)) == ["alert", "archive"] && postTasks.allSatisfy { $0.state == .running })
        #expect(try await !store.complete(claimed, workerID: "w1", lease: .seconds(30), result: result, postProcessors: ["alert"]).completed)
        let stored = try #require(try await store.stored(id: id))
        #expect(stored.state == .completed && stored.completed && stored.remoteUUID == "u-\(id)" && stored.lockedBy == nil)
        #expect(stored.label == "fake" && stored.isFake == true && stored.unansweredSince == nil && stored.postTasks == ["alert", "archive"])
    }

    /// A callback for an earlier attempt's detection, arriving while a newer attempt that marked its send with a
    /// new secret is sending: adopting it then would store a uuid while the newer submission goes out, billed a
    /// second time after the uuid was stored (seen once in 6,076 requests of a long chaos run). It is adopted only
    /// while the callback's secret is the request's current one.
    @Test(arguments: Kind.available)
    func aCallbackForAnEarlierAttemptIsNotAdoptedWhileANewerOneIsSending(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let id = try await enqueue(store, "https://cdn.example.com/late-callback.wav")
        let claimed = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(try await store.markSubmitStarted(claimed, workerID: "w1", path: .url, callbackSecretHash: "hash-of-attempt-1"))
        #expect(try await store.markSubmitStarted(claimed, workerID: "w1", path: .url, callbackSecretHash: "hash-of-attempt-2"))
        #expect(try await !store.adopt("u-early", for: claimed, workerID: nil, via: "callback", callbackSecretHash: "hash-of-attempt-1"),
                "an earlier attempt's callback waits while the newer attempt may be sending")
        #expect(try await store.stored(id: id)?.state == .submitting)
        #expect(try await store.adopt("u-current", for: claimed, workerID: nil, via: "callback", callbackSecretHash: "hash-of-attempt-2"),
                "the current attempt's own callback is adopted: it names the detection being sent")
        #expect(try await store.stored(id: id)?.remoteUUID == "u-current")
    }

    @Test(arguments: Kind.available)
    func anAdoptedDetectionBelongsToOneRequest(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let first = try await enqueue(store, "https://cdn.example.com/1.wav")
        let second = try await enqueue(store, "https://cdn.example.com/2.wav")
        let claimed = try await store.claim(workerID: "w1", limit: 2, lease: .seconds(30))
        #expect(claimed.map(\.id) == [first, second])
        #expect(try await store.adopt("u-1", for: claimed[0], workerID: "w1", via: "list"))
        #expect(try await !store.adopt("u-1", for: claimed[1], workerID: "w1", via: "list"), "another request holds it")
        #expect(try await store.remoteUUIDsHeld(["u-1", "u-2"], byOtherThan: second) == ["u-1"])
        #expect(try await store.remoteUUIDsHeld(["u-1"], byOtherThan: first).isEmpty)
        let adopted = try #require(try await store.stored(id: first))
        #expect(adopted.state == .awaitingResult && adopted.remoteUUID == "u-1" && adopted.lockedBy == nil)
        #expect(try await store.stored(id: second)?.state == .submitting)
    }

    @Test(arguments: Kind.available)
    func anExpiredLeaseIsTakenBackAndTheLastAttemptFails(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let retried = try await enqueue(store, "https://cdn.example.com/r.wav")
        let spent = try await enqueue(store, "https://cdn.example.com/s.wav", maxAttempts: 1)
        _ = try await store.claim(workerID: "dead", limit: 2, lease: .milliseconds(50))
        var report = RescueReport()
        var rescuedBy: Date?
        try await waitUntil("both leases expire and are taken back") {
            let started = Date()
            let round = try await store.rescueExpiredLeases(limit: 10, retryDelay: .seconds(1), sendGrace: .seconds(30))
            if round.retrying.contains(retried) { rescuedBy = started }
            report.retrying += round.retrying
            report.failed += round.failed
            return report.retrying.count + report.failed.count == 2
        }
        // The last attempt's worker may have reached the API: its detection is looked for before the request fails.
        #expect(report.retrying.sorted() == [retried, spent] && report.failed.isEmpty)
        let stored = try #require(try await store.stored(id: retried))
        #expect(stored.state == .retrying && stored.lockedBy == nil)
        #expect(stored.errorMessage == "the worker dead stopped renewing its lease during attempt 1; retrying")
        #expect(try await store.stored(id: spent)?.errorMessage?.hasSuffix("is looked for before the request fails") == true)
        // Both claims may have been sent by a worker that stalled rather than died: they wait out the send's grace.
        // (Counted from the rescue that took it back, not from now: on a loaded machine seconds may pass between.)
        let stalled = try #require(try await store.stored(id: retried)).runAt
        let rescue = try #require(rescuedBy)
        #expect(stalled.timeIntervalSince(rescue) > 25, "the next attempt comes after the grace, not after the 1 s delay: \(stalled)")
        #expect(try await store.rescueExpiredLeases(limit: 10, retryDelay: .seconds(1), sendGrace: .seconds(30)) == RescueReport(), "nothing twice")
    }

    @Test(arguments: Kind.available)
    func onlyTheLeaseHolderMarksASubmissionAndItsSecretsAreKept(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let id = try await enqueue(store, "https://cdn.example.com/m.wav")
        let claimed = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(try await !store.markSubmitStarted(claimed, workerID: "w2", path: .url, callbackSecretHash: "h1"))
        #expect(try await store.markSubmitStarted(claimed, workerID: "w1", path: .multipart, callbackSecretHash: "h1"))
        #expect(try await store.markSubmitStarted(claimed, workerID: "w1", path: .multipart, callbackSecretHash: "h2"))
        let stored = try #require(try await store.stored(id: id))
        #expect(stored.submitPath == .multipart && stored.submitStarted)
        #expect(Set(try #require(try await store.awaitingCallback(id: id)).1) == ["h1", "h2"], "an earlier attempt's secret stays valid")
    }

    @Test(arguments: Kind.available)
    func anAcceptedRequestIsPolledByOneWorkerAtATime(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let id = try await enqueue(store, "https://cdn.example.com/p.wav")
        let claimed = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        var changes = RequestChanges()
        changes.runAt = Date().addingTimeInterval(-1)
        #expect(try await store.apply(.accepted(remoteUUID: "u-p"), to: claimed, workerID: "w1", changes: changes, detail: nil))
        let polled = try await store.claimDuePolls(workerID: "w1", limit: 5, lease: .seconds(30))
        #expect(polled.map(\.id) == [id] && polled.first?.remoteUUID == "u-p")
        #expect(try await store.claimDuePolls(workerID: "w2", limit: 5, lease: .seconds(30)).isEmpty, "held by w1")
        #expect(try await store.schedulePoll(polled[0], workerID: "w1", at: Date().addingTimeInterval(3600), counting: true))
        #expect(try await store.claimDuePolls(workerID: "w2", limit: 5, lease: .seconds(30)).isEmpty, "not due")
        #expect(try await store.request(id: id)?.pollCount == 1)
    }
}

/// CONTRACT section 9 on both stores: the lookup of identical media, the hand-back of a waiting request, its
/// completion by its source's, and its release when the source fails.
extension RequestStorageConformanceTests {
    static let hash = String(repeating: "c", count: 64)

    func enqueueIdentical(_ store: any RequestStorage, _ url: String, intelligence: Bool = false) async throws -> Int {
        try await enqueue(store, url, mediaSHA256: Self.hash, intelligence: intelligence)
    }

    @Test(arguments: Kind.available)
    func identicalMediaIsSentOnceWaitedForAndThenReused(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let first = try await enqueueIdentical(store, "https://cdn.example.com/a.mp4")
        let twin = try await enqueueIdentical(store, "https://mirror.example.com/a.mp4")
        let other = try await enqueueIdentical(store, "https://cdn.example.com/a.mp4", intelligence: true)
        let claimed = Dictionary(uniqueKeysWithValues: try await store.claim(workerID: "w1", limit: 3, lease: .seconds(30)).map { ($0.id, $0) })
        let (a, b, c) = (try #require(claimed[first]), try #require(claimed[twin]), try #require(claimed[other]))
        #expect(try await store.findIdenticalMedia(a, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w2") == .movedOn)
        // Looked up first, the first finds its twin in flight; the twin then finds it waiting, not in flight.
        #expect(try await store.findIdenticalMedia(a, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .wait(inFlight: twin))
        #expect(try await store.findIdenticalMedia(b, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send)
        #expect(try await store.findIdenticalMedia(c, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send,
                "other options, another detection")
        var waiting = RequestChanges()
        waiting.waitingFor = twin
        #expect(try await store.apply(.waitingForIdenticalMedia(inFlight: twin, answerOwedSince: nil), to: a, workerID: "w1", changes: waiting, detail: nil))
        let parked = try #require(try await store.stored(id: first))
        #expect(parked.state == .queued && parked.waitingFor == twin && parked.attempt == 0 && parked.runAt > Date())

        var result = RequestChanges()
        result.remoteUUID = "u-twin"
        result.label = "fake"
        result.isFake = true
        result.result = PostgresJSON(text: #"{"uuid": "u-twin", "status": "completed", "metrics": {"label": "fake"}}"#)
        let written = try await store.complete(b, on: .completed, workerID: "w1", lease: .seconds(30), result: result, postProcessors: ["alert"])
        guard case .completed(_, _, let reusedBy) = written else { Issue.record("not completed: \(written)"); return }
        #expect(reusedBy == 1)
        let reused = try #require(try await store.stored(id: first))
        #expect(reused.state == .completed && reused.submitPath == .reused && reused.reusedFrom == twin && reused.waitingFor == nil)
        #expect(reused.label == "fake" && reused.isFake == true && reused.remoteUUID == nil && reused.postTasks == ["alert"])

        let later = try await enqueueIdentical(store, "https://cdn.example.com/again.mp4")
        let d = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(d.id == later)
        #expect(try await store.findIdenticalMedia(d, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .reuse(source: twin),
                "the detection itself, not the request that reused it")
        #expect(try await store.findIdenticalMedia(d, sha256: Self.hash, within: .seconds(3_600), mayReuse: false, workerID: "w1") == .send)
        #expect(try await store.detectedVerdict(of: twin) != nil)
        #expect(try await store.detectedVerdict(of: first) == nil, "a reused verdict is not passed on")
    }

    /// Two identical requests claimed together by `w1`, the second looked up first: it is marked waiting for the first.
    func twoIdenticalClaimedTheSecondWaiting(_ kind: Kind) async throws -> (any RequestStorage, DetectionRequest, DetectionRequest) {
        let store = try await kind.makeStore()
        let first = try await enqueueIdentical(store, "https://cdn.example.com/a.mp4")
        let second = try await enqueueIdentical(store, "https://cdn.example.com/b.mp4")
        let claimed = Dictionary(uniqueKeysWithValues: try await store.claim(workerID: "w1", limit: 2, lease: .seconds(30)).map { ($0.id, $0) })
        let (a, b) = (try #require(claimed[first]), try #require(claimed[second]))
        #expect(try await store.findIdenticalMedia(b, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .wait(inFlight: first))
        return (store, a, b)
    }

    @Test(arguments: Kind.available)
    func whenTheOneInFlightFailsTheWaitingOneIsClaimableAtOnce(kind: Kind) async throws {
        let (store, a, b) = try await twoIdenticalClaimedTheSecondWaiting(kind)
        let (first, second) = (a.id, b.id)
        var waiting = RequestChanges()
        waiting.waitingFor = first
        #expect(try await store.apply(.waitingForIdenticalMedia(inFlight: first, answerOwedSince: nil), to: b, workerID: "w1", changes: waiting, detail: nil))
        #expect(try await store.findIdenticalMedia(a, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send)
        #expect(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).isEmpty, "the waiting one is not due")
        #expect(try await store.apply(.failedPermanently(reason: "HTTP 400"), to: a, workerID: "w1", changes: .init(), detail: nil))
        let released = try #require(try await store.stored(id: second))
        #expect(released.state == .queued && released.waitingFor == nil && released.runAt <= Date())
        let again = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(again.id == second)
        #expect(try await store.findIdenticalMedia(again, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send)
    }

    @Test(arguments: Kind.available)
    func aHandBackFindingItsTwinOutOfFlightChangesNothing(kind: Kind) async throws {
        let (store, a, b) = try await twoIdenticalClaimedTheSecondWaiting(kind)
        let (first, second) = (a.id, b.id)
        // The twin ends before the hand-back is written: the hand-back must not leave the request waiting for nothing.
        #expect(try await store.apply(.cancelled, to: a, workerID: "w1", changes: .init(), detail: nil))
        var waiting = RequestChanges()
        waiting.waitingFor = first
        #expect(try await !store.apply(.waitingForIdenticalMedia(inFlight: first, answerOwedSince: nil), to: b, workerID: "w1", changes: waiting, detail: nil))
        #expect(try await store.stored(id: second)?.state == .submitting)
        #expect(try await store.findIdenticalMedia(b, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send)
    }

    @Test(arguments: Kind.available)
    func aRequestGivenBackWhileItsAnswerIsOwedIsStillInFlight(kind: Kind) async throws {
        let store = try await kind.makeStore()
        let first = try await enqueueIdentical(store, "https://cdn.example.com/a.mp4")
        let a = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(try await store.findIdenticalMedia(a, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .send)
        // Sent, its answer lost, and given back to wait for the callback that may name its detection (zero retention).
        var until = RequestChanges()
        until.runAt = Date().addingTimeInterval(60)
        #expect(try await store.apply(.released(answerOwedSince: Date()), to: a, workerID: "w1", changes: until, detail: nil))
        let second = try await enqueueIdentical(store, "https://cdn.example.com/b.mp4")
        let b = try #require(try await store.claim(workerID: "w1", limit: 1, lease: .seconds(30)).first)
        #expect(b.id == second)
        #expect(try await store.findIdenticalMedia(b, sha256: Self.hash, within: .seconds(3_600), mayReuse: true, workerID: "w1") == .wait(inFlight: first),
                "its detection may still be on its way: a second would be billed")
    }
}
