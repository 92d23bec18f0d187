import CSpawn
import Dispatch
import Foundation

/// Runs a command to completion with `posix_spawn`, its output appended to a file.
///
/// Foundation's `Process` learns of a child's exit through a descriptor the child inherits; a daemon the
/// child starts (the postmaster that `pg_ctl start` leaves behind) inherits it too, so the exit is never
/// seen. Here every descriptor above standard error is closed in the child, and the parent waits with
/// `waitpid` on a dispatch thread, never on Swift's cooperative pool.
enum ChildProcess {
    /// Runs `executable` with `arguments` and returns its exit status (128 + signal when killed).
    static func run(_ executable: String, _ arguments: [String], outputFile: String) async throws -> Int32 {
        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = detectq_spawn(&pid, executable, argv + [nil], outputFile)
        guard spawned == 0 else {
            throw ClusterError("could not start \(executable): \(String(cString: strerror(spawned)))")
        }
        let child = pid
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var status: Int32 = 0
                while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7f
                continuation.resume(returning: signal == 0 ? (status >> 8) & 0xff : 128 + signal)
            }
        }
    }
}
