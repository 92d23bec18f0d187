import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// `detectq show ID`: one request, its verdict and its whole history.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one request, its result and its event history.")

    @Argument(help: "The request's id.") var id: Int

    func run() async throws {
        let pool = PostgresConnectionPool(configuration: .fromEnvironment(applicationName: "detectq show"), maximumConnections: 1)
        let lines: [String]?
        do {
            lines = try await render(pool)
            await pool.close()
        } catch {
            await pool.close()
            throw error
        }
        guard let lines else {
            FileHandle.standardError.write(Data("detectq show: there is no request \(id)\n".utf8))
            throw ExitCode.failure
        }
        print(lines.joined(separator: "\n"))
    }

    /// The request's lines, or nil when there is no such request.
    private func render(_ pool: PostgresConnectionPool) async throws -> [String]? {
        guard let (row, history) = try await RequestAdministration(store: RequestStore(pool: pool)).describe(id: id) else { return nil }
        func text(_ column: String) throws -> String { try row.decode(column, as: String?.self) ?? "-" }
        var lines = [
            "request \(id): \(try text("state")) (attempt \(try row.decode("attempt", as: Int.self)) of \(try row.decode("max_attempts", as: Int.self)))",
            "  media:        \(try text("media")) (wait \(try text("wait_mode")), priority \(try row.decode("priority", as: Int.self)))",
            "  remote uuid:  \(try text("remote_uuid")) via \(try text("submit_path"))",
            "  verdict:      \(try text("label"))" + (try row.decode("is_fake", as: Bool?.self).map { $0 ? " (fake)" : " (real)" } ?? "")
                + (try row.decode("aggregated_score", as: Double?.self).map { String(format: ", score %.2f", $0) } ?? ""),
            "  media type:   \(try text("media_type"))",
            "  file deleted: \(try text("file_deleted_at"))",
            "  created:      \(try text("created_at")); completed: \(try text("completed_at"))",
            "  metadata:     \(try text("metadata"))",
        ]
        if let reason = try row.decode("error_message", as: String?.self) { lines.append("  error:        \(reason)") }
        lines.append("history:")
        for event in history {
            let detail = try event.decode("detail", as: String?.self).map { ": \($0)" } ?? ""
            lines.append("  \(try event.decode("at", as: String.self))  \(try event.decode("from_state", as: String.self)) -> "
                + "\(try event.decode("to_state", as: String.self))  [\(try event.decode("worker_id", as: String.self))]\(detail)")
        }
        return lines
    }
}
