import DetectSimulator
import DetectqTestSupport
import FakeAlerts
import Foundation
import Postgres
@testable import ResembleDetect
@testable import DetectQueue
import Testing
import WorkerTestSupport

/// REFERENCE.md section 6, second part: the API's trouble that lasts, against the simulator playing it.
/// Serialized: several tests run two workers each and count what reaches the API in a window.
@Suite("When the API's trouble lasts", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct SustainedTroubleTests {
    /// Five minutes of 429s with no `Retry-After` in the issue; here as long as it takes the backoff to grow.
    @Test func aThrottleWithoutRetryAfterFailsNothingSpendsNoAttemptAndBacksTheFleetOff() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .seconds(1), purgeDelay: .milliseconds(200)))
        // Two workers at the harness's settings, whose backoff would spend all eight attempts in a few seconds.
        let first = harness.startWorker(try harness.configuration(workerID: "first"))
        let second = harness.startWorker(try harness.configuration(workerID: "second"))
        // One request accepted before the throttle, whose polls meet it.
        let polled = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/polled.wav", "poll"])
        try await waitUntil("the polled request is accepted") { try await harness.row(polled).decode("state", as: String.self) == "awaiting_result" }
        await harness.simulator.state.setThrottled(true)
        var ids = [polled]
        for index in 0..<6 {
            ids.append(try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/throttled-\(index).wav", "sync"]))
        }
        let backoff = {
            try await harness.pool.query("SELECT coalesce(max(backoff_seconds), 0) AS b FROM detectq.pauses WHERE kind = 'rate_limited'")[0]
                .decode("b", as: Double.self)
        }
        try await waitUntil("the shared backoff has doubled to 4 s") { try await backoff() >= 4 }
        let sentIntoTheThrottle = await harness.simulator.state.snapshot().throttledRequests
        // 1 s, 2 s and the start of the 4 s pause: the first wave, then about one probe as each pause ends.
        #expect(sentIntoTheThrottle <= 20, "\(sentIntoTheThrottle) requests sent into the throttle while it backed off")
        #expect(try await harness.count("""
            SELECT count(*) AS n FROM detectq.requests WHERE state IN ('failed', 'retrying') OR attempt > 1
            """) == 0, "a 429 fails nothing and spends no attempt")
        try await waitUntil("the backoff has doubled again") { try await backoff() >= 8 }
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state IN ('failed', 'retrying') OR attempt > 1") == 0)
        // Its result is ready, but every poll met the throttle: it is still waiting, unharmed.
        #expect(try await harness.row(polled).decode("state", as: String.self) == "awaiting_result")

        await harness.simulator.state.setThrottled(false)
        try await harness.waitUntilProcessed(ids)
        await first.stop()
        await second.stop()
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed' AND attempt = 1") == ids.count,
                "every request completes on its first attempt once the throttle ends")
        #expect(await harness.simulator.state.snapshot().submissions == ids.count)
    }

    @Test func aLongRetryAfterIsCappedAtTheSetting() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let budget = APIBudget(
            pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 1), ratePerSecond: 100,
            longestRetryAfter: .seconds(2)
        )
        let asked = Date()
        let until = try await budget.throttled(retryAfter: .seconds(86_400), by: "test")
        #expect(until.timeIntervalSince(asked) < 10, "a day's Retry-After pauses for DETECTQ_RETRY_AFTER_MAX_SECONDS: \(until.timeIntervalSince(asked)) s")
        #expect(until.timeIntervalSince(asked) > 1)
    }

    @Test func aPollThatMeetsA404ForTheUUIDTheAPIGaveAsksAgain() async throws {
        // The detection takes a moment, so the submission's answer is "processing" and the worker polls.
        var simulator = SimulatorConfiguration(latency: .milliseconds(300), purgeDelay: .milliseconds(200))
        simulator.notFoundReads = 3
        let harness = try await WorkerHarness.start(simulator)
        try await completeAlone(on: harness, "media_url, wait_mode", ["https://cdn.example.com/lagging.wav", "poll"])
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.laggedNotFounds == 3, "the polls met the API's lag, and asked again")
        #expect(stats.submissions == 1)
    }

    @Test func aVerdictNobodyCanReadCompletesWithNoVerdictAndIsRaised() async throws {
        let harness = try await WorkerHarness.start()
        var alerts = PostgresNotificationListener.listen(harness.database, channels: ["detectq_alerts"]).makeAsyncIterator()
        #expect(await alerts.next() == .listening)
        let unreadable = try await harness.insert("media_url", ["https://cdn.example.com/clip-unreadable-label.mp4"])
        let real = try await harness.insert("media_url", ["https://cdn.example.com/real.wav"])
        let sinks = AlertKind.decidedAtCompletion.map { PgNotifyAlertSink(kind: $0) }
        let worker = harness.startWorker(try harness.configuration(), postProcessors: sinks)
        try await harness.waitUntilProcessed([unreadable, real])
        let row = try await harness.row(unreadable)
        #expect(try row.decode("state", as: String.self) == "completed")
        #expect(try row.decode("is_fake", as: Bool?.self) == nil, "silence is not read as real")
        #expect(try row.decode("label", as: String?.self) == SimulatedScenario.unreadableLabel, "the raw label is kept")
        guard case .notification(let notification)? = await alerts.next() else {
            Issue.record("no alert was raised")
            return
        }
        await worker.stop()
        let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(notification.payload.utf8))
        #expect(event["event"] == .string("detection.unreadable"))
        #expect(event["request_id"] == .number(Double(unreadable)))
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.post_tasks WHERE request_id = \(real)") == 0, "a real verdict raises nothing")
    }

    @Test func theLabelVocabularyReadsFakeRealOrNeither() throws {
        for label in ["fake", "Fake", "LIKELY FAKE", "likely_fake", "Deepfake", "synthetic", "Spoof"] {
            #expect(DetectionItem.reading(ofLabel: label) == .fake, "\(label)")
        }
        for label in ["real", "Likely Real", "Not Fake", "not-fake", "genuine", "Authentic", "bona fide"] {
            #expect(DetectionItem.reading(ofLabel: label) == .real, "\(label)")
        }
        for label in ["inconclusive", "", "unknown", "fake?", "real-ish"] {
            #expect(DetectionItem.reading(ofLabel: label) == .unreadable, "\(label)")
        }
        let audioReal = Verdict.TrackVerdict(track: .audio, label: "real", score: 0.1)
        let visualUnknown = Verdict.TrackVerdict(track: .visual, label: "inconclusive", score: 0.4)
        #expect(Verdict(tracks: [visualUnknown, audioReal], threshold: nil).isFake == nil, "one track nobody can read leaves the verdict open")
        #expect(Verdict(tracks: [visualUnknown, audioReal], threshold: 0.5).isFake == false, "a score the threshold judges is readable")
        #expect(Verdict(tracks: [visualUnknown, .init(track: .audio, label: "Not Fake", score: nil)], threshold: 0.3).isFake == true)
        #expect(Verdict(tracks: [], threshold: nil).isUnreadable)
    }

    /// A busy team: the team's other services create detections faster than ten pages of 100 reach back.
    @Test func aLostAnswerIsFoundBehindThousandsOfTheTeamsOtherDetectionsThroughFailingPages() async throws {
        var simulator = SimulatorConfiguration(purgeDelay: .milliseconds(200))
        simulator.faults = FaultInjection(serverErrorRate: 0.3, endpoints: ["GET /detect"])
        simulator.seed = 7
        let harness = try await WorkerHarness.start(simulator)
        let url = "https://cdn.example.com/busy-team.wav"
        let id = try await harness.insert("media_url", [url])
        let client = DetectClient(configuration: DetectClientConfiguration(baseURL: harness.simulator.baseURL, token: nil))
        let sent = Date()
        let created = try await client.submit(.url(url), options: .init(), wait: false)
        await harness.simulator.state.setTeamTraffic(4_000)
        try await waitUntil("the team's other services have created 2,500 detections since") {
            _ = try? await client.detections(page: 1, pageSize: 10)
            return await harness.simulator.state.snapshot().teamDetections >= 2_500
        }
        await harness.simulator.state.setTeamTraffic(0)
        var request = try #require(try await RequestStore(pool: harness.pool).request(id: id))
        request.unansweredSince = sent
        let budget = APIBudget(pool: harness.pool, ratePerSecond: 1_000)
        let search = LostAnswerSearch(
            client: client, budget: budget, store: RequestStore(pool: harness.pool), installation: "k3f9q", pageLimit: 20,
            workerID: "test"
        )
        // A page that fails four times in a row ends the search as incomplete, and the worker looks again later:
        // so does this test.
        func find(_ search: LostAnswerSearch) async throws -> String? {
            for _ in 1..<3 {
                do { return try await search.find(for: request) } catch is LostAnswerSearch.Incomplete { continue }
            }
            return try await search.find(for: request)
        }
        #expect(try await find(search) == created.uuid)
        let narrow = LostAnswerSearch(
            client: client, budget: budget, store: RequestStore(pool: harness.pool), installation: "k3f9q", pageLimit: 1,
            workerID: "test"
        )
        #expect(try await find(narrow) == nil, "one page of 1,000 does not reach back that far")
        try await client.shutdown()
    }

    @Test func everyAttemptsCallbackSecretStaysValidUntilTheRequestEnds() async throws {
        let harness = try await WorkerHarness.start()
        let id = try await harness.insert("media_url", ["https://cdn.example.com/a.wav"])
        for secret in ["first", "second", "third"] {
            try await harness.pool.query("UPDATE detectq.requests SET callback_secret_hash = \(RequestProcessor.hash(secret)) WHERE id = \(id)")
        }
        let (_, hashes) = try #require(try await RequestStore(pool: harness.pool).awaitingCallback(id: id))
        #expect(Set(hashes) == Set(["first", "second", "third"].map(RequestProcessor.hash)))
    }

    @Test func eachDeploymentHasItsOwnInstallationName() async throws {
        let one = PostgresConnectionPool(configuration: try await TestDatabase.createMigratedDatabase(), maximumConnections: 1)
        let other = PostgresConnectionPool(configuration: try await TestDatabase.createMigratedDatabase(), maximumConnections: 1)
        let names = [try await Installation.name(one), try await Installation.name(other)]
        #expect(names.allSatisfy { $0.count == 5 && $0.allSatisfy { $0.isLowercase || $0.isNumber } }, "\(names)")
        #expect(names[0] != names[1])
    }

    @Test func aRefusedTokenIsProbedAgainAndARotatedTokenFileResumesTheWorker() async throws {
        var simulator = SimulatorConfiguration(purgeDelay: .milliseconds(200))
        simulator.requiredToken = "rotated-token"
        let harness = try await WorkerHarness.start(simulator)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-token-\(UUID().uuidString)")
        try Data("old-token\n".utf8).write(to: file)
        let id = try await harness.insert("media_url", ["https://cdn.example.com/a.wav"])
        let worker = harness.startWorker(try harness.configuration(environment: [
            "RESEMBLE_API_TOKEN_FILE": file.path, "DETECTQ_AUTH_RECHECK_SECONDS": "0.3",
        ]))
        try await waitUntil("the worker stops claiming on the refused token") { worker.worker.pausedReason != nil }
        #expect(worker.worker.pausedReason?.contains("RESEMBLE_API_TOKEN_FILE") == true)
        try await waitUntil("a probe has been refused again") {
            await harness.simulator.state.snapshot().requestsByEndpoint["GET /detect", default: 0] >= 2
        }
        #expect(try await harness.row(id).decode("state", as: String.self) == "queued", "no request is failed or spends an attempt")
        try Data("rotated-token\n".utf8).write(to: file)
        try await waitUntil("the worker resumes by itself with the rotated token") { worker.worker.pausedReason == nil }
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        #expect(try await harness.row(id).decode("attempt", as: Int.self) == 1)
        try? FileManager.default.removeItem(at: file)
    }

    @Test func aLostAnswerOnTheLastAttemptIsLookedForBeforeTheRequestFails() async throws {
        // Every submission is handled (and billed), and its answer cut off; the request has one attempt.
        let harness = try await WorkerHarness.start(.init(faults: .init(lostResponseRate: 1, endpoints: ["POST /detect"])))
        let id = try await completeAlone(on: harness, "media_url, wait_mode, max_attempts", ["https://cdn.example.com/last-chance.wav", "sync", 1])
        #expect(await harness.simulator.state.snapshot().submissions == 1, "found and adopted, not submitted again")
        let history = try await harness.history(id)
        #expect(history.starts(with: ["queued", "submitting", "retrying", "submitting", "awaiting_result"]), "\(history)")
        let detail = try await harness.pool.query("""
            SELECT detail FROM detectq.request_events WHERE request_id = \(id) AND to_state = 'awaiting_result'
            """).first?.decode("detail", as: String?.self)
        #expect(detail?.hasPrefix("adopted via list") == true, "\(String(describing: detail))")
    }

    /// The 402 window: the submissions under way when it starts meet it, then one probe per recheck, and no
    /// claim given back goes out again behind the pause.
    @Test func theFirst402ClosesEveryGateBeforeAnotherSubmissionGoesOut() async throws {
        var simulator = SimulatorConfiguration(purgeDelay: .milliseconds(200))
        simulator.outOfCredit = true
        let harness = try await WorkerHarness.start(simulator)
        var ids: [Int] = []
        for index in 0..<10 { ids.append(try await harness.insert("media_url", ["https://cdn.example.com/credit-\(index).wav"])) }
        let recheck = ["DETECTQ_CREDIT_RECHECK_SECONDS": "3"]
        let first = harness.startWorker(try harness.configuration(workerID: "first", environment: recheck))
        let second = harness.startWorker(try harness.configuration(workerID: "second", environment: recheck))
        try await waitUntil("the window has begun") { await harness.simulator.state.snapshot().creditRefusals > 0 }
        let windowStarted = ContinuousClock.now
        try await Task.sleep(until: windowStarted + .seconds(10))
        let refused = await harness.simulator.state.snapshot().creditRefusals
        // Ten requests under way at most, and a probe at 3, 6 and 9 s (one more for timing's sake).
        #expect(refused <= 14, "\(refused) submissions met the 402 in its first 10 s")
        await harness.simulator.state.setOutOfCredit(false)
        try await harness.waitUntilProcessed(ids)
        await first.stop()
        await second.stop()
        #expect(try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed' AND attempt = 1") == ids.count)
    }

    /// Zero retention: List Detects redacts the detection, so only its callback can find it; the request waits
    /// for that callback (up to DETECTQ_CALLBACK_TIMEOUT) instead of being submitted, and billed, again.
    @Test func aZeroRetentionRequestWhoseAnswerWasLostWaitsForItsCallback() async throws {
        // The detection takes a second, so its callback comes well after the retry's backoff (0.1 s here).
        let harness = try await WorkerHarness.start(.init(
            latency: .seconds(1), purgeDelay: .milliseconds(200), faults: .init(lostResponseRate: 1, endpoints: ["POST /detect"])
        ))
        let id = try await harness.insert("media_url, wait_mode, zero_retention_mode", ["https://cdn.example.com/private-call.wav", "poll", true])
        let worker = harness.startWorker(try harness.configuration(callbacks: true))
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        #expect(try await harness.row(id).decode("state", as: String.self) == "completed")
        #expect(await harness.simulator.state.snapshot().submissions == 1, "found by its callback, not submitted again")
        let detail = try await harness.pool.query("""
            SELECT detail FROM detectq.request_events WHERE request_id = \(id) AND to_state = 'awaiting_result'
            """).first?.decode("detail", as: String?.self)
        #expect(detail?.hasPrefix("adopted via callback") == true, "\(String(describing: detail))")
    }

    /// A search the API keeps failing is the API's trouble: it spends none of the request's attempts, and the
    /// request is looked for again until the search can finish.
    @Test func aSearchThatCannotFinishSpendsNoAttempt() async throws {
        // The submission's answer is lost after billing, and so is every List Detects page, until the test lifts it.
        let harness = try await WorkerHarness.start(.init(
            purgeDelay: .milliseconds(200), faults: .init(lostResponseRate: 1, endpoints: ["POST /detect", "GET /detect"])
        ))
        let id = try await harness.insert("media_url, wait_mode, max_attempts", ["https://cdn.example.com/searched.wav", "sync", 2])
        let worker = harness.startWorker(try harness.configuration())
        try await waitUntil("a search could not finish and gave the claim back") {
            try await harness.count("SELECT count(*) AS n FROM detectq.request_events WHERE request_id = \(id) AND to_state = 'queued'") >= 2
        }
        #expect(try await harness.row(id).decode("attempt", as: Int.self) <= 2, "no attempt spent by the search")
        await harness.simulator.state.setFaults(.none)
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        let row = try await harness.row(id)
        #expect(try row.decode("state", as: String.self) == "completed")
        #expect(try row.decode("attempt", as: Int.self) == 2)
        #expect(await harness.simulator.state.snapshot().submissions == 1, "found and adopted once the search could finish")
    }

    /// Inserts one request, runs a worker until it is processed, and expects it completed; returns its id.
    @discardableResult
    private func completeAlone(on harness: WorkerHarness, _ columns: String, _ values: [any PostgresEncodable]) async throws -> Int {
        let id = try await harness.insert(columns, values)
        let worker = harness.startWorker(try harness.configuration())
        try await harness.waitUntilProcessed([id])
        await worker.stop()
        let row = try await harness.row(id)
        let message = try row.decode("error_message", as: String?.self) ?? ""
        #expect(try row.decode("state", as: String.self) == "completed", "\(message)")
        return id
    }
}
