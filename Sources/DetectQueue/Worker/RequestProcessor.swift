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
    let store: any RequestStorage
    let client: any DetectAPI
    let budget: APIBudget
    let configuration: WorkerConfiguration
    let postProcessing: PostProcessingHandOff
    let pause: WorkerPause
    /// This worker's view of the shared pause (out of credit, operator): closed at once on a 402.
    let gate: SubmissionGate
    /// This deployment's name (`detectq.installation`), carried in upload names.
    let installation: String
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
        } catch let error as PostgresError where error.isTransient {
            // Thrown before anything of this attempt reached the API (what it answered is `AnswerNotStored`).
            return await giveBack(request, databaseAway: error, logger: logger)
        } catch let error as MediaPathError {
            await record(.failedPermanently(reason: error.description), request, logger: logger)
        } catch let error as DetectAPIError {
            return await handle(error, request, logger: logger)
        } catch {
            await record(.failedRetryably(reason: "the worker could not finish the attempt: \(error)", retryAt: retryAt(request, nil)), request, cause: .workerError, logger: logger)
        }
        return .recorded
    }

    /// What the API answered this attempt could not be stored (the database stayed away for a lease time): the
    /// attempt is spent, and the next one looks for what it created.
    private struct AnswerNotStored: Error, CustomStringConvertible {
        let underlying: PostgresError
        var description: String { "could not store what the API answered: \(underlying)" }
    }

    /// Why a submission was not sent after all.
    private enum Unsent: Error {
        /// The worker is shutting down or paused: the claim is given back unsent.
        case givenBack
        /// The request was cancelled or taken over meanwhile.
        case movedOn
    }

    /// What a search for a lost answer came to.
    enum SearchEnding {
        case adopted
        /// Nothing to adopt; the request owes an answer since `owedSince` from now on (the search's start: what
        /// is older was found wanting or given up on, and the next search need not read it again).
        case notFound(owedSince: Date?)
        /// The search could not finish (a page the API kept failing): nothing is known yet.
        case incomplete(String)
    }

    /// Looks for the detection an earlier attempt (or this one) created when its answer was lost, and adopts it
    /// when there is exactly one.
    private func searchForLostAnswer(of request: DetectionRequest, logger: Logger) async throws -> SearchEnding {
        let search = LostAnswerSearch(
            client: client, budget: budget, store: store, installation: installation,
            pageLimit: configuration.lostAnswerSearchPages, workerID: configuration.workerID
        )
        let started = Date()
        let finding: LostAnswerSearch.Finding
        do {
            finding = try await search.search(for: request)
        } catch let error as LostAnswerSearch.Incomplete {
            return .incomplete(error.description)
        }
        guard case .found(let uuid) = finding else {
            if case .notFound(reachedCutoff: false) = finding {
                logger.warning("the search for a lost answer read DETECTQ_LOST_ANSWER_SEARCH_PAGES pages without reaching the attempt's time; it is given up on, and the request is sent again")
            }
            // Whatever is older than this search is found or given up on: the next search reads only what came since.
            guard try await store.moveAnswerOwed(of: request, workerID: configuration.workerID, to: started) else {
                return .notFound(owedSince: request.unansweredSince)
            }
            return .notFound(owedSince: started)
        }
        if try await store.adopt(uuid, for: request, workerID: configuration.workerID, via: "list") {
            logger.notice("adopted the detection an earlier attempt created (its answer was lost) instead of submitting again", metadata: ["remote_uuid": "\(uuid)"])
        }
        return .adopted
    }

    /// Until when a callback may still name the detection a lost answer left (`DETECTQ_CALLBACK_TIMEOUT` after
    /// the attempt that lost it): for a request whose attempts carry this worker's callback URL (callback mode,
    /// or zero retention in any mode; only zero retention with `zeroRetentionOnly`); nil when none can come.
    private func callbackMayCome(_ request: DetectionRequest, zeroRetentionOnly: Bool) -> Date? {
        let carriesCallback = request.options.zeroRetentionMode == true || (!zeroRetentionOnly && waitMode(for: request) == .callback)
        guard carriesCallback, request.remoteUUID == nil, configuration.callbackURL != nil, let since = request.unansweredSince else { return nil }
        return since.addingTimeInterval(configuration.callbackTimeout.seconds)
    }

    /// Gives the claim back, attempt unspent, after a search that could not finish: the API's trouble, not the
    /// request's, so its backoff does not grow; it is looked for again shortly.
    private func putOff(_ request: DetectionRequest, reason: String, logger: Logger) async -> Ending {
        let at = Date().addingTimeInterval(Self.searchRetryDelay.seconds)
        logger.notice("the search for a lost answer could not finish (\(reason)); looking again at the next claim, attempt unspent")
        return await release(request, until: at, logger: logger)
    }

    /// How soon a request whose search could not finish is looked for again.
    static let searchRetryDelay: Duration = .seconds(5)

    /// How long after its claim a request may still be sent on the claim's `submit_started_at` and lease
    /// check; one that took longer is checked and stamped again first.
    static let claimFreshness: Duration = .seconds(1)

    private func attempt(_ asClaimed: DetectionRequest, probe: Bool, logger: Logger, isShuttingDown: @Sendable () -> Bool) async throws -> Ending {
        // Its answer-owed time moves forward once a search has read back past it.
        var request = asClaimed
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
        if LostAnswerSearch.applies(to: request) {
            switch try await searchForLostAnswer(of: request, logger: logger) {
            case .adopted: return .recorded
            case .incomplete(let reason): return await putOff(request, reason: reason, logger: logger)
            case .notFound(let owedSince): request.unansweredSince = owedSince
            }
        }
        // Past the last attempt, this claim only looked for what that attempt may have created: a callback may
        // still name it for a while; after that the request fails, never sent (and billed) again.
        if request.attempt > request.maxAttempts {
            // The callback's wait counts from the lost answer, not from this search.
            if let callbackDue = callbackMayCome(asClaimed, zeroRetentionOnly: false), callbackDue > Date() {
                return await release(asClaimed, until: callbackDue, logger: logger)
            }
            let reason = "all \(request.maxAttempts) attempts are spent: the last one's answer was lost, and no detection it may have "
                + "created was found (List Detects and callback)"
            await record(.failedPermanently(reason: reason), request, logger: logger)
            return .recorded
        }
        // A zero-retention detection can be found by its callback alone: while that callback may still come, the
        // request waits for it rather than being sent (and billed) again.
        if let callbackDue = callbackMayCome(request, zeroRetentionOnly: true), callbackDue > Date() {
            return await release(request, until: callbackDue, logger: logger)
        }
        // Identical media and options detected before, or in flight, spends no detection of its own.
        if let ending = try await spendOnce(&request, logger: logger) { return ending }
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
        let path: SubmitPath
        switch request.media {
        case .url(let url):
            (source, path) = (.url(url), .url)
        case .token(let token):
            (source, path) = (.mediaToken(token), .mediaToken)
        case .path(let relative):
            guard let root = configuration.mediaRoot else {
                throw MediaPathError("media_path \(relative) needs DETECTQ_MEDIA_ROOT, which this worker does not have")
            }
            // Named after the request and attempt, so that a lost answer can be found by its file name.
            let file = try root.open(relative, as: LostAnswerSearch.uploadName(of: request, installation: installation, path: relative))
            switch file.uploadPath {
            case .multipart:
                (source, path) = (.file(file), .multipart)
            case .secureUpload:
                if let stored = request.secureUpload, stored.isUsable() {
                    (source, path) = (.mediaToken(stored.token), .secureUpload)
                } else {
                    guard !isShuttingDown(), !pause.isPaused else { return await release(request, logger: logger) }
                    let token = try await budget.call(by: configuration.workerID, while: { !isShuttingDown() && !pause.isPaused }) {
                        try await client.secureUpload(file)
                    }
                    try await store.storeSecureUpload(token, for: request, workerID: configuration.workerID)
                    (source, path) = (.mediaToken(token.token), .secureUpload)
                }
            }
        }

        guard !isShuttingDown(), !pause.isPaused else { return await release(request, logger: logger) }
        var sent = Date()
        let item: DetectionItem
        do {
            // A 429 created nothing: the same attempt asks again once the shared pause lets it.
            item = try await budget.call(by: configuration.workerID, while: { !isShuttingDown() && !pause.isPaused }) {
                // Behind a 402 seen by this worker, only the probe goes out: the others would meet it too.
                guard !isShuttingDown(), !pause.isPaused, probe || gate.isOpen else { throw Unsent.givenBack }
                // A callback request's secret is stored before it is sent, so that a callback that beats the
                // answer is recognised as genuine (and its detection adopted) rather than refused.
                if ContinuousClock.now - claimed > Self.claimFreshness || secretHash != nil {
                    guard try await store.markSubmitStarted(request, workerID: configuration.workerID, path: path, callbackSecretHash: secretHash) else {
                        throw Unsent.movedOn
                    }
                }
                // The submission, around the API call's own HTTP client span.
                sent = Date()
                return try await RequestTracing.withSpan("detectq.submit", requestID: request.id, traceparent: request.traceparent) { span in
                    span.attributes["detectq.wait_mode"] = mode.rawValue
                    span.attributes["detectq.submit_path"] = path.rawValue
                    span.attributes["detectq.attempt"] = request.attempt
                    return try await client.submit(source, options: options, wait: mode == .sync)
                }
            }
        } catch Unsent.givenBack {
            return await release(request, logger: logger)
        } catch Unsent.movedOn {
            logger.notice("the request moved on before it was sent (cancelled or taken over); not sending it")
            return .recorded
        }
        do {
            try await recordAnswer(item, to: request, probe: probe, mode: mode, path: path, secretHash: secretHash, sent: sent, logger: logger)
        } catch let error as PostgresError {
            throw AnswerNotStored(underlying: error)
        }
        return .recorded
    }

    /// CONTRACT section 9: with its media's hash (the producer's, or computed here for a `media_path`), a request
    /// whose media and options were detected within `DETECTQ_REUSE_VERDICT_WITHIN` completes with that verdict,
    /// and one whose twin is in flight is handed back to wait for it; nil when it is to be sent. A hand-back that
    /// finds its twin already out of flight looks again (that one's completion or failure has just been written);
    /// after three such races the claim goes back unsent for a second rather than risk a second detection.
    private func spendOnce(_ request: inout DetectionRequest, logger: Logger) async throws -> Ending? {
        guard let within = configuration.reuseVerdictWithin else { return nil }
        // A producer's hash is in detectq.request_media_hashes already: a request that may not reuse, or whose hash
        // no other request had when it was claimed, is sent without the lookup.
        if request.mediaSHA256 != nil, request.hashAlone || !request.reuseVerdict { return nil }
        if request.mediaSHA256 == nil, case .path(let relative) = request.media {
            guard let root = configuration.mediaRoot else {
                throw MediaPathError("media_path \(relative) needs DETECTQ_MEDIA_ROOT, which this worker does not have")
            }
            request.mediaSHA256 = try await MediaDigest.sha256(of: try root.open(relative))
        }
        guard let sha256 = request.mediaSHA256 else { return nil }
        for _ in 0..<3 {
            let finding = try await store.findIdenticalMedia(
                request, sha256: sha256, within: within, mayReuse: request.reuseVerdict, workerID: configuration.workerID
            )
            switch finding {
            case .send:
                return nil
            case .movedOn:
                logger.notice("the request moved on before it was sent (cancelled or taken over); not sending it")
                return .recorded
            case .reuse(let source):
                guard let stored = try await store.detectedVerdict(of: source) else { continue }
                try await complete(request, reusing: try DetectionItem(json: stored.text), of: source, logger: logger)
                return .recorded
            case .wait(let inFlight):
                var changes = RequestChanges()
                changes.waitingFor = inFlight
                let detail = "waiting for request \(inFlight)'s verdict: identical media and options are in flight"
                if try await store.apply(
                    .waitingForIdenticalMedia(inFlight: inFlight, answerOwedSince: request.unansweredSince), to: request,
                    workerID: configuration.workerID, changes: changes, detail: detail
                ) {
                    logger.info("identical media and options are in flight: waiting for its verdict", metadata: ["in_flight": "\(inFlight)"])
                    return .released
                }
            }
        }
        return await release(request, until: Date().addingTimeInterval(1), logger: logger)
    }

    /// Completes `request` with the verdict `item` of request `source` (identical media and options), never sent.
    private func complete(_ request: DetectionRequest, reusing item: DetectionItem, of source: Int, logger: Logger) async throws {
        var outcome = DetectionOutcome(request: request, item: item, fakeThreshold: configuration.fakeThreshold, reusedFrom: source)
        var result = RequestChanges()
        result.apply(item, verdict: outcome.verdict)
        // The detection is the source's: its uuid stays the source's alone, and no media of this request was sent.
        result.remoteUUID = nil
        result.fileDeletedAt = nil
        let written = try await store.complete(
            request, on: .reused(from: source), workerID: configuration.workerID, lease: configuration.lease, result: result,
            postProcessors: postProcessing.names(for: outcome)
        )
        if case .completed(let at, let postTasks, _) = written {
            logger.info("completed with the verdict of identical media detected before", metadata: ["reused_from": "\(source)", "label": "\(item.label ?? "none")"])
            if !postTasks.isEmpty {
                outcome.completedAt = at
                postProcessing.handOff(postTasks, outcome, request.traceparent)
            }
        }
    }

    /// Stores what the API answered a submission: the verdict of a finished detection, or the acceptance of
    /// one the worker now waits for.
    private func recordAnswer(
        _ item: DetectionItem, to request: DetectionRequest, probe: Bool, mode: DetectionRequest.WaitMode, path: SubmitPath,
        secretHash: String?, sent: Date, logger: Logger
    ) async throws {
        if item.isFinished {
            // Under Prefer: wait the detection ran inside the submission; its wait is that call.
            RequestTracing.recordSpan(
                "detectq.wait", requestID: request.id, traceparent: request.traceparent, from: sent, to: Date(),
                attributes: ["detectq.wait_mode": mode.rawValue]
            )
        }
        if probe, try await gate.pause.endOutOfCredit() {
            logger.notice("the API accepted a submission again: credit is back, and every worker resumes submitting")
        }
        var changes = RequestChanges()
        changes.submitPath = path
        changes.callbackSecretHash = secretHash
        if item.isFinished {
            changes.remoteUUID = item.uuid
            try await throughOutage(for: configuration.lease, logger: logger) { try await finish(request, with: item, changes: changes, logger: logger) }
        } else {
            let wait = mode == .callback ? configuration.callbackTimeout : configuration.pollInterval
            changes.runAt = Date().addingTimeInterval(wait.seconds)
            if try await throughOutage(for: configuration.lease, logger: logger, {
                try await store.apply(.accepted(remoteUUID: item.uuid), to: request, workerID: configuration.workerID, changes: changes)
            }) {
                logger.info("accepted by the API; waiting", metadata: ["remote_uuid": "\(item.uuid)", "wait_mode": "\(mode.rawValue)"])
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
        if case .completed(let at, let postTasks, _) = written {
            logger.info("completed", metadata: ["remote_uuid": "\(item.uuid)", "label": "\(item.label ?? "none")"])
            if outcome.verdict.isUnreadable {
                QueueMetrics.unreadableVerdict()
                logger.warning("the detection completed with no verdict anyone can read: is_fake is left NULL and it is raised for review",
                               metadata: ["remote_uuid": "\(item.uuid)", "labels": "\(outcome.verdict.tracks.map { $0.label ?? "none" })"])
            }
            if !postTasks.isEmpty {
                outcome.completedAt = at
                postProcessing.handOff(postTasks, outcome, request.traceparent)
            }
        }
    }

    /// Pauses submitting for every worker after a 402; the worker that starts the pause says so, once.
    private func pauseForCredit(_ error: DetectAPIError, logger: Logger) async {
        gate.close()
        do {
            let seconds = Int(configuration.creditRecheck.seconds.rounded())
            if try await gate.pause.pauseOutOfCredit(
                reason: "\(error); one submission probes again every \(seconds) s", by: configuration.workerID,
                recheck: configuration.creditRecheck
            ) {
                logger.critical("the account is out of credit (\(error)): every worker stops submitting, no request is failed or spends an attempt, and one submission probes again every \(seconds) s")
            }
        } catch {
            logger.error("could not record the out-of-credit pause: \(error)")
        }
    }

    /// Stops this worker claiming after the API refused its token, and says so loudly, once; a probe every
    /// `DETECTQ_AUTH_RECHECK_SECONDS` resumes it (`AuthRecheck`).
    func stopClaiming(refusedBy error: DetectAPIError, logger: Logger) {
        let seconds = Int(configuration.authRecheck.seconds.rounded())
        let variable = configuration.api.tokenFile == nil ? "RESEMBLE_API_TOKEN" : "RESEMBLE_API_TOKEN_FILE"
        guard pause.pause(reason: "the API refused the token (\(error)); check \(variable): the worker probes again every \(seconds) s and resumes by itself") else { return }
        logger.critical("the API refused the token of \(variable) (\(error)): this worker stops claiming, fails no request, and probes again every \(seconds) s (a List Detects page, which bills nothing); it resumes by itself once the token is accepted")
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
        case .retryable(_, .some(429), _):
            // A 429 created nothing and the shared pause is set: the claim goes back unspent.
            return await release(request, logger: logger)
        case .retryable(_, let status, let retryAfter):
            if let retryAfter { _ = await budget.throttled(retryAfter: retryAfter, by: configuration.workerID, logger: logger) }
            let cause: RetryCause = status == nil ? .network : .serverError
            if status == nil, !request.attemptsLeft, request.attempt == request.maxAttempts {
                // The last attempt lost its answer (a cut connection or a timeout, which may come after the API
                // created the detection): what it may have created is looked for before the request fails, by one
                // more claim that never submits. An error the API answered is the request's last error.
                await record(.answerLost(reason: "\(error); the detection it may have created is looked for before the request fails",
                                         retryAt: retryAt(request, retryAfter)), request, cause: cause, logger: logger)
                return .recorded
            }
            await record(.failedRetryably(reason: "\(error)", retryAt: retryAt(request, retryAfter)), request, cause: cause, logger: logger)
        case .malformedResponse:
            await record(.failedRetryably(reason: "\(error)", retryAt: retryAt(request, nil)), request, cause: .malformedResponse, logger: logger)
        case .permanent(400, let message) where Self.refusesMediaToken(message):
            switch request.media {
            case .path:
                // The stored secure upload's token was used (by a submission whose answer was lost) or expired:
                // the file is still here, so the next attempt uploads it again.
                var changes = RequestChanges()
                changes.clearsSecureUpload = true
                let reason = "the API refused the secure upload's token (\(message)); the file is uploaded again"
                await record(.failedRetryably(reason: reason, retryAt: Date()), request, cause: .mediaTokenRefused, changes: changes, logger: logger)
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
        _ event: RequestEvent, _ request: DetectionRequest, cause: RetryCause? = nil, changes: RequestChanges = .init(), logger: Logger
    ) async {
        do {
            let applied = try await store.apply(event, to: request, workerID: configuration.workerID, changes: changes)
            if applied, let cause, request.attemptsLeft { QueueMetrics.retry(cause: cause) }
            logger.notice("attempt \(request.attempt) of \(request.maxAttempts): \(event.name)", metadata: ["reason": "\(event.reason ?? "")"])
        } catch {
            logger.error("could not record \(event.name): \(error)")
        }
    }

    /// Gives the claim back unsent, its attempt unspent; `until` puts its next claim off.
    private func release(_ request: DetectionRequest, until: Date? = nil, logger: Logger) async -> Ending {
        do {
            var changes = RequestChanges()
            changes.runAt = until
            try await store.apply(.released(answerOwedSince: request.unansweredSince), to: request, workerID: configuration.workerID, changes: changes)
        } catch {
            logger.error("could not release the request: \(error)")
        }
        return .released
    }

    /// Gives the claim back unsent, its attempt unspent, after the database went away before anything of the
    /// attempt reached the API: an outage is not the request's failure, so it neither spends an attempt nor
    /// grows the backoff. The release is asked again through the outage for up to a lease time; past that the
    /// lease runs out and the rescue takes the request back instead.
    private func giveBack(_ request: DetectionRequest, databaseAway error: PostgresError, logger: Logger) async -> Ending {
        QueueMetrics.databaseFailed(.prepareSubmission)
        logger.warning("the database went away before this attempt sent anything (\(error)); the claim goes back unspent once it answers")
        do {
            _ = try await throughOutage(for: configuration.lease, logger: logger) {
                try await store.apply(.released(answerOwedSince: request.unansweredSince), to: request, workerID: configuration.workerID, changes: .init())
            }
        } catch {
            logger.error("could not give the claim back (\(error)); its lease runs out, and the rescue takes it back")
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
