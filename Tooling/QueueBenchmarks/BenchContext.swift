import ChildProcesses
import Foundation
import Postgres
import SchemaMigrations

/// What every scenario needs: a PostgreSQL server to make fresh databases on, the `detectq` executable to
/// start workers from, and a place for their logs.
package struct BenchContext: Sendable {
    /// A libpq URI of the server (its `postgres` database, or whichever the URI names).
    package let serverURI: String
    /// The `detectq` executable, started as worker processes.
    package let executable: URL
    /// Where worker processes write their output.
    package let logDirectory: URL

    package init(serverURI: String, executable: URL, logDirectory: URL) {
        self.serverURI = serverURI
        self.executable = executable
        self.logDirectory = logDirectory
    }

    /// A new, migrated database named `detectq_bench_<name>` (dropped first if a previous run left it); the
    /// scenario drops it when done.
    func freshDatabase(_ name: String) async throws -> BenchDatabase {
        let database = "detectq_bench_\(name)"
        guard var components = URLComponents(string: serverURI), components.scheme?.hasPrefix("postgres") == true else {
            throw BenchError("DATABASE_URL must be a postgresql:// URI for the benchmark (its workers are separate processes)")
        }
        components.path = "/" + database
        let uri = components.string ?? serverURI
        try await onServer("DROP DATABASE IF EXISTS \(identifier: database) WITH (FORCE)")
        try await onServer("CREATE DATABASE \(identifier: database)")
        let configuration = PostgresConfiguration(connectionString: uri, applicationName: "detectq bench")
        _ = try await MigrationRunner(configuration: configuration).migrate()
        return BenchDatabase(name: database, uri: uri, pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 4))
    }

    /// Closes a scenario's database and drops it, so a run leaves nothing behind on a server of the user's.
    func drop(_ database: BenchDatabase) async {
        await database.pool.close()
        try? await onServer("DROP DATABASE IF EXISTS \(identifier: database.name) WITH (FORCE)")
    }

    private func onServer(_ statement: PostgresQuery) async throws {
        let server = try await PostgresConnection.connect(PostgresConfiguration(connectionString: serverURI))
        do {
            try await server.query(statement)
        } catch {
            await server.close()
            throw error
        }
        await server.close()
    }

    /// Runs `detectq` with `arguments` to its end, its output to a log file; returns its exit code.
    func run(_ arguments: [String], environment: [String: String], name: String) async throws -> Int32 {
        try await start(arguments, environment: environment, name: name).waitForExit()
    }

    /// Starts `detectq` with `arguments` and `environment` (over this process's own), its output to a log file.
    func start(_ arguments: [String], environment: [String: String], name: String) async throws -> ChildProcess {
        let log = logDirectory.appendingPathComponent("\(name).log")
        try Data().write(to: log)
        return ChildProcess(process: try await BackgroundProcess.start(executable.path, arguments: arguments, environment: environment, log: log))
    }
}

/// A scenario's own database.
struct BenchDatabase: Sendable {
    let name: String
    let uri: String
    let pool: PostgresConnectionPool

    /// The database's clock now.
    func now() async throws -> Date {
        try await pool.query("SELECT clock_timestamp() AS now")[0].decode("now", as: Date.self)
    }

    func count(_ condition: String) async throws -> Int {
        try await pool.query(PostgresQuery(sql: "SELECT count(*)::int8 AS n FROM detectq.requests WHERE \(condition)", parameters: []))[0]
            .decode("n", as: Int.self)
    }

    /// Waits until `condition` holds for `expected` requests (or, `atMost`, for no more than that), checking every
    /// `interval`.
    func waitFor(
        _ condition: String, count expected: Int, timeout: Duration, interval: Duration = .milliseconds(200), atMost: Bool = false
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await atMost ? count(condition) > expected : count(condition) < expected {
            guard ContinuousClock.now < deadline else { throw BenchError("timed out waiting for \(expected) requests where \(condition)") }
            try await Task.sleep(for: interval)
        }
    }

