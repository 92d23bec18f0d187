import ChildProcesses
import EmbeddedPostgres
import Foundation

/// The `detectq worker` processes of a chaos run: started with one shared environment, each with its own id,
/// HTTP port and callback URL, killed with SIGKILL and replaced.
actor WorkerFleet {
    /// A worker process and what the run needs to know of it.
    private struct Member {
        let id: String
        let process: BackgroundProcess
    }

    private let executable: URL
    private let environment: [String: String]
    private let logDirectory: URL
    private var members: [Member] = []
    private var started = 0
    /// The ids of the workers killed so far.
    private(set) var killed: [String] = []
    /// Workers that exited without being killed (a crash or a refusal to start).
    private(set) var unexpectedExits: [String] = []

    init(executable: URL, environment: [String: String], logDirectory: URL) {
        self.executable = executable
        self.environment = environment
        self.logDirectory = logDirectory
    }

    /// Starts one more worker.
    func spawn() async throws {
        started += 1
        let id = "chaos-w\(started)"
        let port = try LoopbackPort.free()
        let process = try await BackgroundProcess.start(executable.path, arguments: ["worker"], environment: environment.merging([
            "DETECTQ_WORKER_ID": id, "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)",
        ]) { $1 }, log: logDirectory.appendingPathComponent("\(id).log"))
        members.append(Member(id: id, process: process))
    }

    /// Kills `id` with SIGKILL and starts a new worker in its place; returns false if `id` was not running.
    func killAndReplace(_ id: String) async throws -> Bool {
        noteExits()
        guard let index = members.firstIndex(where: { $0.id == id }) else { return false }
        let victim = members.remove(at: index)
        victim.process.signal(SIGKILL)
        _ = try? await victim.process.waitForExit()
        killed.append(victim.id)
        try await spawn()
        return true
    }

    /// Replaces workers that exited on their own, so the run keeps its size; they are reported.
    func replaceExited() async throws {
        let before = members.count
        noteExits()
        for _ in members.count..<before { try await spawn() }
    }

    private func noteExits() {
        for member in members {
            if let status = member.process.exitStatus {
                unexpectedExits.append("\(member.id) exited with \(status), its log ending: \(logEnding(of: member.id))")
            }
        }
        members.removeAll { !$0.process.isRunning }
    }

    /// Stops every worker with SIGTERM (SIGKILL after `grace`).
    func stopAll(grace: Duration) async {
        await withTaskGroup(of: (String, ExitStatus).self) { group in
            for member in members where member.process.isRunning {
                group.addTask { (member.id, await member.process.stop(grace: grace)) }
            }
            for await (id, status) in group where status != .exited(0) {
                unexpectedExits.append("\(id) exited with \(status) when asked to stop, its log ending: \(logEnding(of: id))")
            }
        }
    }

    /// The last two lines of a worker's log, so that a report read where the logs are gone (CI) still says
    /// why it exited.
    private func logEnding(of id: String) -> String {
        let log = (try? String(contentsOf: logDirectory.appendingPathComponent("\(id).log"), encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n").suffix(2).map { String($0.prefix(400)) }
        return lines.isEmpty ? "(empty)" : lines.joined(separator: " | ")
    }

    /// Every worker's log, for the checks of what was printed.
    func logs() -> [URL] {
        (1...max(started, 1)).map { logDirectory.appendingPathComponent("chaos-w\($0).log") }
    }

    var ids: [String] { members.map(\.id) }
}

/// A chaos run that could not be set up or carried out, with the reason.
package struct ChaosError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
