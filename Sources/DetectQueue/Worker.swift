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
    package init(
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
    package var pausedReason: String? { pause.currentReason }

    package func run() async throws {
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
        let budget = APIBudget(
            pool: pool, ratePerSecond: configuration.apiRateLimit, longestRetryAfter: configuration.longestRetryAfter, logger: logger
        )
        let installation: String
        do {
            installation = try await Installation.name(pool)
        } catch {
            logger.critical("could not read the installation's name (detectq.installation; run detectq migrate): \(error)")
            try? await ownClient?.shutdown()
            throw error
        }
        let postTasks = PostTaskStore(pool: pool)
        let runner = PostTaskRunner(
            store: postTasks, processors: Dictionary(postProcessors.map { ($0.name, $0) }) { first, _ in first },
            client: client, budget: budget, workerID: configuration.workerID, retryPolicy: configuration.retryPolicy,
            fakeThreshold: configuration.fakeThreshold, logger: logger,
            effects: PostProcessingEffects(pool: pool, processors: postProcessors)
        )
        let postTaskSlots = postTaskSlots
        let handedPostTasks = ClaimInbox(slots: postTaskSlots)
        let gate = SubmissionGate(pause: SharedPause(pool: pool), recheck: configuration.creditRecheck)
        let processor = RequestProcessor(
            store: store, client: client, budget: budget, configuration: configuration,
            postProcessing: PostProcessingHandOff(processors: postProcessors) { tasks, outcome, traceparent in
                handedPostTasks.hand(tasks.map { task in (task.id, { await runner.run(task, outcome: (outcome, traceparent)) }) })
            },
            pause: pause, gate: gate, installation: installation, logger: logger
        )
        let poller = ResultPoller(processor: processor)
        let reloadToken: (@Sendable () -> Bool)? = if let ownClient { { ownClient.reloadToken() } } else { nil }
        let authRecheck = AuthRecheck(processor: processor, reloadToken: reloadToken)
        let router = Router()
        CallbackReceiver(processor: processor, poller: poller, metricsExposition: metricsExposition).routes(into: router)
        additionalRoutes?(router)
        let server = Application(
            router: router,
            configuration: .init(address: .hostname("0.0.0.0", port: configuration.httpPort), serverName: "detectq"),
            logger: Logger(label: "detectq.http", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let registry = WorkerRegistry(pool: pool, configuration: configuration)
        let workerID = configuration.workerID
        let lease = configuration.lease
        let requestSlots = requestSlots
        let requestClaims = ClaimLoop(
            slots: requestSlots, kind: "requests", concurrency: configuration.concurrency, gracePeriod: configuration.shutdownGracePeriod,
            logger: logger, onStop: { self.shuttingDown.store(true, ordering: .relaxed) }
        ) { [pause] limit in
            guard !pause.isPaused else { return [] }
            // Out of credit or paused by an operator: nothing is claimed, but for the one probe.
            let state = try await gate.current()
            guard state != .closed else { return [] }
            let probe = state == .probe
            let started = Date()
            let claimed = try await store.claim(workerID: workerID, limit: probe ? 1 : limit, lease: lease)
            let ended = Date()
            for request in claimed {
                RequestTracing.recordSpan(
                    "detectq.claim", requestID: request.id, traceparent: request.traceparent, from: started, to: ended,
                    attributes: ["detectq.worker_id": workerID, "detectq.attempt": request.attempt, "detectq.claim_batch": claimed.count]
                )
            }
            return claimed.map { request in (request.id, { _ = await processor.process(request, probe: probe) { self.isShuttingDown } }) }
        }
        let postTaskClaims = ClaimLoop(
            slots: postTaskSlots, kind: "post_tasks", concurrency: max(4, configuration.concurrency / 4),
            gracePeriod: configuration.shutdownGracePeriod, logger: logger, inbox: handedPostTasks, onStop: {}
        ) { limit in
            try await postTasks.claim(workerID: workerID, limit: limit, lease: lease).map { task in (task.id, { await runner.run(task) }) }
        }
        // Started in this order, stopped in the reverse: the poller and the claims first (the claims drain
        // for the grace period), then what keeps their leases, wakes and callbacks going, then the writers,
        // and the pool last.
        let services: [any Service] = [ConnectionPoolService(pool: pool)] + store.writers + postTasks.writers + budget.writers + [
            RegistryService(registry: registry, logger: logger),
            server,
            PeriodicLoop(name: "the lease heartbeat", interval: lease / 3, logger: logger) {
                _ = try await store.heartbeat(workerID: workerID, ids: requestSlots.ids, lease: lease)
                _ = try await postTasks.heartbeat(workerID: workerID, ids: postTaskSlots.ids, lease: lease)
                try await registry.heartbeat()
                return false
            },
            PeriodicLoop(name: "the lease rescue", interval: max(.seconds(1), lease / 2), jitterMilliseconds: 500, logger: logger) {
                try await self.rescueExpiredLeases(store, postTasks)
                try await QueueDepth.foldCounts(pool)
                return false
            },
            WakeListener(
                database: configuration.database, listenDatabase: configuration.listenDatabase,
                requests: requestSlots, postTasks: postTaskSlots, logger: logger
            ),
            postTaskClaims,
            requestClaims,
            PeriodicLoop(name: "polling", interval: .milliseconds(250), logger: logger) { try await poller.pollDue(limit: 50) > 0 },
            PeriodicLoop(name: "the token recheck", interval: configuration.authRecheck, logger: logger) {
                if await authRecheck.probeIfPaused() { requestSlots.announceWork() }
                return false
            },
        ]
        logger.info("worker started", metadata: [
            "concurrency": "\(configuration.concurrency)", "http_port": "\(configuration.httpPort)",
            "api": "\(configuration.api.baseURL)", "rate_limit": "\(configuration.apiRateLimit)",
        ])
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            logger: Logger(label: "detectq.services", factory: { _ in SwiftLogNoOpLogHandler() })
        ))
        do {
            try await group.run()
        } catch {
            logger.error("a part of the worker stopped: \(error)")
        }
        try? await ownClient?.shutdown()
        logger.info("worker stopped")
    }

    private var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

    /// Takes over the expired leases of requests and post-tasks, and says so when there were any.
    private func rescueExpiredLeases(_ store: RequestStore, _ postTasks: PostTaskStore) async throws {
        let report = try await store.rescueExpiredLeases()
        let tasks = try await postTasks.rescueExpiredLeases()
        if !report.retrying.isEmpty || !report.failed.isEmpty || !tasks.retrying.isEmpty || !tasks.failed.isEmpty {
            logger.warning("took over expired leases", metadata: [
                "requests_retrying": "\(report.retrying.count)", "requests_failed": "\(report.failed.count)",
                "post_tasks_retrying": "\(tasks.retrying.count)", "post_tasks_failed": "\(tasks.failed.count)",
            ])
        }
    }
}

