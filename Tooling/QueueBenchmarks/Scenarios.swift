import DetectQueue
import DetectSimulator
import EmbeddedPostgres
import Foundation
import Postgres
import ResembleDetect
import TextEncodings

/// The benchmark's scenarios, each measured against its reference in the same run.
package struct Scenarios: Sendable {
    let context: BenchContext
    /// Scales every scenario's size (1 is the issue's full size; smaller for a quick look).
    let scale: Double

    package init(context: BenchContext, scale: Double = 1) {
        self.context = context
        self.scale = scale
    }

    func scaled(_ count: Int) -> Int { max(10, Int(Double(count) * scale)) }

    /// The environment of a worker process against `database`.
    func workerEnvironment(_ database: BenchDatabase, id: String, extra: [String: String] = [:]) throws -> [String: String] {
        [
            "DATABASE_URL": database.uri, "DETECTQ_WORKER_ID": id, "DETECTQ_HTTP_PORT": "\(try freePort())",
            "DETECTQ_API_RATE_LIMIT": "100000", "RESEMBLE_API_TOKEN": "",
            "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2", "DETECTQ_CONCURRENCY": "200", "DETECTQ_POLL_INTERVAL": "0.5",
        ].merging(extra) { $1 }
    }

    // MARK: - 1. Queue core

    /// What a drain measured: its rate, and where its CPU went.
    package struct Drain: Sendable {
        package var rate: Double
        package var cpu: CPUPerJob
    }

    /// Drains `jobs` requests through `workers` processes answering with the instant in-process API.
    package func queueCore(jobs: Int, workers: Int) async throws -> Drain {
        let database = try await context.freshDatabase("core_\(workers)")
        var children: [ChildProcess] = []
        for number in 1...workers {
            children.append(try await context.start(
                ["bench-worker"], environment: try workerEnvironment(database, id: "core\(workers)-\(number)"), name: "core\(workers)-\(number)"
            ))
        }
        try await database.waitForWorkers("core\(workers)-", count: workers)
        let backend = try await database.backendPID()
        let before = CPUPerJob.Reading(serverBackend: backend, workers: children.map(\.pid))
        let start = try await database.insertURLRequests(jobs)
        try await database.waitFor("state = 'completed'", count: jobs, timeout: .seconds(600), interval: .milliseconds(250))
        let after = CPUPerJob.Reading(serverBackend: backend, workers: children.map(\.pid))
        let rate = try await database.throughput(since: start, completed: jobs)
        for child in children { await child.stop() }
        await context.drop(database)
        return Drain(rate: rate, cpu: CPUPerJob(from: before, to: after, jobs: jobs, simulatorInProcess: false))
    }

    /// The claim path alone, for row 13a: `jobs` requests inserted (with `hashed`, each carrying a `media_sha256`
    /// no other has) and the tables vacuumed and analysed before one worker starts, so that neither arm's drain
    /// shares the machine with the maintenance its insert left (the hashes' own table, in the hashed arm); the rate
    /// runs from the first claim to the last completion, and its CPU per job from the worker's start to then.
    package func claimPath(jobs: Int, hashed: Bool) async throws -> Drain {
        let database = try await context.freshDatabase("claim_path")
        _ = try await database.insertURLRequests(jobs, hashed: hashed)
        try await database.pool.query("VACUUM (ANALYZE) detectq.requests")
        try await database.pool.query("VACUUM (ANALYZE) detectq.request_media_hashes")
        let backend = try await database.backendPID()
        let worker = try await context.start(["bench-worker"], environment: try workerEnvironment(database, id: "claim-1"), name: "claim-1")
        let before = CPUPerJob.Reading(serverBackend: backend, workers: [worker.pid])
        try await database.waitFor("state = 'completed'", count: jobs, timeout: .seconds(600), interval: .milliseconds(250))
        let after = CPUPerJob.Reading(serverBackend: backend, workers: [worker.pid])
        let span = try await database.pool.query("""
            SELECT EXTRACT(EPOCH FROM (SELECT max(completed_at) FROM detectq.requests)
                   - (SELECT min(at) FROM detectq.request_events WHERE to_state = 'submitting'))::float8 AS seconds
            """)[0].decode("seconds", as: Double.self)
        await worker.stop()
        await context.drop(database)
        return Drain(rate: Double(jobs) / max(span, 0.001), cpu: CPUPerJob(from: before, to: after, jobs: jobs, simulatorInProcess: false))
    }

    /// The ceiling: batched claim-and-complete SQL alone, with no worker around it. Each of `connections`
    /// loops claims 100 requests (the worker's own claim statement, SKIP LOCKED) and completes them in one
    /// UPDATE; the table's triggers (history, counts) run as they do for the worker.
    package func bareSQL(jobs: Int, connections: Int) async throws -> Double {
        let database = try await context.freshDatabase("bare")
        let pool = PostgresConnectionPool(
            configuration: PostgresConfiguration(connectionString: database.uri, applicationName: "detectq bench bare"),
            maximumConnections: connections
        )
        let store = RequestStore(pool: pool)
        let start = try await database.insertURLRequests(jobs)
        let result = PostgresJSON(text: #"{"uuid":"bare","status":"completed","metrics":{"label":"real","aggregated_score":"0.08"}}"#)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in 0..<connections {
                group.addTask {
                    let worker = "bare-\(connection)"
                    while true {
                        let claimed = try await store.claim(workerID: worker, limit: 100, lease: .seconds(60))
                        if claimed.isEmpty { return }
                        try await pool.query("""
                            UPDATE detectq.requests SET state = 'completed', result = \(result), completed_at = now(),
                                locked_by = NULL, locked_until = NULL
                            WHERE id = ANY(\(claimed.map(\.id))) AND state = 'submitting' AND locked_by = \(worker)
                            """)
                    }
                }
            }
            try await group.waitForAll()
        }
        await pool.close()
        let rate = try await database.throughput(since: start, completed: jobs)
        await context.drop(database)
        return rate
    }

    // MARK: - 2. End to end

    /// Drains `jobs` requests through one worker process and the simulator over loopback HTTP, zero latency.
    package func endToEnd(jobs: Int) async throws -> Drain {
        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let database = try await context.freshDatabase("e2e")
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: "e2e-1", extra: [
            "RESEMBLE_BASE_URL": simulator.baseURL,
        ]), name: "e2e-1")
        try await database.waitForWorkers("e2e-", count: 1)
        let backend = try await database.backendPID()
        let before = CPUPerJob.Reading(serverBackend: backend, workers: [worker.pid])
        let start = try await database.insertURLRequests(jobs)
        try await database.waitFor("state = 'completed'", count: jobs, timeout: .seconds(900), interval: .milliseconds(250))
        let after = CPUPerJob.Reading(serverBackend: backend, workers: [worker.pid])
        let rate = try await database.throughput(since: start, completed: jobs)
        await worker.stop()
        await simulator.stop()
        await context.drop(database)
        return Drain(rate: rate, cpu: CPUPerJob(from: before, to: after, jobs: jobs, simulatorInProcess: true))
    }

    // MARK: - 3 and 4. Many in flight

    /// What a long-latency run showed.
    package struct InFlightResult: Sendable {
        package var throughput: Double
        package var ideal: Double
        package var peakResidentBytes: Int64
        /// The most claims the worker held at once (callback mode frees them while waiting).
        package var peakHeldSlots: Int
    }

    /// `concurrency` requests in flight at a time in one worker process against a simulator taking `latency`
    /// per detection, in `waitMode` (`sync` or `callback`); `waves` rounds of them.
    package func inFlight(concurrency: Int, latency: Duration, waitMode: String, waves: Int = 2) async throws -> InFlightResult {
        let simulator = try await DetectSimulator.start(configuration: .init(latency: latency, purgeDelay: nil))
        let database = try await context.freshDatabase("inflight_\(waitMode)")
        let port = try freePort()
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: "inflight-1", extra: [
            "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_CONCURRENCY": "\(concurrency)", "DETECTQ_HTTP_PORT": "\(port)",
            "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)", "DETECTQ_CALLBACK_TIMEOUT": "600",
        ]), name: "inflight-\(waitMode)")
        try await database.waitForWorkers("inflight-", count: 1)
        let jobs = concurrency * waves
        let start = try await database.insertURLRequests(jobs, waitMode: waitMode)
        var peakHeld = 0
        var peakResident: Int64 = 0
        let deadline = ContinuousClock.now + .seconds(600)
        while try await database.count("state = 'completed'") < jobs {
            guard ContinuousClock.now < deadline else { throw BenchError("the in-flight run did not finish in 10 minutes") }
            peakHeld = max(peakHeld, try await database.count("state = 'submitting'"))
            peakResident = max(peakResident, worker.memory.peak)
            try await Task.sleep(for: .milliseconds(500))
        }
        peakResident = max(peakResident, worker.memory.peak)
        let rate = try await database.throughput(since: start, completed: jobs)
        await worker.stop()
        await simulator.stop()
        await context.drop(database)
        return InFlightResult(
            throughput: rate, ideal: Double(concurrency) / latency.seconds, peakResidentBytes: peakResident, peakHeldSlots: peakHeld
        )
    }

    // MARK: - 5. Rate limit

    /// Three workers sharing `rate` requests/s for `duration`: the rate achieved and the busiest one-second
    /// window the simulator saw.
    package func rateLimit(rate: Double, duration: Duration, workers: Int = 3) async throws -> (achieved: Double, peakWindow: Int) {
        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let database = try await context.freshDatabase("rate")
        _ = try await database.insertURLRequests(Int(rate * duration.seconds * 1.5) + 100)
        var children: [ChildProcess] = []
        for number in 1...workers {
            children.append(try await context.start(["worker"], environment: try workerEnvironment(database, id: "rate-\(number)", extra: [
                "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_API_RATE_LIMIT": "\(rate)", "DETECTQ_CONCURRENCY": "50",
            ]), name: "rate-\(number)"))
        }
        try await database.waitForWorkers("rate-", count: workers)
        let before = await simulator.state.snapshot().requests
        let started = ContinuousClock.now
        try await Task.sleep(for: duration)
        let stats = await simulator.state.snapshot()
        let elapsed = ContinuousClock.now - started
        for child in children { await child.stop() }
        await simulator.stop()
        await context.drop(database)
        return (Double(stats.requests - before) / elapsed.seconds, stats.peakRequestsPerSecond)
    }

    // MARK: - 6. Upload

    /// What an upload run showed.
    package struct UploadResult: Sendable {
        package var megabytesPerSecond: Double
        package var peakGrowthBytes: Int64
    }

    /// One file of `bytes` through one worker process (multipart up to 150 MB, a secure upload above): MB/s from
    /// insert to completion, and how much the worker's peak resident set grew. A 1 MB upload goes first, so
    /// that what the HTTP client and its threads set up once is not counted against the file.
    package func upload(bytes: Int64, name: String, environment: [String: String] = [:]) async throws -> UploadResult {
        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let database = try await context.freshDatabase("upload")
        let media = context.logDirectory.appendingPathComponent("media-\(name)")
        try FileManager.default.createDirectory(at: media, withIntermediateDirectories: true)
        let file = media.appendingPathComponent("\(name).wav")
        let warmUp = media.appendingPathComponent("warm-up.wav")
        for (path, size) in [(file, bytes), (warmUp, Int64(1_000_000))] {
            try Data("RIFF".utf8).write(to: path)
            let handle = try FileHandle(forWritingTo: path)
            try handle.truncate(atOffset: UInt64(size))
            try handle.close()
        }
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: "upload-1", extra: [
            "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_MEDIA_ROOT": media.path,
        ].merging(environment) { $1 }), name: "upload-\(name)")
        try await database.waitForWorkers("upload-", count: 1)
        try await database.pool.query("INSERT INTO detectq.requests (media_path, wait_mode) VALUES ('warm-up.wav', 'sync')")
        try await database.waitFor("state = 'completed'", count: 1, timeout: .seconds(60), interval: .milliseconds(50))
        try await Task.sleep(for: .milliseconds(200))
        worker.resetPeakMemory()
        let baseline = worker.memory.resident
        let started = ContinuousClock.now
        try await database.pool.query("INSERT INTO detectq.requests (media_path, wait_mode) VALUES (\(file.lastPathComponent), 'sync')")
        try await database.waitFor("state = 'completed'", count: 2, timeout: .seconds(900), interval: .milliseconds(50))
        let elapsed = ContinuousClock.now - started
        let peak = worker.memory.peak
        await worker.stop()
        await simulator.stop()
        await context.drop(database)
        try? FileManager.default.removeItem(at: media)
        return UploadResult(megabytesPerSecond: Double(bytes) / 1e6 / elapsed.seconds, peakGrowthBytes: max(0, peak - baseline))
    }

    /// The SHA-256 of a `bytes` file as a worker computes it before it submits a `media_path` (`MediaDigest`, in
    /// this process): its time, and how much this process's peak resident set grew meanwhile.
    package func mediaHash(bytes: Int64) async throws -> (seconds: Double, peakGrowthBytes: Int64) {
        let path = context.logDirectory.appendingPathComponent("hash-\(bytes).wav")
        try Data("RIFF".utf8).write(to: path)
        let handle = try FileHandle(forWritingTo: path)
        try handle.truncate(atOffset: UInt64(bytes))
        try handle.close()
        defer { try? FileManager.default.removeItem(at: path) }
        let file = try MediaFile(path: path.path)
        let pid = getpid()
        ProcessMemory.resetPeak(pid: pid)
        let baseline = ProcessMemory.read(pid: pid).resident
        let started = ContinuousClock.now
        _ = try await MediaDigest.sha256(of: file)
        let elapsed = ContinuousClock.now - started
        return (elapsed.seconds, max(0, ProcessMemory.read(pid: pid).peak - baseline))
    }

    // MARK: - 7. Latency

    /// Enqueue-to-claim latency over `inserts` single inserts with an idle worker: p50, p95 and p99 in
    /// milliseconds, on the database's clock (insert time to the claim's event).
    package func enqueueToClaim(inserts: Int) async throws -> (p50: Double, p95: Double, p99: Double) {
        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let database = try await context.freshDatabase("latency")
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: "latency-1", extra: [
            "RESEMBLE_BASE_URL": simulator.baseURL,
        ]), name: "latency")
        try await database.waitForWorkers("latency-", count: 1)
        for number in 1...inserts {
            try await database.pool.query("INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\("https://bench.invalid/l-\(number).wav"), 'sync')")
            try await database.waitFor("state = 'completed'", count: number, timeout: .seconds(30), interval: .milliseconds(2))
        }
        let latencies = try await database.pool.query("""
            SELECT EXTRACT(EPOCH FROM e.at - r.created_at)::float8 * 1000 AS ms
            FROM detectq.requests r JOIN detectq.request_events e ON e.request_id = r.id AND e.to_state = 'submitting'
            ORDER BY 1
            """).map { try $0.decode("ms", as: Double.self) }
        await worker.stop()
        await simulator.stop()
        await context.drop(database)
        return (latencies.percentile(0.5), latencies.percentile(0.95), latencies.percentile(0.99))
    }

    // MARK: - PgQueuer

    /// PgQueuer's own drain benchmark on the same server: jobs/s, or nil when Python or PyPI is not at hand.
    /// `primed` runs it as its authors' runs have it, on statistics primed by 20,000 jobs (the drain on a table
    /// never analysed plans its dequeue about 3.4 times slower at 50,000); otherwise on the fresh table.
    package func pgQueuer(jobs: Int, script: URL, primed: Bool) async throws -> Double? {
        let database = try await context.freshDatabase("pgqueuer")
        let process = Process()
        process.executableURL = script
        process.arguments = [database.uri, "\(jobs)", primed ? "primed" : "cold"]
        let output = Pipe()
        process.standardOutput = output
        let log = context.logDirectory.appendingPathComponent("pgqueuer.log")
        try Data().write(to: log)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        await context.drop(database)
        guard process.terminationStatus == 0,
              let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
              let object = try JSONText.object(from: Data(line.utf8)) as? [String: Any],
              let rate = object["rate"] as? Double
        else { return nil }
        return rate
    }

    private func freePort() throws -> Int {
        try LoopbackPort.free()
    }
}
