import Foundation
import Metrics
import Postgres

/// The worker's metrics, reported through swift-metrics: whatever backend the process bootstraps (the
/// `detectq` executable exports them at `/metrics` in Prometheus text format) receives them, and without one
/// they cost nothing. Every name is listed here, so the README and the dashboards have one place to look.
package enum QueueMetrics {
    /// State changes made by this worker, by `from` and `to` state.
    package static let transitions = "detectq_request_transitions_total"
    /// Requests this worker holds (submitting, or being polled).
    package static let requestsInFlight = "detectq_requests_in_flight"
    /// Post-tasks this worker is running.
    package static let postTasksInFlight = "detectq_post_tasks_in_flight"
    /// How many rows each claim returned, by `kind` (`requests` or `post_tasks`).
    package static let claimBatchSize = "detectq_claim_batch_size"
    /// Attempts that ended in a retry, by `cause`.
    package static let retries = "detectq_request_retries_total"
    /// Callbacks received, by `outcome`.
    package static let callbacks = "detectq_callbacks_received_total"
    /// API requests that waited for the shared rate limit, and how long they waited.
    package static let rateLimitWaits = "detectq_rate_limit_waits_total"
    package static let rateLimitWaitSeconds = "detectq_rate_limit_wait_seconds"
    /// 429 responses that paused every worker.
    package static let rateLimitPauses = "detectq_rate_limit_pauses_total"
    /// Post-tasks that ended an attempt, by `processor` and `outcome`.
    package static let postTasks = "detectq_post_tasks_total"
    /// Completed requests the API called fake.
    package static let fakesFound = "detectq_fakes_found_total"
    /// Requests completed with the verdict of identical media and options, without calling the API.
    package static let detectionsReused = "detectq_detections_reused_total"
    /// Completed detections whose verdict nobody can read (`is_fake` NULL), raised for review.
    package static let unreadableVerdicts = "detectq_unreadable_verdicts_total"
    /// Detections found for requests whose answer was lost, and adopted instead of submitting again, by `via`
    /// (`list`: List Detects; `callback`: a callback that came before the answer).
    package static let adoptions = "detectq_submissions_adopted_total"
    /// Requests failed because their result did not come within `DETECTQ_RESULT_TIMEOUT`.
    package static let resultTimeouts = "detectq_result_timeouts_total"
    /// Decisions about a request or a callback that could not be written or read (the database failed), by
    /// `operation`: each is also logged with its request; the request is taken up again when its lease expires.
    package static let databaseFailures = "detectq_database_failures_total"
    /// Requests this worker claimed, by `queue`.
    package static let claims = "detectq_claims_total"
    /// Detections the API accepted (and billed) for this worker's submissions, by `queue`.
    package static let detectionsBilled = "detectq_detections_billed_total"
    /// Requests by `queue` and `state`, and post-tasks by `state`, sampled from the database when `/metrics` is read.
    package static let queueDepth = "detectq_queue_depth"
    package static let postTaskDepth = "detectq_post_task_depth"
    /// Age in seconds of the oldest request that is claimable now (0 when none is).
    package static let oldestClaimableAge = "detectq_oldest_claimable_age_seconds"
    /// The oldest snapshot any other session, prepared transaction or replication slot holds in the database: its
    /// age in transactions, and seconds it has held it (from its start when this role may see it, else since this
    /// worker first saw it); vacuum keeps every row version changed since. Sampled when `/metrics` is read.
    package static let horizonAge = "detectq_xmin_horizon_age_transactions"
    package static let horizonHeld = "detectq_xmin_horizon_held_seconds"
    /// Dead row versions of `detectq.requests` (the statistics' count) and the claim index's size in bytes.
    package static let deadRequestVersions = "detectq_requests_dead_row_versions"
    package static let claimIndexBytes = "detectq_claim_index_bytes"

    /// The buckets of the claim batch histogram.
    package static let claimBatchBuckets: [Double] = [1, 2, 5, 10, 20, 50, 100]

    /// One counter per legal transition, made once: a transition is counted several times per request, so
    /// the hot path must not look its handler up each time. Like every handle here it binds to the metrics
    /// backend bootstrapped before its first use.
    private static let transitionCounters: [RequestState: [RequestState: Counter]] = Dictionary(
        uniqueKeysWithValues: RequestState.allCases.map { from in
            (from, Dictionary(uniqueKeysWithValues: from.successors.map { to in
                (to, Counter(label: transitions, dimensions: [("from", from.rawValue), ("to", to.rawValue)]))
            }))
        }
    )

    static func transition(from: RequestState, to: RequestState, count: Int = 1) {
        guard count > 0 else { return }
        transitionCounters[from]?[to]?.increment(by: count)
    }

    static func claimed(_ count: Int, kind: String) {
        Recorder(label: claimBatchSize, dimensions: [("kind", kind)]).record(count)
    }

    static func claimed(inQueue queue: String) {
        Counter(label: claims, dimensions: [("queue", queue)]).increment()
    }

    static func billed(inQueue queue: String) {
        Counter(label: detectionsBilled, dimensions: [("queue", queue)]).increment()
    }

    static func retry(cause: RetryCause) {
        Counter(label: retries, dimensions: [("cause", cause.rawValue)]).increment()
    }

    static func callback(_ outcome: CallbackOutcome) {
        Counter(label: callbacks, dimensions: [("outcome", outcome.rawValue)]).increment()
    }

    static func rateLimitWait(_ waited: Duration) {
        Counter(label: rateLimitWaits).increment()
        Timer(label: rateLimitWaitSeconds).record(duration: waited)
    }

    static func rateLimitPause() {
        Counter(label: rateLimitPauses).increment()
    }

    static func postTask(processor: String, outcome: String) {
        Counter(label: postTasks, dimensions: [("processor", processor), ("outcome", outcome)]).increment()
    }

    static func fakeFound() {
        Counter(label: fakesFound).increment()
    }

    static func reused(count: Int) {
        Counter(label: detectionsReused).increment(by: count)
    }

    static func unreadableVerdict() {
        Counter(label: unreadableVerdicts).increment()
    }

    static func adopted(via: String) {
        Counter(label: adoptions, dimensions: [("via", via)]).increment()
    }

    static func resultTimedOut() {
        Counter(label: resultTimeouts).increment()
    }

    static func databaseFailed(_ operation: DatabaseOperation) {
        Counter(label: databaseFailures, dimensions: [("operation", operation.rawValue)]).increment()
    }

    /// Reads the queue's depth from the database into the depth gauges; every state is reported, zeros too.
    static func sampleDepth(_ pool: PostgresConnectionPool) async throws {
        let depth = try await QueueDepth.read(pool)
        for (queue, states) in depth.requestsByQueue {
            for (state, count) in states {
                Gauge(label: queueDepth, dimensions: [("queue", queue), ("state", state.rawValue)]).record(count)
            }
        }
        for (state, count) in depth.postTasks {
            Gauge(label: postTaskDepth, dimensions: [("state", state.rawValue)]).record(count)
        }
        Gauge(label: oldestClaimableAge).record(depth.oldestClaimableAge ?? 0)
    }

    /// Reads what holds back vacuum into the horizon's gauges.
    static func sampleHorizon(_ pool: PostgresConnectionPool, watch: HorizonWatch) async throws {
        let horizon = try await VacuumHorizon.read(pool)
        Gauge(label: horizonAge).record(horizon.ageTransactions)
        Gauge(label: horizonHeld).record(await watch.heldSeconds(horizon))
        Gauge(label: deadRequestVersions).record(horizon.deadRequestVersions)
        Gauge(label: claimIndexBytes).record(horizon.claimIndexBytes)
    }
}

