import ArgumentParser
import DetectQueue
import Foundation
import Hummingbird
import Logging
import Postgres
import QueueDashboard
import ServiceLifecycle

/// `detectq dashboard --port P`: the web dashboard on its own, beside any number of workers.
struct DashboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve the web dashboard: watch the queue and retry or cancel requests from a browser.",
        discussion: """
            Pages are under /dashboard and need DETECTQ_DASHBOARD_TOKEN (a bearer token, or the login form). \
            DETECTQ_DASHBOARD_READONLY=1 hides and refuses retry and cancel. Workers serve the same pages on their \
            HTTP port when DETECTQ_DASHBOARD=1.
            """
    )

    @Option(help: "The port to listen on.") var port: Int = 8081

    @Option(help: "The address to listen on (0.0.0.0 for every interface).") var host: String = "127.0.0.1"

    @Option(help: "A TOML or YAML file of settings, under the environment.") var config: String?

    func validate() throws {
        guard (1...65_535).contains(port) else { throw ValidationError("--port must be from 1 to 65535") }
    }

    func run() async throws {
        let settings: DashboardConfiguration
        let database: PostgresConfiguration
        do {
            let environment = try Settings.load(file: config).environment
            settings = try DashboardConfiguration.fromEnvironment(environment)
            database = Self.database(environment, actor: "detectq dashboard (\(ProcessInfo.processInfo.hostName):\(port))")
            try await WorkerCommand.checkDatabase(database)
        } catch {
            FileHandle.standardError.write(Data("detectq dashboard: \(error)\n".utf8))
            throw ExitCode.failure
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "detectq.dashboard")
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 4)
        let dashboard = try Dashboard(configuration: settings, pool: pool, logger: logger)
        let router = Router()
        dashboard.routes(into: router)
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/dashboard"]) }
        router.get("/healthz") { _, _ in "ok\n" }
        let server = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "detectq"),
            onServerRunning: { _ in
                logger.info("dashboard listening on http://\(host):\(port)/dashboard\(settings.readOnly ? " (read-only)" : "")")
            },
            logger: Logger(label: "detectq.http", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let group = ServiceGroup(configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await pool.close()
            throw error
        }
        await pool.close()
    }

    /// The dashboard's database settings: `DATABASE_URL`, with `actor` recorded in the history of what it changes.
    static func database(_ environment: [String: String], actor: String) -> PostgresConfiguration {
        PostgresConfiguration.fromEnvironment(environment, applicationName: actor)
    }
}
