import Foundation

/// How the simulator behaves: authentication, timing, and the faults it injects.
package struct SimulatorConfiguration: Sendable {
    /// The bearer token every request must carry; nil accepts any request.
    package var requiredToken: String?
    /// How long a detection takes to process.
    package var latency: Duration
    /// How long after the detection an intelligence report completes.
    package var intelligenceDelay: Duration
    /// How long after completion a zero-retention file is purged (`file_deleted_at` set); nil never purges.
    package var purgeDelay: Duration?
    /// Lifetime of a secure-upload token.
    package var uploadTokenLifetime: Duration
    package var faults: FaultInjection
    /// Seeds the fault dice, so a run can be repeated; nil seeds from the system.
    package var seed: UInt64?
    /// Where uploads are streamed to.
    package var storageDirectory: URL
    /// Whether the account is out of credit: every submission is answered 402 until it is turned off.
    package var outOfCredit = false
    /// A throttle that lasts: while on, every request is answered 429 with no `Retry-After` (the pages
    /// document none), as a busy API does.
    package var throttled = false
    /// How many reads of a detection `GET /detect/{uuid}` answers 404 before it finds it (the API lagging
    /// behind its own acceptance); zero finds it at once.
    package var notFoundReads = 0
    /// Detections per second that the team's other services create on the same account: they appear in List
    /// Detects beside ours (a busy team), none of them ours.
    package var teamTraffic: Double = 0
    /// Optional products the key may not use (`intelligence`, `audio_source_tracing`, `use_reverse_search`,
    /// `use_ood_detector`): a submission that asks for one is answered 403.
    package var forbiddenProducts: Set<String> = []

    package init(
        requiredToken: String? = nil, latency: Duration = .zero, intelligenceDelay: Duration = .zero,
        purgeDelay: Duration? = .seconds(1), uploadTokenLifetime: Duration = .seconds(3600),
        faults: FaultInjection = .none, seed: UInt64? = nil,
        storageDirectory: URL = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-simulator")
    ) {
        self.requiredToken = requiredToken
        self.latency = latency
        self.intelligenceDelay = intelligenceDelay
        self.purgeDelay = purgeDelay
        self.uploadTokenLifetime = uploadTokenLifetime
        self.faults = faults
        self.seed = seed
        self.storageDirectory = storageDirectory
    }
}

/// Faults the simulator injects, each a probability from 0 to 1 per request (or per callback).
package struct FaultInjection: Sendable, Hashable {
    /// A 503 with the API's error body.
    package var serverErrorRate: Double
    /// A 429 with `Retry-After`.
    package var rateLimitRate: Double
    /// The `Retry-After` seconds sent with an injected 429.
    package var retryAfterSeconds: Int
    /// The connection is cut before the request is handled (nothing is created).
    package var dropRate: Double
    /// The request is handled (a detection may be created and billed) but the connection is cut before the
    /// response: the client cannot tell this from a drop.
    package var lostResponseRate: Double
    /// A callback that is never sent.
    package var lostCallbackRate: Double
    /// A callback sent twice.
    package var duplicateCallbackRate: Double
    /// The endpoints the request faults apply to (such as `POST /detect`); nil means every endpoint.
    package var endpoints: Set<String>?

    package init(
        serverErrorRate: Double = 0, rateLimitRate: Double = 0, retryAfterSeconds: Int = 1, dropRate: Double = 0,
        lostResponseRate: Double = 0, lostCallbackRate: Double = 0, duplicateCallbackRate: Double = 0,
        endpoints: Set<String>? = nil
    ) {
        self.serverErrorRate = serverErrorRate
        self.rateLimitRate = rateLimitRate
        self.retryAfterSeconds = retryAfterSeconds
        self.dropRate = dropRate
        self.lostResponseRate = lostResponseRate
        self.lostCallbackRate = lostCallbackRate
        self.duplicateCallbackRate = duplicateCallbackRate
        self.endpoints = endpoints
    }

    package static let none = FaultInjection()
}

/// What the simulator has seen and done, for tests and benchmarks to check against.
package struct SimulatorStats: Sendable, Codable {
    /// Detections created (accepted `POST /detect`).
    package var submissions = 0
    /// Submissions per media key (the URL, the token's upload, or the uploaded file's name): a key seen twice
    /// was submitted (and billed) twice.
    package var submissionsByMedia: [String: Int] = [:]
    package var secureUploads = 0
    /// Every API request received, faults included.
    package var requests = 0
    package var requestsByEndpoint: [String: Int] = [:]
    package var injectedServerErrors = 0
    package var injectedRateLimits = 0
    /// Requests answered 429 without `Retry-After` by a sustained throttle (`throttled`).
    package var throttledRequests = 0
    /// `GET /detect/{uuid}` answered 404 while the detection lagged (`notFoundReads`).
    package var laggedNotFounds = 0
    /// Detections the team's other services created (`teamTraffic`).
    package var teamDetections = 0
    package var injectedDrops = 0
    package var injectedLostResponses = 0
    package var callbacksSent = 0
    package var callbacksLost = 0
    package var callbacksDuplicated = 0
    package var callbackFailures = 0
    /// Submissions answered 402 (out of credit) and 403 (a product the key may not use).
    package var creditRefusals = 0
    package var productRefusals = 0
    /// The most requests received within any one-second window.
    package var peakRequestsPerSecond = 0
    /// Largest request body streamed, in bytes.
    package var largestUpload: Int64 = 0
}
