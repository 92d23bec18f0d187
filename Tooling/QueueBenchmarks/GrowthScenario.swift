import DetectSimulator
import Foundation
import Postgres
import Synchronization

/// Scenario 9: the same measures on a database holding a page's worth of finished requests (10,000, "empty")
/// and on one holding `rows` of them with their histories and post-tasks (REFERENCE.md section 7, "Growing for years"), in one run: claim and complete
/// throughput, enqueue-to-claim latency, the dashboard's pages, and `detectq prune` of one day with the claim
/// latency measured while it runs.
extension Scenarios {
    /// What one database measured.
    package struct GrowthSide: Sendable {
        /// Claims and completions per second, one worker, the instant API.
        package var throughput: Double
        /// Insert to claim, idle worker, milliseconds.
        package var latencyP50: Double
        package var latencyP95: Double
        /// Each page's median answer time in milliseconds, by name.
        package var pages: [(name: String, milliseconds: Double)]
    }

    /// What scenario 9 measured.
    package struct GrowthResult: Sendable {
        package var rows: Int
        package var loadSeconds: Double
        package var empty: GrowthSide
        package var grown: GrowthSide
        package var prunedRows: Int
        package var pruneSeconds: Double
        /// Insert to claim while the prune runs, milliseconds.
        package var latencyDuringPruneP50: Double
        package var latencyDuringPruneP95: Double
    }

    package func growth(rows: Int) async throws -> GrowthResult {
        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let empty = try await context.freshDatabase("growth_empty")
        let grown = try await context.freshDatabase("growth_full")
        do {
            // The reference holds a page's worth of the same history, so every list has rows to show on both.
            try await Self.loadHistory(scaled(10_000), into: empty.pool)
            let loadStarted = ContinuousClock.now
            try await Self.loadHistory(rows, into: grown.pool)
            let loadSeconds = (ContinuousClock.now - loadStarted) / .seconds(1)
            let jobs = scaled(20_000)
            let emptySide = try await measureGrowthSide(empty, name: "empty", jobs: jobs, simulator: simulator)
            let grownSide = try await measureGrowthSide(grown, name: "grown", jobs: jobs, simulator: simulator)
            let prune = try await pruneOneDay(grown, simulator: simulator)
            await context.drop(empty)
            await context.drop(grown)
            await simulator.stop()
            return GrowthResult(
                rows: rows, loadSeconds: loadSeconds, empty: emptySide, grown: grownSide, prunedRows: prune.rows, pruneSeconds: prune.seconds,
                latencyDuringPruneP50: prune.p50, latencyDuringPruneP95: prune.p95
            )
        } catch {
            await context.drop(empty)
            await context.drop(grown)
            await simulator.stop()
            throw error
        }
    }

    private func measureGrowthSide(_ database: BenchDatabase, name: String, jobs: Int, simulator: DetectSimulator) async throws -> GrowthSide {
        let worker = try await context.start(["bench-worker"], environment: try workerEnvironment(database, id: "growth-\(name)"), name: "growth-\(name)")
        try await database.waitForWorkers("growth-\(name)", count: 1)
        let baseline = try await database.maxID()
        let start = try await database.insertURLRequests(jobs)
        try await database.waitFor("id > \(baseline) AND state = 'completed'", count: jobs, timeout: .seconds(600), interval: .milliseconds(250))
        let throughput = try await database.throughput(since: start, completed: jobs, after: baseline)
        await worker.stop()

        let latency = try await claimLatency(database, inserts: scaled(300), simulator: simulator, name: "\(name)-latency")
        let pages = try await withDashboard(database) { get in
            var pages: [(String, Double)] = []
            for (page, path) in [("overview", "/dashboard"), ("requests, newest", "/dashboard/requests"), ("failures", "/dashboard/failures"),
                                 ("requests, failed", "/dashboard/requests?state=failed"), ("one request", "/dashboard/requests/\(baseline + 1)")] {
                var times: [Double] = []
                for sample in 0..<35 {
                    let started = ContinuousClock.now
                    try await get(path)
                    if sample >= 5 { times.append((ContinuousClock.now - started) / .milliseconds(1)) }
                }
                pages.append((page, times.sorted()[times.count / 2]))
            }
            return pages
        }
        return GrowthSide(throughput: throughput, latencyP50: latency.p50, latencyP95: latency.p95, pages: pages)
    }

