import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import Synchronization
import Testing
import WorkerTestSupport

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

/// A processor that writes `file_deleted_at` without declaring the effect.
struct Overreaching: PostProcessor {
    let name = "test.overreaching"

    func applies(to outcome: DetectionOutcome) -> Bool { true }

    func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        try await context.recordFileDeleted(at: Date())
        return .done
    }
}

final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    var current: Int { value.withLock { $0 } }
}

@Suite("Post-processing in the worker", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct PostProcessingTests {
    @Test func aFailingProcessorIsRetriedAndNeverTouchesTheDetection() async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url", ["https://cdn.example.com/a.wav"])
        let runs = Counter()
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [Flaky(failures: 2, runs: runs)])
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        #expect(runs.current == 3)
        let history = try await harness.pool.query("""
            SELECT e.to_state::text AS state FROM detectq.post_task_events e JOIN detectq.post_tasks t ON t.id = e.task_id ORDER BY e.id
            """).map { try $0.decode("state", as: String.self) }
        // Created running by the completion and run at once by the worker that completed the request.
        #expect(history == ["running", "retrying", "running", "retrying", "running", "completed"])
        #expect(try await harness.row(id).decode("state", as: String.self) == "completed")
        #expect(await harness.simulator.state.snapshot().submissions == 1, "post-processing never re-submits the media")
        await harness.stop()
    }

    @Test func aCapabilityTheProcessorDidNotDeclareIsRefused() async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url", ["https://cdn.example.com/b.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [Overreaching()])
        try await waitUntil("the post-task ends") {
            try await harness.count("SELECT count(*) AS n FROM detectq.post_tasks WHERE state IN ('failed', 'completed')") == 1
        }
        await worker.stop()
        let task = try await harness.pool.query("SELECT state::text AS state, attempt, last_error FROM detectq.post_tasks")[0]
        #expect(try task.decode("attempt", as: Int.self) == 1, "failed at once, not retried")
        #expect(try task.decode("state", as: String.self) == "failed")
        #expect(try task.decode("last_error", as: String?.self)?.contains("without declaring it") == true)
        #expect(try await harness.row(id).decode("file_deleted_at", as: Date?.self) == nil, "nothing was written")
        await harness.stop()
    }
}
