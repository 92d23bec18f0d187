import DetectQueue
import DetectSimulator
import Foundation
import Postgres

/// CONTRACT section 8's benchmarks: the queue core with ten queues and a thousand groups against one queue, and
/// the noisy neighbour (a `backfill` of 20,000 at weight 1 beside a `live` trickle of 5 a second at weight 4, at
/// the API's rate, against the simulator with 1 s detections).
extension Scenarios {
    /// Drains `jobs` requests spread over `queues` queues and `groups` groups (round robin), through `workers`
    /// worker processes with the instant API, like `queueCore`.
    package func queueCore(jobs: Int, workers: Int, queues: Int, groups: Int) async throws -> Double {
        let database = try await context.freshDatabase("shared_\(queues)_\(groups)")
        var children: [ChildProcess] = []
        for number in 1...workers {
            children.append(try await context.start(
                ["bench-worker"], environment: try workerEnvironment(database, id: "shared\(workers)-\(number)"), name: "shared\(workers)-\(number)"
            ))
        }
        try await database.waitForWorkers("shared\(workers)-", count: workers)
        try await database.pool.query("""
            INSERT INTO detectq.queues (name) SELECT 'lane-' || n FROM generate_series(1, \(queues)) AS n ON CONFLICT DO NOTHING
            """)
        let start = try await database.insertURLRequests(jobs, queues: queues, groups: groups)
        try await database.waitFor("state = 'completed'", count: jobs, timeout: .seconds(600), interval: .milliseconds(250))
        let rate = try await database.throughput(since: start, completed: jobs)
        for child in children { await child.stop() }
        await context.drop(database)
        return rate
    }

    /// What the noisy neighbour showed.
    package struct NoisyNeighbour: Sendable {
        /// Live's insert-to-submission (the simulator's receipt) p95, in ms, beside the backfill and alone.
        package var liveP95: Double
        package var idleP95: Double
        /// The same requests' insert-to-claim p95 (the claim's event in the history), in ms, beside the backfill
        /// and alone: what of the wait is the claim's, and what the wait for a budget slot and the call's.
        package var liveClaimP95: Double
        package var idleClaimP95: Double
        /// Live's share of the submissions while both queues were backlogged, and the weights' share (0.8).
        package var liveShare: Double
        /// Submissions a second while both were backlogged.
        package var rate: Double
        /// The most submissions the simulator received in any one second (a sliding window) from the backfill's
        /// start to the end of the split: what the early slots of arriving work add to the budget's rate.
        package var busiestSecond: Int
    }

