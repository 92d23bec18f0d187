import Foundation

/// CPU time of the processes a scenario runs on (the workers, the PostgreSQL server, the benchmark itself,
/// which hosts the simulator), read from `/proc`, so that a drain can say where a job's CPU went.
struct ProcessCPU: Sendable {
    /// Seconds of CPU (user and system) a process has used, with those of its reaped children when
    /// `withReapedChildren` (a server's ended backends are added to the postmaster's figures when reaped).
    static func seconds(pid: Int32, withReapedChildren: Bool = false) -> Double? {
        guard let fields = statFields(pid) else { return nil }
        // After the command name: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
        let used = [11, 12] + (withReapedChildren ? [13, 14] : [])
        let ticks = used.compactMap { Double(fields[$0]) }.reduce(0, +)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The CPU seconds of a local PostgreSQL server: its postmaster (with the backends it has reaped) and
    /// every process it runs now. `backend` is the pid of any backend of it; nil when the server is not on
    /// this machine (its backend's parent is not a `postgres` process here).
    static func serverSeconds(backend: Int32) -> Double? {
        guard let fields = statFields(backend), let postmaster = Int32(fields[1]),
              (try? String(contentsOfFile: "/proc/\(postmaster)/comm", encoding: .utf8))?.hasPrefix("postgres") == true,
              let own = seconds(pid: postmaster, withReapedChildren: true)
        else { return nil }
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init)
        return pids.reduce(own) { total, pid in
            guard let child = statFields(pid), child[1] == "\(postmaster)" else { return total }
            return total + (seconds(pid: pid) ?? 0)
        }
    }

    /// This process's own CPU seconds.
    static func ownSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
    private static func statFields(_ pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        return fields.count > 14 ? fields : nil
    }
}

/// Where a drain's CPU went, in microseconds per job: the PostgreSQL server (when it runs on this machine),
/// the worker processes, and the simulator (when the scenario runs one, in the benchmark's own process).
package struct CPUPerJob: Sendable {
    package var postgres: Double?
    package var workers: Double
    package var simulator: Double?

    /// A reading of every part at one moment; two of them make a `CPUPerJob`.
    struct Reading {
        var postgres: Double?
        var workers: Double
        var benchmark: Double

        init(serverBackend: Int32?, workers: [Int32]) {
            postgres = serverBackend.flatMap(ProcessCPU.serverSeconds(backend:))
            self.workers = workers.compactMap { ProcessCPU.seconds(pid: $0) }.reduce(0, +)
            benchmark = ProcessCPU.ownSeconds()
        }
    }

    init(from start: Reading, to end: Reading, jobs: Int, simulatorInProcess: Bool) {
        let perJob = 1e6 / Double(max(jobs, 1))
        postgres = start.postgres.flatMap { before in end.postgres.map { ($0 - before) * perJob } }
        workers = (end.workers - start.workers) * perJob
        simulator = simulatorInProcess ? (end.benchmark - start.benchmark) * perJob : nil
    }

    /// "PostgreSQL 237 µs, worker 165 µs, simulator 136 µs".
    package var text: String {
        var parts: [String] = []
        if let postgres { parts.append(String(format: "PostgreSQL %.0f µs", postgres)) }
        parts.append(String(format: "worker %.0f µs", workers))
        if let simulator { parts.append(String(format: "simulator %.0f µs", simulator)) }
        return parts.joined(separator: ", ")
    }
}
