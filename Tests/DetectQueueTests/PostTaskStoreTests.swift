import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("Post-tasks share the requests' claim, lease and rescue core", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct PostTaskStoreTests {
    /// A completed request with `processors` post-tasks, in a database of its own.
    func fixture(_ processors: [String]) async throws -> (PostgresConfiguration, PostgresConnectionPool, Int) {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 2)
        let id = try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://a/b.wav') RETURNING id")[0]
            .decode("id", as: Int.self)
        try await pool.query("""
            INSERT INTO detectq.post_tasks (request_id, processor, max_attempts) SELECT \(id), unnest(\(processors)::text[]), 2
            """)
        return (configuration, pool, id)
    }

    func store(_ configuration: PostgresConfiguration, worker: String) -> PostTaskStore {
        var configuration = configuration
        configuration.applicationName = "detectq worker \(worker)"
        return PostTaskStore(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 2))
    }

    /// A run's notifications go out in the statement that records its end, and only when it records it: a run
    /// whose lease was taken over sends nothing (the run that took over sends them).
    @Test func aRunsNotificationsGoOutOnlyWithItsRecordedEnd() async throws {
        let (configuration, pool, _) = try await fixture(["alert"])
        let a = store(configuration, worker: "a")
        let claimed = try await a.claim(workerID: "a", limit: 1, lease: .seconds(30))
        var events = PostgresNotificationListener.listen(configuration, channels: ["detectq_test_alerts"]).makeAsyncIterator()
        #expect(await events.next() == .listening)

        try await pool.query("UPDATE detectq.post_tasks SET locked_by = 'b' WHERE id = \(claimed[0].id)")
        let lost = try await a.complete(claimed[0], workerID: "a", notifications: [PostgresNotice(channel: "detectq_test_alerts", payload: "lost")])
        #expect(!lost, "the lease was taken over")
        try await pool.query("UPDATE detectq.post_tasks SET locked_by = 'a' WHERE id = \(claimed[0].id)")
        let recorded = try await a.complete(claimed[0], workerID: "a", notifications: [PostgresNotice(channel: "detectq_test_alerts", payload: "recorded")])
        #expect(recorded)
        // Notifications arrive in commit order: the first one heard is the recorded run's.
        guard case .notification(let notification)? = await events.next() else {
            Issue.record("no notification after the recorded end")
            return
        }
        #expect(notification.payload == "recorded")
    }

    @Test func aTaskIsClaimedOnceRetriedThenFailedWithItsHistory() async throws {
        let (configuration, pool, _) = try await fixture(["webhook", "slack"])
        let a = store(configuration, worker: "a")
        let b = store(configuration, worker: "b")
        let first = try await a.claim(workerID: "a", limit: 1, lease: .seconds(30))
        let second = try await b.claim(workerID: "b", limit: 5, lease: .seconds(30))
        #expect(first.count == 1 && second.count == 1 && first[0].id != second[0].id)
        #expect(first[0].state == .running && first[0].attempt == 1)

        #expect(try await a.fail(first[0], workerID: "a", reason: "HTTP 503 from the sink", retryAt: Date()))
        let again = try await a.claim(workerID: "a", limit: 5, lease: .seconds(30))
        #expect(again.map(\.id) == [first[0].id] && again[0].attempt == 2)
        #expect(try await a.fail(again[0], workerID: "a", reason: "HTTP 503 again", retryAt: Date()))
        #expect(try await b.complete(second[0], workerID: "b"))
        #expect(try await b.complete(second[0], workerID: "b") == false, "a finished task is not finished twice")

        let states = try await pool.query("SELECT processor, state::text AS state, last_error FROM detectq.post_tasks ORDER BY id")
        #expect(try states.map { try $0.decode("state", as: String.self) } == ["failed", "completed"])
        #expect(try states[0].decode("last_error", as: String?.self) == "HTTP 503 again")
        let history = try await pool.query("""
            SELECT to_state::text AS state, worker_id, detail FROM detectq.post_task_events WHERE task_id = \(first[0].id) ORDER BY id
            """)
        #expect(try history.map { try $0.decode("state", as: String.self) } == ["queued", "running", "retrying", "running", "failed"])
        #expect(try history[2].decode("detail", as: String?.self) == "HTTP 503 from the sink")
        #expect(try history[1].decode("worker_id", as: String?.self) == "a")
    }

    @Test func anExpiredLeaseIsRescuedAndTheOldOwnerFencedOff() async throws {
        let (configuration, pool, _) = try await fixture(["archive"])
        let dead = store(configuration, worker: "dead")
        let claimed = try await dead.claim(workerID: "dead", limit: 1, lease: .milliseconds(100))
        try await Task.sleep(for: .milliseconds(300))
        let rescued = try await store(configuration, worker: "rescuer").rescueExpiredLeases()
        #expect(rescued.retrying == claimed.map(\.id) && rescued.failed.isEmpty)
        #expect(try await dead.complete(claimed[0], workerID: "dead") == false)
        let reason = try await pool.query("SELECT last_error FROM detectq.post_tasks")[0].decode("last_error", as: String?.self)
        #expect(reason?.contains("dead stopped renewing its lease") == true)
    }

    @Test func aRescheduleWaitsWithoutSpendingAnAttempt() async throws {
        let (configuration, pool, _) = try await fixture(["retention"])
        let worker = store(configuration, worker: "w")
        let task = try #require(try await worker.claim(workerID: "w", limit: 1, lease: .seconds(30)).first)
        #expect(try await worker.reschedule(task, workerID: "w", at: Date().addingTimeInterval(3600)))
        let row = try await pool.query("SELECT state::text AS state, attempt FROM detectq.post_tasks")[0]
        #expect(try row.decode("state", as: String.self) == "queued" && row.decode("attempt", as: Int.self) == 0)
        #expect(try await worker.claim(workerID: "w", limit: 1, lease: .seconds(30)).isEmpty, "not before its time")
    }

    @Test func theTriggerAgreesWithTheSwiftTable() async throws {
        let (_, pool, _) = try await fixture([])
        let rows = try await pool.query("SELECT from_state, to_state FROM detectq.post_task_state_transitions")
        let database = Set(try rows.map { "\(try $0.decode("from_state", as: PostTask.State.self))->\(try $0.decode("to_state", as: PostTask.State.self))" })
        let swift = Set(PostTask.State.allCases.flatMap { from in from.successors.map { "\(from)->\($0)" } })
        #expect(database == swift)
        let id = try await pool.query("INSERT INTO detectq.requests (media_token) VALUES ('t') RETURNING id")[0].decode("id", as: Int.self)
        try await pool.query("INSERT INTO detectq.post_tasks (request_id, processor) VALUES (\(id), 'x')")
        let error = try await #require(throws: PostgresError.self) {
            try await pool.query("UPDATE detectq.post_tasks SET state = 'completed' WHERE request_id = \(id)")
        }
        #expect(error.constraint == "post_tasks_legal_state_transition")
    }
}