    /// Insert to claim over `inserts` single inserts spaced 20 ms apart, with one idle `sync` worker; p50 and p95
    /// in milliseconds on the database's clock. `during` runs beside the inserts when given.
    private func claimLatency(
        _ database: BenchDatabase, inserts: Int, simulator: DetectSimulator, name: String,
        during: (@Sendable () async throws -> Void)? = nil
    ) async throws -> (p50: Double, p95: Double) {
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: name, extra: [
            "RESEMBLE_BASE_URL": simulator.baseURL,
        ]), name: name)
        try await database.waitForWorkers(name, count: 1)
        let baseline = try await database.maxID()
        let background = during.map { work in Task { try await work() } }
        for number in 1...inserts {
            try await database.pool.query("""
                INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\("https://bench.invalid/\(name)-\(number).wav"), 'sync')
                """)
            try await Task.sleep(for: .milliseconds(20))
        }
        try await database.waitFor("id > \(baseline) AND state = 'completed'", count: inserts, timeout: .seconds(120), interval: .milliseconds(50))
        try await background?.value
        let latencies = try await database.pool.query("""
            SELECT EXTRACT(EPOCH FROM e.at - r.created_at)::float8 * 1000 AS ms
            FROM detectq.requests r JOIN detectq.request_events e ON e.request_id = r.id AND e.to_state = 'submitting'
            WHERE r.id > \(baseline) ORDER BY 1
            """).map { try $0.decode("ms", as: Double.self) }
        await worker.stop()
        return (latencies.percentile(0.5), latencies.percentile(0.95))
    }

    /// `detectq prune` of the oldest day (`--older-than 29d` over 30 days of history), timed, with the claim
    /// latency measured while it runs.
    private func pruneOneDay(_ database: BenchDatabase, simulator: DetectSimulator) async throws -> (rows: Int, seconds: Double, p50: Double, p95: Double) {
        let before = try await database.count("updated_at < now() - interval '29 days'")
        let seconds = Mutex(0.0)
        let latency = try await claimLatency(database, inserts: scaled(300), simulator: simulator, name: "prune-latency") {
            let started = ContinuousClock.now
            let prune = try await context.run(["prune", "--older-than", "29d"], environment: ["DATABASE_URL": database.uri], name: "prune")
            guard prune == 0 else { throw BenchError("detectq prune exited with \(prune)") }
            seconds.withLock { $0 = (ContinuousClock.now - started) / .seconds(1) }
        }
        return (before, seconds.withLock { $0 }, latency.p50, latency.p95)
    }

    /// `rows` finished requests as months of traffic leave them, enqueued evenly over the 30 days before the
    /// last hour (the last hour's traffic, which the overview charts, is the run's own on both sides): 98% completed
    /// (1 in 7 fake), 1% failed, 1% cancelled; each with its history (four events for a completion, two for
    /// the others) and each fake with its completed alert post-task and that task's two events. Generated in
    /// SQL with the tables' triggers off (each row is written as the triggers would have left it), then analysed.
    static func loadHistory(_ rows: Int, into pool: PostgresConnectionPool) async throws {
        try await withTriggersOff(["requests", "request_events", "post_tasks", "post_task_events"], on: pool) { connection in
            try await connection.query("""
                INSERT INTO detectq.requests (media_url, state, attempt, media_type, submit_path, label, is_fake, aggregated_score,
                                              result, remote_uuid, error_message, metadata, created_at, updated_at, completed_at, accepted_at)
                SELECT 'https://cdn.example.com/history/' || n || (ARRAY['.wav', '.mp4', '.jpg'])[1 + n % 3],
                       s.state::detectq.request_state, 1, (ARRAY['audio', 'video', 'image'])[1 + n % 3],
                       CASE WHEN s.state <> 'cancelled' THEN (ARRAY['url', 'multipart', 'secure_upload', 'url'])[1 + n % 4] END,
                       CASE WHEN s.state = 'completed' THEN CASE WHEN n % 7 = 0 THEN 'fake' ELSE 'real' END END,
                       CASE WHEN s.state = 'completed' THEN n % 7 = 0 END,
                       CASE WHEN s.state = 'completed' THEN (n % 100) / 100.0 END,
                       CASE WHEN s.state = 'completed' THEN jsonb_build_object('uuid', 'h-' || n, 'status', 'completed') END,
                       CASE WHEN s.state = 'completed' THEN 'h-' || n END,
                       CASE WHEN s.state = 'failed' THEN 'the API rejected the request (HTTP 422): the media could not be read' END,
                       jsonb_build_object('customer', 'cus_' || (n % 5000), 'n', n),
                       t.at, t.at + interval '3 seconds', CASE WHEN s.state = 'completed' THEN t.at + interval '3 seconds' END,
                       CASE WHEN s.state = 'completed' THEN t.at + interval '1 second' END
                FROM generate_series(1, \(rows)) AS n,
                     LATERAL (SELECT CASE WHEN n % 100 = 0 THEN 'failed' WHEN n % 100 = 1 THEN 'cancelled' ELSE 'completed' END AS state) AS s,
                     LATERAL (SELECT now() - interval '1 hour' - make_interval(secs => (\(rows) - n + 1) * (30 * 86400.0 / \(rows))) AS at) AS t
                """)
            try await connection.query("""
                INSERT INTO detectq.request_events (request_id, from_state, to_state, at, worker_id)
                SELECT r.id, step.from_state::detectq.request_state, step.to_state::detectq.request_state, r.created_at + step.offset_, step.worker
                FROM detectq.requests r
                CROSS JOIN LATERAL (VALUES
                    (NULL, 'queued', interval '0', NULL, true),
                    ('queued', 'submitting', interval '10 milliseconds', 'history-worker', r.state <> 'cancelled'),
                    ('submitting', 'awaiting_result', interval '1 second', 'history-worker', r.state = 'completed'),
                    ('awaiting_result', 'completed', interval '3 seconds', 'history-worker', r.state = 'completed'),
                    ('submitting', 'failed', interval '1 second', 'history-worker', r.state = 'failed'),
                    ('queued', 'cancelled', interval '3 seconds', NULL, r.state = 'cancelled')
                ) AS step(from_state, to_state, offset_, worker, applies)
                WHERE step.applies
                """)
            try await connection.query("""
                INSERT INTO detectq.post_tasks (request_id, processor, state, attempt, run_at, created_at, updated_at)
                SELECT id, 'alert.pg_notify', 'completed', 1, completed_at, completed_at, completed_at
                FROM detectq.requests WHERE is_fake
                """)
            try await connection.query("""
                INSERT INTO detectq.post_task_events (task_id, from_state, to_state, at, worker_id)
                SELECT t.id, step.from_state::detectq.post_task_state, step.to_state::detectq.post_task_state, t.created_at, step.worker
                FROM detectq.post_tasks t
                CROSS JOIN LATERAL (VALUES (NULL, 'queued', NULL), ('queued', 'running', 'history-worker'), ('running', 'completed', 'history-worker'))
                    AS step(from_state, to_state, worker)
                """)
        }
        for table in ["requests", "request_events", "post_tasks", "post_task_events"] {
            try await pool.query(PostgresQuery(sql: "VACUUM ANALYZE detectq.\(table)", parameters: []))
        }
        // The load's dirty pages written now, not by the checkpointer in the middle of the measures.
        try await pool.query("CHECKPOINT")
    }

    /// Runs `load` in one transaction with the user triggers of `tables` off (a bulk load writes its rows as
    /// the triggers would have left them), then recounts the kept counts the triggers would have kept.
    static func withTriggersOff(
        _ tables: [String], on pool: PostgresConnectionPool, _ load: (PostgresConnection) async throws -> Void
    ) async throws {
        try await pool.transaction { connection in
            for table in tables {
                try await connection.query(PostgresQuery(sql: "ALTER TABLE detectq.\(table) DISABLE TRIGGER USER", parameters: []))
            }
            try await load(connection)
            for table in tables {
                try await connection.query(PostgresQuery(sql: "ALTER TABLE detectq.\(table) ENABLE TRIGGER USER", parameters: []))
            }
            try await connection.query("SELECT detectq.recount_states()")
        }
    }
}