/// A write or read on a path that decides a request's fate, named for `detectq_database_failures_total`.
enum DatabaseOperation: String, Sendable {
    /// Recording what a poll found (a result, the next poll, a failure).
    case recordPoll = "record_poll"
    /// Reading the request a callback names.
    case readCallbackRequest = "read_callback_request"
    /// Recording the shared pause a 429 asks for.
    case recordThrottle = "record_throttle"
    /// An attempt's reads and writes before anything was sent (the claim goes back unspent).
    case prepareSubmission = "prepare_submission"
    /// A post-task's run (reading its outcome, writing an effect; the claim goes back unspent).
    case runPostTask = "run_post_task"
}

/// What became of a callback, for `detectq_callbacks_received_total`.
enum CallbackOutcome: String, Sendable {
    /// Genuine, for a request awaiting its result: the result is fetched.
    case accepted
    /// Genuine, for a request whose answer was lost: its detection was confirmed and adopted.
    case adopted
    /// Genuine, but the result (or the detection) was recorded already.
    case duplicate
    /// No request by that id holds that secret.
    case unknown
    /// Larger than a callback may be.
    case tooLarge = "too_large"
    /// Genuine, but it names no detection the worker can read.
    case unreadable
    /// Genuine, but the API did not confirm its detection now; the sender may try again.
    case unconfirmed
    /// The database could not be read; the sender may try again.
    case unavailable
}

/// Why an attempt is retried, for `detectq_request_retries_total`.
enum RetryCause: String, Sendable {
    case serverError = "server_error"
    case network
    case malformedResponse = "malformed_response"
    case leaseExpired = "lease_expired"
    case workerError = "worker_error"
    case mediaTokenRefused = "media_token_refused"
}
