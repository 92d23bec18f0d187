import AsyncHTTPClient
import Foundation
import NIOCore
import ResembleDetect

/// The simulated API's memory: detections, secure uploads, counters, and the fault dice.
package actor SimulatorState {
    /// A fault chosen for one request.
    enum Fault {
        /// `rateLimit(retryAfter: nil)` is a 429 with no `Retry-After`.
        case drop, loseResponse, serverError, rateLimit(retryAfter: Int?)
    }

    /// A file uploaded through `POST /secure_uploads`, waiting for its single use.
    struct SecureUpload {
        var file: StreamedFile
        var mediaType: MediaType
        var expiresAt: Date
        var used = false
    }

    private(set) var configuration: SimulatorConfiguration
    private var detections: [String: SimulatedDetection] = [:]
    private var order: [String] = []
    /// The uuid of every detection created, per media key, oldest first (deletions do not remove them).
    private var createdByMedia: [String: [String]] = [:]
    /// The detections created by a request whose answer the simulator then cut off (billed, never answered).
    private var createdBehindLostAnswers: Set<String> = []
    private var uploads: [String: SecureUpload] = [:]
    private var stats = SimulatorStats()
    private var recentRequests: [Date] = []
    private var random: SeededRandom

    init(configuration: SimulatorConfiguration) {
        self.configuration = configuration
        random = SeededRandom(seed: configuration.seed ?? UInt64.random(in: .min ... .max))
    }

    /// What the simulator has seen so far.
    package func snapshot() -> SimulatorStats { stats }

    /// The uuids of the detections created for each media key, oldest first: a key with two uuids was
    /// submitted (and billed) twice.
    package func detectionsByMedia() -> [String: [String]] { createdByMedia }

    /// When each detection was created (this process's clock), by uuid.
    package func creationTimes() -> [String: Date] { detections.mapValues(\.createdAt) }

    /// The uuids of the detections created by a `POST /detect` whose answer was then lost on purpose: each
    /// was billed, and the client never heard of it.
    package func detectionsBehindLostAnswers() -> Set<String> { createdBehindLostAnswers }

    /// Whether the request being handled will have its answer cut off (set by the fault, read on creation).
    @TaskLocal static var answerWillBeLost = false

    /// The `callback_url` each detection was submitted with, by uuid (what the API would call back).
    package func callbackURLs() -> [String: String] {
        detections.compactMapValues(\.options.callbackURL)
    }

    /// Changes the injected faults while running.
    package func setFaults(_ faults: FaultInjection) { configuration.faults = faults }

    /// Changes the processing latency while running (for detections submitted from now on).
    package func setLatency(_ latency: Duration) { configuration.latency = latency }

    /// Starts or ends a spell without credit: while it lasts every submission is answered 402.
    package func setOutOfCredit(_ outOfCredit: Bool) { configuration.outOfCredit = outOfCredit }

    /// Starts or ends a sustained throttle (429 with no `Retry-After` for every request).
    package func setThrottled(_ throttled: Bool) { configuration.throttled = throttled }

    /// Sets how many detections a second the team's other services create.
    package func setTeamTraffic(_ perSecond: Double) {
        addTeamTraffic(until: Date())
        configuration.teamTraffic = perSecond
    }

    /// Refuses (403) a submission that asks for an optional product the key may not use, as the API does; a
    /// submission that fails the account's checks creates (and bills) nothing.
    func checkAccount(asking options: SubmittedOptions) throws(SimulatorRejection) {
        if configuration.outOfCredit {
            stats.creditRefusals += 1
            throw .outOfCredit
        }
        let asked = [("intelligence", options.intelligence), ("audio_source_tracing", options.audioSourceTracing),
                     ("use_reverse_search", options.useReverseSearch), ("use_ood_detector", options.useOODDetector)]
        if let product = asked.first(where: { $0.1 && configuration.forbiddenProducts.contains($0.0) })?.0 {
            stats.productRefusals += 1
            throw .forbidden(product: product)
        }
    }

    /// Finishes every detection still processing, as if its time had passed (their intelligence too);
    /// a zero-retention purge keeps its delay after the new completion time.
    package func fastForward() {
        let now = Date()
        for (uuid, detection) in detections where detection.completesAt > now || (detection.intelligenceCompletesAt ?? now) > now {
            var finished = detection
            finished.completesAt = min(detection.completesAt, now)
            finished.intelligenceCompletesAt = detection.intelligenceCompletesAt.map { min($0, now) }
            if let purge = detection.purgesAt, let delay = configuration.purgeDelay {
                finished.purgesAt = min(purge, now.addingTimeInterval(delay.seconds))
            }
            detections[uuid] = finished
        }
    }

    /// Counts a request and rolls the dice for a fault.
    func admit(endpoint: String) -> Fault? {
        let now = Date()
        stats.requests += 1
        stats.requestsByEndpoint[endpoint, default: 0] += 1
        recentRequests.append(now)
        let windowStart = now.addingTimeInterval(-1)
        if let firstInWindow = recentRequests.firstIndex(where: { $0 > windowStart }), firstInWindow > 0 {
            recentRequests.removeFirst(firstInWindow)
        }
        stats.peakRequestsPerSecond = max(stats.peakRequestsPerSecond, recentRequests.count)
        if configuration.throttled {
            stats.throttledRequests += 1
            return .rateLimit(retryAfter: nil)
        }
        let faults = configuration.faults
        if let endpoints = faults.endpoints, !endpoints.contains(endpoint) { return nil }
        if random.chance(faults.dropRate) {
            stats.injectedDrops += 1
            return .drop
        }
        if random.chance(faults.lostResponseRate) {
            stats.injectedLostResponses += 1
            return .loseResponse
        }
        if random.chance(faults.rateLimitRate) {
            stats.injectedRateLimits += 1
            return .rateLimit(retryAfter: faults.retryAfterSeconds)
        }
        if random.chance(faults.serverErrorRate) {
            stats.injectedServerErrors += 1
            return .serverError
        }
        return nil
    }

    func noteUpload(size: Int64) {
        stats.largestUpload = max(stats.largestUpload, size)
    }

    /// Creates a detection and returns it; its callback, if any, is sent when it is due.
    func createDetection(
        mediaType: MediaType, scenario: SimulatedScenario, options: SubmittedOptions, sourceURL: String?, fileName: String,
        mediaKey: String, storedFile: URL?
    ) -> SimulatedDetection {
        let now = Date()
        addTeamTraffic(until: now)
        let completesAt = now.addingTimeInterval(configuration.latency.seconds)
        let intelligenceAt = options.intelligence ? completesAt.addingTimeInterval(configuration.intelligenceDelay.seconds) : nil
        let finishedAt = max(completesAt, intelligenceAt ?? completesAt)
        let detection = SimulatedDetection(
            uuid: UUID().uuidString.lowercased(), mediaType: mediaType, scenario: scenario, options: options,
            sourceURL: sourceURL, fileName: fileName, createdAt: now, completesAt: completesAt,
            intelligenceCompletesAt: intelligenceAt,
            purgesAt: options.zeroRetentionMode ? configuration.purgeDelay.map { finishedAt.addingTimeInterval($0.seconds) } : nil,
            storedFile: storedFile
        )
        detections[detection.uuid] = detection
        order.append(detection.uuid)
        stats.submissions += 1
        stats.submissionsByMedia[mediaKey, default: 0] += 1
        createdByMedia[mediaKey, default: []].append(detection.uuid)
        if Self.answerWillBeLost { createdBehindLostAnswers.insert(detection.uuid) }
        scheduleCleanUp(detection)
        if let callbackURL = options.callbackURL { scheduleCallback(detection, to: callbackURL) }
        return detection
    }

    func detection(_ uuid: String) -> SimulatedDetection? {
        detections[uuid]
    }

    /// Reads of each detection answered 404 so far (`notFoundReads`).
    private var notFoundAnswered: [String: Int] = [:]

    /// Whether `GET /detect/{uuid}` still answers 404 for this detection (the API lagging behind its own
    /// acceptance, for its first `notFoundReads` reads); counted when it does.
    func lagsBehind(_ detection: SimulatedDetection) -> Bool {
        guard notFoundAnswered[detection.uuid, default: 0] < configuration.notFoundReads else { return false }
        notFoundAnswered[detection.uuid, default: 0] += 1
        stats.laggedNotFounds += 1
        return true
    }

    /// When the team's other services last created a detection, as far as the simulator has played them.
    private var teamTrafficPlayedUntil: Date?

    /// Adds the detections the team's other services created since the last call, at `teamTraffic` a second,
    /// each at its own time, so List Detects shows them between ours as a busy account would.
    func addTeamTraffic(until now: Date) {
        let rate = configuration.teamTraffic
        guard rate > 0, let from = teamTrafficPlayedUntil else {
            teamTrafficPlayedUntil = now
            return
        }
        let count = Int((now.timeIntervalSince(from) * rate).rounded(.down))
        guard count > 0 else { return }
        var newestOurs: [String] = []
        while let last = order.last, let detection = detections[last], detection.createdAt > from {
            newestOurs.insert(order.removeLast(), at: 0)
        }
        let step = 1 / rate
        var ours = newestOurs[...]
        for index in 0..<count {
            let at = from.addingTimeInterval(step * Double(index + 1))
            while let next = ours.first, let detection = detections[next], detection.createdAt <= at {
                order.append(next)
                ours = ours.dropFirst()
            }
            let detection = SimulatedDetection(
                uuid: UUID().uuidString.lowercased(), mediaType: .audio, scenario: SimulatedScenario(), options: SubmittedOptions(),
                sourceURL: "https://other-service.example/media/\(stats.teamDetections).wav", fileName: "\(stats.teamDetections).wav",
                createdAt: at, completesAt: at, intelligenceCompletesAt: nil, purgesAt: nil, storedFile: nil
            )
            detections[detection.uuid] = detection
            order.append(detection.uuid)
            stats.teamDetections += 1
        }
        order.append(contentsOf: ours)
        teamTrafficPlayedUntil = from.addingTimeInterval(step * Double(count))
    }

    func deleteDetection(_ uuid: String) -> Bool {
        guard let detection = detections.removeValue(forKey: uuid) else { return false }
        order.removeAll { $0 == uuid }
        if let file = detection.storedFile { try? FileManager.default.removeItem(at: file) }
        return true
    }

    /// One page of detections, newest first, and the page count.
    func page(_ page: Int, size: Int) -> (items: [SimulatedDetection], pages: Int, total: Int) {
        addTeamTraffic(until: Date())
        let newestFirst = order.reversed().compactMap { detections[$0] }
        let pages = max(1, (newestFirst.count + size - 1) / size)
        let items = Array(newestFirst.dropFirst((page - 1) * size).prefix(size))
        return (items, pages, newestFirst.count)
    }

    /// Stores a secure upload and issues its token.
    func issueToken(for file: StreamedFile, mediaType: MediaType) -> String {
        let expiresAt = Date().addingTimeInterval(configuration.uploadTokenLifetime.seconds)
        let token = SimulatedToken.make(expiresAt: expiresAt)
        uploads[token] = SecureUpload(file: file, mediaType: mediaType, expiresAt: expiresAt)
        stats.secureUploads += 1
        return token
    }

    /// Takes a token for its one use.
    func redeem(_ token: String) throws(SimulatorRejection) -> SecureUpload {
        guard var upload = uploads[token] else {
            throw .badRequest("media_token is invalid", field: "media_token")
        }
        guard upload.expiresAt > Date() else {
            throw .badRequest("media_token has expired; upload the file again", field: "media_token")
        }
        guard !upload.used else {
            throw .badRequest("media_token has already been used", field: "media_token")
        }
        upload.used = true
        uploads[token] = upload
        return upload
    }

    // MARK: - Timers

    /// Removes the stored media when the API would: at completion, or at the purge for zero retention.
    private func scheduleCleanUp(_ detection: SimulatedDetection) {
        guard let file = detection.storedFile else { return }
        // A detection that never ends keeps its media until the simulator stops.
        guard let at = detection.purgesAt ?? detection.callbackDueAt else { return }
        Task {
            try? await Task.sleep(for: .seconds(max(0, at.timeIntervalSinceNow)))
            try? FileManager.default.removeItem(at: file)
        }
    }

    private func scheduleCallback(_ detection: SimulatedDetection, to url: String) {
        guard let dueAt = detection.callbackDueAt else { return }
        let lost = random.chance(configuration.faults.lostCallbackRate)
        let duplicated = !lost && random.chance(configuration.faults.duplicateCallbackRate)
        if lost {
            stats.callbacksLost += 1
            return
        }
        if duplicated { stats.callbacksDuplicated += 1 }
        Task {
            try? await Task.sleep(for: .seconds(max(0, dueAt.timeIntervalSinceNow)))
            for _ in 0..<(duplicated ? 2 : 1) {
                let delivered = await Self.post(detection: detection, to: url)
                self.noteCallback(delivered: delivered)
            }
        }
    }

    private func noteCallback(delivered: Bool) {
        if delivered { stats.callbacksSent += 1 } else { stats.callbackFailures += 1 }
    }

    private static func post(detection: SimulatedDetection, to url: String) async -> Bool {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let payload = JSONValue.object(["success": .bool(true), "item": detection.item(at: Date())])
        guard let body = try? JSONEncoder().encode(payload) else { return false }
        request.body = .bytes(ByteBuffer(bytes: body))
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)) else { return false }
        _ = try? await response.body.collect(upTo: 1 << 20)
        return (200..<300).contains(Int(response.status.code))
    }
}

/// A secure-upload token shaped like the API's: a JWT (header, payload with `exp`, signature).
enum SimulatedToken {
    static func make(expiresAt: Date) -> String {
        func base64URL(_ data: Data) -> String {
            data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let header = base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = base64URL(Data(#"{"exp":\#(Int(expiresAt.timeIntervalSince1970)),"jti":"\#(UUID().uuidString)"}"#.utf8))
        let signature = base64URL(Data((0..<32).map { _ in UInt8.random(in: .min ... .max) }))
        return "\(header).\(payload).\(signature)"
    }
}

/// A small deterministic generator (SplitMix64), so a seeded run injects the same faults again.
package struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    package init(seed: UInt64) { state = seed }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with probability `probability`.
    package mutating func chance(_ probability: Double) -> Bool {
        guard probability > 0 else { return false }
        return Double(next() >> 11) / Double(1 << 53) < probability
    }
}
