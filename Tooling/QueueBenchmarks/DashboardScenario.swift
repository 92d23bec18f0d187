import AsyncHTTPClient
import EmbeddedPostgres
import Foundation
import Hummingbird
import Logging
import NIOCore
import Postgres
import QueueDashboard
import TextEncodings

/// Scenario 8: the dashboard's request list on a large table, over HTTP, under each filter; and the deep page
/// by keyset against the same page by `OFFSET`, the usual way, measured in the same database.
extension Scenarios {
    /// One filter's answer times over HTTP, in milliseconds.
    package struct ListTiming: Sendable {
        package var name: String
        package var p50: Double
        package var p95: Double
    }

    /// What scenario 8 measured.
    package struct DashboardListResult: Sendable {
        package var rows: Int
        package var loadSeconds: Double
        package var timings: [ListTiming]
        /// The SQL of the page half-way down the newest-first list, by `OFFSET` and by keyset (median ms).
        package var offsetMilliseconds: Double
        package var keysetMilliseconds: Double
    }

    package func dashboardList(rows: Int, samples: Int = 25) async throws -> DashboardListResult {
        let database = try await context.freshDatabase("dashboard")
        do {
            let loadStarted = ContinuousClock.now
            try await Self.load(rows, into: database.pool)
            let loadSeconds = (ContinuousClock.now - loadStarted) / .seconds(1)
            let middleRow = try await database.pool.query("""
                SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS at FROM detectq.requests ORDER BY created_at DESC, id DESC OFFSET \(rows / 2) LIMIT 1
                """)[0]
            let middle: Int = try middleRow.decode("id")
            let middleAt: String = try middleRow.decode("at")
            let day = Date().addingTimeInterval(-20 * 86_400)
            let dayText = ISO8601Timestamp.format(day)
            let nextDayText = ISO8601Timestamp.format(day.addingTimeInterval(86_400))
            let cases: [(String, String)] = [
                ("newest page, no filter", ""),
                ("page \(BenchmarkRun.count(rows / 2)) rows deep (keyset)", "before=" + "\(middle)@\(middleAt)".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!),
                ("state = failed (1%)", "state=failed"),
                ("fake videos", "verdict=fake&media_type=video"),
                ("submit path secure_upload", "submit_path=secure_upload"),
                ("one day, 20 days ago", "from=\(dayText)&to=\(nextDayText)"),
                ("metadata word, common (1 in 6)", "q=election"),
                ("metadata word, rare (1 in 5,000)", "q=cus_4321"),
                ("failure group", "reason=" + "the API answered 503".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!),
            ]
            let timings = try await withDashboard(database) { get in
                var timings: [ListTiming] = []
                for (name, query) in cases {
                    var times: [Double] = []
                    for sample in 0..<(samples + 3) {
                        let started = ContinuousClock.now
                        try await get("/dashboard/requests" + (query.isEmpty ? "" : "?" + query))
                        if sample >= 3 { times.append((ContinuousClock.now - started) / .milliseconds(1)) }
                    }
                    times.sort()
                    timings.append(ListTiming(name: name, p50: times[times.count / 2], p95: times[min(times.count - 1, times.count * 95 / 100)]))
                }
                return timings
            }
            let offset = try await Self.median(samples: 5) {
                try await database.pool.query("SELECT id, state FROM detectq.requests ORDER BY created_at DESC, id DESC OFFSET \(rows / 2) LIMIT 51")
            }
            let keyset = try await Self.median(samples: 5) {
                try await database.pool.query("""
                    SELECT id, state FROM detectq.requests WHERE (created_at, id) < (\(middleAt)::timestamptz, \(middle))
                    ORDER BY created_at DESC, id DESC LIMIT 51
                    """)
            }
            await context.drop(database)
            return DashboardListResult(rows: rows, loadSeconds: loadSeconds, timings: timings, offsetMilliseconds: offset, keysetMilliseconds: keyset)
        } catch {
            await context.drop(database)
            throw error
        }
    }

