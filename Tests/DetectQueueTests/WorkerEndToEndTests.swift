import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport

@Suite("The worker end to end: real PostgreSQL, the simulator", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct WorkerEndToEndTests {
    @Test func everySubmitPathAndEveryWaitModeCompletes() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(300), purgeDelay: .milliseconds(200)))
        try harness.writeMedia("calls/call-881.wav", "RIFF voice FAKE")
        try harness.writeMedia("images/portrait.png", "PNG real")
        let big = harness.mediaRoot.appendingPathComponent("archive/long.mp4")
        try FileManager.default.createDirectory(at: big.deletingLastPathComponent(), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        try FileHandle(forWritingTo: big).truncate(atOffset: 160_000_000)
        let uploader = DetectClient(configuration: .init(baseURL: harness.simulator.baseURL, token: nil))
        let token = try await uploader.secureUpload(try MediaFile(path: harness.writeMedia("pre/clip.mov", "moov").path))
        try await uploader.shutdown()

        let cases: [(columns: String, values: [any PostgresEncodable], path: String, fake: Bool)] = [
            ("media_url, wait_mode", ["https://cdn.example.com/fake-1.mp4", "sync"], "url", true),
            ("media_url, wait_mode", ["https://cdn.example.com/real-2.wav", "poll"], "url", false),
            ("media_url, wait_mode", ["https://cdn.example.com/fake-3.jpg", "callback"], "url", true),
            ("media_url, wait_mode", ["https://cdn.example.com/real-4.mp3", "auto"], "url", false),
            ("media_path, wait_mode, intelligence", ["calls/call-881.wav", "sync", true], "multipart", true),
            ("media_path, wait_mode", ["images/portrait.png", "callback"], "multipart", false),
            ("media_path, wait_mode", ["archive/long.mp4", "poll"], "secure_upload", false),
            ("media_token, wait_mode", [token.token, "sync"], "media_token", false),
        ]
        var ids: [Int] = []
        for item in cases { ids.append(try await harness.insert(item.columns, item.values)) }

        let worker = harness.startWorker(try harness.configuration(callbacks: true))
        try await harness.waitUntilFinished(ids)
        await worker.stop()

        for (id, item) in zip(ids, cases) {
            let row = try await harness.row(id)
            let reason = try row.decode("error_message", as: String?.self) ?? ""
            #expect(try row.decode("state", as: String.self) == "completed", "\(item.columns) \(item.values.first!): \(reason)")
            #expect(try row.decode("submit_path", as: String?.self) == item.path)
            #expect(try row.decode("is_fake", as: Bool?.self) == item.fake)
            let uuid = try row.decode("remote_uuid", as: String?.self)
            #expect(uuid != nil)
            let result = try row.decode("result", as: PostgresJSON?.self)
            #expect(result?.text.contains(uuid ?? "none") == true, "the whole item is stored")
            #expect(try row.decode("attempt", as: Int.self) == 1)
        }
        #expect(try await harness.history(ids[1]) == ["queued", "submitting", "awaiting_result", "completed"], "poll")
        #expect(try await harness.history(ids[2]) == ["queued", "submitting", "awaiting_result", "completed"], "callback")
        #expect(try await harness.history(ids[0]) == ["queued", "submitting", "completed"])
        let alerts = try await harness.pool.query("SELECT count(*) AS n FROM detectq.post_tasks WHERE processor = 'test.alert'")
        #expect(try alerts[0].decode("n", as: Int.self) == 3, "one post-task per fake, written with the completion")
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.submissions == cases.count, "each request submitted exactly once")
        #expect(stats.submissionsByMedia.values.allSatisfy { $0 == 1 })
        await harness.stop()
    }

    @Test func badMediaPathsFailWithAReasonAndNoAPICall() async throws {
        let harness = try await WorkerHarness.start()
        try harness.writeMedia("empty.wav", "")
        try harness.writeMedia("notes.txt", "text")
        let outside = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-outside-\(UUID().uuidString).wav")
        try Data("secret".utf8).write(to: outside)
        try FileManager.default.createSymbolicLink(
            atPath: harness.mediaRoot.appendingPathComponent("escape.wav").path, withDestinationPath: outside.path
        )
        let paths = ["../etc/passwd.wav", "/etc/hostname.wav", "escape.wav", "notes.txt", "empty.wav", "missing.wav"]
        var ids: [Int] = []
        for path in paths { ids.append(try await harness.insert("media_path", [path])) }
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished(ids)
        await worker.stop()
        for (id, path) in zip(ids, paths) {
            let row = try await harness.row(id)
            #expect(try row.decode("state", as: String.self) == "failed")
            let message = try row.decode("error_message", as: String?.self) ?? ""
            #expect(message.hasPrefix("media_path \(path)"), "\(message)")
        }
        #expect(await harness.simulator.state.snapshot().requests == 0, "nothing reached the API")
        try? FileManager.default.removeItem(at: outside)
        await harness.stop()
    }
}

