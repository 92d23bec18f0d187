import DetectQueue
import DetectqTestSupport
import ExternalPlugins
import Foundation
import FakeAlerts
import IntelligenceArchive
import RetentionTracking
import Postgres
import ResembleDetect
import Testing

@Suite("Built-in post-processors: the intelligence archive and external executables", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct PluginTests {
    @Test func intelligenceIsArchivedOnceCompletedInTheTableAndAsAFile() async throws {
        let harness = try await WorkerHarness.start(.init(intelligenceDelay: .seconds(60)))
        let archive = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-archive-\(UUID().uuidString)")
        let asked = [
            try await harness.insert("media_url, intelligence", ["https://cdn.example.com/fake-a.wav", true]),
            try await harness.insert("media_url, intelligence", ["https://cdn.example.com/b.mp4", true]),
        ]
        let notAsked = try await harness.insert("media_url", ["https://cdn.example.com/c.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [IntelligenceArchiver(directory: archive)])
        try await harness.waitUntilFinished(asked + [notAsked])
        let waits = {
            try await harness.pool.query("""
                SELECT count(*) AS n FROM detectq.post_task_events WHERE from_state = 'running' AND to_state = 'queued'
                """)[0].decode("n", as: Int.self)
        }
        try await waitUntil("the archiver has waited for both reports, still processing") { try await waits() >= 2 }
        #expect(try await harness.pool.query("SELECT count(*) AS n FROM detectq.intelligence_archive")[0].decode("n", as: Int.self) == 0)
        await harness.simulator.state.fastForward()
        try await harness.waitUntilProcessed(asked + [notAsked])
        await worker.stop()

        let rows = try await harness.pool.query("SELECT request_id, remote_uuid, intelligence FROM detectq.intelligence_archive ORDER BY request_id")
        #expect(try rows.map { try $0.decode("request_id", as: Int.self) } == asked)
        for row in rows {
            let uuid = try row.decode("remote_uuid", as: String.self)
            let stored = try JSONDecoder().decode(JSONValue.self, from: Data(try row.decode("intelligence", as: PostgresJSON.self).text.utf8))
            #expect(stored["status"] == .string("completed"))
            let files = FileManager.default.enumerator(atPath: archive.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix("\(uuid).json") } ?? []
            #expect(files.count == 1, "one file for \(uuid)")
            let file = try #require(files.first)
            #expect(file.split(separator: "/").count == 4, "<yyyy>/<mm>/<dd>/<uuid>.json: \(file)")
            let written = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: archive.appendingPathComponent(file)))
            #expect(written == stored, "the file and the row hold the same report")
        }
        try? FileManager.default.removeItem(at: archive)
        await harness.stop()
    }

    @Test func externalExecutablesRetryFailAndAreKilledAtTheirTimeLimit() async throws {
        let harness = try await WorkerHarness.start()
        let plugins = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-plugins-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        let counter = plugins.appendingPathComponent(".count")
        let log = plugins.appendingPathComponent(".fakes.log")
        func script(_ name: String, _ body: String) throws {
            let url = plugins.appendingPathComponent(name)
            try Data("#!/bin/sh\n\(body)\n".utf8).write(to: url)
            chmod(url.path, 0o755)
        }
        try script("flaky.sh", """
            cat > /dev/null
            n=$(cat '\(counter.path)' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '\(counter.path)'
            if [ $n -le 2 ]; then echo "not yet ($n)" >&2; exit 75; fi
            """)
        try script("broken.sh", "cat > /dev/null; echo 'the archive server refused the upload' >&2; exit 1")
        try script("hangs.sh", "sleep 60")
        try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("plugins/examples/log-fakes.sh")).write(to: plugins.appendingPathComponent("log-fakes.sh"))
        chmod(plugins.appendingPathComponent("log-fakes.sh").path, 0o755)
        try Data("not executable".utf8).write(to: plugins.appendingPathComponent("README"))

        let discovered = ExecutablePlugin.discover(in: plugins, timeLimit: .seconds(1))
        #expect(discovered.map(\.name) == ["exec.broken.sh", "exec.flaky.sh", "exec.hangs.sh", "exec.log-fakes.sh"])
        setenv("LOG_FAKES_FILE", log.path, 1)
        let id = try await harness.insert("media_url", ["https://cdn.example.com/fake-plugin.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: discovered)
        try await harness.waitUntilFinished([id])
        let state = { (processor: String) in
            try await harness.pool.query("SELECT state::text AS state FROM detectq.post_tasks WHERE processor = \(processor)")[0].decode("state", as: String.self)
        }
        try await waitUntil("flaky.sh completes, broken.sh fails, log-fakes.sh completes and hangs.sh is killed once") {
            let killedOnce = try await harness.count("""
                SELECT count(*) AS n FROM detectq.post_task_events e JOIN detectq.post_tasks t ON t.id = e.task_id
                WHERE t.processor = 'exec.hangs.sh' AND e.to_state = 'retrying'
                """)
            let flaky = try await state("exec.flaky.sh")
            let broken = try await state("exec.broken.sh")
            let logged = try await state("exec.log-fakes.sh")
            return flaky == "completed" && broken == "failed" && logged == "completed" && killedOnce >= 1
        }
        await worker.stop()
        let tasks = try await harness.pool.query("SELECT processor, state::text AS state, attempt, last_error FROM detectq.post_tasks ORDER BY processor")
        let byName = Dictionary(uniqueKeysWithValues: try tasks.map { (try $0.decode("processor", as: String.self), $0) })
        #expect(try byName["exec.flaky.sh"]?.decode("state", as: String.self) == "completed")
        #expect(try byName["exec.flaky.sh"]?.decode("attempt", as: Int.self) == 3, "exit 75 twice, then 0")
        #expect(try byName["exec.broken.sh"]?.decode("state", as: String.self) == "failed")
        #expect(try byName["exec.broken.sh"]?.decode("last_error", as: String?.self) == "the archive server refused the upload")
        let hung = try await harness.pool.query("""
            SELECT e.detail FROM detectq.post_task_events e JOIN detectq.post_tasks t ON t.id = e.task_id
            WHERE t.processor = 'exec.hangs.sh' AND e.to_state = 'retrying' ORDER BY e.id LIMIT 1
            """)
        #expect(try hung.first?.decode("detail", as: String?.self)?.contains("killed after its time limit") == true)
        #expect(try String(contentsOf: log, encoding: .utf8).contains("fake request \(id)"), "the shipped example ran")
        unsetenv("LOG_FAKES_FILE")
        try? FileManager.default.removeItem(at: plugins)
        await harness.stop()
    }
}

@Suite("Retention tracking", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct RetentionTrackingTests {
    @Test func thePurgeIsRecordedAndAnOverduePurgeAlertsOnce() async throws {
        let sink = try await HTTPRecorder.start()
        let purging = try await WorkerHarness.start(.init(latency: .milliseconds(100), purgeDelay: .milliseconds(1500)))
        let policy = FakeAlertPolicy()
        let processors: [any PostProcessor] = [
            WebhookAlertSink(url: sink.baseURL + "/hook", secret: nil, policy: policy, kind: .retentionOverdue),
            RetentionTracker(sla: .seconds(60), overdueAlertProcessors: ["alert.webhook/retention.overdue"]),
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
            WebhookAlertSink(url: sink.baseURL + "/hook", secret: nil, policy: policy, kind: .retentionOverdue),
            RetentionTracker(sla: .seconds(1), overdueAlertProcessors: ["alert.webhook/retention.overdue"]),
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
