import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// A migrated database of its own and a store whose sessions name `workerID` in the event history.
struct StoreFixture {
    let configuration: PostgresConfiguration
    let admin: PostgresConnectionPool

    static func make() async throws -> StoreFixture {
        let configuration = try await TestDatabase.createMigratedDatabase()
        return StoreFixture(configuration: configuration, admin: PostgresConnectionPool(configuration: configuration, maximumConnections: 4))
    }

    func store(worker: String) -> RequestStore {
        var configuration = configuration
        configuration.applicationName = "detectq worker \(worker)"
        return RequestStore(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 2))
    }

    @discardableResult
    func insert(_ count: Int = 1, priority: Int = 0, runAt: String = "now()", maxAttempts: Int = 8) async throws -> [Int] {
        try await admin.query(PostgresQuery(sql: """
            INSERT INTO detectq.requests (media_url, priority, run_at, max_attempts)
            SELECT 'https://cdn.example.com/' || n || '.wav', $1, \(runAt), $3 FROM generate_series(1, $2) AS n
            RETURNING id
            """, parameters: [priority, count, maxAttempts])).map { try $0.decode("id", as: Int.self) }
    }

    func state(_ id: Int) async throws -> (RequestState, String?, String?) {
        let row = try await admin.query("SELECT state, locked_by, error_message FROM detectq.requests WHERE id = \(id)")[0]
        return (try row.decode("state"), try row.decode("locked_by"), try row.decode("error_message"))
    }
}

