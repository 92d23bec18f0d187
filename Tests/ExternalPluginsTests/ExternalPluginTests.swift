import DetectQueue
import DetectqTestSupport
import ExternalPlugins
import Foundation
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport

@Suite("External executables as post-processors", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ExternalPluginTests {
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

        // 5 s: in a loaded full run a shell script once took over 1 s, was killed, and spent a fourth attempt.
        let discovered = ExecutablePlugin.discover(in: plugins, timeLimit: .seconds(5))
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

    /// A worker that stops while a plugin runs gives it the grace period, then cancels its task: the plugin
    /// and the children it started are killed with it, not left behind.
    @Test func aCancelledPluginIsKilledWithItsChildren() async throws {
        let harness = try await WorkerHarness.start()
        let plugins = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-plugins-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: plugins) }
        let pids = plugins.appendingPathComponent(".pids")
        let url = plugins.appendingPathComponent("lingers.sh")
        try Data("#!/bin/sh\ncat > /dev/null\nsleep 300 &\necho $$ $! > '\(pids.path)'\nwait\n".utf8).write(to: url)
        chmod(url.path, 0o755)
        let id = try await harness.insert("media_url", ["https://cdn.example.com/plugin-cancelled.wav"])
        let worker = harness.startWorker(
            try harness.configuration(environment: ["DETECTQ_SHUTDOWN_GRACE_SECONDS": "1"]),
            postProcessors: [ExecutablePlugin(executable: url, timeLimit: .seconds(600))]
        )
        let running = try await waitFor("the plugin and its child are running") { () -> [pid_t]? in
            guard let text = try? String(contentsOf: pids, encoding: .utf8) else { return nil }
            let numbers = text.split(whereSeparator: \.isWhitespace).compactMap { pid_t($0) }
            return numbers.count == 2 ? numbers : nil
        }
        #expect(running.allSatisfy { kill($0, 0) == 0 }, "both alive before the worker stops")
        await worker.stop()
        try await waitUntil("the plugin and its child are gone") { running.allSatisfy { kill($0, 0) != 0 } }
        let task = try await harness.pool.query("SELECT state::text AS state FROM detectq.post_tasks WHERE request_id = \(id)")[0]
        // The cancelled run either records a retry before the pool closes, or leaves the task to its lease.
        #expect(["running", "retrying"].contains(try task.decode("state", as: String.self)), "retried or left to its lease, never failed")
    }
}
