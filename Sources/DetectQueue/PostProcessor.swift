import Foundation
import Logging
import Postgres
import ResembleDetect

/// What happens to a detection's outcome once it is stored: an alert, a record, an archive. A processor
/// is one type plus one line of registration; the worker runs it as a post-task with its own claims,
/// retries and history, so a failing processor never touches the detection itself. It acts on the world
/// only through the capabilities its context gives it, never through the database.
package protocol PostProcessor: Sendable {
    /// The processor's name, stored in `detectq.post_tasks.processor`; unique among the registered ones.
    var name: String { get }
    /// The kind of alert the processor delivers, if it is an alert sink: raising an alert of that kind
    /// (`PostProcessingContext.raise`) schedules it.
    var deliveredAlert: AlertKind? { get }
    /// Whether the outcome calls for this processor; asked once, when the request completes.
    func applies(to outcome: DetectionOutcome) -> Bool
    /// Does the work. Throwing retries with backoff until the task's attempts are spent.
    func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult
}

/// How a post-processor's run ended.
package enum PostProcessingResult: Sendable, Hashable {
    /// Finished.
    case done
    /// Failed in a way worth retrying, after at least `after`; counts as an attempt.
    case retry(after: Duration, reason: String)
    /// Not yet: run again at `at` (a purge that has not happened yet); does not count as an attempt.
    case reschedule(at: Date)
    /// Can never succeed as it stands (a sink that refuses the alert for good); the task fails now.
    case failed(reason: String)
}

extension PostProcessor {
    package var deliveredAlert: AlertKind? { nil }
}

/// What an alert is about; an alert sink delivers one kind.
package enum AlertKind: String, Sendable, Hashable, CaseIterable {
    /// The detection found a fake.
    case detectionFake = "detection.fake"
    /// A zero-retention file was not purged within `DETECTQ_RETENTION_SLA`.
    case retentionOverdue = "retention.overdue"
    /// The detection completed with no verdict anyone can read (`is_fake` NULL): it needs a person's review.
    case detectionUnreadable = "detection.unreadable"
}

/// What a post-processor may do besides reading the outcome: each a capability bound to the outcome's
/// request, none of them the database or the API budget themselves.
package struct PostProcessingContext: Sendable {
    /// The attempt in progress (1 for the first).
    package let attempt: Int
    /// The Detect API; every call spends the shared API budget first.
    package let api: BudgetedDetectAPI
    package let logger: Logger
    let requestID: Int
    let effects: PostProcessingEffects
    let notifications: PendingNotifications

    /// Records when the API purged the request's media (`file_deleted_at`).
    package func recordFileDeleted(at date: Date) async throws {
        try await effects.recordFileDeleted(requestID: requestID, at: date)
    }

    /// Raises an alert of `kind` about the request: every registered sink that delivers that kind runs once
    /// for it, as a post-task of its own (raising it again adds nothing).
    package func raise(_ kind: AlertKind) async throws {
        try await effects.raise(kind, requestID: requestID)
    }

    /// Keeps the request's intelligence report (`json`, an object) in `detectq.intelligence_archive`.
    package func archiveIntelligence(_ json: String, remoteUUID: String) async throws {
        try await effects.archiveIntelligence(json, remoteUUID: remoteUUID, requestID: requestID)
    }

    /// Sends `payload` to the database's listeners on `channel` (`pg_notify`) with the run's end, in the
    /// statement that records it: listeners hear it once the run is recorded, and a run whose end is never
    /// recorded (its lease lost) sends nothing, so the run that takes over sends it once.
    package func notify(channel: String, payload: String) async throws {
        notifications.add(PostgresNotice(channel: channel, payload: payload))
    }
}

/// The Detect API as post-processors call it: each call first spends the shared budget that every worker's
/// submissions and polls spend too.
package struct BudgetedDetectAPI: Sendable {
    let client: any DetectAPI
    let budget: APIBudget
    let workerID: String

    /// `GET /detect/{uuid}`; a 429 waits out the shared pause and asks again, spending no attempt of the task.
    package func detection(uuid: String) async throws -> DetectionItem {
        try await budget.call(by: workerID) { try await client.detection(uuid: uuid) }
    }
}

/// A completed detection as post-processors see it: the request, its parsed result and the producer's
/// metadata.
package struct DetectionOutcome: Sendable {
    package let requestID: Int
    package let remoteUUID: String
    package let item: DetectionItem
    /// The producer's own data (`metadata`), as JSON text.
    package let metadata: PostgresJSON
    package let zeroRetentionMode: Bool
    package let intelligenceRequested: Bool
    package internal(set) var completedAt: Date
    /// The verdict over every track, with the worker's `DETECTQ_FAKE_THRESHOLD`: the one that decided `is_fake`.
    package let verdict: Verdict

    package init(
        requestID: Int, remoteUUID: String, item: DetectionItem, metadata: PostgresJSON, zeroRetentionMode: Bool,
        intelligenceRequested: Bool, completedAt: Date, fakeThreshold: Double? = nil
    ) {
        verdict = item.verdict(threshold: fakeThreshold)
        self.requestID = requestID
        self.remoteUUID = remoteUUID
        self.item = item
        self.metadata = metadata
        self.zeroRetentionMode = zeroRetentionMode
        self.intelligenceRequested = intelligenceRequested
        self.completedAt = completedAt
    }

    /// The outcome of a request that has just completed with `item`.
    init(request: DetectionRequest, item: DetectionItem, fakeThreshold: Double?, completedAt: Date = Date()) {
        self.init(
            requestID: request.id, remoteUUID: item.uuid, item: item, metadata: request.metadata,
            zeroRetentionMode: request.options.zeroRetentionMode == true, intelligenceRequested: request.options.intelligence == true,
            completedAt: completedAt, fakeThreshold: fakeThreshold
        )
    }
}

extension [any PostProcessor] {
    /// The names of the processors the outcome calls for.
    func names(for outcome: DetectionOutcome) -> [String] {
        filter { $0.applies(to: outcome) }.map(\.name)
    }
}

/// What a completing request needs from post-processing: which processors its outcome calls for, and where
/// the post-tasks its completion created under this worker's lease go, to run at once with the outcome in
/// hand (no claim, no second read of the stored result).
struct PostProcessingHandOff: Sendable {
    let processors: [any PostProcessor]
    /// Runs the handed post-tasks of one outcome, continuing the request's trace (`traceparent`).
    let handOff: @Sendable (_ postTasks: [PostTask], _ outcome: DetectionOutcome, _ traceparent: String?) -> Void

    func names(for outcome: DetectionOutcome) -> [String] {
        processors.names(for: outcome)
    }
}
