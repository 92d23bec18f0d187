import Foundation

/// How the simulator behaves: authentication, timing, and the faults it injects.
public struct SimulatorConfiguration: Sendable {
    /// The bearer token every request must carry; nil accepts any request.
    public var requiredToken: String?
    /// How long a detection takes to process.
    public var latency: Duration
    /// How long after the detection an intelligence report completes.
    public var intelligenceDelay: Duration
    /// How long after completion a zero-retention file is purged (`file_deleted_at` set); nil never purges.
    public var purgeDelay: Duration?
    /// Lifetime of a secure-upload token.
    public var uploadTokenLifetime: Duration
    public var faults: FaultInjection
    /// Seeds the fault dice, so a run can be repeated; nil seeds from the system.
    public var seed: UInt64?
    /// Where uploads are streamed to.
    public var storageDirectory: URL
    /// Whether the account is out of credit: every submission is answered 402 until it is turned off.
    public var outOfCredit = false
    /// Optional products the key may not use (`intelligence`, `audio_source_tracing`, `use_reverse_search`,
    /// `use_ood_detector`): a submission that asks for one is answered 403.
    public var forbiddenProducts: Set<String> = []

    public init(
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
public struct FaultInjection: Sendable, Hashable {
    /// A 503 with the API's error body.
    public var serverErrorRate: Double
    /// A 429 with `Retry-After`.
    public var rateLimitRate: Double
    /// The `Retry-After` seconds sent with an injected 429.
    public var retryAfterSeconds: Int
    /// The connection is cut before the request is handled (nothing is created).
    public var dropRate: Double
    /// The request is handled (a detection may be created and billed) but the connection is cut before the
    /// response: the client cannot tell this from a drop.
    public var lostResponseRate: Double
    /// A callback that is never sent.
    public var lostCallbackRate: Double
    /// A callback sent twice.
    public var duplicateCallbackRate: Double
    /// The endpoints the request faults apply to (such as `POST /detect`); nil means every endpoint.
    public var endpoints: Set<String>?

    public init(
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

    public static let none = FaultInjection()
}

/// What the simulator has seen and done, for tests and benchmarks to check against.
public struct SimulatorStats: Sendable, Codable {
    /// Detections created (accepted `POST /detect`).
    public var submissions = 0
    /// Submissions per media key (the URL, the token's upload, or the uploaded file's name): a key seen twice
    /// was submitted (and billed) twice.
    public var submissionsByMedia: [String: Int] = [:]
    public var secureUploads = 0
    /// Every API request received, faults included.
    public var requests = 0
    public var requestsByEndpoint: [String: Int] = [:]
    public var injectedServerErrors = 0
    public var injectedRateLimits = 0
    public var injectedDrops = 0
    public var injectedLostResponses = 0
    public var callbacksSent = 0
    public var callbacksLost = 0
    public var callbacksDuplicated = 0
    public var callbackFailures = 0
    /// Submissions answered 402 (out of credit) and 403 (a product the key may not use).
    public var creditRefusals = 0
    public var productRefusals = 0
    /// The most requests received within any one-second window.
    public var peakRequestsPerSecond = 0
    /// Largest request body streamed, in bytes.
    public var largestUpload: Int64 = 0
}