    /// Three workers at `rate` a second against the simulator with 1 s detections. First `live` alone receives
    /// 5 a second for `trickle` (the idle reference); then `backfill` holds `backlog` and `live` receives 5 a
    /// second again; then `live` gets a backlog of its own, and the submissions' split is read over `split`.
    package func noisyNeighbour(backlog: Int, trickle: Duration, split: Duration, rate: Double = 40) async throws -> NoisyNeighbour {
        let simulator = try await DetectSimulator.start(configuration: .init(latency: .seconds(1), purgeDelay: nil))
        let database = try await context.freshDatabase("neighbour")
        try await database.pool.query("""
            INSERT INTO detectq.queues (name, weight) VALUES ('live', 4), ('backfill', 1) ON CONFLICT (name) DO UPDATE SET weight = excluded.weight
            """)
        var children: [ChildProcess] = []
        for number in 1...3 {
            children.append(try await context.start(["worker"], environment: try workerEnvironment(database, id: "neighbour-\(number)", extra: [
                "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_API_RATE_LIMIT": "\(rate)", "DETECTQ_CONCURRENCY": "100",
            ]), name: "neighbour-\(number)"))
        }
        try await database.waitForWorkers("neighbour-", count: 3)

        /// Inserts one live request every 200 ms for `duration`, each alone, as a producer would.
        func trickleLive(_ label: String, for duration: Duration) async throws {
            let end = ContinuousClock.now + duration
            var next = ContinuousClock.now
            var number = 0
            while next < end {
                try await Task.sleep(until: next)
                number += 1
                try await database.pool.query(PostgresQuery(sql: """
                    INSERT INTO detectq.requests (media_url, wait_mode, queue) VALUES ($1, 'sync', 'live')
                    """, parameters: ["https://bench.invalid/\(label)-\(number).wav"]))
                next += .milliseconds(200)
            }
        }
        /// The p95s in ms of insert-to-submission and insert-to-claim of the live requests whose URL carries
        /// `label`, once all are done.
        func liveP95(_ label: String) async throws -> (submission: Double, claim: Double) {
            try await database.waitFor("queue = 'live' AND media_url LIKE '%\(label)-%' AND state <> 'completed'", count: 0,
                                       timeout: .seconds(600), interval: .milliseconds(250), atMost: true)
            let created = await simulator.state.creationTimes()
            var submissions: [Double] = []
            var claims: [Double] = []
            for row in try await database.pool.query(PostgresQuery(sql: """
                SELECT r.remote_uuid, r.created_at,
                       (SELECT min(e.at) FROM detectq.request_events AS e WHERE e.request_id = r.id AND e.to_state = 'submitting') AS claimed_at
                FROM detectq.requests AS r WHERE r.queue = 'live' AND r.media_url LIKE $1
                """, parameters: ["%\(label)-%"])) {
                let inserted = try row.decode("created_at", as: Date.self)
                if let claimed = try row.decode("claimed_at", as: Date?.self) { claims.append(claimed.timeIntervalSince(inserted) * 1_000) }
                if let uuid = try row.decode("remote_uuid", as: String?.self), let sent = created[uuid] {
                    submissions.append(sent.timeIntervalSince(inserted) * 1_000)
                }
            }
            guard !submissions.isEmpty else { throw BenchError("no live request of \(label) reached the simulator") }
            return (submissions.percentile(0.95), claims.percentile(0.95))
        }

        try await trickleLive("idle", for: trickle)
        let idleP95 = try await liveP95("idle")

        let backfillStart = Date()
        try await database.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, queue)
            SELECT 'https://bench.invalid/backfill-' || n || '.wav', 'sync', 'backfill' FROM generate_series(1, \(backlog)) AS n
            """)
        // Saturated: the backfill alone fills the budget before live requests come.
        try await database.waitFor("queue = 'backfill' AND state = 'completed'", count: Int(rate * 2), timeout: .seconds(120))
        try await trickleLive("busy", for: trickle)
        let busyP95 = try await liveP95("busy")

        try await database.pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, queue)
            SELECT 'https://bench.invalid/backlog-' || n || '.wav', 'sync', 'live' FROM generate_series(1, \(Int(rate * split.seconds * 2))) AS n
            """)
        let from = Date().addingTimeInterval(3)
        try await Task.sleep(for: split + .seconds(3))
        let to = Date()
        let created = await simulator.state.creationTimes()
        var counts: [String: Int] = [:]
        for row in try await database.pool.query("SELECT queue, remote_uuid FROM detectq.requests WHERE remote_uuid IS NOT NULL") {
            guard let at = created[try row.decode("remote_uuid", as: String.self)], at >= from, at < to else { continue }
            counts[try row.decode("queue", as: String.self), default: 0] += 1
        }
        let arrivals = created.values.filter { $0 >= backfillStart && $0 < to }.sorted()
        var busiest = 0
        var first = 0
        for (last, at) in arrivals.enumerated() {
            while at.timeIntervalSince(arrivals[first]) >= 1 { first += 1 }
            busiest = max(busiest, last - first + 1)
        }
        for child in children { await child.stop() }
        await simulator.stop()
        await context.drop(database)
        let total = Double(counts.values.reduce(0, +))
        return NoisyNeighbour(
            liveP95: busyP95.submission, idleP95: idleP95.submission, liveClaimP95: busyP95.claim, idleClaimP95: idleP95.claim, liveShare: total > 0 ? Double(counts["live"] ?? 0) / total : 0,
            rate: total / to.timeIntervalSince(from), busiestSecond: busiest
        )
    }
}
