import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// Who runs an operator's command, as a pause records it: `detectq pause (user@host)`.
func operatorName(_ command: String) -> String {
    "detectq \(command) (\(ProcessInfo.processInfo.environment["USER"] ?? "unknown")@\(ProcessInfo.processInfo.hostName))"
}

/// Runs `action` over a one-connection pool named after the operator's command, closing it whatever happens.
func withOperatorPool<Result>(_ command: String, _ action: (PostgresConnectionPool) async throws -> Result) async throws -> Result {
    let pool = PostgresConnectionPool(configuration: .fromEnvironment(applicationName: operatorName(command)), maximumConnections: 1)
    do {
        let result = try await action(pool)
        await pool.close()
        return result
    } catch {
        await pool.close()
        throw error
    }
}

/// `detectq pause [--reason TEXT]`: stops submitting on every worker that shares the database (the shared
/// pause a 429 or 402 sets); callbacks, polls and post-processing go on.
struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop submitting on every worker (callbacks, polls and post-processing go on)."
    )

    @Option(help: "Why, for `detectq status`, the dashboard and whoever resumes.") var reason = "paused by an operator"

    func validate() throws {
        guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ValidationError("--reason must not be blank") }
    }

    func run() async throws {
        let paused = try await withOperatorPool("pause") { try await SharedPause(pool: $0).pause(reason: reason, by: operatorName("pause")) }
        print(paused
            ? "submitting paused on every worker: \(reason) (detectq resume restarts it)"
            : "submitting was already paused by an operator; nothing changed (detectq status says by whom)")
    }
}

/// `detectq resume`: ends an operator's pause; every worker submits again.
struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "End an operator's pause: every worker submits again.")

    func run() async throws {
        let resumed = try await withOperatorPool("resume") { try await SharedPause(pool: $0).resume() }
        print(resumed ? "submitting resumed on every worker" : "submitting was not paused by an operator; nothing changed")
    }
}
