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
public final class Worker: Service {
    public let configuration: WorkerConfiguration
    private let postProcessors: [any PostProcessor]
    private let logger: Logger
    private let pause = WorkerPause()
    private let requestSlots = Slots(gauge: Meter(label: QueueMetrics.requestsInFlight))
    private let postTaskSlots = Slots(gauge: Meter(label: QueueMetrics.postTasksInFlight))
    private let metricsExposition: (@Sendable () -> String)?
    private let api: (any DetectAPI)?
    private let additionalRoutes: (@Sendable (Router<BasicRequestContext>) -> Void)?
    private let shuttingDown = Atomic<Bool>(false)

    /// `postProcessors` are run on completed requests, each as a post-task of its own. `metricsExposition`
    /// renders the process's metrics for `GET /metrics` (after the queue's depth is sampled into them);
    /// without it, `/metrics` answers 404. `api` replaces the Detect API client made from `configuration`
    /// (benchmarks measure the queue alone with an instant one). `additionalRoutes` adds pages to the
    /// worker's HTTP port (the dashboard, when it is enabled there).
    public init(
        configuration: WorkerConfiguration,
        postProcessors: [any PostProcessor] = [],
        logger: Logger = Logger(label: "detectq.worker"),
        metricsExposition: (@Sendable () -> String)? = nil,
        api: (any DetectAPI)? = nil,
        additionalRoutes: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.api = api
        self.additionalRoutes = additionalRoutes
        self.postProcessors = postProcessors
        self.metricsExposition = metricsExposition
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
        let client: any DetectAPI
        let ownClient: DetectClient?
        if let api {
            (client, ownClient) = (api, nil)
        } else {
            let made = DetectClient(configuration: configuration.api)
            (client, ownClient) = (made, made)
        }
        let store = RequestStore(pool: pool)
        let budget = APIBudget(pool: pool, ratePerSecond: configuration.apiRateLimit)
        let processors = postProcessors
        let processor = RequestProcessor(
            store: store, client: client, budget: budget, configuration: configuration,
            postProcessors: { [threshold = configuration.fakeThreshold] request, item in
                processors.names(for: DetectionOutcome(request: request, item: item, fakeThreshold: threshold))
            },
            pause: pause, logger: logger
        )
        let postTasks = PostTaskStore(pool: pool)
        let runner = PostTaskRunner(
            store: postTasks, processors: Dictionary(postProcessors.map { ($0.name, $0) }) { first, _ in first },
            client: client, budget: budget, workerID: configuration.workerID, retryPolicy: configuration.retryPolicy,
            fakeThreshold: configuration.fakeThreshold, logger: logger
        )
        let poller = ResultPoller(processor: processor)
        let router = Router()
        CallbackReceiver(processor: processor, poller: poller, metricsExposition: metricsExposition).routes(into: router)
        additionalRoutes?(router)
        let registry = WorkerRegistry(pool: pool, configuration: configuration)
        do {
            try await registry.announce()
        } catch {
            logger.error("could not record this worker in detectq.workers: \(error)")
        }
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
                group.addTask { await self.heartbeatLoop(store, postTasks, registry) }
                group.addTask { await self.rescueLoop(store, postTasks) }
                group.addTask {
                    await self.claimLoop(slots: self.postTaskSlots, kind: "post_tasks", concurrency: max(4, self.configuration.concurrency / 4)) { limit in
                        try await postTasks.claim(workerID: self.configuration.workerID, limit: limit, lease: self.configuration.lease)
                            .map { task in (task.id, { await runner.run(task) }) }
                    }
                }
                group.addTask {
                    do {
                        try await server.run()
                    } catch {
                        self.logger.error("the HTTP server stopped: \(error)")
                    }
                }
                let gate = SubmissionGate(pause: SharedPause(pool: pool), recheck: self.configuration.creditRecheck)
                await self.claimLoop(slots: self.requestSlots, kind: "requests", concurrency: self.configuration.concurrency) { limit in
                    guard !self.pause.isPaused else { return [] }
                    // Out of credit or paused by an operator: nothing is claimed, but for the one probe.
                    let state = try await gate.current()
                    guard state != .closed else { return [] }
                    let probe = state == .probe
                    return try await store.claim(workerID: self.configuration.workerID, limit: probe ? 1 : limit, lease: self.configuration.lease)
                        .map { request in (request.id, { _ = await processor.process(request, probe: probe) { self.isShuttingDown } }) }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.shuttingDown.store(true, ordering: .relaxed)
            self.requestSlots.wake.signal()
            self.postTaskSlots.wake.signal()
        }
        try? await ownClient?.shutdown()
        do {
            try await registry.stopped()
        } catch {
            logger.warning("could not mark this worker stopped in detectq.workers: \(error)")
        }
        await pool.close()
        logger.info("worker stopped")
    }

