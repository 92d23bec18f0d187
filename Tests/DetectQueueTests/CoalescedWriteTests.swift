@testable import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport

@Suite("Completions, submission marks, post-task ends and budget slots are written in batches", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct CoalescedWriteTests {
    /// The result columns of a finished real detection.
    func result(_ uuid: String) throws -> RequestChanges {
        let item = try DetectionItem(json: #"{"uuid":"\#(uuid)","status":"completed","media_type":"audio","metrics":{"label":"real","score":["0.1"],"aggregated_score":"0.1"}}"#)
        var changes = RequestChanges()
        changes.remoteUUID = item.uuid
        changes.label = item.label
        changes.isFake = item.isFake
        changes.aggregatedScore = item.aggregatedScore
        changes.result = PostgresJSON(text: item.rawJSON)
        return changes
    }

    @Test func twoHundredConcurrentCompletionsLandInFarFewerStatements() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(200)
        let store = fixture.store(worker: "w1")
        RunningServices.start(store.writers)
        let claimed = try await store.claim(workerID: "w1", limit: 100, lease: .seconds(60))
            + store.claim(workerID: "w1", limit: 100, lease: .seconds(60))
        #expect(claimed.count == 200)
        // A lock held elsewhere stalls the first writes, as a busy database would; the rest gather meanwhile.
        let blocker = try await PostgresConnection.connect(fixture.configuration)
        try await blocker.query("BEGIN")
        try await blocker.query("LOCK TABLE detectq.requests IN SHARE MODE")
        let completing = Task {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for request in claimed {
                    let changes = try result("uuid-\(request.id)")
                    group.addTask { try await store.complete(request, workerID: "w1", result: changes, postProcessors: ["a", "b"]).completed }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
        }
        try await waitUntil("a completing statement waits on the lock") {
            try await fixture.admin.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                """)[0].decode("n", as: Int.self) > 0
        }
        try await blocker.query("COMMIT")
        await blocker.close()
        let outcomes = try await completing.value
        #expect(outcomes.allSatisfy { $0 } && outcomes.count == 200)
        // now() is the transaction's start, so each completing statement leaves one distinct updated_at.
        let writes = try await fixture.admin.query("""
            SELECT count(DISTINCT updated_at)::int8 AS n FROM detectq.requests WHERE state = 'completed'
            """)[0].decode("n", as: Int.self)
        #expect(writes < 20, "200 completions took \(writes) statements; one each would be 200")
        let rows = try await fixture.admin.query("""
            SELECT count(*) FILTER (WHERE state = 'completed' AND result->>'uuid' = 'uuid-' || id AND locked_by IS NULL)::int8 AS done,
                   (SELECT count(*) FROM detectq.post_tasks)::int8 AS tasks,
                   (SELECT count(*) FROM detectq.request_events WHERE to_state = 'completed' AND worker_id = 'w1')::int8 AS events
            FROM detectq.requests
            """)[0]
        #expect(try rows.decode("done", as: Int.self) == 200)
        #expect(try rows.decode("tasks", as: Int.self) == 400, "two post-tasks each, written with the completion")
        #expect(try rows.decode("events", as: Int.self) == 200, "the history records every completion")
    }

    /// A worker's lease renewal and its completion batch over the same requests, each stalled behind a lock on
    /// the middle one, wait for each other and both succeed: neither locks in the order it was handed the ids (a
    /// batch of completions comes in the order the detections finished), so they never deadlock.
    @Test func aCompletionBatchAndALeaseRenewalOverTheSameRequestsNeverDeadlock() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(3)
        let store = fixture.store(worker: "w1")
        let claimed = try await store.claim(workerID: "w1", limit: 3, lease: .seconds(60)).sorted { $0.id < $1.id }
        #expect(claimed.count == 3)
        let blocker = try await PostgresConnection.connect(fixture.configuration)
        try await blocker.query("BEGIN")
        try await blocker.query("SELECT id FROM detectq.requests WHERE id = \(claimed[1].id) FOR UPDATE")
        let lockWaits = {
            try await fixture.admin.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                """)[0].decode("n", as: Int.self)
        }
        let batch = try claimed.reversed().map { request in
            RequestStore.Completion(
                request: request, event: .completed, workerID: "w1", lease: .seconds(60), result: try result("uuid-\(request.id)"), postProcessors: ["p"]
            )
        }
        let completing = Task { try await RequestStore.writeCompletions(batch, on: store.pool) }
        try await waitUntil("the completion batch waits on the middle request") { try await lockWaits() == 1 }
        let renewing = Task { try await store.heartbeat(workerID: "w1", ids: claimed.map(\.id), lease: .seconds(60)) }
        try await waitUntil("the lease renewal waits too") { try await lockWaits() == 2 }
        try await blocker.query("COMMIT")
        await blocker.close()
        let written = try await completing.value
        let stillHeld = try await renewing.value
        #expect(written.allSatisfy(\.completed) && written.count == 3)
        #expect(stillHeld.isEmpty, "the renewal came after the completions, which gave the leases up")
        #expect(try await fixture.admin.query("SELECT count(*)::int8 AS n FROM detectq.post_tasks")[0].decode("n", as: Int.self) == 3)
    }

    @Test func oneBadCompletionDoesNotFailTheOthersInItsBatch() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(20)
        let store = fixture.store(worker: "w1")
        RunningServices.start(store.writers)
        let claimed = try await store.claim(workerID: "w1", limit: 20, lease: .seconds(60))
        let poisoned = claimed[7].id
        let outcomes = try await withThrowingTaskGroup(of: (Int, Bool?).self) { group in
            for request in claimed {
                var changes = try result("uuid-\(request.id)")
                if request.id == poisoned { changes.result = nil }
                group.addTask {
                    (request.id, try? await store.complete(request, workerID: "w1", result: changes, postProcessors: []).completed)
                }
            }
            return try await group.reduce(into: [Int: Bool?]()) { $0[$1.0] = $1.1 }
        }
        #expect(outcomes[poisoned]! == nil, "a completion without a result is refused by the database")
        #expect(outcomes.filter { $0.key != poisoned }.allSatisfy { $0.value == true })
        #expect(try await fixture.state(poisoned).0 == .submitting)
        #expect(try await fixture.admin.query("SELECT count(*)::int8 AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self) == 19)
    }

    @Test func aCompletionForARequestThatMovedOnChangesNothing() async throws {
        let fixture = try await StoreFixture.make()
        try await fixture.insert(2)
        let store = fixture.store(worker: "w1")
        RunningServices.start(store.writers)
        let claimed = try await store.claim(workerID: "w1", limit: 2, lease: .seconds(60))
        try await fixture.admin.query("UPDATE detectq.requests SET state = 'cancelled', locked_by = NULL, locked_until = NULL WHERE id = \(claimed[0].id)")
        async let first = store.complete(claimed[0], workerID: "w1", result: try result("a"), postProcessors: ["p"])
        async let second = store.complete(claimed[1], workerID: "someone-else", result: try result("b"), postProcessors: ["p"])
        #expect(try await first.completed == false, "cancelled meanwhile")
        #expect(try await second.completed == false, "another worker's lease")
        #expect(try await fixture.admin.query("SELECT count(*)::int8 AS n FROM detectq.post_tasks")[0].decode("n", as: Int.self) == 0)
    }

    /// Successful post-task ends go in batches too: each is written only where its worker still holds the
    /// lease, and only the written ones send their notifications, all of them.
    @Test func postTaskEndsLandInFewStatementsAndOnlyWrittenOnesNotify() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let admin = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        let request = try await admin.query("INSERT INTO detectq.requests (media_url) VALUES ('https://a/b.wav') RETURNING id")[0]
            .decode("id", as: Int.self)
        try await admin.query("""
            INSERT INTO detectq.post_tasks (request_id, processor) SELECT \(request), 'p' || n FROM generate_series(1, 40) AS n
            """)
        let store = PostTaskStore(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 4))
        RunningServices.start(store.writers)
        let tasks = try await store.claim(workerID: "w1", limit: 40, lease: .seconds(60))
        #expect(tasks.count == 40)
        let takenOver = tasks[11].id
        try await admin.query("UPDATE detectq.post_tasks SET locked_by = 'w2' WHERE id = \(takenOver)")
        var events = PostgresNotificationListener.listen(configuration, channels: ["detectq_test_batch"]).makeAsyncIterator()
        #expect(await events.next() == .listening)

        let blocker = try await PostgresConnection.connect(configuration)
        try await blocker.query("BEGIN")
        try await blocker.query("LOCK TABLE detectq.post_tasks IN SHARE MODE")
        let ending = Task {
            try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for task in tasks {
                    let notice = PostgresNotice(channel: "detectq_test_batch", payload: "task-\(task.id)")
                    group.addTask { (task.id, try await store.complete(task, workerID: "w1", notifications: [notice])) }
                }
                return try await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
            }
        }
        try await waitUntil("an ending statement waits on the lock") {
            try await admin.query("""
                SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                """)[0].decode("n", as: Int.self) > 0
        }
        try await blocker.query("COMMIT")
        await blocker.close()
        let outcomes = try await ending.value
        #expect(outcomes.filter(\.value).count == 39 && outcomes[takenOver] == false)
        let statements = try await admin.query("""
            SELECT count(DISTINCT completed_at)::int8 AS n FROM detectq.post_tasks WHERE state = 'completed'
            """)[0].decode("n", as: Int.self)
        #expect(statements < 10, "39 ends took \(statements) statements; one each would be 39")
        #expect(try await admin.query("SELECT state::text AS s FROM detectq.post_tasks WHERE id = \(takenOver)")[0].decode("s", as: String.self) == "running")

        try await admin.query("SELECT pg_notify('detectq_test_batch', 'sentinel')")
        var heard: [String] = []
        while case .notification(let notification)? = await events.next(), notification.payload != "sentinel" {
            heard.append(notification.payload)
        }
        #expect(Set(heard) == Set(tasks.map { "task-\($0.id)" }).subtracting(["task-\(takenOver)"]) && heard.count == 39)
    }

    @Test func concurrentCallersGetDistinctSlotsOneIntervalApart() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let budget = APIBudget(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 2), ratePerSecond: 100)
        RunningServices.start(budget.writers)
        let slots = try await withThrowingTaskGroup(of: Date.self) { group in
            for _ in 0..<40 { group.addTask { try await budget.acquire().slot } }
            return try await group.reduce(into: [Date]()) { $0.append($1) }
        }.sorted()
        #expect(Set(slots).count == 40)
        let gaps = zip(slots.dropFirst(), slots).map { $0.timeIntervalSince($1) }
        #expect(gaps.allSatisfy { $0 >= 0.0099 }, "at 100/s no two slots are closer than 10 ms: \(gaps.min() ?? 0)")
    }

    /// A claim spends its first API slot at once (the claim reserved it), so the wait in which a request can be
    /// cancelled is the shared pause of a throttle: after it the request is checked again before it is sent, and
    /// not sent. Two 429s first, so that the pause (1 s, then 2 s) outlasts the claim's freshness for certain.
    @Test func aRequestCancelledWhileItWaitsForTheSharedPauseIsNotSent() async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/third.wav", "sync"])
        await harness.simulator.state.setThrottled(true)
        let log = CapturedLog()
        let worker = harness.startWorker(try harness.configuration(environment: [:]), log: log)
        try await waitUntil("the API throttled the request twice") { await harness.simulator.state.snapshot().throttledRequests >= 2 }
        _ = try await RequestAdministration(store: RequestStore(pool: harness.pool)).cancel([id])
        await harness.simulator.state.setThrottled(false)
        try await waitUntil("the worker checked the request again") { log.contains("moved on before it was sent") }
        await worker.stop()
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.submissionsByMedia["https://cdn.example.com/third.wav"] == nil, "checked again before sending, and not sent")
        #expect(stats.submissions == 0)
        #expect(try await harness.row(id).decode("state", as: String.self) == "cancelled")
        await harness.stop()
    }
}
