import Crypto
import Foundation
import Logging
import Postgres
import ResembleDetect
import TextEncodings
import Tracing

/// Carries one claimed request through one attempt: chooses the submit path, spends the shared API
/// budget before every call, submits, and records what happened through the state machine.
struct RequestProcessor: Sendable {
    let store: RequestStore
    let client: any DetectAPI
    let budget: APIBudget
    let configuration: WorkerConfiguration
    let postProcessing: PostProcessingHandOff
    let pause: WorkerPause
    let logger: Logger

    /// What the worker needs to know about how an attempt ended.
    enum Ending: Sendable {
        /// Recorded in the database (completed, accepted, retrying or failed).
        case recorded
        /// Given back unsent (the worker is shutting down or paused).
        case released
    }

    /// How the request waits for its verdict, with `auto` resolved.
    func waitMode(for request: DetectionRequest) -> DetectionRequest.WaitMode {
        switch request.waitMode {
        case .auto: configuration.callbackURL == nil ? .sync : .callback
        case .callback where configuration.callbackURL == nil: .poll
        default: request.waitMode
        }
    }

    /// Carries `request` through one attempt. `probe` marks the one submission that checks whether credit is
    /// back while the account is out of credit: when the API accepts it, the shared pause ends.
    func process(_ request: DetectionRequest, probe: Bool = false, isShuttingDown: @Sendable () -> Bool) async -> Ending {
        var logger = logger
        logger[metadataKey: "request_id"] = "\(request.id)"
        if let remoteUUID = request.remoteUUID { logger[metadataKey: "remote_uuid"] = "\(remoteUUID)" }
        do {
            // Log lines of the attempt carry the request's trace (when tracing is on), as its spans do.
            return try await ServiceContext.withValue(RequestTracing.context(requestID: request.id, traceparent: request.traceparent)) {
                try await attempt(request, probe: probe, logger: logger, isShuttingDown: isShuttingDown)
            }
        } catch let error as MediaPathError {
            await record(.failedPermanently(reason: error.description), request, logger: logger)
        } catch let error as DetectAPIError {
            return await handle(error, request, logger: logger)
        } catch {
            await record(.failedRetryably(reason: "the worker could not finish the attempt: \(error)", retryAt: retryAt(request, nil)), request, cause: "worker_error", logger: logger)
        }
        return .recorded
    }

    /// How long after its claim a request may still be sent on the claim's `submit_started_at` and lease
    /// check; one that took longer is checked and stamped again first.
    static let claimFreshness: Duration = .seconds(1)

