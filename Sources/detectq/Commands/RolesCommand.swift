import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// `detectq roles`: prints (or, with `--apply`, runs) the SQL of the four least-privilege roles.
struct RolesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roles",
        abstract: "Print the SQL that creates detectq's four roles and grants their privileges; --apply runs it.",
        discussion: """
            detectq_producer (insert requests, read them and their history), detectq_worker (what workers need; no \
            DDL or TRUNCATE), detectq_viewer (what the dashboard and status/show read), detectq_operator (the \
            viewer's, plus retry, cancel, pause, resume and prune). Only the worker reads the token and secret \
            columns. The SQL is safe to run again; run it as the schema's owner after detectq migrate. With \
            --apply it connects with DATABASE_URL and the standard PG* variables.
            """
    )

    @Flag(help: "Run the SQL instead of printing it.") var apply = false

    func run() async throws {
        guard apply else {
            print(DatabaseRoles.script, terminator: "")
            return
        }
        let configuration = PostgresConfiguration.fromEnvironment(applicationName: "detectq roles")
        do {
            let connection = try await PostgresConnection.connect(configuration)
            do {
                try await connection.executeScript(DatabaseRoles.script)
            } catch {
                await connection.close()
                throw error
            }
            await connection.close()
        } catch {
            FileHandle.standardError.write(Data("detectq roles: \(error)\n".utf8))
            throw ExitCode.failure
        }
        print("roles ready: \(DatabaseRoles.all.joined(separator: ", ")); grant each to a login role of its own, "
            + "e.g. GRANT \(DatabaseRoles.producer) TO uploads_service")
    }
}
