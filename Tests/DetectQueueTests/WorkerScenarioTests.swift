import AsyncHTTPClient
import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import NIOCore
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport

@Suite("Worker scenarios: load, faults, forgery, bad tokens, latency", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct WorkerScenarioTests {
    @Test func threeWorkersDrainTwoThousandRequestsSubmittingEachOnce() async throws {
        let harness = try await WorkerHarness.start()
        try await harness.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode)
            SELECT 'https://cdn.example.com/' || CASE WHEN n % 3 = 0 THEN 'fake-' ELSE '' END || n || '.wav', 'sync'
            FROM generate_series(1, 2000) AS n
            """)
        let started = ContinuousClock.now
        let log = CapturedLog()
        let workers = try ["w1", "w2", "w3"].map {
            harness.startWorker(try harness.configuration(workerID: $0, environment: ["DETECTQ_API_RATE_LIMIT": "5000"]), log: log)
        }
        let ids = try await harness.pool.query("SELECT id FROM detectq.requests").map { try $0.decode("id", as: Int.self) }
        try await log.explaining { try await harness.waitUntilFinished(ids, timeout: .seconds(240)) }
        let elapsed = ContinuousClock.now - started
        for worker in workers { await worker.stop() }

        let states = try await harness.pool.query("SELECT state::text AS state, count(*) AS n FROM detectq.requests GROUP BY state")
        let unfinished = try await harness.pool.query("""
            SELECT r.id, r.state::text || ' after ' || r.attempt || ' attempts: ' || coalesce(r.error_message, '') || ' | '
                   || string_agg(coalesce(e.from_state::text, '-') || '>' || e.to_state || ' by ' || coalesce(e.worker_id, '?')
                                 || coalesce(' (' || e.detail || ')', ''), '; ' ORDER BY e.id) AS h
            FROM detectq.requests r JOIN detectq.request_events e ON e.request_id = r.id
            WHERE r.state <> 'completed' GROUP BY r.id ORDER BY r.id LIMIT 3
            """).map { try $0.decode("h", as: String.self) }
        #expect(try states.map { "\(try $0.decode("state", as: String.self))=\(try $0.decode("n", as: Int.self))" } == ["completed=2000"],
                "\(unfinished.joined(separator: "\n"))\n--- the workers' log (notices and above):\n\(log.text.suffix(6_000))")
        let stats = await harness.simulator.state.snapshot()
        let twice = stats.submissionsByMedia.filter { $0.value > 1 }.keys.sorted()
        let history = try await harness.pool.query("""
            SELECT string_agg(coalesce(e.from_state::text, '-') || '>' || e.to_state || ' by ' || coalesce(e.worker_id, '?')
                              || coalesce(' (' || e.detail || ')', ''), '; ' ORDER BY e.id) AS h
            FROM detectq.request_events e JOIN detectq.requests r ON r.id = e.request_id WHERE r.media_url = \(twice.first ?? "")
            """)[0].decode("h", as: String?.self) ?? ""
        #expect(stats.submissions == 2000 && twice.isEmpty, "each submitted exactly once: \(stats.submissions) submissions, twice: \(twice.prefix(3)); \(history)")
        let spread = try await harness.pool.query("""
            SELECT worker_id, count(*) AS n FROM detectq.request_events WHERE to_state = 'submitting' GROUP BY worker_id
            """).map { try $0.decode("n", as: Int.self) }
        #expect(spread.count == 3 && spread.allSatisfy { $0 > 100 }, "the work spread over the workers: \(spread)")
        print("3 workers, 2000 requests through the simulator: \(elapsed); per worker \(spread)")
        await harness.stop()
    }

    @Test func underFaultsEveryRequestCompletesAndTheRateLimitHolds() async throws {
        let harness = try await WorkerHarness.start(.init(
            latency: .milliseconds(200), purgeDelay: nil,
            faults: .init(serverErrorRate: 0.2, rateLimitRate: 0.05, retryAfterSeconds: 1, dropRate: 0.05,
                          lostCallbackRate: 0.2, duplicateCallbackRate: 0.2),
            seed: 42
        ))
        try await harness.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, max_attempts)
            SELECT 'https://cdn.example.com/' || CASE WHEN n % 2 = 0 THEN 'fake-' ELSE '' END || n || '.mp3',
                   (ARRAY['sync', 'poll', 'callback'])[1 + n % 3], 25
            FROM generate_series(1, 150) AS n
            """)
        let settings = ["DETECTQ_API_RATE_LIMIT": "40", "DETECTQ_CALLBACK_TIMEOUT": "1"]
        let slots = RecordingSlots(pool: harness.pool)
        let workers = try ["f1", "f2", "f3"].map {
            harness.startWorker(try harness.configuration(workerID: $0, callbacks: true, environment: settings), slots: slots)
        }
        let ids = try await harness.pool.query("SELECT id FROM detectq.requests").map { try $0.decode("id", as: Int.self) }
        try await harness.waitUntilFinished(ids, timeout: .seconds(240))
        for worker in workers { await worker.stop() }

        let completed = try await harness.pool.query("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'")[0]
            .decode("n", as: Int.self)
        #expect(completed == 150)
        let retried = try await harness.pool.query("SELECT count(*) AS n FROM detectq.requests WHERE attempt > 1")[0]
            .decode("n", as: Int.self)
        let retryEvents = try await harness.pool.query("SELECT count(*) AS n FROM detectq.request_events WHERE to_state = 'retrying'")[0]
            .decode("n", as: Int.self)
        let stats = await harness.simulator.state.snapshot()
        #expect(retried > 0 && retryEvents >= retried, "attempts are recorded: \(retried) requests retried, \(retryEvents) retry events")
        #expect(stats.injectedServerErrors > 0 && stats.injectedDrops > 0 && stats.injectedRateLimits > 0)
        #expect(stats.callbacksLost > 0 && stats.callbacksDuplicated > 0)
        #expect(stats.submissionsByMedia.count == 150)
        // The budget's promise, across the three workers: at most the rate plus one slot granted in any second of
        // the database's clock. When each request then reached the simulator is later by however long a busy
        // machine took to send it (a few granted in one second can land in the next), so the simulator's own peak
        // is printed, not held to the promise; the benchmark measures it on a quiet machine.
        #expect(slots.count >= stats.submissions, "every call took a slot: \(slots.count) slots, \(stats.submissions) submissions")
        #expect(slots.peakPerSecond <= 41, "peak \(slots.peakPerSecond) slots granted in one second")
        print("faults: \(stats.injectedServerErrors) 503s, \(stats.injectedRateLimits) 429s, \(stats.injectedDrops) drops, \(stats.callbacksLost) lost and \(stats.callbacksDuplicated) duplicated callbacks; \(retried) requests retried; peak \(slots.peakPerSecond) slots granted and \(stats.peakRequestsPerSecond) requests arrived in one second; \(stats.submissions) submissions for 150 requests")
        await harness.stop()
    }

    @Test func forgedCallbacksChangeNothing() async throws {
        // The detection takes a minute, so the forgeries below all meet a request still awaiting its result,
        // however slow the machine; the simulator is then fast-forwarded and a poll finds the verdict.
        let harness = try await WorkerHarness.start(.init(latency: .seconds(60)))
        let configuration = try harness.configuration(callbacks: true, environment: ["DETECTQ_CALLBACK_TIMEOUT": "2"])
        let waiting = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-x.wav", "callback"])
        let queued = try await harness.insert("media_url, wait_mode, run_at", ["https://cdn.example.com/y.wav", "callback", Date().addingTimeInterval(3600)])
        let worker = harness.startWorker(configuration)
        try await waitUntil("request \(waiting) awaits its result") {
            try await harness.row(waiting).decode("state", as: String.self) == "awaiting_result"
        }
        let base = configuration.callbackURL!
        let body = #"{"success": true, "item": {"uuid": "forged", "status": "completed", "metrics": {"label": "real"}}}"#
        for url in ["\(base)/callbacks/\(waiting)/wrong-secret", "\(base)/callbacks/999999/abc", "\(base)/callbacks/\(queued)/abc",
                    "\(base)/callbacks/not-a-number/abc"] {
            #expect(try await post(url, body: ByteBuffer(string: body)) == 404, "\(url)")
        }
        #expect(try await post("\(base)/callbacks/\(waiting)/x", body: ByteBuffer(repeating: 0x20, count: 20 << 20)) == 413)
        // A callback the database cannot check now may be genuine: the sender is told to try again, not "not found".
        try await harness.pool.query("ALTER TABLE detectq.requests RENAME TO requests_moved_away")
        let unreadable = try await post("\(base)/callbacks/\(waiting)/any-secret", body: ByteBuffer(string: body))
        try await harness.pool.query("ALTER TABLE detectq.requests_moved_away RENAME TO requests")
        #expect(unreadable == 503)
        #expect(try await post("\(base)/admin", body: ByteBuffer(string: "{}")) == 404, "nothing else answers")
        #expect(try await get("\(base)/healthz") == 200)
        #expect(try await get("\(base)/readyz") == 200)
        #expect(try await harness.row(waiting).decode("state", as: String.self) == "awaiting_result")
        #expect(try await harness.row(queued).decode("state", as: String.self) == "queued")
        await harness.simulator.state.fastForward()
        try await harness.waitUntilFinished([waiting])
        let row = try await harness.row(waiting)
        #expect(try row.decode("state", as: String.self) == "completed")
        #expect(try row.decode("is_fake", as: Bool?.self) == true, "the stored verdict is the API's, not the forger's")
        await worker.stop()
        await harness.stop()
    }

    @Test func aWrongTokenFailsNoRequestAndTheRightOneCompletesThemAll() async throws {
        let harness = try await WorkerHarness.start(.init(requiredToken: "the-right-token"))
        var ids: [Int] = []
        for index in 0..<5 { ids.append(try await harness.insert("media_url", ["https://cdn.example.com/\(index).wav"])) }
        let wrong = harness.startWorker(try harness.configuration(environment: ["RESEMBLE_API_TOKEN": "a-wrong-token"]))
        try await waitUntil("the worker pauses on the refused token") { wrong.worker.pausedReason != nil }
        // A request the worker held when the API refused the token is given back: wait for every one to be.
        try await waitUntil("every request is queued again") {
            try await harness.count("SELECT count(*) AS n FROM detectq.requests WHERE state <> 'queued'") == 0
        }
        #expect(wrong.worker.pausedReason?.contains("RESEMBLE_API_TOKEN") == true)
        #expect(wrong.worker.pausedReason?.contains("a-wrong-token") == false)
        let readiness = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(wrong.worker.configuration.httpPort)/readyz"), timeout: .seconds(10)
        )
        #expect(readiness.status.code == 503, "a paused worker is not ready")
        _ = try await readiness.body.collect(upTo: 1 << 16)
        let states = try await harness.pool.query("SELECT id, state::text AS state, attempt FROM detectq.requests ORDER BY id")
        let described = try states.map { "\(try $0.decode("id", as: Int.self)) \(try $0.decode("state", as: String.self)) \(try $0.decode("attempt", as: Int.self))" }
        let history = try await harness.history(ids[0])
        #expect(try states.allSatisfy { try $0.decode("state", as: String.self) == "queued" && $0.decode("attempt", as: Int.self) == 0 },
                "no request failed or spent an attempt: \(described); the first's history: \(history)")
        await wrong.stop()

        let right = harness.startWorker(try harness.configuration(environment: ["RESEMBLE_API_TOKEN": "the-right-token"]))
        try await harness.waitUntilFinished(ids)
        await right.stop()
        #expect(try await harness.pool.query("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self) == 5)
        await harness.stop()
    }

    @Test func enqueueToClaimLatencyWithAnIdleWorker() async throws {
        let harness = try await WorkerHarness.start()
        let worker = harness.startWorker(try harness.configuration())
        // A first request shows the worker is up and listening before anything is timed.
        try await harness.waitUntilFinished([try await harness.insert("media_url", ["https://cdn.example.com/warm-up.wav"])])
        var latencies: [Double] = []
        for index in 0..<100 {
            let id = try await harness.insert("media_url", ["https://cdn.example.com/l\(index).wav"])
            try await harness.waitUntilFinished([id])
            latencies.append(try await harness.pool.query("""
                SELECT EXTRACT(EPOCH FROM (SELECT at FROM detectq.request_events WHERE request_id = r.id AND to_state = 'submitting')
                       - (SELECT at FROM detectq.request_events WHERE request_id = r.id AND to_state = 'queued'))::float8 * 1000 AS ms
                FROM detectq.requests r WHERE id = \(id)
                """)[0].decode("ms", as: Double.self))
        }
        await worker.stop()
        latencies.sort()
        let p50 = latencies[49], p95 = latencies[94], p99 = latencies[98]
        print("enqueue-to-claim over 100 single inserts: p50 \(p50.formatted(.number.precision(.fractionLength(1)))) ms, p95 \(p95.formatted(.number.precision(.fractionLength(1)))) ms, p99 \(p99.formatted(.number.precision(.fractionLength(1)))) ms")
        // One-second polling would put the median near 500 ms; a NOTIFY wakes the worker in milliseconds, and a
        // busy machine (the stress run) still stays far below the bound.
        #expect(p50 < 250, "LISTEN/NOTIFY wakes the worker, not its one-second polling: p50 \(p50) ms")
        await harness.stop()
    }

    private func get(_ url: String) async throws -> UInt {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        return UInt(response.status.code)
    }

    private func post(_ url: String, body: ByteBuffer) async throws -> UInt {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        _ = try await response.body.collect(upTo: 1 << 20)
        return UInt(response.status.code)
    }
}
