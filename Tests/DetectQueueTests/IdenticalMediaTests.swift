import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import RetentionTracking
import Testing
import WorkerTestSupport

/// CONTRACT section 9: identical media is detected once. A worker against the simulator and a real PostgreSQL;
/// what reached the API is read from the simulator's own counts.
@Suite("Spending each detection once: real PostgreSQL, the simulator", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct IdenticalMediaTests {
    static let hash = String(repeating: "ab", count: 32)

    @Test func aCompletedVerdictIsReusedForIdenticalMediaAndOptionsAndItsAlertNamesTheSource() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(50), purgeDelay: .milliseconds(200)))
        let first = try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/fake-viral.mp4", Self.hash, "sync"])
        var worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilProcessed([first])
        await worker.stop()

        // Another URL with the same bytes (a re-upload), the hash given in capitals; one with other options; one
        // that asks for its own detection.
        let copy = try await harness.insert("media_url, media_sha256, wait_mode, metadata",
                                            ["https://mirror.example.com/fake-reupload.mp4", Self.hash.uppercased(), "sync", PostgresJSON(text: #"{"reporter": 7}"#)])
        let otherOptions = try await harness.insert("media_url, media_sha256, wait_mode, intelligence",
                                                    ["https://cdn.example.com/fake-viral.mp4", Self.hash, "sync", true])
        let ownDetection = try await harness.insert("media_url, media_sha256, wait_mode, reuse_verdict",
                                                    ["https://cdn.example.com/fake-viral.mp4", Self.hash, "sync", false])
        worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilProcessed([copy, otherOptions, ownDetection])
        await worker.stop()

        let reused = try await harness.row(copy)
        #expect(try reused.decode("state", as: String.self) == "completed")
        #expect(try reused.decode("submit_path", as: String?.self) == "reused")
        #expect(try reused.decode("reused_from", as: Int?.self) == first)
        #expect(try reused.decode("is_fake", as: Bool?.self) == true)
        #expect(try reused.decode("remote_uuid", as: String?.self) == nil, "the detection is the source's, its uuid the source's alone")
        #expect(try reused.decode("media_sha256", as: String?.self) == Self.hash, "stored in lower case")
        let source = try await harness.row(first)
        #expect(try reused.decode("result", as: PostgresJSON?.self)?.text == source.decode("result", as: PostgresJSON?.self)?.text)
        let details = try await harness.pool.query(
            "SELECT detail FROM detectq.request_events WHERE request_id = \(copy) AND to_state = 'completed'"
        )
        #expect(try details.first?.decode("detail", as: String?.self)?.contains("reused from request \(first)") == true)
        let alerts = try await harness.count("SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = \(copy) AND processor = 'test.alert'")
        #expect(alerts == 1, "its post-processors run as for any completion")

        for id in [otherOptions, ownDetection] {
            let row = try await harness.row(id)
            #expect(try row.decode("submit_path", as: String?.self) == "url", "request \(id) was detected by itself")
            #expect(try row.decode("reused_from", as: Int?.self) == nil)
        }
        #expect(await harness.simulator.state.snapshot().submissions == 3, "the copy reached no API")
    }

    @Test func identicalMediaEnqueuedWhileOneIsInFlightWaitsForItsVerdict() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(1_500), purgeDelay: .milliseconds(200)))
        try harness.writeMedia("clips/a.wav", "RIFF the same bytes, uploaded twice")
        try harness.writeMedia("clips/copy-of-a.wav", "RIFF the same bytes, uploaded twice")
        let ids = [
            try await harness.insert("media_path, wait_mode", ["clips/a.wav", "poll"]),
            try await harness.insert("media_path, wait_mode", ["clips/copy-of-a.wav", "poll"]),
            try await harness.insert("media_path, wait_mode", ["clips/a.wav", "sync"]),
        ]
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilProcessed(ids)
        await worker.stop()

        // sha256sum of the file's bytes, worked out beforehand.
        let expected = "b66f158cb849508af452b50cbfc9298b530f5a7bd0de26a47170b8f029da7162"
        var sent: [Int] = []
        var reusedFrom: [Int?] = []
        for id in ids {
            let row = try await harness.row(id)
            #expect(try row.decode("state", as: String.self) == "completed")
            #expect(try row.decode("media_sha256", as: String?.self) == expected, "the worker hashed the file")
            if try row.decode("submit_path", as: String?.self) == "reused" {
                reusedFrom.append(try row.decode("reused_from", as: Int?.self))
                let history = try await harness.history(id)
                #expect(history.contains("completed") && history.filter { $0 == "submitting" }.count <= 2, "\(history)")
            } else {
                sent.append(id)
            }
        }
        #expect(sent.count == 1, "one detection for three identical requests")
        #expect(reusedFrom.allSatisfy { $0 == sent.first })
        #expect(await harness.simulator.state.snapshot().submissions == 1)
        let waited = try await harness.count("""
            SELECT count(*) AS n FROM detectq.request_events WHERE from_state = 'queued' AND to_state = 'completed' AND detail LIKE 'verdict reused from request%'
            """)
        #expect(waited >= 1, "a waiter completed from its source's completion, queued to completed")
        let waiting = try await harness.count("""
            SELECT count(*) AS n FROM detectq.request_events WHERE from_state = 'submitting' AND to_state = 'queued' AND detail LIKE 'waiting for request%'
            """)
        #expect(waiting >= 1, "the hand-back says whom it waits for")
    }

    @Test func whenTheOneInFlightFailsTheWaitingOnesAreSentOneAtATime() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(800), purgeDelay: .milliseconds(200)))
        let failing = try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/detection-fails.mp4", Self.hash, "poll"])
        let worker = harness.startWorker(try harness.configuration())
        try await waitForState(harness, failing, "awaiting_result")
        let waiters = [
            try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/real-1.mp4", Self.hash, "poll"]),
            try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/real-2.mp4", Self.hash, "poll"]),
        ]
        try await harness.waitUntilProcessed([failing] + waiters)
        await worker.stop()

        #expect(try await harness.row(failing).decode("state", as: String.self) == "failed")
        let paths = try await waiters.asyncMap { try await harness.row($0).decode("submit_path", as: String?.self) }
        #expect(paths.sorted { ($0 ?? "") < ($1 ?? "") } == ["reused", "url"], "one waiter sent, the other reused its verdict: \(paths)")
        #expect(await harness.simulator.state.snapshot().submissions == 2)
    }

    @Test func aZeroRetentionRequestReusesAVerdictAndItsRetentionTrackingSaysNoMediaWasSent() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(50), purgeDelay: .milliseconds(200)))
        let tracking: [any PostProcessor] = [RetentionTracker(sla: .seconds(3_600))]
        let source = try await harness.insert("media_url, media_sha256, wait_mode, zero_retention_mode",
                                              ["https://cdn.example.com/real-private.wav", Self.hash, "sync", true])
        var worker = harness.startWorker(try harness.configuration(), postProcessors: tracking)
        try await harness.waitUntilProcessed([source])
        await worker.stop()
        let copy = try await harness.insert("media_url, media_sha256, wait_mode, zero_retention_mode",
                                            ["https://cdn.example.com/real-private-copy.wav", Self.hash, "sync", true])
        worker = harness.startWorker(try harness.configuration(), postProcessors: tracking)
        try await harness.waitUntilProcessed([copy])
        await worker.stop()

        #expect(try await harness.row(source).decode("file_deleted_at", as: Date?.self) != nil, "the source's media was purged")
        let row = try await harness.row(copy)
        #expect(try row.decode("submit_path", as: String?.self) == "reused" && row.decode("reused_from", as: Int?.self) == source)
        #expect(try row.decode("file_deleted_at", as: Date?.self) == nil, "no media of the copy was ever sent")
        let tasks = try await harness.count("""
            SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = \(copy) AND processor = 'retention.tracking' AND state = 'completed'
            """)
        #expect(tasks == 1, "its retention tracking ended at once")
        #expect(await harness.simulator.state.snapshot().submissions == 1)
    }

    @Test func reuseOffSendsEveryRequest() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(50), purgeDelay: .milliseconds(200)))
        let ids = [
            try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/a.mp4", Self.hash, "sync"]),
            try await harness.insert("media_url, media_sha256, wait_mode", ["https://cdn.example.com/a.mp4", Self.hash, "sync"]),
        ]
        let worker = harness.startWorker(try harness.configuration(environment: ["DETECTQ_REUSE_VERDICT_WITHIN": "0"]))
        try await harness.waitUntilProcessed(ids)
        await worker.stop()
        #expect(await harness.simulator.state.snapshot().submissions == 2)
    }

    @Test func aMalformedHashIsRefusedByTheDatabase() async throws {
        let harness = try await WorkerHarness.start()
        for bad in ["abc", String(repeating: "g", count: 64), String(repeating: "a", count: 65)] {
            await #expect(throws: PostgresError.self) {
                _ = try await harness.insert("media_url, media_sha256", ["https://cdn.example.com/a.mp4", bad])
            }
        }
        do {
            _ = try await harness.insert("media_url, media_sha256", ["https://cdn.example.com/a.mp4", "abc"])
        } catch let error as PostgresError {
            #expect(error.constraint == "requests_media_sha256_hex")
        }
    }

    private func waitForState(_ harness: WorkerHarness, _ id: Int, _ state: String) async throws {
        try await waitUntil("request \(id) reaches \(state)", timeout: generousDeadline, interval: .milliseconds(50)) {
            try await harness.row(id).decode("state", as: String.self) == state
        }
    }
}

extension Array {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