    private func attempt(_ request: DetectionRequest, probe: Bool, logger: Logger, isShuttingDown: @Sendable () -> Bool) async throws -> Ending {
        let claimed = ContinuousClock.now
        if let remoteUUID = request.remoteUUID {
            // The API accepted this request before (it was retried by hand): wait for it, never send it again.
            var changes = RequestChanges()
            changes.runAt = Date()
            try await store.apply(.accepted(remoteUUID: remoteUUID), to: request, workerID: configuration.workerID, changes: changes)
            logger.notice("already accepted by the API; polling it instead of submitting again", metadata: ["remote_uuid": "\(remoteUUID)"])
            return .recorded
        }
        // An earlier attempt may have been billed for a detection whose answer was lost: find it before sending again.
        if LostAnswerSearch.applies(to: request),
           let uuid = try await LostAnswerSearch(client: client, budget: budget, store: store).find(for: request) {
            if try await store.adopt(uuid, for: request, workerID: configuration.workerID, via: "list") {
                logger.notice("adopted the detection an earlier attempt created (its answer was lost) instead of submitting again", metadata: ["remote_uuid": "\(uuid)"])
            }
            return .recorded
        }
        let mode = waitMode(for: request)
        var options = request.options
        var secretHash: String?
        // A zero-retention detection cannot be found in List Detects (the API redacts its url and file name), so
        // it carries the callback URL whatever its wait mode: a callback is then how a lost answer is found.
        if mode == .callback || request.options.zeroRetentionMode == true, let base = configuration.callbackURL {
            let secret = Hex.encode((0..<32).map { _ in UInt8.random(in: .min ... .max) })
            options.callbackURL = "\(base)/callbacks/\(request.id)/\(secret)"
            secretHash = Self.hash(secret)
        }

        let source: MediaSource
        let path: String
        switch request.media {
        case .url(let url):
            (source, path) = (.url(url), "url")
        case .token(let token):
            (source, path) = (.mediaToken(token), "media_token")
        case .path(let relative):
            guard let root = configuration.mediaRoot else {
                throw MediaPathError("media_path \(relative) needs DETECTQ_MEDIA_ROOT, which this worker does not have")
            }
            // Named after the request and attempt, so that a lost answer can be found by its file name.
            let file = try root.open(relative, as: LostAnswerSearch.uploadName(of: request, path: relative))
            switch file.uploadPath {
            case .multipart:
                (source, path) = (.file(file), "multipart")
            case .secureUpload:
                if let stored = request.secureUpload, stored.isUsable() {
                    (source, path) = (.mediaToken(stored.token), "secure_upload")
                } else {
                    guard !isShuttingDown(), !pause.isPaused else { return await release(request, logger: logger) }
                    try await budget.acquire()
                    let token = try await client.secureUpload(file)
                    try await store.storeSecureUpload(token, for: request, workerID: configuration.workerID)
                    (source, path) = (.mediaToken(token.token), "secure_upload")
                }
            }
        }

        guard !isShuttingDown(), !pause.isPaused else { return await release(request, logger: logger) }
        try await budget.acquire()
        guard !isShuttingDown(), !pause.isPaused else { return await release(request, logger: logger) }
        // A callback request's secret is stored before it is sent, so that a callback that beats the answer is
        // recognised as genuine (and its detection adopted) rather than refused.
        if ContinuousClock.now - claimed > Self.claimFreshness || secretHash != nil {
            guard try await store.markSubmitStarted(request, workerID: configuration.workerID, path: path, callbackSecretHash: secretHash) else {
                logger.info("the request moved on before it was sent (cancelled or taken over); not sending it")
                return .recorded
            }
        }
        let sent = Date()
        // The submission, around the API call's own HTTP client span.
        let item = try await RequestTracing.withSpan("detectq.submit", requestID: request.id, traceparent: request.traceparent) { span in
            span.attributes["detectq.wait_mode"] = mode.rawValue
            span.attributes["detectq.submit_path"] = path
            span.attributes["detectq.attempt"] = request.attempt
            return try await client.submit(source, options: options, wait: mode == .sync)
        }
        if item.isFinished {
            // Under Prefer: wait the detection ran inside the submission; its wait is that call.
            RequestTracing.recordSpan(
                "detectq.wait", requestID: request.id, traceparent: request.traceparent, from: sent, to: Date(),
                attributes: ["detectq.wait_mode": mode.rawValue]
            )
        }
        if probe, try await SharedPause(pool: store.pool).endOutOfCredit() {
            logger.notice("the API accepted a submission again: credit is back, and every worker resumes submitting")
        }
        var changes = RequestChanges()
        changes.submitPath = path
        changes.callbackSecretHash = secretHash
        if item.isFinished {
            changes.remoteUUID = item.uuid
            try await untilStored(logger: logger) { try await finish(request, with: item, changes: changes, logger: logger) }
        } else {
            let wait = mode == .callback ? configuration.callbackTimeout : configuration.pollInterval
            changes.runAt = Date().addingTimeInterval(wait.seconds)
            if try await untilStored(logger: logger, {
                try await store.apply(.accepted(remoteUUID: item.uuid), to: request, workerID: configuration.workerID, changes: changes)
            }) {
                logger.info("accepted by the API; waiting", metadata: ["remote_uuid": "\(item.uuid)", "wait_mode": "\(mode.rawValue)"])
            }
        }
        return .recorded
    }

