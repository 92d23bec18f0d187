import AsyncHTTPClient
import DetectSimulator
import DetectqTestSupport
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
@testable import DetectQueue
import Testing
import WorkerTestSupport

/// REFERENCE.md section 6, end to end against the simulator playing each hard case (SimulatedScenario).
@Suite("When the API misbehaves", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct APIHardCaseTests {
    @Test func aClonedVoiceOverRealFootageIsAFakeWhoseAlertNamesTheAudioTrack() async throws {
        let harness = try await WorkerHarness.start()
        var alerts = PostgresNotificationListener.listen(harness.database, channels: ["detectq_alerts"]).makeAsyncIterator()
        #expect(await alerts.next() == .listening)
        let voice = try await harness.insert("media_url", ["https://cdn.example.com/interview-fake-audio.mp4"])
        let picture = try await harness.insert("media_url", ["https://cdn.example.com/clip-fake-visual.mp4"])
        let real = try await harness.insert("media_url", ["https://cdn.example.com/real-clip.mp4"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [PgNotifyAlertSink()])
        try await harness.waitUntilProcessed([voice, picture, real])
        await worker.stop()

        let rows = try await harness.pool.query("""
            SELECT id, is_fake, label, audio_label, visual_label FROM detectq.requests ORDER BY id
            """)
        let seen = try rows.map {
            "\(try $0.decode("is_fake", as: Bool?.self).map(String.init) ?? "nil") \(try $0.decode("label", as: String?.self) ?? "-") "
                + "\(try $0.decode("audio_label", as: String?.self) ?? "-") \(try $0.decode("visual_label", as: String?.self) ?? "-")"
        }
        #expect(seen == ["true fake fake Real", "true Fake real Fake", "false Real real Real"], "is_fake label audio_label visual_label")
        var tracks: [Int: JSONValue] = [:]
        for _ in 0..<2 {
            guard case .notification(let notification)? = await alerts.next() else { break }
            let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(notification.payload.utf8))
            if case .number(let id)? = event["request_id"] { tracks[Int(id)] = event["fake_tracks"] }
        }
        #expect(tracks == [voice: .array([.string("audio")]), picture: .array([.string("visual")])], "one alert per fake, naming its tracks")
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = \(real)") == 0)
    }

    @Test(arguments: ["sync", "poll", "callback"])
    func aDetectionTheAPIGivesUpOnFailsOnceWithItsReasonAndNoAlert(waitMode: String) async throws {
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(200)))
        let id = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-detection-fails.wav", waitMode])
        let worker = harness.startWorker(try harness.configuration(callbacks: waitMode == "callback"))
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        let row = try await harness.row(id)
        #expect(try row.decode("state", as: String.self) == "failed")
        #expect(try row.decode("attempt", as: Int.self) == 1)
        #expect(try row.decode("error_message", as: String?.self)?.contains(SimulatedScenario.failureMessage) == true)
        #expect(await harness.simulator.state.snapshot().submissions == 1, "not submitted (and billed) again")
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.post_tasks") == 0, "no alert for a failed detection")
    }

    @Test(arguments: [("never-finishes", "poll"), ("never-finishes", "sync"), ("status-unknown", "poll")])
    func aResultThatNeverComesFailsAfterTheResultTimeoutNamingTheDetection(marker: String, waitMode: String) async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/\(marker).wav", waitMode])
        let worker = harness.startWorker(try harness.configuration(environment: ["DETECTQ_RESULT_TIMEOUT": "2"]))
        try await harness.waitUntilFinished([id])
        await worker.stop()
        let row = try await harness.row(id)
        let uuid = try #require(try row.decode("remote_uuid", as: String?.self))
        let message = try row.decode("error_message", as: String?.self) ?? ""
        #expect(try row.decode("state", as: String.self) == "failed")
        #expect(message.contains(uuid) && message.contains("DETECTQ_RESULT_TIMEOUT"), "\(message)")
        #expect(message.contains(marker == "status-unknown" ? "queued_for_review" : "processing"), "\(message)")
        #expect(await harness.simulator.state.snapshot().submissions == 1)
        let waited = try await harness.pool.query("""
            SELECT EXTRACT(EPOCH FROM (SELECT max(at) FROM detectq.request_events WHERE request_id = r.id AND to_state = 'failed')
                   - r.accepted_at)::float8 AS s
            FROM detectq.requests r WHERE id = \(id)
            """)[0].decode("s", as: Double.self)
        #expect(waited >= 2, "failed only once the timeout had passed: \(waited) s after acceptance")
    }

    @Test func outOfCreditPausesEveryWorkerFailsNothingAndOneProbeResumesThemAll() async throws {
        let harness = try await WorkerHarness.start()
        await harness.simulator.state.setOutOfCredit(true)
        try await harness.pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/credit-' || n || '.wav' FROM generate_series(1, 6) AS n
            """)
        let ids = try await harness.pool.query("SELECT id FROM detectq.requests").map { try $0.decode("id", as: Int.self) }
        let settings = ["DETECTQ_CREDIT_RECHECK_SECONDS": "0.5"]
        let first = harness.startWorker(try harness.configuration(workerID: "w1", environment: settings))
        let second = harness.startWorker(try harness.configuration(workerID: "w2", environment: settings))
        try await waitUntil("the workers pause for credit") {
            try await harness.count("SELECT count(*) AS n FROM detectq.pauses WHERE kind = 'out_of_credit'") == 1
        }
        let readiness = try await get("http://127.0.0.1:\(first.worker.configuration.httpPort)/readyz")
        #expect(readiness.status == 503 && readiness.body.contains("out of credit"), "\(readiness)")
        // Probes go one at a time, every half second, and each is given back unbilled and unspent.
        let refusalsAtPause = await harness.simulator.state.snapshot().creditRefusals
        try await waitUntil("three more probes were refused") { await harness.simulator.state.snapshot().creditRefusals >= refusalsAtPause + 3 }
        // (A probe may be in flight at any moment, on a loaded machine for long: it holds its claim's attempt until
        // it is given back.)
        try await waitUntil("every request is queued again or is a probe in flight, no attempt spent") {
            try await harness.count("""
                SELECT count(*) AS n FROM detectq.requests WHERE (state = 'queued' AND attempt = 0) OR (state = 'submitting' AND attempt = 1)
                """) == 6
        }
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.request_events WHERE to_state IN ('failed', 'retrying')") == 0)

        await harness.simulator.state.setOutOfCredit(false)
        try await harness.waitUntilFinished(ids)
        await first.stop()
        await second.stop()
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'") == 6)
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.pauses") == 0, "the accepted probe ended the pause")
        #expect(await harness.simulator.state.snapshot().submissions == 6, "each billed once")
    }

    @Test func aProductTheKeyMayNotUseFailsOnlyTheRequestsThatAskForIt() async throws {
        var simulator = SimulatorConfiguration()
        simulator.forbiddenProducts = ["intelligence"]
        let harness = try await WorkerHarness.start(simulator)
        let asking = try await harness.insert("media_url, intelligence", ["https://cdn.example.com/a.wav", true])
        let plain = try await harness.insert("media_url", ["https://cdn.example.com/b.wav"])
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished([asking, plain])
        #expect(worker.worker.pausedReason == nil, "a missing product is no reason to stop the worker")
        let later = try await harness.insert("media_url", ["https://cdn.example.com/c.wav"])
        try await harness.waitUntilFinished([later])
        await worker.stop()
        let refused = try await harness.row(asking)
        #expect(try refused.decode("state", as: String.self) == "failed" && refused.decode("attempt", as: Int.self) == 1)
        let message = try refused.decode("error_message", as: String?.self) ?? ""
        #expect(message.contains("HTTP 403") && message.contains("does not have access to intelligence"), "\(message)")
        #expect(try await harness.row(plain).decode("state", as: String.self) == "completed")
        #expect(try await harness.row(later).decode("state", as: String.self) == "completed")
    }

    @Test func anOperatorsPauseStopsSubmittingWhilePollsGoOn() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .seconds(1)))
        let polled = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/accepted.wav", "poll"])
        let before = harness.startWorker(try harness.configuration(workerID: "before"))
        try await waitUntil("the poll request is accepted") { try await harness.row(polled).decode("state", as: String.self) == "awaiting_result" }
        await before.stop()
        let pause = SharedPause(pool: harness.pool)
        #expect(try await pause.pause(reason: "incident 42", by: "test operator"))
        #expect(try await !pause.pause(reason: "again", by: "someone else"), "one operator's pause at a time")
        let waiting = try await harness.insert("media_url", ["https://cdn.example.com/after-the-pause.wav"])
        // A worker started during the pause polls the accepted request to completion and submits nothing.
        let during = harness.startWorker(try harness.configuration(workerID: "during"))
        try await harness.waitUntilFinished([polled])
        #expect(try await harness.row(waiting).decode("state", as: String.self) == "queued")
        #expect(await harness.simulator.state.snapshot().submissions == 1)
        let entries = try await pause.current()
        #expect(entries.map(\.kind) == [.operator] && entries.first?.reason == "incident 42" && entries.first?.pausedBy == "test operator")
        #expect(try await pause.resume())
        try await harness.waitUntilFinished([waiting])
        await during.stop()
        #expect(try await harness.row(waiting).decode("state", as: String.self) == "completed")
    }

    @Test func aRefusedUploadTokenIsUploadedAgainForAFileAndExplainedForAProducersToken() async throws {
        let harness = try await WorkerHarness.start()
        let client = DetectClient(configuration: .init(baseURL: harness.simulator.baseURL, token: nil))
        // A large file's secure upload whose token a submission has already used, as a lost answer would leave it.
        let big = harness.mediaRoot.appendingPathComponent("long-call.wav")
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        try FileHandle(forWritingTo: big).truncate(atOffset: 151_000_000)
        let spent = try await client.secureUpload(try MediaFile(path: big.path))
        _ = try await client.submit(.mediaToken(spent.token), wait: false)
        let file = try await harness.insert("media_path", ["long-call.wav"])
        try await harness.pool.query("""
            UPDATE detectq.requests SET secure_upload_token = \(spent.token), secure_upload_token_issued_at = now() WHERE id = \(file)
            """)
        // A producer's own token, used already.
        let small = harness.mediaRoot.appendingPathComponent("clip.wav")
        try Data("RIFF clip".utf8).write(to: small)
        let producers = try await client.secureUpload(try MediaFile(path: small.path))
        _ = try await client.submit(.mediaToken(producers.token), wait: false)
        let token = try await harness.insert("media_token", [producers.token])
        try await client.shutdown()

        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished([file, token])
        await worker.stop()
        let uploaded = try await harness.row(file)
        #expect(try uploaded.decode("state", as: String.self) == "completed" && uploaded.decode("attempt", as: Int.self) == 2)
        #expect(try await harness.count("""
            SELECT count(*) AS n FROM detectq.request_events WHERE request_id = \(file) AND to_state = 'retrying' AND detail LIKE '%uploaded again%'
            """) == 1)
        #expect(await harness.simulator.state.snapshot().secureUploads == 3, "the test's two uploads and the worker's one")
        let refused = try await harness.row(token)
        let message = try refused.decode("error_message", as: String?.self) ?? ""
        #expect(try refused.decode("state", as: String.self) == "failed")
        #expect(message.hasPrefix("the API refused the media_token: ") && message.contains("already been used") && message.contains("upload the file again"), "\(message)")
    }

    @Test func aLostAnswerIsFoundByListDetectsAndAdoptedNotSubmittedAgain() async throws {
        // Every submission is handled (and billed), and its answer cut off.
        let harness = try await WorkerHarness.start(.init(faults: .init(lostResponseRate: 1, endpoints: ["POST /detect"])))
        try harness.writeMedia("calls/interview.wav", "RIFF FAKE voice")
        let url = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-lost.wav", "sync"])
        let file = try await harness.insert("media_path, wait_mode, visualize", ["calls/interview.wav", "poll", true])
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilFinished([url, file])
        await worker.stop()
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.injectedLostResponses == 2 && stats.submissions == 2, "one billed submission each, no second: \(stats.submissionsByMedia)")
        let installation = try await Installation.name(harness.pool)
        #expect(stats.submissionsByMedia["file:detectq-\(installation)-\(file).wav"] == 1,
                "uploads are named after their installation and request: \(stats.submissionsByMedia)")
        for id in [url, file] {
            let row = try await harness.row(id)
            #expect(try row.decode("state", as: String.self) == "completed" && row.decode("attempt", as: Int.self) == 2)
            let uuid = try #require(try row.decode("remote_uuid", as: String?.self))
            let detail = try await harness.pool.query("""
                SELECT detail FROM detectq.request_events WHERE request_id = \(id) AND to_state = 'awaiting_result'
                """).first?.decode("detail", as: String?.self) ?? ""
            #expect(detail.hasPrefix("adopted via list: detection \(uuid),"), "the history names the adopted uuid: \(detail)")
        }
        #expect(try await harness.row(url).decode("is_fake", as: Bool?.self) == true)
    }

    /// Zero retention keeps List Detects from finding the detection, so only the callback can, in every wait
    /// mode: a zero-retention request carries the callback URL even when it waits on `Prefer: wait` or polls.
    @Test(arguments: ["callback", "sync", "poll"])
    func aGenuineCallbackThatBeatsTheAnswerIsAdopted(mode: String) async throws {
        // The answer is cut off; the retry waits long enough that the callback comes first.
        let harness = try await WorkerHarness.start(.init(latency: .milliseconds(500), faults: .init(lostResponseRate: 1, endpoints: ["POST /detect"])))
        let id = try await harness.insert("media_url, wait_mode, zero_retention_mode", ["https://cdn.example.com/fake-early.wav", mode, true])
        let log = CapturedLog()
        let worker = harness.startWorker(try harness.configuration(callbacks: true, environment: [
            "DETECTQ_RETRY_BASE_SECONDS": "60", "DETECTQ_RETRY_MAX_SECONDS": "60",
        ]), log: log)
        try await log.explaining { try await harness.waitUntilFinished([id]) }
        await worker.stop()
        let row = try await harness.row(id)
        #expect(try row.decode("state", as: String.self) == "completed" && row.decode("attempt", as: Int.self) == 1, "\(log.text)")
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.submissions == 1, "not submitted again; callbacks sent \(stats.callbacksSent), failed \(stats.callbackFailures)")
        let detail = try await harness.pool.query("""
            SELECT detail FROM detectq.request_events WHERE request_id = \(id) AND to_state = 'awaiting_result'
            """).first?.decode("detail", as: String?.self)
        #expect(detail?.hasPrefix("adopted via callback: detection ") == true, "\(String(describing: detail))")
    }

    @Test func whatListDetectsMatchesAndWhatItCannotFind() throws {
        func request(_ media: DetectionRequest.Media, options: DetectionOptions = .init(), unansweredSince: Date? = Date()) -> DetectionRequest {
            var request = DetectionRequest(id: 42, media: media, options: options, attempt: 3)
            request.unansweredSince = unansweredSince
            return request
        }
        func item(url: String? = nil, filename: String? = nil, visualize: Bool = false, zeroRetention: Bool = false) throws -> DetectionItem {
            let fields = [url.map { #""url": "\#($0)""# }, filename.map { #""filename": "\#($0)""# },
                          #""visualize": \#(visualize), "zero_retention_mode": \#(zeroRetention)"#].compactMap { $0 }
            return try DetectionItem(json: #"{"uuid": "u", "status": "processing", \#(fields.joined(separator: ", "))}"#)
        }
        let byURL = request(.url("https://cdn.example.com/a.wav"))
        #expect(LostAnswerSearch.matches(try item(url: "https://cdn.example.com/a.wav"), byURL, installation: "k3f9q"))
        #expect(!LostAnswerSearch.matches(try item(url: "https://cdn.example.com/b.wav"), byURL, installation: "k3f9q"))
        #expect(!LostAnswerSearch.matches(try item(url: "https://cdn.example.com/a.wav", visualize: true), byURL, installation: "k3f9q"),
                "the options must agree")
        let byFile = request(.path("calls/a.wav"))
        #expect(LostAnswerSearch.uploadName(of: byFile, installation: "k3f9q", path: "calls/a.wav") == "detectq-k3f9q-42-3.wav")
        #expect(LostAnswerSearch.matches(try item(filename: "detectq-k3f9q-42-1.wav"), byFile, installation: "k3f9q"))
        #expect(!LostAnswerSearch.matches(try item(filename: "detectq-k3f9q-421-1.wav"), byFile, installation: "k3f9q"))
        #expect(!LostAnswerSearch.matches(try item(filename: "detectq-k3f9q-42-1.wav"), byFile, installation: "p2x7m"),
                "another deployment's upload of its own request 42 is not ours")
        #expect(!LostAnswerSearch.applies(to: request(.token("t"))), "a producer's token names no file of ours")
        #expect(!LostAnswerSearch.applies(to: request(.url("https://a/b.wav"), options: .init(zeroRetentionMode: true))), "redacted by the API")
        #expect(!LostAnswerSearch.applies(to: request(.url("https://a/b.wav"), unansweredSince: nil)), "no answer is owed")
    }

    private func get(_ url: String) async throws -> (status: UInt, body: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        return (UInt(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 16)))
    }
}
