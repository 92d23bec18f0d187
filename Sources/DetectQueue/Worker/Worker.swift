import Foundation
import Hummingbird
import Logging
import Metrics
import Postgres
import ResembleDetect
import ServiceLifecycle
import Synchronization

/// A detectq worker: claims requests, submits them, waits for their verdicts, and serves callbacks,
/// `/healthz` and `/readyz`. Any number run side by side, on any number of hosts.
///
/// It is a `Service`: on graceful shutdown (SIGTERM, SIGINT) it stops claiming, gives back what it has not
/// sent, waits up to the grace period for what it has, and returns; anything still unfinished keeps its
/// lease until it expires, and another worker takes it over.
package final class Worker: Service {
    package let configuration: WorkerConfiguration
    private let postProcessors: [any PostProcessor]
    private let logger: Logger
    private let pause = WorkerPause()
    private let metricsExposition: (@Sendable () -> String)?
    private let api: (any DetectAPI)?
    private let slots: (any SlotStorage)?
    private let additionalRoutes: (@Sendable (Router<BasicRequestContext>) -> Void)?

    /// `postProcessors` are run on completed requests, each as a post-task of its own. `metricsExposition`
    /// renders the process's metrics for `GET /metrics` (after the queue's depth is sampled into them);
    /// without it, `/metrics` answers 404. `api` replaces the Detect API client made from `configuration`
    /// (benchmarks measure the queue alone with an instant one). `slots` replaces the API budget's slot schedule
    /// in `detectq.api_budget` (tests wrap it to see every slot granted, on the database's clock).
    /// `additionalRoutes` adds pages to the worker's HTTP port (the dashboard, when it is enabled there).
    package init(
        configuration: WorkerConfiguration,
        postProcessors: [any PostProcessor] = [],
        logger: Logger = Logger(label: "detectq.worker"),
        metricsExposition: (@Sendable () -> String)? = nil,
        api: (any DetectAPI)? = nil,
        slots: (any SlotStorage)? = nil,
        additionalRoutes: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.api = api
        self.slots = slots
        self.additionalRoutes = additionalRoutes
        self.postProcessors = postProcessors
        self.metricsExposition = metricsExposition
        var logger = logger
        logger[metadataKey: "worker_id"] = "\(configuration.workerID)"
        self.logger = logger
    }

    /// Why the worker stopped claiming, when it did.
    package var pausedReason: String? { pause.currentReason }

    package func run() async throws {
        let dependencies = try await WorkerDependencies.make(
            configuration: configuration, postProcessors: postProcessors, api: api, slots: slots, pause: pause, logger: logger
        )
        let router = Router()
        CallbackReceiver(
            processor: dependencies.processor, poller: dependencies.poller, metricsExposition: metricsExposition, pool: dependencies.pool,
            horizonWatch: dependencies.horizonWatch
        ).routes(into: router)
        additionalRoutes?(router)
        let http = Application(
            router: router,
            configuration: .init(address: .hostname("0.0.0.0", port: configuration.httpPort), serverName: "detectq"),
            logger: Logger(label: "detectq.http", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        do {
            try await dependencies.registry.announce()
        } catch {
            logger.error("could not record this worker in detectq.workers: \(error)")
        }
        logger.info("worker started", metadata: [
            "concurrency": "\(configuration.concurrency)", "http_port": "\(configuration.httpPort)",
            "api": "\(configuration.api.baseURL)", "rate_limit": "\(configuration.apiRateLimit)",
        ])
        var groupLogger = logger
        groupLogger[metadataKey: "component"] = "services"
        let group = ServiceGroup(configuration: .init(services: WorkerServices.all(dependencies, http: http), logger: groupLogger))
        do {
            try await group.run()
        } catch {
            logger.error("a part of the worker stopped: \(error)")
        }
        do {
            try await dependencies.registry.stopped()
        } catch {
            logger.warning("could not mark this worker stopped in detectq.workers: \(error)")
        }
        await dependencies.pool.close()
        try? await dependencies.ownClient?.shutdown()
        logger.info("worker stopped")
    }
}
