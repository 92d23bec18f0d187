import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// The database connection a command run by a person uses: `DATABASE_URL`, with the person's name in the
/// event history.
enum CommandDatabase {
    static func store(_ command: String) -> RequestStore {
        let user = ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        var configuration = PostgresConfiguration.fromEnvironment(applicationName: "detectq \(command)")
        configuration.sessionSettings = ["detectq.worker_id": "detectq \(command) (\(user)@\(ProcessInfo.processInfo.hostName))"]
        return RequestStore(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 1))
    }

    /// Prints one line per request and fails the command when any was refused.
    static func report(_ verb: String, _ outcomes: [(Int, RequestAdministration.Outcome)]) throws {
        var refused = false
        for (id, outcome) in outcomes {
            switch outcome {
            case .changed(let from, let to):
                print("request \(id): \(from.rawValue) -> \(to.rawValue)")
            case .refused(let reason):
                refused = true
                FileHandle.standardError.write(Data("request \(id): cannot \(verb): \(reason)\n".utf8))
            }
        }
        if refused { throw ExitCode.failure }
    }
}

/// `detectq retry ID…`: turns failed requests back into claimable ones, with their attempts given back.
struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "retry", abstract: "Retry failed requests by id.")

    @Argument(help: "The ids of the requests to retry.")
    var ids: [Int]

    func run() async throws {
        let store = CommandDatabase.store("retry")
        let outcomes = try await RequestAdministration(store: store).retry(ids)
        await store.pool.close()
        try CommandDatabase.report("retry", outcomes)
    }
}

/// `detectq cancel ID…`: cancels unfinished requests.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel unfinished requests by id.")

    @Argument(help: "The ids of the requests to cancel.")
    var ids: [Int]

    func run() async throws {
        let store = CommandDatabase.store("cancel")
        let outcomes = try await RequestAdministration(store: store).cancel(ids)
        await store.pool.close()
        try CommandDatabase.report("cancel", outcomes)
    }
}
