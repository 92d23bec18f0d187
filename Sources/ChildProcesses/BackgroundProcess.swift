import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// How a child process ended.
package enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    package init(_ status: TerminationStatus) {
        switch status {
        case .exited(let code): self = .exited(code)
        case .signaled(let signal): self = .signaled(signal)
        }
    }

    /// The status as a shell reports it: the exit code, or 128 + the signal.
    package var code: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    package var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "signal \(signal)"
        }
    }
}

/// A child process running beside this one until it exits or is stopped: `detectq worker` processes of the
/// chaos suite, the benchmark and the tests, and PostgreSQL's `pg_ctl` and `initdb`. Built on
/// swift-subprocess: the child's standard output and error go, appended, to a log file (never a pipe, so a
/// daemon the child leaves behind cannot hold its exit up), it inherits no other descriptor, and its exit is
/// seen without a thread parked per child. Cancelling the task that started it does not stop it; `stop` does.
package final class BackgroundProcess: Sendable {
    /// The child's process id, for signals and `/proc`.
    package let pid: Int32
    /// Where its output goes.
    package let log: URL
    private let exit: Task<ExitStatus, any Error>
    private let ending: Ending

    /// How the child ended, set by the task that runs it as soon as it has.
    private final class Ending: Sendable {
        let status = Mutex<ExitStatus?>(nil)
    }

    private init(pid: Int32, log: URL, exit: Task<ExitStatus, any Error>, ending: Ending) {
        self.pid = pid
        self.log = log
        self.exit = exit
        self.ending = ending
    }

    /// Starts `executable` with `arguments`, its environment this process's with `environment` over it; its
    /// output is appended to `log` (created if missing). `newProcessGroup` puts it in a group of its own.
    package static func start(
        _ executable: String, arguments: [String], environment: [String: String] = [:], log: URL, newProcessGroup: Bool = false
    ) async throws -> BackgroundProcess {
        let descriptor = try FileDescriptor.open(
            FilePath(log.path), .writeOnly, options: [.create, .append, .closeOnExec], permissions: [.ownerReadWrite, .groupRead, .otherRead]
        )
        var options = PlatformOptions()
        if newProcessGroup { options.processGroupID = 0 }
        let (started, reporting) = AsyncStream.makeStream(of: Int32.self)
        let ending = Ending()
        let exit = Task {
            defer { reporting.finish() }
            let result = try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments),
                environment: .inherit(overriding: environment),
                platformOptions: options, input: .none,
                output: .fileDescriptor(descriptor, closeAfterSpawningProcess: true), error: .combinedWithOutput
            ) { execution in
                reporting.yield(execution.processIdentifier.value)
            }
            let status = ExitStatus(result.terminationStatus)
            ending.status.withLock { $0 = status }
            return status
        }
        var pids = started.makeAsyncIterator()
        guard let pid = await pids.next() else {
            if case .failure(let error) = await exit.result { throw error }
            throw ChildProcessError("\(executable) did not start")
        }
        return BackgroundProcess(pid: pid, log: log, exit: exit, ending: ending)
    }

    /// Runs `executable` to its end, its output appended to `log`, and returns how it ended.
    package static func run(_ executable: String, arguments: [String], log: URL) async throws -> ExitStatus {
        try await start(executable, arguments: arguments, log: log).waitForExit()
    }

    /// How it ended, or nil while it runs.
    package var exitStatus: ExitStatus? { ending.status.withLock { $0 } }

    package var isRunning: Bool { exitStatus == nil }

    /// Sends `signal` to the child (to its whole group when it leads one and `group` is set), unless it has
    /// ended: its pid is not reaped, and so not reused, before the exit is seen.
    package func signal(_ signal: Int32, group: Bool = false) {
        guard isRunning else { return }
        kill(group ? -pid : pid, signal)
    }

    /// Waits for the child to end.
    @discardableResult
    package func waitForExit() async throws -> ExitStatus {
        try await exit.value
    }

    /// Asks the child to stop (SIGTERM) and waits; SIGKILL after `grace`. Returns how it ended.
    @discardableResult
    package func stop(grace: Duration) async -> ExitStatus {
        signal(SIGTERM)
        let killer = Task {
            try await Task.sleep(for: grace)
            signal(SIGKILL)
        }
        defer { killer.cancel() }
        return (try? await waitForExit()) ?? .exited(-1)
    }
}

/// A child process could not be started.
package struct ChildProcessError: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}

extension Environment {
    /// This process's environment with `values` over it.
    package static func inherit(overriding values: [String: String]) -> Environment {
        .inherit.updating(Dictionary(uniqueKeysWithValues: values.map { (Key(stringLiteral: $0.key), $0.value) }))
    }
}
