import Foundation
import Logging
import ResembleDetect

/// Polls `GET /detect/{uuid}` for accepted requests whose next poll is due: requests in `poll` mode, and
/// callback requests whose callback is overdue. It holds no worker slot while a request waits.
struct ResultPoller: Sendable {
    let processor: RequestProcessor

    private var store: RequestStore { processor.store }
    private var configuration: WorkerConfiguration { processor.configuration }

    /// Polls the due requests once; returns how many it polled.
    func pollDue(limit: Int) async throws -> Int {
        let due = try await store.claimDuePolls(workerID: configuration.workerID, limit: limit, lease: configuration.lease)
        await withTaskGroup(of: Void.self) { group in
            for request in due { group.addTask { await poll(request) } }
        }
        return due.count
    }

    /// Asks the API for one accepted request and records the answer.
    func poll(_ request: DetectionRequest) async {
        var logger = processor.logger
        logger[metadataKey: "request_id"] = "\(request.id)"
        guard let uuid = request.remoteUUID else { return }
        logger[metadataKey: "remote_uuid"] = "\(uuid)"
        do {
            try await processor.budget.acquire()
            let item = try await processor.client.detection(uuid: uuid)
            if item.isFinished {
                try await processor.finish(request, with: item, changes: RequestChanges(), logger: logger)
            } else {
                try await store.schedulePoll(request, workerID: configuration.workerID, at: nextPoll(after: request.pollCount))
            }
        } catch let error as DetectAPIError {
            switch error {
            case .permanent:
                _ = try? await store.apply(
                    .failedPermanently(reason: "the API no longer answers for this detection: \(error)"), to: request,
                    workerID: configuration.workerID
                )
            case .authentication:
                processor.stopClaiming(refusedBy: error, logger: logger)
                _ = try? await store.schedulePoll(request, workerID: configuration.workerID, at: nextPoll(after: request.pollCount))
            case .retryable(_, _, let retryAfter):
                if let retryAfter { try? await processor.budget.pause(for: retryAfter) }
                let at = max(nextPoll(after: request.pollCount), Date().addingTimeInterval(retryAfter?.seconds ?? 0))
                _ = try? await store.schedulePoll(request, workerID: configuration.workerID, at: at)
            case .malformedResponse, .invalidMedia:
                _ = try? await store.schedulePoll(request, workerID: configuration.workerID, at: nextPoll(after: request.pollCount))
            }
            logger.notice("poll failed: \(error)")
        } catch {
            logger.error("poll could not be recorded: \(error)")
        }
    }

    /// The next poll time: the first interval, growing by half each poll, up to the maximum.
    func nextPoll(after polls: Int) -> Date {
        let seconds = min(configuration.pollInterval.seconds * pow(1.5, Double(polls)), configuration.maximumPollInterval.seconds)
        return Date().addingTimeInterval(seconds)
    }
}
