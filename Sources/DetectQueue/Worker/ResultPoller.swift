import Foundation
import Logging
import ResembleDetect
import Tracing

/// Polls `GET /detect/{uuid}` for accepted requests whose next poll is due: requests in `poll` mode, and
/// callback requests whose callback is overdue. It holds no worker slot while a request waits.
struct ResultPoller: Sendable {
    let processor: RequestProcessor

    private var store: any RequestStorage { processor.store }
    private var configuration: WorkerConfiguration { processor.configuration }

    /// Polls the due requests once; returns how many it polled.
    func pollDue(limit: Int) async throws -> Int {
        let due = try await store.claimDuePolls(workerID: configuration.workerID, limit: limit, lease: configuration.lease)
        await withTaskGroup(of: Void.self) { group in
            for request in due { group.addTask { await poll(request) } }
        }
        return due.count
    }

    /// Asks the API for one accepted request and records the answer, in the request's trace.
    func poll(_ request: DetectionRequest) async {
        await ServiceContext.withValue(RequestTracing.context(requestID: request.id, traceparent: request.traceparent)) {
            await ask(about: request)
        }
    }

    private func ask(about request: DetectionRequest) async {
        var logger = processor.logger
        logger[metadataKey: "request_id"] = "\(request.id)"
        guard let uuid = request.remoteUUID else { return }
        logger[metadataKey: "remote_uuid"] = "\(uuid)"
        do {
            try await processor.budget.acquire()
            let item = try await processor.client.detection(uuid: uuid)
            if item.isFinished {
                try await processor.finish(request, with: item, changes: RequestChanges(), logger: logger)
            } else if try await !failIfTimedOut(request, uuid: uuid, lastStatus: item.status.map { "\($0)" } ?? "none", logger: logger) {
                try await store.schedulePoll(request, workerID: configuration.workerID, at: nextPoll(after: request.pollCount, for: request))
            }
        } catch let error as DetectAPIError {
            logger.notice("poll failed: \(error)")
            do {
                try await handle(error, request: request, uuid: uuid, logger: logger)
            } catch {
                unrecorded(error, logger: logger)
            }
        } catch {
            unrecorded(error, logger: logger)
        }
    }

    /// Records what a poll that failed with `error` means for the request: asked again later, or failed.
    private func handle(_ error: DetectAPIError, request: DetectionRequest, uuid: String, logger: Logger) async throws {
        let workerID = configuration.workerID
        switch error {
        case .permanent(404, _):
            // The API gave this uuid itself: a 404 is the API lagging, not the detection gone. Asked again
            // with backoff, under DETECTQ_RESULT_TIMEOUT.
            try await askAgainUnlessTimedOut(request, uuid: uuid, lastStatus: "404 Not Found from GET /detect/{uuid}", logger: logger)
        case .permanent:
            try await store.apply(
                .failedPermanently(reason: "the API no longer answers for this detection: \(error)"), to: request, workerID: workerID
            )
        case .authentication:
            processor.stopClaiming(refusedBy: error, logger: logger)
            try await store.schedulePoll(request, workerID: workerID, at: nextPoll(after: request.pollCount))
        case .outOfCredit:
            // Reading a result costs no credit; a 402 here is the API's own trouble: ask again later.
            try await store.schedulePoll(request, workerID: workerID, at: nextPoll(after: request.pollCount, for: request))
        case .retryable(_, .some(429), let retryAfter):
            // Throttled: every worker pauses, and this poll is due again when the pause ends.
            let resumes = await processor.budget.throttled(retryAfter: retryAfter, by: workerID, logger: logger)
            try await store.schedulePoll(request, workerID: workerID, at: max(resumes, Date()), counting: false)
        case .retryable(_, _, let retryAfter):
            if let retryAfter { _ = await processor.budget.throttled(retryAfter: retryAfter, by: workerID, logger: logger) }
            let at = max(nextPoll(after: request.pollCount), Date().addingTimeInterval(retryAfter?.seconds ?? 0))
            try await store.schedulePoll(request, workerID: workerID, at: at)
        case .malformedResponse, .invalidMedia:
            try await askAgainUnlessTimedOut(request, uuid: uuid, lastStatus: "an answer the worker could not read", logger: logger)
        }
    }

    /// A poll whose outcome the database did not take: logged with the request and counted; the poll lease
    /// expires and the request is polled again.
    private func unrecorded(_ error: any Error, logger: Logger) {
        QueueMetrics.databaseFailed(.recordPoll)
        logger.error("poll could not be recorded; the request is polled again when its poll lease expires: \(error)")
    }

    /// Schedules the next poll of a request whose poll gave no status, unless its result is overdue (then it fails).
    private func askAgainUnlessTimedOut(_ request: DetectionRequest, uuid: String, lastStatus: String, logger: Logger) async throws {
        if try await !failIfTimedOut(request, uuid: uuid, lastStatus: lastStatus, logger: logger) {
            try await store.schedulePoll(request, workerID: configuration.workerID, at: nextPoll(after: request.pollCount, for: request))
        }
    }

    /// The next poll time: the first interval, growing by half each poll, up to the maximum, and no later
    /// than the request's result deadline (so a timed-out request is failed on time).
    func nextPoll(after polls: Int, for request: DetectionRequest? = nil) -> Date {
        let seconds = min(configuration.pollInterval.seconds * pow(1.5, Double(polls)), configuration.maximumPollInterval.seconds)
        let next = Date().addingTimeInterval(seconds)
        guard let deadline = request.flatMap(resultDeadline) else { return next }
        return max(Date(), min(next, deadline))
    }

    /// When the request's result is due: `DETECTQ_RESULT_TIMEOUT` after the API accepted it.
    private func resultDeadline(_ request: DetectionRequest) -> Date? {
        request.acceptedAt.map { $0.addingTimeInterval(configuration.resultTimeout.seconds) }
    }

    /// Fails a request whose result is overdue, naming its uuid and the time waited; returns whether it did.
    private func failIfTimedOut(_ request: DetectionRequest, uuid: String, lastStatus: String, logger: Logger) async throws -> Bool {
        guard let accepted = request.acceptedAt, let deadline = resultDeadline(request), Date() >= deadline else { return false }
        let waited = Int(Date().timeIntervalSince(accepted).rounded())
        let reason = "the API had no result for detection \(uuid) after \(waited) s (DETECTQ_RESULT_TIMEOUT is "
            + "\(Int(configuration.resultTimeout.seconds)) s); its last status was \(lastStatus)"
        if try await store.apply(.failedPermanently(reason: reason), to: request, workerID: configuration.workerID) {
            QueueMetrics.resultTimedOut()
            logger.warning("no result within DETECTQ_RESULT_TIMEOUT; the request fails", metadata: ["waited_seconds": "\(waited)"])
        }
        return true
    }
}