    /// Waits until `workers` worker processes whose id starts with `prefix` are listening for work.
    func waitForWorkers(_ prefix: String, count workers: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try await pool.query("""
            SELECT count(*)::int8 AS n FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE \("detectq worker \(prefix)%") AND query ILIKE 'LISTEN%'
            """)[0].decode("n", as: Int.self) < workers {
            guard ContinuousClock.now < deadline else { throw BenchError("the workers \(prefix)* did not start listening within 30 s") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Inserts `count` sync requests for URLs (one in ten fake) in one statement; returns the database's clock
    /// once they are committed and claimable.
    func insertURLRequests(_ count: Int, waitMode: String = "sync", hashed: Bool = false) async throws -> Date {
        // With `hashed`, each carries a `media_sha256` of its own, which no other request has.
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, media_sha256)
            SELECT 'https://bench.invalid/' || CASE WHEN n % 10 = 0 THEN 'fake' ELSE 'real' END || '-' || n || '.wav', \(waitMode),
                   CASE WHEN \(hashed) THEN encode(sha256(convert_to('bench media ' || n, 'UTF8')), 'hex') END
            FROM generate_series(1, \(count)) AS n
            """)
        return try await now()
    }

    /// Inserts `count` sync requests like `insertURLRequests`, spread round robin over `queues` queues
    /// (`lane-1`…) and `groups` groups; returns the database's clock once they are committed and claimable.
    func insertURLRequests(_ count: Int, queues: Int, groups: Int) async throws -> Date {
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, queue, group_key)
            SELECT 'https://bench.invalid/real-' || n || '.wav', 'sync', 'lane-' || (n % \(queues) + 1), 'customer-' || (n % \(groups))
            FROM generate_series(1, \(count)) AS n
            """)
        return try await now()
    }

    /// Requests per second from `start` to the last completion of a request after id `after`, on the
    /// database's clock.
    func throughput(since start: Date, completed: Int, after baseline: Int = 0) async throws -> Double {
        let last = try await pool.query("SELECT max(completed_at) AS last FROM detectq.requests WHERE id > \(baseline)")[0]
            .decode("last", as: Date.self)
        return Double(completed) / max(last.timeIntervalSince(start), 0.001)
    }

    /// The process id of one of the server's backends (the pool's), to find the server's processes by.
    func backendPID() async throws -> Int32 {
        Int32(try await pool.query("SELECT pg_backend_pid()::int8 AS pid")[0].decode("pid", as: Int.self))
    }

    /// The newest request's id, 0 when there is none.
    func maxID() async throws -> Int {
        try await pool.query("SELECT coalesce(max(id), 0)::int8 AS id FROM detectq.requests")[0].decode("id", as: Int.self)
    }
}

/// A `detectq` process the benchmark started.
final class ChildProcess: Sendable {
    private let process: BackgroundProcess

    init(process: BackgroundProcess) {
        self.process = process
    }

    var pid: Int32 { process.pid }
    var log: URL { process.log }

    /// Its resident set now and at its peak, in bytes, from `/proc`.
    var memory: (resident: Int64, peak: Int64) { ProcessMemory.read(pid: pid) }

    /// Resets the peak resident set to the current one.
    func resetPeakMemory() {
        ProcessMemory.resetPeak(pid: pid)
    }

    /// Waits for it to exit on its own; its exit code.
    func waitForExit() async throws -> Int32 {
        try await process.waitForExit().code
    }

    /// Asks it to stop (SIGTERM) and waits; SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(30)) async {
        await process.stop(grace: grace)
    }
}

/// A benchmark that could not run, with the reason.
package struct BenchError: Error, CustomStringConvertible {
    package let description: String

    package init(_ description: String) {
        self.description = description
    }
}

/// A process's resident set from `/proc`, now and at its peak.
enum ProcessMemory {
    /// The resident set of process `pid` now and at its peak, in bytes.
    static func read(pid: Int32) -> (resident: Int64, peak: Int64) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int64 {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Int64(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// Resets the peak resident set of process `pid` to its current one (`/proc/PID/clear_refs`).
    static func resetPeak(pid: Int32) {
        try? "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)
    }
}