    /// `rows` requests as a busy month leaves them: 98% completed (1 in 7 fake), 1% failed, the rest queued;
    /// audio, video and images; four submit paths; metadata with a customer, a campaign and a number; enqueued
    /// over 30 days. Loaded in one statement with the table's triggers off (the history is not what is
    /// measured), then analysed.
    static func load(_ rows: Int, into pool: PostgresConnectionPool) async throws {
        try await withTriggersOff(["requests"], on: pool) { connection in
            try await connection.query("""
                INSERT INTO detectq.requests (media_url, state, attempt, media_type, submit_path, label, is_fake, aggregated_score,
                                              result, remote_uuid, error_message, metadata, created_at, updated_at, completed_at)
                SELECT 'https://cdn.example.com/clips/' || n || (ARRAY['.wav', '.mp4', '.jpg'])[1 + n % 3],
                       s.state::detectq.request_state, 1, (ARRAY['audio', 'video', 'image'])[1 + n % 3],
                       (ARRAY['url', 'multipart', 'secure_upload', 'url'])[1 + n % 4],
                       CASE WHEN s.state = 'completed' THEN CASE WHEN n % 7 = 0 THEN 'fake' ELSE 'real' END END,
                       CASE WHEN s.state = 'completed' THEN n % 7 = 0 END,
                       CASE WHEN s.state = 'completed' THEN (n % 100) / 100.0 END,
                       CASE WHEN s.state = 'completed' THEN jsonb_build_object('uuid', 'u-' || n, 'status', 'completed') END,
                       CASE WHEN s.state = 'completed' THEN 'u-' || n END,
                       CASE WHEN s.state = 'failed' THEN 'the API answered 503' END,
                       jsonb_build_object('customer', 'cus_' || (n % 5000),
                                          'campaign', (ARRAY['spring', 'summer', 'autumn', 'winter', 'election', 'launch'])[1 + n % 6],
                                          'n', n),
                       t.at, t.at, CASE WHEN s.state = 'completed' THEN t.at + interval '3 seconds' END
                FROM generate_series(1, \(rows)) AS n,
                     LATERAL (SELECT CASE WHEN n % 100 = 0 THEN 'failed' WHEN n % 250 = 1 THEN 'queued' ELSE 'completed' END AS state) AS s,
                     LATERAL (SELECT now() - make_interval(secs => (\(rows) - n) * (30 * 86400.0 / \(rows))) AS at) AS t
                """)
        }
        try await pool.query("ANALYZE detectq.requests")
    }

    /// Serves a dashboard over `database` on a free loopback port and runs `body` with a function that GETs a
    /// path with the token and checks it answered 200.
    func withDashboard<Result: Sendable>(
        _ database: BenchDatabase, _ body: (@Sendable (String) async throws -> Void) async throws -> Result
    ) async throws -> Result {
        let token = "bench-dashboard-token-0123456789"
        let pool = PostgresConnectionPool(configuration: PostgresConfiguration(connectionString: database.uri, applicationName: "detectq bench dashboard"), maximumConnections: 4)
        let dashboard = try Dashboard(configuration: .init(token: token, readOnly: true), pool: pool)
        let router = Router()
        dashboard.routes(into: router)
        let port = try LoopbackPort.free()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            logger: Logger(label: "detectq.bench.dashboard", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let get: @Sendable (String) async throws -> Void = { path in
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            _ = try await response.body.collect(upTo: 16 << 20)
            guard response.status == .ok else { throw BenchError("the dashboard answered \(response.status.code) to \(path)") }
        }
        let result = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            defer { group.cancelAll() }
            var ready = false
            for _ in 0..<200 where !ready {
                ready = (try? await get("/dashboard/assets/dashboard.css")) != nil
                if !ready { try await Task.sleep(for: .milliseconds(25)) }
            }
            return try await body(get)
        }
        await pool.close()
        return result
    }

    private static func median(samples: Int, _ body: () async throws -> PostgresRows) async throws -> Double {
        var times: [Double] = []
        for _ in 0..<samples {
            let started = ContinuousClock.now
            _ = try await body()
            times.append((ContinuousClock.now - started) / .milliseconds(1))
        }
        return times.sorted()[samples / 2]
    }
}
