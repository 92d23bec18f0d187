import DetectQueue
import DetectqTestSupport
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
import Synchronization
import Testing

/// A processor that fails its first `failures` runs, then succeeds, counting its runs.
struct Flaky: PostProcessor {
    let name = "test.flaky"
    let failures: Int
    let runs: Counter

    func applies(to outcome: DetectionOutcome) -> Bool { true }

    func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        let run = runs.increment()
        if run <= failures { return .retry(after: .milliseconds(10), reason: "sink unavailable (run \(run))") }
        return .done
    }
}

final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    var current: Int { value.withLock { $0 } }
}

@Suite("Post-processing in the worker", .enabled(if: TestDatabase.isEnabled))
struct PostProcessingTests {
    @Test func fakesAreAlertedThroughPgNotifyOnceEachAndRealsNot() async throws {
        let harness = try await WorkerHarness.start()
        var alerts = PostgresNotificationListener.listen(harness.database, channels: ["detectq_alerts"]).makeAsyncIterator()
        #expect(await alerts.next() == .listening)
        let fake = try await harness.insert("media_url, metadata", ["https://cdn.example.com/fake-call.wav", PostgresJSON(text: #"{"case": 881}"#)])
        let real = try await harness.insert("media_url", ["https://cdn.example.com/real-call.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [PgNotifyAlertSink(policy: .init())])
        try await harness.waitUntilFinished([fake, real])
        guard case .notification(let notification)? = await alerts.next() else {
            Issue.record("no alert")
            return
        }
        let tasksDone = { try await harness.pool.query("SELECT count(*) AS n FROM detectq.post_tasks WHERE state = 'completed'")[0].decode("n", as: Int.self) }
        let deadline = ContinuousClock.now + .seconds(10)
        while try await tasksDone() < 1 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        await worker.stop()

        let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(notification.payload.utf8))
        let uuid = try await harness.row(fake).decode("remote_uuid", as: String.self)
        #expect(event["event"] == .string("detection.fake"))
        #expect(event["event_id"] == .string("detection.fake:\(uuid)"))
        #expect(event["request_id"] == .number(Double(fake)))
        #expect(event["remote_uuid"] == .string(uuid))
        #expect(event["label"] == .string("fake") && event["score"] == .number(0.92) && event["media_type"] == .string("audio"))
        #expect(event["metadata"] == .object(["case": .number(881)]))
        #expect(event["detected_at"]?.stringValue.flatMap(ISO8601Timestamp.parse) != nil)
        let tasks = try await harness.pool.query("SELECT request_id, processor, state::text AS state FROM detectq.post_tasks")
        #expect(tasks.count == 1, "one task for the fake, none for the real")
        #expect(try tasks[0].decode("request_id", as: Int.self) == fake && tasks[0].decode("state", as: String.self) == "completed")
        await harness.stop()
    }

    @Test func aFailingProcessorIsRetriedAndNeverTouchesTheDetection() async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url", ["https://cdn.example.com/a.wav"])
        let runs = Counter()
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [Flaky(failures: 2, runs: runs)])
        try await harness.waitUntilFinished([id])
        let deadline = ContinuousClock.now + .seconds(15)
        while runs.current < 3 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try await Task.sleep(for: .milliseconds(200))
        await worker.stop()
        #expect(runs.current == 3)
        let history = try await harness.pool.query("""
            SELECT e.to_state::text AS state FROM detectq.post_task_events e JOIN detectq.post_tasks t ON t.id = e.task_id ORDER BY e.id
            """).map { try $0.decode("state", as: String.self) }
        #expect(history == ["queued", "running", "retrying", "running", "retrying", "running", "completed"])
        #expect(try await harness.row(id).decode("state", as: String.self) == "completed")
        #expect(await harness.simulator.state.snapshot().submissions == 1, "post-processing never re-submits the media")
        await harness.stop()
    }
}
