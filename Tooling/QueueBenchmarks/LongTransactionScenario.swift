import DetectQueue
import Foundation
import Postgres

/// Issue 30's long transaction: steady traffic (eight producers inserting one request per statement at a fixed rate,
/// two workers with the instant API) for a while, beside a session that holds a `REPEATABLE READ` snapshot from
/// before the first insert to the end, against the same traffic without it. Vacuum can remove no request version
/// changed after that snapshot, so every claim's index scan steps over more of them as the run goes on.
extension Scenarios {
    /// What a run of steady traffic showed.
    package struct SteadyTraffic: Sendable {
        /// Requests inserted, and completed within the producers' time, a second.
        package var offered: Double
        package var throughput: Double
        /// Insert-to-claim (the claim's event in the history) p95 over every request of the run, and over those
        /// inserted in its last tenth, in ms.
        package var claimP95: Double
        package var lateClaimP95: Double
        /// The same p95 for the requests inserted in each tenth of the run, in order: where in the run the waits were.
        package var tenthClaimP95: [Double]
        /// The vacuum horizon at the end of the producers' time, before the snapshot (if any) was let go: what
        /// `detectq status` saw, the claim index's size and the dead request versions.
        package var horizon: VacuumHorizon
    }

    /// Inserts `rate` requests a second for `duration` from eight producer connections, through two workers; with
    /// `holdingSnapshot`, beside a session that opened a `REPEATABLE READ` transaction and read the requests' table
    /// before the first insert, and commits only after the producers stop.
    package func steadyTraffic(rate: Int, duration: Duration, holdingSnapshot: Bool) async throws -> SteadyTraffic {
        let name = holdingSnapshot ? "steady_held" : "steady_clean"
        let database = try await context.freshDatabase(name)
        var children: [ChildProcess] = []
        for number in 1...2 {
            children.append(try await context.start(
                ["bench-worker"], environment: try workerEnvironment(database, id: "\(name)-\(number)"), name: "\(name)-\(number)"
            ))
        }
        try await database.waitForWorkers("\(name)-", count: 2)
        let configuration = PostgresConfiguration(connectionString: database.uri, applicationName: "detectq bench snapshot")
        var holder: PostgresConnection?
        if holdingSnapshot {
            let connection = try await PostgresConnection.connect(configuration)
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try await connection.query("SELECT count(*) FROM detectq.requests")
            holder = connection
        }
        let producers = PostgresConnectionPool(
            configuration: PostgresConfiguration(connectionString: database.uri, applicationName: "detectq bench producer"), maximumConnections: 8
        )
        let start = try await database.now()
        let began = ContinuousClock.now
        let inserted = try await withThrowingTaskGroup(of: Int.self) { group in
            for producer in 0..<8 {
                group.addTask {
                    // Each producer keeps its own schedule: behind it, it inserts at once until it has caught up.
                    let interval = Duration.seconds(8) / rate
                    var next = began + interval * producer / 8
                    var count = 0
                    while next < began + duration {
                        try await Task.sleep(until: next)
                        count += 1
                        try await producers.query(PostgresQuery(sql: """
                            INSERT INTO detectq.requests (media_url, wait_mode) VALUES ($1, 'sync')
                            """, parameters: ["https://bench.invalid/real-\(producer)-\(count).wav"]))
                        next += interval
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let end = try await database.now()
        let horizon = try await VacuumHorizon.read(database.pool)
        let completedInTime = try await database.pool.query(PostgresQuery(
            sql: "SELECT count(*)::int8 AS n FROM detectq.requests WHERE completed_at <= $1", parameters: [end]
        ))[0].decode("n", as: Int.self)
        if let holder {
            try await holder.query("COMMIT")
            await holder.close()
        }
        await producers.close()
        try await database.waitFor("state = 'completed'", count: inserted, timeout: .seconds(600), interval: .milliseconds(500))
        let window = end.timeIntervalSince(start)
        let percentiles = try await database.pool.query(PostgresQuery(sql: """
            WITH claims AS (
                SELECT r.created_at, EXTRACT(EPOCH FROM min(e.at) - r.created_at)::float8 * 1000 AS ms
                FROM detectq.requests AS r JOIN detectq.request_events AS e ON e.request_id = r.id AND e.to_state = 'submitting'
                GROUP BY r.id, r.created_at
            )
            SELECT (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY ms) FROM claims) AS p95,
                   (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY ms) FROM claims WHERE created_at >= $1) AS late_p95,
                   (SELECT array_agg(tenth.p95 ORDER BY tenth.n) FROM (
                        SELECT least(width_bucket(extract(epoch FROM created_at), extract(epoch FROM $2::timestamptz),
                                                  extract(epoch FROM $3::timestamptz), 10), 10) AS n,
                               percentile_disc(0.95) WITHIN GROUP (ORDER BY ms) AS p95
                        FROM claims GROUP BY 1) AS tenth) AS tenths
            """, parameters: [start.addingTimeInterval(window * 0.9), start, end]))[0]
        for child in children { await child.stop() }
        await context.drop(database)
        return SteadyTraffic(
            offered: Double(inserted) / window, throughput: Double(completedInTime) / window,
            claimP95: try percentiles.decode("p95"), lateClaimP95: try percentiles.decode("late_p95"),
            tenthClaimP95: try percentiles.decode("tenths"), horizon: horizon
        )
    }
}