@Suite("Claiming, leases and rescue", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct RequestStoreTests {
    @Test func claimsTheHighestPriorityDueRequestsFirst() async throws {
        let fixture = try await StoreFixture.make()
        let low = try await fixture.insert(2, priority: 0)
        let high = try await fixture.insert(2, priority: 5)
        try await fixture.insert(3, priority: 9, runAt: "now() + interval '1 hour'")
        let store = fixture.store(worker: "worker-a")
        let claimed = try await store.claim(workerID: "worker-a", limit: 3, lease: .seconds(30))
        #expect(Set(claimed.map(\.id)) == Set(high + [low[0]]))
        #expect(claimed.allSatisfy { $0.state == .submitting && $0.attempt == 1 && $0.lockedBy == "worker-a" })
        #expect(claimed.first?.media == .url("https://cdn.example.com/1.wav"))
        let rest = try await store.claim(workerID: "worker-a", limit: 10, lease: .seconds(30))
        #expect(rest.map(\.id) == [low[1]], "requests not yet due are not claimed")
        let events = try await fixture.admin.query("""
            SELECT worker_id FROM detectq.request_events WHERE request_id = \(high[0]) AND to_state = 'submitting'
            """)
        #expect(try events.map { try $0.decode("worker_id", as: String?.self) } == ["worker-a"])
    }

    @Test func concurrentClaimersNeverTakeTheSameRequest() async throws {
        let fixture = try await StoreFixture.make()
        let ids = try await fixture.insert(300)
        let claims = try await withThrowingTaskGroup(of: [Int].self) { group in
            for worker in ["w1", "w2", "w3"] {
                group.addTask {
                    let store = fixture.store(worker: worker)
                    var mine: [Int] = []
                    while true {
                        let batch = try await store.claim(workerID: worker, limit: 7, lease: .seconds(30))
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: [[Int]]()) { $0.append($1) }
        }
        let all = claims.flatMap { $0 }
        #expect(all.count == 300 && Set(all) == Set(ids), "each request claimed exactly once")
        #expect(claims.allSatisfy { !$0.isEmpty }, "the work spread over the claimers: \(claims.map(\.count))")
    }

    @Test func heartbeatsExtendOnlyTheWorkersOwnLeases() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(2)
        let a = fixture.store(worker: "a")
        let b = fixture.store(worker: "b")
        let mine = try await a.claim(workerID: "a", limit: 1, lease: .seconds(30))
        let theirs = try await b.claim(workerID: "b", limit: 1, lease: .seconds(30))
        let held = try await a.heartbeat(workerID: "a", ids: (mine + theirs).map(\.id), lease: .seconds(60))
        #expect(held == Set(mine.map(\.id)))
    }

    @Test func theRescuerRetriesExpiredLeasesAndFencesTheOldOwner() async throws {
        let fixture = try await StoreFixture.make()
        let ids = try await fixture.insert(3, maxAttempts: 1) + fixture.insert(1, maxAttempts: 5)
        let dead = fixture.store(worker: "dead-worker")
        let claimed = try await dead.claim(workerID: "dead-worker", limit: 4, lease: .milliseconds(200))
        #expect(claimed.count == 4)
        let finished = try #require(claimed.first { $0.id == ids[0] })
        #expect(try await dead.apply(.failedPermanently(reason: "the API rejected it"), to: finished, workerID: "dead-worker"))
        try await Task.sleep(for: .milliseconds(400))

        let rescuer = fixture.store(worker: "rescuer")
        let report = try await rescuer.rescueExpiredLeases(sendGrace: .zero)
        // The claims may have reached the API: on the last attempt, the detection a lost answer may have left is
        // looked for (by one more claim that never submits) before the request fails.
        #expect(report.failed.isEmpty)
        #expect(Set(report.retrying) == [ids[1], ids[2], ids[3]])
        #expect(try await fixture.state(ids[1]).2?.contains("looked for before the request fails") == true)
        // That search's own lease lost, past the last attempt, fails the request.
        try await fixture.admin.query("UPDATE detectq.requests SET run_at = now() - interval '1 second' WHERE id = \(ids[1])")
        let searching = try await dead.claim(workerID: "dead-worker", limit: 1, lease: .milliseconds(200))
        #expect(searching.first.map { $0.attempt > $0.maxAttempts } == true)
        try await Task.sleep(for: .milliseconds(400))
        let again = try await rescuer.rescueExpiredLeases(sendGrace: .zero)
        #expect(again.failed == searching.map(\.id), "a lost lease past the last attempt fails the request")
        let (state, lockedBy, reason) = try await fixture.state(ids[3])
        #expect(state == .retrying && lockedBy == nil)
        #expect(reason?.contains("dead-worker stopped renewing its lease") == true)
        #expect(try await fixture.state(ids[0]).0 == .failed, "a request that moved on is left alone")
        #expect(try await fixture.state(ids[0]).2 == "the API rejected it")

        let late = try #require(claimed.first { $0.id == ids[3] })
        #expect(try await dead.apply(.completed, to: late, workerID: "dead-worker") == false, "the old owner is fenced off")
        #expect(try await rescuer.rescueExpiredLeases(sendGrace: .zero) == RescueReport(), "nothing twice")
    }

    @Test func acceptanceStoresTheRemoteUUIDAndReleasesTheLease() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(2)
        let store = fixture.store(worker: "w")
        let claimed = try await store.claim(workerID: "w", limit: 2, lease: .seconds(30))
        var changes = RequestChanges()
        changes.submitPath = .url
        changes.runAt = Date().addingTimeInterval(120)
        #expect(try await store.apply(.accepted(remoteUUID: "uuid-1"), to: claimed[0], workerID: "w", changes: changes))
        let accepted = try #require(try await store.request(id: claimed[0].id))
        #expect(accepted.state == .awaitingResult && accepted.remoteUUID == "uuid-1" && accepted.lockedBy == nil)
        #expect(accepted.acceptedAt != nil)

        #expect(try await store.apply(.released(answerOwedSince: nil), to: claimed[1], workerID: "w"))
        let released = try #require(try await store.request(id: claimed[1].id))
        #expect(released.state == .queued && released.attempt == 0, "a released claim does not spend an attempt")

        try await fixture.admin.query("UPDATE detectq.requests SET state = 'cancelled' WHERE id = \(accepted.id)")
        #expect(try await store.apply(.completed, to: accepted, workerID: "w") == false, "a cancelled request stays cancelled")
    }
}