/// The claims a loop holds, and the signal that wakes it: when work is announced (which also makes the next
/// round claim), when a claim is handed to it, or when a slot frees while it waits for one. The in-flight
/// gauge `gauge` follows the claims.
final class Slots: Sendable {
    let wake = WakeSignal()
    private let held = Mutex<Set<Int>>([])
    private let claimDue = Atomic<Bool>(true)
    private let waitingForFree = Atomic<Bool>(false)
    private let gauge: Meter

    init(gauge: Meter) {
        self.gauge = gauge
    }

    var count: Int { held.withLock { $0.count } }
    var ids: [Int] { held.withLock { Array($0) } }

    func take(_ id: Int) {
        gauge.set(held.withLock { $0.insert(id); return $0.count })
    }

    /// Frees `id`'s slot; wakes the loop if it is waiting for one.
    func free(_ id: Int) {
        gauge.set(held.withLock { $0.remove(id); return $0.count })
        if waitingForFree.exchange(false, ordering: .sequentiallyConsistent) { wake.signal() }
    }

    /// There may be work to claim: the loop's next round claims.
    func announceWork() {
        claimDue.store(true, ordering: .sequentiallyConsistent)
        wake.signal()
    }

    /// Whether work was announced since the last claim; the answer clears it.
    func takeClaimDue() -> Bool {
        claimDue.exchange(false, ordering: .sequentiallyConsistent)
    }

    /// Asks for a wake-up when the next slot frees; wakes at once if fewer than `capacity` are held already
    /// (one freed before the asking).
    func wakeWhenFreed(capacity: Int) {
        waitingForFree.store(true, ordering: .sequentiallyConsistent)
        if count < capacity { wake.signal() }
    }
}