    private var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

    // MARK: - Loops

    /// Claims while there are free slots and runs each claim in a task of its own; on shutdown, stops
    /// claiming and waits up to the grace period for what is in flight. When its task is cancelled outright
    /// it returns at once, cancelling what is in flight: those claims are given back or left to their leases.
    /// `kind` labels the claim metrics.
    private func claimLoop(
        slots: Slots, kind: String, concurrency: Int, claim: @escaping @Sendable (Int) async throws -> [(Int, @Sendable () async -> Void)]
    ) async {
        await withDiscardingTaskGroup { tasks in
            while !isShuttingDown && !Task.isCancelled {
                let free = concurrency - slots.count
                if free > 0 {
                    let batch = min(free, 100)
                    do {
                        let claimed = try await claim(batch)
                        if !claimed.isEmpty { QueueMetrics.claimed(claimed.count, kind: kind) }
                        for (id, work) in claimed {
                            slots.take(id)
                            tasks.addTask {
                                await work()
                                slots.free(id)
                            }
                        }
                        if claimed.count == batch { continue }
                    } catch {
                        if !Task.isCancelled { logger.error("claiming failed: \(error)") }
                    }
                }
                await slots.wake.wait(timeout: .seconds(1))
            }
            let deadline = ContinuousClock.now + configuration.shutdownGracePeriod
            while slots.count > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
                await slots.wake.wait(timeout: .milliseconds(100))
            }
            if slots.count > 0 && !Task.isCancelled {
                logger.warning("\(slots.count) claims still in flight at the end of the grace period; their leases will expire and another worker will take them over")
                tasks.cancelAll()
            }
        }
    }

    /// Wakes the claim loops when work becomes claimable (and after every reconnection).
    private func listen() async {
        for await event in PostgresNotificationListener.listen(configuration.database, channels: ["detectq_requests", "detectq_post_tasks"]) {
            switch event {
            case .notification(let notification) where notification.channel == "detectq_post_tasks":
                postTaskSlots.wake.signal()
            case .notification:
                requestSlots.wake.signal()
            case .listening:
                requestSlots.wake.signal()
                postTaskSlots.wake.signal()
            }
            if isShuttingDown || Task.isCancelled { return }
        }
    }

    private func pollLoop(_ poller: ResultPoller) async {
        while !Task.isCancelled && !isShuttingDown {
            do {
                if try await poller.pollDue(limit: 50) > 0 { continue }
            } catch {
                if !Task.isCancelled { logger.error("polling failed: \(error)") }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    private func heartbeatLoop(_ store: RequestStore, _ postTasks: PostTaskStore, _ registry: WorkerRegistry) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.lease / 3)
            do {
                _ = try await store.heartbeat(workerID: configuration.workerID, ids: requestSlots.ids, lease: configuration.lease)
                _ = try await postTasks.heartbeat(workerID: configuration.workerID, ids: postTaskSlots.ids, lease: configuration.lease)
                try await registry.heartbeat()
            } catch {
                if !Task.isCancelled { logger.error("heartbeat failed: \(error)") }
            }
        }
    }

    private func rescueLoop(_ store: RequestStore, _ postTasks: PostTaskStore) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: max(.seconds(1), configuration.lease / 2) + .milliseconds(Int.random(in: 0...500)))
            do {
                let report = try await store.rescueExpiredLeases()
                let tasks = try await postTasks.rescueExpiredLeases()
                if !report.retrying.isEmpty || !report.failed.isEmpty || !tasks.retrying.isEmpty || !tasks.failed.isEmpty {
                    logger.warning("took over expired leases", metadata: [
                        "requests_retrying": "\(report.retrying.count)", "requests_failed": "\(report.failed.count)",
                        "post_tasks_retrying": "\(tasks.retrying.count)", "post_tasks_failed": "\(tasks.failed.count)",
                    ])
                }
            } catch {
                if !Task.isCancelled { logger.error("rescue failed: \(error)") }
            }
        }
    }
}

/// The claims a loop holds, and the signal that wakes it when one frees or new work arrives; the in-flight
/// gauge `gauge` follows them.
final class Slots: Sendable {
    let wake = WakeSignal()
    private let held = Mutex<Set<Int>>([])
    private let gauge: Meter

    init(gauge: Meter) {
        self.gauge = gauge
    }

    var count: Int { held.withLock { $0.count } }
    var ids: [Int] { held.withLock { Array($0) } }

    func take(_ id: Int) {
        gauge.set(held.withLock { $0.insert(id); return $0.count })
    }

    func free(_ id: Int) {
        gauge.set(held.withLock { $0.remove(id); return $0.count })
        wake.signal()
    }
}
