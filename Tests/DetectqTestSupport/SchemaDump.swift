import EmbeddedPostgres
import Foundation
import Subprocess
import SystemPackage

/// A database's detectq schema as `pg_dump --schema-only` prints it, normalised to be read and compared:
/// the definitions and the rows of the two transition tables (which the triggers enforce, so they are part of
/// the schema), without pg_dump's comments, session settings and version lines.
package enum SchemaDump {
    /// The tables whose rows belong to the schema.
    static let referenceTables = ["detectq.request_state_transitions", "detectq.post_task_state_transitions"]

    /// The normalised dump of `database` on the test server.
    package static func of(database: String) async throws -> String {
        let uri = try TestDatabase.connectionURI(database: database)
        let definitions = try await pgDump([uri, "--schema-only", "--schema=detectq", "--no-owner", "--no-privileges"])
        let rows = try await pgDump([uri, "--data-only", "--inserts", "--no-owner"] + referenceTables.map { "--table=\($0)" })
        return normalised(definitions) + "\n\n" + normalised(rows) + "\n"
    }

    /// The dump without its comment lines, `SET` and `set_config` lines, `\restrict` guards and repeated
    /// blank lines.
    static func normalised(_ dump: String) -> String {
        var lines: [Substring] = []
        for line in dump.split(separator: "\n", omittingEmptySubsequences: false) {
            let dropped = line.hasPrefix("--") || line.hasPrefix("SET ") || line.hasPrefix("SELECT pg_catalog.set_config(")
                || line.hasPrefix("\\restrict") || line.hasPrefix("\\unrestrict")
            if dropped { continue }
            if line.trimmingCharacters(in: .whitespaces).isEmpty && (lines.last?.isEmpty ?? true) { continue }
            lines.append(line.trimmingCharacters(in: .whitespaces).isEmpty ? "" : line)
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        return lines.joined(separator: "\n")
    }

    private static func pgDump(_ arguments: [String]) async throws -> String {
        let pgDump = try ThrowawayPostgresCluster.serverBinaries().appendingPathComponent("pg_dump")
        let result = try await Subprocess.run(
            .path(FilePath(pgDump.path)), arguments: Arguments(arguments),
            output: .string(limit: 16 << 20), error: .string(limit: 1 << 20)
        )
        guard result.terminationStatus.isSuccess else {
            throw TestSetupError("pg_dump failed (\(result.terminationStatus)): \(result.standardError)")
        }
        return result.standardOutput
    }
}
