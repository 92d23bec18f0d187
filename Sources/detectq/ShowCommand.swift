import ArgumentParser
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
        let rows = try await pool.query("""
            SELECT id, state::text AS state, coalesce(media_url, media_path, '(media token)') AS media, wait_mode, priority, attempt,
                   max_attempts, remote_uuid, submit_path, media_type, label, is_fake, aggregated_score, error_message,
                   file_deleted_at::text AS file_deleted_at, created_at::text AS created_at, completed_at::text AS completed_at,
                   metadata::text AS metadata
            FROM detectq.requests WHERE id = \(id)
            """)
        guard let row = rows.first else { return nil }
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
        for event in try await pool.query("""
            SELECT at::text AS at, coalesce(from_state::text, '-') AS from_state, to_state::text AS to_state,
                   coalesce(worker_id, '-') AS worker_id, detail
            FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
            """) {
            let detail = try event.decode("detail", as: String?.self).map { ": \($0)" } ?? ""
            lines.append("  \(try event.decode("at", as: String.self))  \(try event.decode("from_state", as: String.self)) -> "
                + "\(try event.decode("to_state", as: String.self))  [\(try event.decode("worker_id", as: String.self))]\(detail)")
        }
        return lines
    }
}
