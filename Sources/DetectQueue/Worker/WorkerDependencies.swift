import Logging
import Metrics
import Postgres
import ResembleDetect
import Synchronization

/// Everything a worker's services share, built once when the worker starts: the pool, the API client, the
/// stores, the shared budget and gate, the slots its claims hold, and the three runners (requests, polls,
/// post-tasks). `WorkerServices` builds each service from it.
struct WorkerDependencies: Sendable {
    let configuration: WorkerConfiguration
    let logger: Logger
    let pool: PostgresConnectionPool
    let client: any DetectAPI
    /// The client the worker made itself (not one it was given), which it shuts down when it stops.
    let ownClient: DetectClient?
    let requests: RequestStore
    let postTasks: PostTaskStore
    let budget: APIBudget
    let registry: WorkerRegistry
    let requestSlots: Slots
    let postTaskSlots: Slots
    /// The post-tasks a completion created under this worker's lease, handed to the post-task claims to run.
    let handedPostTasks: ClaimInbox
    let stopping: StopFlag
    /// Runs one claimed request: its submission and, under `Prefer: wait`, its verdict.
    let processor: RequestProcessor
    /// Asks the API for the verdicts of accepted requests whose poll is due.
    let poller: ResultPoller
    /// Runs one post-task: its processor, with the outcome.
    let postTaskRunner: PostTaskRunner
    /// Ends a pause on a refused token once the API accepts it again.
    let authRecheck: AuthRecheck
    /// How long vacuum's horizon has been held, as this worker has watched it (its log and `/metrics`).
    let horizonWatch = HorizonWatch()

    /// Builds the dependencies of a worker with `configuration`; fails when the database has no installation
    /// name (`detectq migrate` has not run).
    static func make(
        configuration: WorkerConfiguration, postProcessors: [any PostProcessor], api: (any DetectAPI)?, slots: (any SlotStorage)?,
        pause: WorkerPause, logger: Logger
    ) async throws -> WorkerDependencies {
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
        let installation: String
        do {
            installation = try await Installation.name(pool)
        } catch {
            logger.critical("could not read the installation's name (detectq.installation; run detectq migrate): \(error)")
            try? await ownClient?.shutdown()
            await pool.close()
            throw error
        }
        let requests = RequestStore(pool: pool)
        let postTasks = PostTaskStore(pool: pool)
        let budget = APIBudget(
            slots: slots ?? PostgresSlots(pool: pool), pauses: SharedPause(pool: pool), ratePerSecond: configuration.apiRateLimit,
            longestRetryAfter: configuration.longestRetryAfter, logger: logger
        )
        let postTaskSlots = Slots(gauge: Meter(label: QueueMetrics.postTasksInFlight))
        let handedPostTasks = ClaimInbox(slots: postTaskSlots)
        let runner = PostTaskRunner(
            store: postTasks, processors: Dictionary(postProcessors.map { ($0.name, $0) }) { first, _ in first },
            client: client, budget: budget, workerID: configuration.workerID, retryPolicy: configuration.retryPolicy,
            lease: configuration.lease, fakeThreshold: configuration.fakeThreshold, logger: logger,
            effects: PostProcessingEffects(pool: pool, processors: postProcessors)
        )
        let processor = RequestProcessor(
            store: requests, client: client, budget: budget, configuration: configuration,
            postProcessing: PostProcessingHandOff(processors: postProcessors) { tasks, outcome, traceparent in
                handedPostTasks.hand(tasks.map { task in (task.id, { await runner.run(task, outcome: (outcome, traceparent)) }) })
            },
            pause: pause, gate: SubmissionGate(pause: SharedPause(pool: pool), recheck: configuration.creditRecheck),
            installation: installation, logger: logger
        )
        var reloadToken: (@Sendable () -> Bool)?
        if let ownClient { reloadToken = { ownClient.reloadToken() } }
        return WorkerDependencies(
            configuration: configuration, logger: logger, pool: pool, client: client, ownClient: ownClient,
            requests: requests, postTasks: postTasks, budget: budget, registry: WorkerRegistry(pool: pool, configuration: configuration),
            requestSlots: Slots(gauge: Meter(label: QueueMetrics.requestsInFlight)), postTaskSlots: postTaskSlots,
            handedPostTasks: handedPostTasks, stopping: StopFlag(), processor: processor, poller: ResultPoller(processor: processor),
            postTaskRunner: runner, authRecheck: AuthRecheck(processor: processor, reloadToken: reloadToken)
        )
    }
}

/// Set once the worker is told to stop: work in flight then gives back what it has not sent.
final class StopFlag: Sendable {
    private let raised = Atomic<Bool>(false)

    func raise() { raised.store(true, ordering: .relaxed) }

    var isRaised: Bool { raised.load(ordering: .relaxed) }
}
