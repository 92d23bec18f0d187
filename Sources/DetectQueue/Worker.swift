import Foundation
import Hummingbird
import Logging
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
public final class Worker: Service {
    public let configuration: WorkerConfiguration
    private let postProcessors: @Sendable (DetectionRequest, DetectionItem) -> [String]
    private let logger: Logger
    private let pause = WorkerPause()
    private let wake = WakeSignal()
    private let inFlight = Mutex<Set<Int>>([])
    private let shuttingDown = Atomic<Bool>(false)

    /// `postProcessors` names the post-tasks a completed request gets (one row each in `detectq.post_tasks`).
    public init(
        configuration: WorkerConfiguration,
        postProcessors: @escaping @Sendable (DetectionRequest, DetectionItem) -> [String] = { _, _ in [] },
        logger: Logger = Logger(label: "detectq.worker")
    ) {
        self.configuration = configuration
        self.postProcessors = postProcessors
        var logger = logger
        logger[metadataKey: "worker_id"] = "\(configuration.workerID)"
        self.logger = logger
    }

    /// Why the worker stopped claiming, when it did.
    public var pausedReason: String? { pause.currentReason }

    public func run() async throws {
        let pool = PostgresConnectionPool(
            configuration: configuration.database, maximumConnections: min(32, max(4, configuration.concurrency / 8 + 4))
        )
        let client = DetectClient(configuration: configuration.api)
        let store = RequestStore(pool: pool)
        let processor = RequestProcessor(
            store: store, client: client, budget: APIBudget(pool: pool, ratePerSecond: configuration.apiRateLimit),
            configuration: configuration, postProcessors: postProcessors, pause: pause, logger: logger
        )
        let poller = ResultPoller(processor: processor)
        let router = Router()
        CallbackReceiver(processor: processor, poller: poller).routes(into: router)
        let server = Application(
            router: router,
            configuration: .init(address: .hostname("0.0.0.0", port: configuration.httpPort), serverName: "detectq"),
            logger: Logger(label: "detectq.http", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        logger.info("worker started", metadata: [
            "concurrency": "\(configuration.concurrency)", "http_port": "\(configuration.httpPort)",
            "api": "\(configuration.api.baseURL)", "rate_limit": "\(configuration.apiRateLimit)",
        ])

        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen() }
                group.addTask { await self.pollLoop(poller) }
                group.addTask { await self.heartbeatLoop(store) }
                group.addTask { await self.rescueLoop(store) }
                group.addTask {
                    do {
                        try await server.run()
                    } catch {
                        self.logger.error("the HTTP server stopped: \(error)")
                    }
                }
                await self.claimLoop(store: store, processor: processor)
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.shuttingDown.store(true, ordering: .relaxed)
            self.wake.signal()
        }
        try? await client.shutdown()
        await pool.close()
        logger.info("worker stopped")
    }

    private var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

    // MARK: - Loops

    /// Claims while there are free slots, and processes each claim in a task of its own.
    private func claimLoop(store: RequestStore, processor: RequestProcessor) async {
        await withDiscardingTaskGroup { tasks in
            while !isShuttingDown {
                let free = configuration.concurrency - inFlight.withLock { $0.count }
                if free > 0 && !pause.isPaused {
                    let batch = min(free, 100)
                    do {
                        let claimed = try await store.claim(workerID: configuration.workerID, limit: batch, lease: configuration.lease)
                        for request in claimed {
                            inFlight.withLock { _ = $0.insert(request.id) }
                            tasks.addTask {
                                _ = await processor.process(request) { self.isShuttingDown }
                                self.inFlight.withLock { _ = $0.remove(request.id) }
                                self.wake.signal()
                            }
                        }
                        if claimed.count == batch { continue }
                    } catch {
                        logger.error("claiming failed: \(error)")
                    }
                }
                await wake.wait(timeout: .seconds(1))
            }
            let deadline = ContinuousClock.now + configuration.shutdownGracePeriod
            while !inFlight.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline {
                await wake.wait(timeout: .milliseconds(100))
            }
            let left = inFlight.withLock { $0.count }
            if left > 0 {
                logger.warning("\(left) requests still in flight at the end of the grace period; their leases will expire and another worker will take them over")
                tasks.cancelAll()
            }
        }
    }

    /// Wakes the claim loop when a request becomes claimable (and after every reconnection).
    private func listen() async {
        for await _ in PostgresNotificationListener.listen(configuration.database, channels: ["detectq_requests"]) {
            wake.signal()
            if isShuttingDown || Task.isCancelled { return }
        }
    }

    private func pollLoop(_ poller: ResultPoller) async {
        while !Task.isCancelled && !isShuttingDown {
            do {
                if try await poller.pollDue(limit: 50) > 0 { continue }
            } catch {
                logger.error("polling failed: \(error)")
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    private func heartbeatLoop(_ store: RequestStore) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.lease / 3)
            let ids = inFlight.withLock { Array($0) }
            do {
                let held = try await store.heartbeat(workerID: configuration.workerID, ids: ids, lease: configuration.lease)
                let lost = Set(ids).subtracting(held)
                if !lost.isEmpty { logger.debug("no longer holds \(lost.count) leases (finished, cancelled or taken over)") }
            } catch {
                logger.error("heartbeat failed: \(error)")
            }
        }
    }

    private func rescueLoop(_ store: RequestStore) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: max(.seconds(1), configuration.lease / 2) + .milliseconds(Int.random(in: 0...500)))
            do {
                let report = try await store.rescueExpiredLeases()
                if !report.retrying.isEmpty || !report.failed.isEmpty {
                    logger.warning("took over expired leases", metadata: [
                        "retrying": "\(report.retrying.count)", "failed": "\(report.failed.count)",
                    ])
                }
            } catch {
                logger.error("rescue failed: \(error)")
            }
        }
    }
}
