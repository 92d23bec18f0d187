import ChildProcesses
import Foundation

/// A throwaway PostgreSQL cluster in a temporary directory, for the demo, the benchmarks and tests that must
/// stop and restart a server: made by `initdb`, served on a free loopback port, deleted by `destroy()`.
///
/// PostgreSQL refuses to run as root, so when this process is root the server's commands run as the
/// unprivileged `postgres` user (through `runuser`), which owns the cluster's directory.
package final class ThrowawayPostgresCluster: Sendable {
    /// How `stop` shuts the server down (`pg_ctl -m`).
    package enum ShutdownMode: String, Sendable {
        /// Disconnects clients and shuts down cleanly.
        case fast
        /// Kills the server processes at once; the next start runs crash recovery.
        case immediate
    }

    /// The cluster's directory: `data/`, the server log and the Unix socket.
    package let directory: URL
    /// The loopback TCP port the server listens on.
    package let port: Int
    private let binaries: URL
    private let runsAsPostgresUser: Bool
    private let durableCommits: Bool
    private let countsStatements: Bool

    /// A libpq URI for the cluster's `postgres` database as the `postgres` superuser (trust authentication).
    package var connectionString: String { "postgresql://postgres@127.0.0.1:\(port)/postgres" }

    private var dataDirectory: String { directory.appendingPathComponent("data").path }
    private var logFile: String { directory.appendingPathComponent("server.log").path }

    private init(directory: URL, port: Int, binaries: URL, runsAsPostgresUser: Bool, durableCommits: Bool, countsStatements: Bool) {
        self.directory = directory
        self.port = port
        self.binaries = binaries
        self.runsAsPostgresUser = runsAsPostgresUser
        self.durableCommits = durableCommits
        self.countsStatements = countsStatements
    }

    /// Creates a streaming standby of this cluster (`pg_basebackup -R`) and starts it: read-only, following
    /// this server until `promote()`. It listens on `port` when given (a port a stopped cluster gave up, so
    /// a multi-host URL keeps naming both servers), else on a free one.
    package func makeStandby(port: Int? = nil) async throws -> ThrowawayPostgresCluster {
        let standby = try Self.makeDirectory(
            port: port ?? LoopbackPort.free(), binaries: binaries, runsAsPostgresUser: runsAsPostgresUser, durableCommits: durableCommits,
            countsStatements: countsStatements
        )
        try await standby.run("pg_basebackup", [
            "-h", "127.0.0.1", "-p", "\(self.port)", "-U", "postgres", "-D", standby.dataDirectory, "-R", "-X", "stream",
            "--checkpoint=fast", "--no-sync",
        ])
        try await standby.startServer()
        return standby
    }

    /// Ends recovery on a standby: it becomes a primary that accepts writes.
    package func promote() async throws {
        try await run("pg_ctl", ["-D", dataDirectory, "-w", "-t", "60", "promote"])
    }

    /// Creates a new cluster and starts it.
    ///
    /// By default commits are asynchronous (`synchronous_commit=off`), which is fast but loses the last
    /// commits when the server is killed. With `durableCommits` a commit is written before it is confirmed,
    /// so a server stopped in `immediate` mode keeps every transaction it confirmed, as a production server
    /// does (only `fsync` stays off: the operating system is not what these clusters crash). With
    /// `countsStatements` the server loads `pg_stat_statements`, for counting round trips.
    package static func start(durableCommits: Bool = false, countsStatements: Bool = false) async throws -> ThrowawayPostgresCluster {
        let cluster = try makeDirectory(
            port: try LoopbackPort.free(), binaries: try serverBinaries(), runsAsPostgresUser: geteuid() == 0, durableCommits: durableCommits,
            countsStatements: countsStatements
        )
        try await cluster.run("initdb", [
            "-D", cluster.dataDirectory, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
            "--no-instructions",
        ])
        try await cluster.startServer()
        return cluster
    }

    /// A cluster in a new temporary directory, owned by the postgres user when this process is root.
    private static func makeDirectory(
        port: Int, binaries: URL, runsAsPostgresUser: Bool, durableCommits: Bool, countsStatements: Bool
    ) throws -> ThrowawayPostgresCluster {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("detectq-pg-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if runsAsPostgresUser {
            guard let user = getpwnam("postgres") else {
                throw ClusterError("running as root, but there is no 'postgres' user to run PostgreSQL as")
            }
            guard chown(directory.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
                throw ClusterError("could not hand \(directory.path) to the postgres user")
            }
        }
        return ThrowawayPostgresCluster(
            directory: directory, port: port, binaries: binaries, runsAsPostgresUser: runsAsPostgresUser, durableCommits: durableCommits,
            countsStatements: countsStatements
        )
    }

    /// Starts the server again after `stop`.
    package func startServer() async throws {
        let settings = [
            "-p \(port)", "-k '\(directory.path)'", "-c listen_addresses=127.0.0.1", "-c fsync=off",
            "-c synchronous_commit=\(durableCommits ? "on" : "off")", "-c full_page_writes=off", "-c max_connections=300",
            // A standby whose primary restarted reconnects after this long (the default is 5 s).
            "-c wal_retrieve_retry_interval=200ms",
        ] + (countsStatements ? ["-c shared_preload_libraries=pg_stat_statements"] : [])
        let options = settings.joined(separator: " ")
        try await run("pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "-o", options, "start"])
    }

    /// Stops the server; the cluster's data stays for a later `startServer`.
    package func stopServer(_ mode: ShutdownMode = .fast) async throws {
        try await run("pg_ctl", ["-D", dataDirectory, "-m", mode.rawValue, "-w", "-t", "60", "stop"])
    }

    /// Stops the server (immediately) and deletes the cluster's directory.
    package func destroy() async {
        try? await stopServer(.immediate)
        try? FileManager.default.removeItem(at: directory)
    }

    private func run(_ tool: String, _ arguments: [String]) async throws {
        let executable = binaries.appendingPathComponent(tool).path
        let output = directory.appendingPathComponent("\(tool).log").path
        let status = runsAsPostgresUser
            ? try await BackgroundProcess.run("/usr/sbin/runuser", arguments: ["-u", "postgres", "--", executable] + arguments, log: URL(fileURLWithPath: output))
            : try await BackgroundProcess.run(executable, arguments: arguments, log: URL(fileURLWithPath: output))
        guard status == .exited(0) else {
            let printed = (try? String(contentsOfFile: output, encoding: .utf8))?.suffix(2_000) ?? ""
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8))?.suffix(2_000) ?? ""
            throw ClusterError("\(tool) exited with \(status): \(printed)\(log)")
        }
    }

    /// The directory of the newest installed server's binaries (Debian keeps them in
    /// /usr/lib/postgresql/<major>/bin): `initdb`, `pg_ctl`, `pg_dump`.
    package static func serverBinaries() throws -> URL {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        let newest = versions.compactMap(Int.init).sorted().last
        guard let newest else {
            throw ClusterError("no PostgreSQL server under /usr/lib/postgresql: apt-get install -y postgresql")
        }
        return root.appendingPathComponent("\(newest)/bin")
    }
}

/// Why a throwaway cluster could not be created, started or stopped.
package struct ClusterError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
