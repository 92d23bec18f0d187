import ArgumentParser
import DetectQueue
import Foundation
import InputNumbers
import Postgres
import ResembleDetect

/// `detectq prune --older-than 30d`: deletes finished requests (completed, failed, cancelled) last
/// updated before then, with their events and post-tasks, in small batches so no lock is held for long.
/// Unfinished requests are never touched.
struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Delete finished requests older than a retention period.")

    @Option(help: "How old a finished request must be: seconds, or 90m, 24h, 30d.") var olderThan: String
    @Option(help: "Requests deleted per transaction.") var batchSize: Int = 1_000

    /// `--older-than` as a duration, from nothing to a century.
    private func age() throws -> Duration {
        do {
            return try InputNumbers.duration(olderThan, from: "--older-than", in: .zero...(.seconds(3_153_600_000)))
        } catch {
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        _ = try age()
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() async throws {
        let pool = PostgresConnectionPool(configuration: .fromEnvironment(applicationName: "detectq prune"), maximumConnections: 1)
        let deleted: Int
        do {
            deleted = try await RequestAdministration(store: RequestStore(pool: pool)).prune(olderThan: try age(), batchSize: batchSize)
            await pool.close()
        } catch {
            await pool.close()
            throw error
        }
        print("pruned \(deleted) finished requests older than \(olderThan)")
    }
}