@Suite("Worker retries and health", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct WorkerRetryTests {
    @Test func aRetryReusesTheSecureUploadTokenInsteadOfUploadingAgain() async throws {
        let harness = try await WorkerHarness.start(.init(faults: .init(serverErrorRate: 1, endpoints: ["POST /detect"])))
        let big = harness.mediaRoot.appendingPathComponent("long-call.wav")
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        try FileHandle(forWritingTo: big).truncate(atOffset: 151_000_000)
        let id = try await harness.insert("media_path", ["long-call.wav"])
        // A lease that outlasts the upload of 151 MB on a starved machine: this is about the retry after a 503,
        // not about an attempt whose lease ran out mid-upload (which uploads again, having no token yet).
        let log = CapturedLog()
        let worker = harness.startWorker(try harness.configuration(environment: ["DETECTQ_LEASE_SECONDS": "60"]), log: log)
        try await log.explaining {
            try await waitUntil("request \(id) is on its second attempt") {
                try await harness.pool.query("SELECT attempt FROM detectq.requests WHERE id = \(id)")[0].decode("attempt", as: Int.self) >= 2
            }
        }
        await harness.simulator.state.setFaults(.none)
        try await harness.waitUntilFinished([id])
        await worker.stop()
        let row = try await harness.row(id)
        #expect(try row.decode("state", as: String.self) == "completed")
        #expect(try row.decode("attempt", as: Int.self) >= 2)
        #expect(try row.decode("submit_path", as: String?.self) == "secure_upload")
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.secureUploads == 1, "uploaded once, the token reused by the retries:\n\(log.text)")
        #expect(stats.injectedServerErrors >= 1 && stats.submissions == 1)
        await harness.stop()
    }

    @Test func spentAttemptsFailWithTheLastErrorAndPermanentErrorsFailAtOnce() async throws {
        let harness = try await WorkerHarness.start(.init(faults: .init(serverErrorRate: 1, endpoints: ["POST /detect"])))
        let flaky = try await harness.insert("media_url, max_attempts", ["https://cdn.example.com/a.wav", 3])
        let refused = try await harness.insert("media_url", ["https://cdn.example.com/notes.txt"])
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished([flaky])
        await harness.simulator.state.setFaults(.none)
        try await harness.waitUntilFinished([refused])
        await worker.stop()
        let spent = try await harness.row(flaky)
        #expect(try spent.decode("state", as: String.self) == "failed")
        #expect(try spent.decode("attempt", as: Int.self) == 3)
        #expect(try spent.decode("error_message", as: String?.self) == "HTTP 503: Service temporarily unavailable")
        #expect(try await harness.history(flaky) == ["queued", "submitting", "retrying", "submitting", "retrying", "submitting", "failed"])
        let permanent = try await harness.row(refused)
        #expect(try permanent.decode("state", as: String.self) == "failed")
        #expect(try permanent.decode("error_message", as: String?.self)?.contains(".txt is not supported") == true)
        await harness.stop()
    }

    @Test func aRequestRetriedByHandAfterItsRemoteUUIDIsStoredIsPolledNotResubmitted() async throws {
        let harness = try await WorkerHarness.start()
        let url = "https://cdn.example.com/fake-once.wav"
        let client = DetectClient(configuration: .init(baseURL: harness.simulator.baseURL, token: nil))
        let uuid = try await client.submit(.url(url), wait: false).uuid
        try await client.shutdown()
        let id = try await harness.insert("media_url", [url])
        for step in [
            "state = 'submitting', locked_by = 'gone', locked_until = now() + interval '1 minute'",
            "state = 'awaiting_result', remote_uuid = '\(uuid)', locked_by = NULL, locked_until = NULL",
            "state = 'failed', error_message = 'given up by hand'",
            "state = 'queued'",
        ] {
            try await harness.pool.query(PostgresQuery(sql: "UPDATE detectq.requests SET \(step) WHERE id = $1", parameters: [id]))
        }
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished([id])
        await worker.stop()
        #expect(try await harness.row(id).decode("state", as: String.self) == "completed")
        #expect(try await harness.history(id).suffix(4) == ["queued", "submitting", "awaiting_result", "completed"])
        #expect(await harness.simulator.state.snapshot().submissionsByMedia[url] == 1, "never submitted again")
        await harness.stop()
    }
}
