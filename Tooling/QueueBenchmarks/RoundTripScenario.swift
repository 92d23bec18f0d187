import DetectSimulator
import Foundation
import Postgres

/// Scenario 11: the database round trips one request costs the worker, counted by `pg_stat_statements`. A
/// `sync` request for a fake URL (so the built-in `pg_notify` alert sink applies: one post-processor) goes
/// in, one at a time, until its post-task is done. The worker connects as a role of its own, so only its
/// statements are counted. A statement that ran at least once every ten requests is the requests'; the rest
/// ran on the worker's timers whatever the load (the shared pause's check, the poller, heartbeats, rescues),
/// and are shown apart, beside what the timers run in an idle spell as long as the run.
extension Scenarios {
    /// What a round-trip count showed.
    package struct RoundTripResult: Sendable {
        package var requests: Int
        /// The requests' statements, per request.
        package var perRequest: Double
        /// The timers' statements during the run, per request.
        package var timers: Double
        /// The statements the worker ran in an idle spell as long as the run, per request of the run.
        package var idle: Double
        /// Each statement's calls per request, most first, by its first words.
        package var statements: [(statement: String, perRequest: Double)]
    }

    /// The worker's role.
    static let roundTripRole = "detectq_bench_worker"

    /// Nil when the server does not load `pg_stat_statements` (a `DATABASE_URL` of the user's).
    package func roundTrips(requests: Int, warmUp: Int = 20) async throws -> RoundTripResult? {
        let database = try await context.freshDatabase("trips")
        let pool = database.pool
        let loaded = try await pool.query("SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%' AS loaded")[0]
            .decode("loaded", as: Bool.self)
        guard loaded else {
            await context.drop(database)
            return nil
        }
        try await pool.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        try await pool.query(PostgresQuery(sql: """
            DO $$ BEGIN
                CREATE ROLE \(Self.roundTripRole) LOGIN SUPERUSER;
            EXCEPTION WHEN duplicate_object THEN NULL;
            END $$
            """, parameters: []))
        guard var components = URLComponents(string: database.uri) else { throw BenchError("the database URI does not parse") }
        components.user = Self.roundTripRole
        components.password = nil
        let workerURI = components.string ?? database.uri

        let simulator = try await DetectSimulator.start(configuration: .init(purgeDelay: nil))
        let worker = try await context.start(["worker"], environment: try workerEnvironment(database, id: "trips-1", extra: [
            "DATABASE_URL": workerURI, "RESEMBLE_BASE_URL": simulator.baseURL,
        ]), name: "trips")
        try await database.waitForWorkers("trips-", count: 1)

        var done = 0
        func oneByOne(_ count: Int) async throws {
            for _ in 0..<count {
                done += 1
                try await pool.query("INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\("https://bench.invalid/fake-\(done).wav"), 'sync')")
                let deadline = ContinuousClock.now + .seconds(30)
                while try await pool.query("SELECT count(*)::int8 AS n FROM detectq.post_tasks WHERE state = 'completed'")[0]
                    .decode("n", as: Int.self) < done {
                    guard ContinuousClock.now < deadline else { throw BenchError("request \(done) and its alert were not done within 30 s") }
                    try await Task.sleep(for: .milliseconds(1))
                }
            }
        }
        func statementsRun() async throws -> [(statement: String, calls: Int)] {
            try await pool.query("""
                SELECT regexp_replace(left(query, 60), '\\s+', ' ', 'g') AS statement, calls
                FROM pg_stat_statements
                WHERE userid = \(Self.roundTripRole)::regrole AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY calls DESC
                """).map { (try $0.decode("statement", as: String.self), try $0.decode("calls", as: Int.self)) }
        }
        try await oneByOne(warmUp)
        try await pool.query("SELECT pg_stat_statements_reset()")
        let started = ContinuousClock.now
        try await oneByOne(requests)
        let elapsed = ContinuousClock.now - started
        let run = try await statementsRun()
        try await pool.query("SELECT pg_stat_statements_reset()")
        try await Task.sleep(for: elapsed)
        let idle = try await statementsRun().reduce(0) { $0 + $1.calls }
        await worker.stop()
        await simulator.stop()
        await context.drop(database)

        let requestsOwn = run.filter { $0.calls * 10 >= requests }
        let own = requestsOwn.reduce(0) { $0 + $1.calls }
        let all = run.reduce(0) { $0 + $1.calls }
        return RoundTripResult(
            requests: requests, perRequest: Double(own) / Double(requests), timers: Double(all - own) / Double(requests),
            idle: Double(idle) / Double(requests),
            statements: run.map { ($0.statement, Double($0.calls) / Double(requests)) }
        )
    }
}
