import DetectQueue
import DetectqTestSupport
import Foundation
import Logging
import Postgres
import Testing
import WorkerTestSupport

@Suite("A worker whose task is cancelled", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct WorkerCancellationTests {
    @Test func aBusyWorkerCancelledOutrightReturnsAtOnceAndLosesNothing() async throws {
        // Each detection takes a minute, so every request is in flight (waiting on `Prefer: wait`) when the
        // task is cancelled, however slow the machine.
        let harness = try await WorkerHarness.start(.init(latency: .seconds(60)))
        try await harness.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode)
            SELECT 'https://cdn.example.com/cancel-' || n || '.wav', 'sync' FROM generate_series(1, 6) AS n
            """)
        let ids = try await harness.pool.query("SELECT id FROM detectq.requests ORDER BY id").map { try $0.decode("id", as: Int.self) }
        let configuration = try harness.configuration(workerID: "cancelled", environment: ["DETECTQ_SHUTDOWN_GRACE_SECONDS": "60"])
        let worker = Worker(configuration: configuration, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let running = Task { try await worker.run() }
        try await waitUntil("all six are submitted") { await harness.simulator.state.snapshot().submissions == 6 }

        let cancelled = ContinuousClock.now
        running.cancel()
        _ = await running.result
        let took = ContinuousClock.now - cancelled
        // Both the grace period and the API's answer are 60 s away; 10 s leaves a busy machine room.
        #expect(took < .seconds(10), "a cancelled worker returns at once, not after its grace period or the API's answer: \(took)")

        // Each claim was given back or keeps its lease until it expires; either way another worker finishes it.
        let held = try await harness.count("""
            SELECT count(*) AS n FROM detectq.requests
            WHERE id = ANY(\(ids)) AND NOT (state IN ('queued', 'retrying') OR (state = 'submitting' AND locked_by = 'cancelled'))
            """)
        #expect(held == 0, "every request is claimable again or waits for its lease")
        await harness.simulator.state.setLatency(.zero)
        let successor = harness.startWorker(try harness.configuration(workerID: "successor"))
        try await harness.waitUntilFinished(ids)
        await successor.stop()
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'") == 6)
    }
}
