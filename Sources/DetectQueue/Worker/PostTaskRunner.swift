import Foundation
import Logging
import Postgres
import ResembleDetect
import Tracing

/// Runs claimed post-tasks: loads each one's outcome, finds its processor, runs it, and records the end
/// (done, retry with backoff, reschedule, or failed when the attempts are spent).
struct PostTaskRunner: Sendable {
    let store: PostTaskStore
    let processors: [String: any PostProcessor]
    let client: any DetectAPI
    let budget: APIBudget
    let workerID: String
    let retryPolicy: RetryPolicy
    /// `DETECTQ_LEASE_SECONDS`: how long a claim given back is asked again through a database outage.
    let lease: Duration
    /// `DETECTQ_FAKE_THRESHOLD`, for the verdict the processors see.
    let fakeThreshold: Double?
    let logger: Logger

    /// What the processors' capabilities write.
    let effects: PostProcessingEffects

    /// Runs `task`; `known` is its request's outcome (and trace) when the worker that completed the request
    /// has it in hand, else it is read from the database.
    func run(_ task: PostTask, outcome known: (DetectionOutcome, traceparent: String?)? = nil) async {
        var logger = logger
        logger[metadataKey: "request_id"] = "\(task.requestID)"
        logger[metadataKey: "processor"] = "\(task.processor)"
        guard let processor = processors[task.processor] else {
            await record { try await store.fail(task, workerID: workerID, reason: "no processor named \(task.processor) is registered in this worker", retryAt: nil) }
            return
        }
        // Notifications the processor sends go out with the run's end, in the statement that records it.
        let notifications = PendingNotifications()
        do {
            let found: (DetectionOutcome, traceparent: String?)?
            if let known { found = known } else { found = try await store.outcome(of: task.requestID, fakeThreshold: fakeThreshold) }
            guard let (outcome, traceparent) = found else {
                await record { try await store.fail(task, workerID: workerID, reason: "the request has no stored result", retryAt: nil) }
                return
            }
            logger[metadataKey: "remote_uuid"] = "\(outcome.remoteUUID)"
            let context = PostProcessingContext(
                attempt: task.attempt, api: BudgetedDetectAPI(client: client, budget: budget, workerID: workerID), logger: logger,
                requestID: task.requestID, processor: processor.name, declared: processor.effects, effects: effects,
                notifications: notifications
            )
            let result = try await RequestTracing.withSpan(
                "detectq.post_process", requestID: task.requestID, traceparent: traceparent
            ) { span in
                span.attributes["detectq.processor"] = task.processor
                span.attributes["detectq.post_task_id"] = task.id
                span.attributes["detectq.attempt"] = task.attempt
                let result = try await processor.process(outcome, context: context)
                span.attributes["detectq.outcome"] = result.metricName
                return result
            }
            QueueMetrics.postTask(processor: task.processor, outcome: result.metricName)
            switch result {
            case .done:
                await record { try await store.complete(task, workerID: workerID, notifications: notifications.all) }
            case .retry(let after, let reason):
                await retry(task, reason: reason, after: after, notifications: notifications.all, logger: logger)
            case .reschedule(let at):
                await record { try await store.reschedule(task, workerID: workerID, at: at, notifications: notifications.all) }
            case .failed(let reason):
                logger.warning("post-task failed for good: \(reason)")
                await record { try await store.fail(task, workerID: workerID, reason: reason, retryAt: nil, notifications: notifications.all) }
            }
        } catch let undeclared as UndeclaredEffect {
            // The processor's own mistake: no retry can mend it.
            QueueMetrics.postTask(processor: task.processor, outcome: "failed")
            logger.error("post-task failed for good: \(undeclared)")
            await record { try await store.fail(task, workerID: workerID, reason: "\(undeclared)", retryAt: nil, notifications: []) }
        } catch let error as PostgresError where error.isTransient {
            // The database went away under the run (reading the outcome, or writing an effect): not the
            // processor's failure, so the claim goes back and the attempt is not spent.
            QueueMetrics.databaseFailed(.runPostTask)
            logger.warning("the database went away during the post-task (\(error)); it goes back unspent once the database answers")
            await record { try await throughOutage(for: lease, logger: logger) { try await store.release(task, workerID: workerID) } }
        } catch {
            QueueMetrics.postTask(processor: task.processor, outcome: "error")
            await retry(task, reason: String(describing: error), after: nil, notifications: notifications.all, logger: logger)
        }
    }

    private func retry(_ task: PostTask, reason: String, after: Duration?, notifications: [PostgresNotice], logger: Logger) async {
        let delay = retryPolicy.delay(afterAttempt: task.attempt, retryAfter: after)
        logger.notice("post-task attempt \(task.attempt) of \(task.maxAttempts) failed: \(reason)")
        await record {
            try await store.fail(task, workerID: workerID, reason: reason, retryAt: Date().addingTimeInterval(delay.seconds), notifications: notifications)
        }
    }

    private func record(_ write: () async throws -> Bool) async {
        do {
            _ = try await write()
        } catch {
            logger.error("could not record the post-task's end: \(error)")
        }
    }
}

extension PostProcessingResult {
    /// The outcome label of the post-task metrics.
    var metricName: String {
        switch self {
        case .done: "done"
        case .retry: "retry"
        case .reschedule: "reschedule"
        case .failed: "failed"
        }
    }
}
