import DetectQueue
import DetectqTestSupport
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
import RetentionTracking
import Testing
import WorkerTestSupport

@Suite("Retention tracking", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct RetentionTrackingTests {
    @Test func thePurgeIsRecordedAndAnOverduePurgeAlertsOnce() async throws {
        let sink = try await HTTPRecorder.start()
        let purging = try await WorkerHarness.start(.init(latency: .milliseconds(100), purgeDelay: .milliseconds(1500)))
        let processors: [any PostProcessor] = [
            WebhookAlertSink(url: sink.baseURL + "/hook", secret: nil, kind: .retentionOverdue),
            RetentionTracker(sla: .seconds(60)),
        ]
        let id = try await purging.insert("media_url, zero_retention_mode", ["https://cdn.example.com/call.wav", true])
        let plain = try await purging.insert("media_url", ["https://cdn.example.com/plain.wav"])
        let worker = purging.startWorker(try purging.configuration(), postProcessors: processors)
        try await purging.waitUntilFinished([id, plain])
        try await purging.waitUntilProcessed([id, plain])
        await worker.stop()
        let deleted = try await purging.pool.query("SELECT file_deleted_at FROM detectq.requests WHERE id = \(id)")[0].decode("file_deleted_at", as: Date?.self)
        #expect(deleted != nil, "file_deleted_at recorded after the simulator's purge")
        #expect(try await purging.pool.query("SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = \(plain)")[0].decode("n", as: Int.self) == 0)
        #expect(sink.deliveries.isEmpty, "no overdue alert for a purge within the SLA")
        await purging.stop()

        let never = try await WorkerHarness.start(.init(purgeDelay: nil))
        let overdueProcessors: [any PostProcessor] = [
            WebhookAlertSink(url: sink.baseURL + "/hook", secret: nil, kind: .retentionOverdue),
            RetentionTracker(sla: .seconds(1)),
        ]
        let stuck = try await never.insert("media_url, zero_retention_mode", ["https://cdn.example.com/kept.wav", true])
        let watcher = never.startWorker(try never.configuration(), postProcessors: overdueProcessors)
        try await never.waitUntilFinished([stuck])
        try await waitUntil("the overdue alert is delivered") {
            try await never.count("""
                SELECT count(*) AS n FROM detectq.post_tasks WHERE processor = 'alert.webhook/retention.overdue' AND state = 'completed'
                """) == 1
        }
        // The tracker keeps watching; a second alert would come from one of its next checks.
        let checks = {
            try await never.count("""
                SELECT count(*) AS n FROM detectq.post_task_events e JOIN detectq.post_tasks t ON t.id = e.task_id
                WHERE t.processor = 'retention.tracking' AND e.to_state = 'running'
                """)
        }
        let checksAtAlert = try await checks()
        try await waitUntil("the tracker checks twice more after the alert") { try await checks() >= checksAtAlert + 2 }
        await watcher.stop()
        let alerts = sink.deliveries
        #expect(alerts.count == 1, "exactly one overdue alert: \(alerts.map(\.text))")
        let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(try #require(alerts.first).body))
        #expect(event["event"] == .string("retention.overdue"))
        #expect(event["event_id"]?.stringValue?.hasPrefix("retention.overdue:") == true)
        let tracking = try await never.pool.query("SELECT state::text AS state FROM detectq.post_tasks WHERE processor = 'retention.tracking'")
        #expect(try tracking[0].decode("state", as: String.self) != "completed", "it keeps watching")
        await never.stop()
        await sink.stop()
    }
}
