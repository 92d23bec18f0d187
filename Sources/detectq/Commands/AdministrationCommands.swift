import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// The database connection a command run by a person uses: `DATABASE_URL`, with the person's name in the
/// event history.
enum CommandDatabase {
    private static func store(_ command: String) -> RequestStore {
        let user = ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        let configuration = PostgresConfiguration.fromEnvironment(
            applicationName: "detectq \(command) (\(user)@\(ProcessInfo.processInfo.hostName))"
        )
        return RequestStore(pool: PostgresConnectionPool(configuration: configuration, maximumConnections: 1))
    }

    /// Runs `action` on the requests as `detectq <verb>`, prints one line per request, and fails the command
    /// when any was refused.
    static func administer(
        _ verb: String, _ ids: [Int],
        _ action: (RequestAdministration, [Int]) async throws -> [(Int, RequestAdministration.Outcome)]
    ) async throws {
        let store = store(verb)
        let outcomes: [(Int, RequestAdministration.Outcome)]
        do {
            outcomes = try await action(RequestAdministration(store: store), ids)
            await store.pool.close()
        } catch {
            await store.pool.close()
            throw error
        }
        try report(verb, outcomes)
    }

    private static func report(_ verb: String, _ outcomes: [(Int, RequestAdministration.Outcome)]) throws {
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
        try await CommandDatabase.administer("retry", ids) { try await $0.retry($1) }
    }
}

/// `detectq cancel ID…`: cancels unfinished requests.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel unfinished requests by id.")

    @Argument(help: "The ids of the requests to cancel.")
    var ids: [Int]

    func run() async throws {
        try await CommandDatabase.administer("cancel", ids) { try await $0.cancel($1) }
    }
}