    /// Runs a write of what the API has just accepted again and again through a database outage, for up to a
    /// lease time: giving up would leave the request to another worker, which would submit it, and have it
    /// billed, a second time.
    private func untilStored<Result>(logger: Logger, _ write: () async throws -> Result) async throws -> Result {
        let deadline = ContinuousClock.now + configuration.lease
        var delay = Duration.milliseconds(100)
        while true {
            do {
                return try await write()
            } catch let error as PostgresError where error.isTransient && ContinuousClock.now + delay < deadline {
                logger.warning("could not store what the API accepted (\(error)); trying again in \(delay)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// Records a finished detection: completed with its result, or failed when the API says it failed.
    func finish(_ request: DetectionRequest, with item: DetectionItem, changes: RequestChanges, logger: Logger) async throws {
        if item.status == .failed {
            var changes = changes
            changes.result = PostgresJSON(text: item.rawJSON)
            let reason = "the API reports that the detection failed: \(item.errorMessage ?? "no reason given")"
            try await store.apply(.failedPermanently(reason: reason), to: request, workerID: configuration.workerID, changes: changes)
            logger.warning("the API reports the detection failed", metadata: ["remote_uuid": "\(item.uuid)"])
            return
        }
        if let acceptedAt = request.acceptedAt {
            RequestTracing.recordSpan(
                "detectq.wait", requestID: request.id, traceparent: request.traceparent, from: acceptedAt, to: Date(),
                attributes: ["detectq.wait_mode": request.waitMode.rawValue, "detectq.polls": request.pollCount]
            )
        }
        // One outcome per completion: its verdict fills the result columns and chooses the processors, and its
        // time becomes the stored completion time once the database has it.
        var outcome = DetectionOutcome(request: request, item: item, fakeThreshold: configuration.fakeThreshold)
        var result = changes
        result.apply(item, verdict: outcome.verdict)
        let processors = postProcessing.names(for: outcome)
        let written = try await RequestTracing.withSpan("detectq.complete", requestID: request.id, traceparent: request.traceparent) { span in
            span.attributes["detectq.label"] = item.label ?? "none"
            return try await store.complete(
                request, workerID: configuration.workerID, lease: configuration.lease, result: result, postProcessors: processors
            )
        }
        if case .completed(let at, let postTasks) = written {
            logger.info("completed", metadata: ["remote_uuid": "\(item.uuid)", "label": "\(item.label ?? "none")"])
            if !postTasks.isEmpty {
                outcome.completedAt = at
                postProcessing.handOff(postTasks, outcome, request.traceparent)
            }
        }
    }

    /// Pauses submitting for every worker after a 402; the worker that starts the pause says so, once.
    private func pauseForCredit(_ error: DetectAPIError, logger: Logger) async {
        do {
            let seconds = Int(configuration.creditRecheck.seconds.rounded())
            if try await SharedPause(pool: store.pool).pauseOutOfCredit(
                reason: "\(error); one submission probes again every \(seconds) s", by: configuration.workerID,
                recheck: configuration.creditRecheck
            ) {
                logger.critical("the account is out of credit (\(error)): every worker stops submitting, no request is failed or spends an attempt, and one submission probes again every \(seconds) s")
            }
        } catch {
            logger.error("could not record the out-of-credit pause: \(error)")
        }
    }

    /// Stops this worker claiming after the API refused its token, and says so loudly, once.
    func stopClaiming(refusedBy error: DetectAPIError, logger: Logger) {
        guard pause.pause(reason: "the API refused the token (\(error)); fix RESEMBLE_API_TOKEN and restart the worker") else { return }
        logger.critical("the API refused RESEMBLE_API_TOKEN (\(error)): this worker stops claiming until it is restarted with a valid token; no request is failed")
    }

    private func handle(_ error: DetectAPIError, _ request: DetectionRequest, logger: Logger) async -> Ending {
        switch error {
        case .authentication(let status, let message) where status == 403 && !request.options.optionalProducts.isEmpty:
            // The key may lack one product: this request asked for some, so it alone fails; others go on.
            let products = request.options.optionalProducts.joined(separator: ", ")
            await record(.failedPermanently(reason: "the API refused a product this request asks for (\(products)) with HTTP 403: \(message)"), request, logger: logger)
        case .authentication:
            stopClaiming(refusedBy: error, logger: logger)
            return await release(request, logger: logger)
        case .outOfCredit:
            await pauseForCredit(error, logger: logger)
            return await release(request, logger: logger)
        case .retryable(_, let status, let retryAfter):
            if let retryAfter { try? await budget.pause(for: retryAfter, by: configuration.workerID) }
            let cause = switch status {
            case nil: "network"
            case 429: "rate_limited"
            default: "server_error"
            }
            // A 429 created nothing: an answer is owed only if an earlier attempt still owes one.
            var changes = RequestChanges()
            if status == 429 { changes.answerOwed = .since(request.unansweredSince) }
            await record(.failedRetryably(reason: "\(error)", retryAt: retryAt(request, retryAfter)), request, cause: cause, changes: changes, logger: logger)
        case .malformedResponse:
            await record(.failedRetryably(reason: "\(error)", retryAt: retryAt(request, nil)), request, cause: "malformed_response", logger: logger)
        case .permanent(400, let message) where Self.refusesMediaToken(message):
            switch request.media {
            case .path:
                // The stored secure upload's token was used (by a submission whose answer was lost) or expired:
                // the file is still here, so the next attempt uploads it again.
                var changes = RequestChanges()
                changes.clearsSecureUpload = true
                let reason = "the API refused the secure upload's token (\(message)); the file is uploaded again"
                await record(.failedRetryably(reason: reason, retryAt: Date()), request, cause: "media_token_refused", changes: changes, logger: logger)
            case .token:
                await record(.failedPermanently(reason: "the API refused the media_token: \(message). A token serves one submission within the hour "
                    + "after its upload: upload the file again (POST /secure_uploads) and enqueue the new token"), request, logger: logger)
            case .url:
                await record(.failedPermanently(reason: "\(error)"), request, logger: logger)
            }
        case .permanent, .invalidMedia:
            await record(.failedPermanently(reason: "\(error)"), request, logger: logger)
        }
        return .recorded
    }

    /// Whether a 400's message says the `media_token` was refused as already used or expired.
    static func refusesMediaToken(_ message: String) -> Bool {
        let text = message.lowercased()
        return text.contains("media_token") && (text.contains("used") || text.contains("expired"))
    }

    /// Records how an attempt ended; `cause` names why a retryable failure is retried, for the metrics.
    private func record(
        _ event: RequestEvent, _ request: DetectionRequest, cause: String? = nil, changes: RequestChanges = .init(), logger: Logger
    ) async {
        do {
            let applied = try await store.apply(event, to: request, workerID: configuration.workerID, changes: changes)
            if applied, let cause, request.attemptsLeft { QueueMetrics.retry(cause: cause) }
            logger.notice("attempt \(request.attempt) of \(request.maxAttempts): \(event.name)", metadata: ["reason": "\(event.reason ?? "")"])
        } catch {
            logger.error("could not record \(event.name): \(error)")
        }
    }

    private func release(_ request: DetectionRequest, logger: Logger) async -> Ending {
        do {
            try await store.apply(.released(answerOwedSince: request.unansweredSince), to: request, workerID: configuration.workerID)
        } catch {
            logger.error("could not release the request: \(error)")
        }
        return .released
    }

    private func retryAt(_ request: DetectionRequest, _ retryAfter: Duration?) -> Date {
        Date().addingTimeInterval(configuration.retryPolicy.delay(afterAttempt: request.attempt, retryAfter: retryAfter).seconds)
    }

    /// The stored form of a callback secret: SHA-256, hex.
    static func hash(_ secret: String) -> String {
        Hex.encode(SHA256.hash(data: Data(secret.utf8)))
    }
}

extension RequestChanges {
    /// Fills in the result columns from a finished item and its verdict over every track (with
    /// `DETECTQ_FAKE_THRESHOLD`), and each track's own label.
    mutating func apply(_ item: DetectionItem, verdict: Verdict) {
        remoteUUID = item.uuid
        mediaType = item.mediaType?.description
        label = verdict.label
        audioLabel = verdict.label(of: .audio)
        visualLabel = verdict.label(of: .visual)
        isFake = verdict.isFake
        aggregatedScore = verdict.score
        result = PostgresJSON(text: item.rawJSON)
        fileDeletedAt = item.retention.fileDeletedAt
    }
}

extension RequestEvent {
    /// The reason a failure carries.
    var reason: String? {
        switch self {
        case .failedRetryably(let reason, _), .failedPermanently(let reason): reason
        default: nil
        }
    }
}
