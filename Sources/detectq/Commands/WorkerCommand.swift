import ArgumentParser
import DetectQueue
import ExternalPlugins
import FakeAlerts
import IntelligenceArchive
import RetentionTracking
import Foundation
import Hummingbird
import InputNumbers
import Logging
import Metrics
import Postgres
import Prometheus
import QueueDashboard
import SchemaMigrations
import ServiceLifecycle

/// `detectq worker`: claims, submits, waits and serves callbacks until SIGTERM or SIGINT.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: claim requests, submit them to the Detect API, wait for verdicts, serve callbacks.",
        discussion: "Configured by the environment (DATABASE_URL, RESEMBLE_API_TOKEN, DETECTQ_*), which a --config file may add to; see the README."
    )

    @Option(help: "A TOML or YAML file of settings, under the environment.") var config: String?

    func run() async throws {
        let configuration: WorkerConfiguration
        let postProcessors: [any PostProcessor]
        let jsonLogs: Bool
        let dashboardSettings: DashboardConfiguration?
        let telemetry: Telemetry.Exporting?
        do {
            let environment = try Settings.load(file: config).environment
            jsonLogs = try Self.jsonLogs(environment["DETECTQ_LOG_FORMAT"])
            configuration = try WorkerConfiguration.fromEnvironment(environment)
            postProcessors = try Self.postProcessors(environment)
            dashboardSettings = try DashboardConfiguration.forWorker(environment)
            try await Self.checkDatabase(configuration.database)
            telemetry = try Telemetry.start(ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("detectq worker: \(error)\n".utf8))
            throw ExitCode.failure
        }
        LoggingSystem.bootstrap({ label, metadataProvider in
            if jsonLogs { return JSONLogHandler(label: label, metadataProvider: metadataProvider) }
            var handler = StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider)
            handler.logLevel = .info
            return handler
        }, metadataProvider: telemetry?.logMetadata)
        let registry = Self.bootstrapMetrics()
        let logger = Logger(label: "detectq.worker")
        var dashboardPool: PostgresConnectionPool?
        var dashboard: Dashboard?
        // The dashboard reads through a small pool of its own, so a busy page never takes a worker's connection.
        if let dashboardSettings {
            var database = configuration.database
            database.applicationName = "detectq dashboard (on \(configuration.workerID))"
            let pool = PostgresConnectionPool(configuration: database, maximumConnections: 2)
            dashboardPool = pool
            dashboard = try Dashboard(configuration: dashboardSettings, pool: pool, logger: Logger(label: "detectq.dashboard"))
            logger.info("dashboard served on the worker's HTTP port at /dashboard\(dashboardSettings.readOnly ? " (read-only)" : "")")
        }
        let worker = Worker(
            configuration: configuration, postProcessors: postProcessors, logger: logger,
            metricsExposition: { registry.emitToString() },
            additionalRoutes: dashboard.map { dashboard in { @Sendable (router: Router<BasicRequestContext>) in dashboard.routes(into: router) } }
        )
        // The exporter is listed first so that it stops last, after the worker's final spans.
        let group = ServiceGroup(configuration: .init(
            services: [telemetry?.service, worker].compactMap { $0 },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        do {
            try await group.run()
        } catch {
            await dashboardPool?.close()
            throw error
        }
        await dashboardPool?.close()
    }

    /// Sends the process's swift-metrics to a Prometheus registry, whose text `/metrics` serves.
    static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets[QueueMetrics.claimBatchSize] = QueueMetrics.claimBatchBuckets
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// The built-in post-processors, configured from the environment: one line each.
    static func postProcessors(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [any PostProcessor] {
        let settings = EnvironmentReader(environment)
        let reader = settings.text
        let url = settings.httpURL
        var processors: [any PostProcessor] = [
            RetentionTracker(sla: try retentionSLA(reader("DETECTQ_RETENTION_SLA"))),
            IntelligenceArchiver(directory: reader("DETECTQ_ARCHIVE_DIR").map { URL(fileURLWithPath: $0) }),
        ]
        if let directory = reader("DETECTQ_PLUGINS_DIR") {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ConfigurationError("DETECTQ_PLUGINS_DIR", expected: "an existing directory")
            }
            let limit = try settings.seconds("DETECTQ_PLUGIN_TIMEOUT", default: .seconds(30), in: .milliseconds(1)...(.seconds(86_400)))
            processors += ExecutablePlugin.discover(in: URL(fileURLWithPath: directory), timeLimit: limit)
        }
        // Every alert sink, once for each kind of alert: the ones the sinks decide on, and the ones the other
        // processors declare they raise.
        var kinds = AlertKind.decidedAtCompletion
        for kind in processors.flatMap(\.raisedAlerts) where !kinds.contains(kind) { kinds.append(kind) }
        var sinks: [any PostProcessor] = []
        for kind in kinds {
            sinks.append(PgNotifyAlertSink(kind: kind))
            if let webhook = try url("DETECTQ_ALERT_WEBHOOK_URL") {
                sinks.append(WebhookAlertSink(url: webhook, secret: reader("DETECTQ_ALERT_WEBHOOK_SECRET"), kind: kind))
            }
            if let slack = try url("DETECTQ_SLACK_WEBHOOK_URL") {
                sinks.append(SlackAlertSink(url: slack, kind: kind))
            }
            if let routingKey = reader("DETECTQ_PAGERDUTY_ROUTING_KEY") {
                sinks.append(PagerDutyAlertSink(routingKey: routingKey, url: try url("DETECTQ_PAGERDUTY_URL") ?? PagerDutyAlertSink.defaultURL, kind: kind))
            }
        }
        return sinks + processors
    }

    /// `DETECTQ_LOG_FORMAT`: `text` (the default, for people) or `json` (one object per line).
    static func jsonLogs(_ format: String?) throws -> Bool {
        switch format?.lowercased() {
        case nil, "", "text": return false
        case "json": return true
        default: throw ConfigurationError("DETECTQ_LOG_FORMAT", expected: "text or json")
        }
    }

    /// `DETECTQ_RETENTION_SLA`: seconds, or a number with `s`, `m`, `h` or `d`; 24 hours when unset.
    static func retentionSLA(_ text: String?) throws -> Duration {
        guard let text else { return .seconds(86_400) }
        do {
            return try InputNumbers.duration(text, from: "DETECTQ_RETENTION_SLA", in: .seconds(1)...(.seconds(31_536_000)))
        } catch {
            throw ConfigurationError(error.source, expected: error.expected)
        }
    }

    /// Checks at start that `DATABASE_URL` reaches a database with the schema this worker needs. A database
    /// that cannot be reached for a while (a failover under way, a restart: refused connections, no read-write
    /// host yet, a server starting up) is asked again for up to `patience`, silently; a refusal that waiting
    /// cannot mend (a wrong password, no such database, a schema to migrate) stops the worker at once.
    static func checkDatabase(_ configuration: PostgresConfiguration, patience: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + patience
        var delay = Duration.milliseconds(250)
        while true {
            do {
                return try await checkDatabaseOnce(configuration)
            } catch let unreachable as DatabaseUnreachable {
                guard unreachable.mayPass, ContinuousClock.now + delay < deadline else {
                    throw ConfigurationError("DATABASE_URL", expected: "a reachable PostgreSQL database (\(unreachable.error))")
                }
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(4))
            }
        }
    }

    /// The database could not be reached or stopped answering; `mayPass` when the failure is one a failover or a
    /// restart causes, which waiting may mend.
    struct DatabaseUnreachable: Error {
        let error: any Error

        var mayPass: Bool {
            let message = "\(error)".lowercased()
            return ["connection refused", "could not connect", "timeout expired", "server closed the connection", "starting up",
                    "shutting down", "in recovery", "read-only", "terminating connection", "no route to host", "connection reset"]
                .contains { message.contains($0) }
        }
    }

    private static func checkDatabaseOnce(_ configuration: PostgresConfiguration) async throws {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration)
        } catch {
            throw DatabaseUnreachable(error: error)
        }
        let readiness: SchemaReadiness
        let applied: [Int]
        do {
            readiness = try await SchemaReadiness.check(on: connection)
            applied = readiness == .ready
                ? try await connection.query("SELECT version FROM detectq.schema_migrations").map { try $0.decode("version", as: Int.self) }
                : []
            await connection.close()
        } catch {
            await connection.close()
            throw DatabaseUnreachable(error: error)
        }
        switch readiness {
        case .ready:
            let missing = DetectqMigrations.all.filter { !Set(applied).contains($0.version) }.map(\.name)
            guard missing.isEmpty else {
                throw ConfigurationError("DATABASE_URL", expected: "a detectq schema with every migration this worker needs "
                    + "(missing: \(missing.joined(separator: ", "))): run `detectq migrate`")
            }
        case .refuses(let changes):
            throw ConfigurationError("DATABASE_URL", expected: "a detectq schema whose transition tables allow every change this worker makes "
                + "(missing: \(changes.joined(separator: ", "))): run `detectq migrate`")
        case .notMigrated:
            throw ConfigurationError("DATABASE_URL", expected: "a database with the detectq schema: run `detectq migrate` first")
        }
    }
}
