import Foundation
import Logging
import Postgres
import ResembleDetect
import TextEncodings

/// What happens to a detection's outcome once it is stored: an alert, a record, an archive. A processor
/// is one type plus one line of registration; the worker runs it as a post-task with its own claims,
/// retries and history, so a failing processor never touches the detection itself. It acts on the world
/// only through the capabilities its context gives it, never through the database, and only through those it
/// declares in `effects`.
package protocol PostProcessor: Sendable {
    /// The processor's name, stored in `detectq.post_tasks.processor`; unique among the registered ones.
    var name: String { get }
    /// The kind of alert the processor delivers, if it is an alert sink: raising an alert of that kind
    /// (`PostProcessingContext.raise`) schedules it.
    var deliveredAlert: AlertKind? { get }
    /// What the processor may do besides reading the outcome; its context refuses any other capability.
    var effects: Set<PostProcessingEffect> { get }
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
    package var effects: Set<PostProcessingEffect> { [] }

    /// The kinds of alert the processor may raise.
    package var raisedAlerts: [AlertKind] {
        effects.compactMap { effect in if case .raise(let kind) = effect { kind } else { nil } }.sorted { $0.rawValue < $1.rawValue }
    }
}

/// What an alert is about (`detection.fake`, `retention.overdue`), named by the plugin that raises or delivers
/// it; an alert sink delivers one kind.
package struct AlertKind: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    package let rawValue: String
    /// What the alert says, for people (a chat message's or an incident's summary).
    package let title: String

    package init(rawValue: String) {
        self.init(rawValue, title: rawValue)
    }

    package init(_ rawValue: String, title: String) {
        self.rawValue = rawValue
        self.title = title
    }

    package var description: String { rawValue }

    package static func == (a: AlertKind, b: AlertKind) -> Bool { a.rawValue == b.rawValue }

    package func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
}

/// A capability a post-processor declares it uses, beyond reading the outcome.
package enum PostProcessingEffect: Sendable, Hashable {
    /// Records when the API purged the request's media (`detectq.requests.file_deleted_at`).
    case recordFileDeleted
    /// Keeps the request's intelligence report (`detectq.intelligence_archive`).
    case archiveIntelligence
    /// Raises alerts of this kind about the request, for every sink that delivers it.
    case raise(AlertKind)
    /// Sends `pg_notify` on this channel with the run's end.
    case notify(channel: String)
}

/// A capability a post-processor used without declaring it in `effects`: its task fails with this reason.
package struct UndeclaredEffect: Error, Sendable, CustomStringConvertible {
    package let processor: String
    package let effect: PostProcessingEffect

    package var description: String {
        "post-processor \(processor) used \(effect) without declaring it in its effects"
    }
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
    /// The processor this context serves, and the effects it declared.
    let processor: String
    let declared: Set<PostProcessingEffect>
    let effects: PostProcessingEffects
    let notifications: PendingNotifications

    /// Records when the API purged the request's media (`file_deleted_at`). Needs `.recordFileDeleted`.
    package func recordFileDeleted(at date: Date) async throws {
        try check(.recordFileDeleted)
        try await effects.recordFileDeleted(requestID: requestID, at: date)
    }

    /// Raises an alert of `kind` about the request: every registered sink that delivers that kind runs once
    /// for it, as a post-task of its own (raising it again adds nothing). Needs `.raise(kind)`.
    package func raise(_ kind: AlertKind) async throws {
        try check(.raise(kind))
        try await effects.raise(kind, requestID: requestID)
    }

    /// Keeps the request's intelligence report (`json`, an object) in `detectq.intelligence_archive`. Needs
    /// `.archiveIntelligence`.
    package func archiveIntelligence(_ json: String, remoteUUID: String) async throws {
        try check(.archiveIntelligence)
        try await effects.archiveIntelligence(json, remoteUUID: remoteUUID, requestID: requestID)
    }

    /// Sends `payload` to the database's listeners on `channel` (`pg_notify`) with the run's end, in the
    /// statement that records it: listeners hear it once the run is recorded, and a run whose end is never
    /// recorded (its lease lost) sends nothing, so the run that takes over sends it once. Needs
    /// `.notify(channel:)`.
    package func notify(channel: String, payload: String) async throws {
        try check(.notify(channel: channel))
        notifications.add(PostgresNotice(channel: channel, payload: payload))
    }

    private func check(_ effect: PostProcessingEffect) throws(UndeclaredEffect) {
        guard declared.contains(effect) else { throw UndeclaredEffect(processor: processor, effect: effect) }
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
    /// The producer's own data (`metadata`, a JSON object); nil only when it cannot be read (nested past
    /// 256 levels). Read from its stored text when asked: most outcomes reach no processor that looks at it, and
    /// decoding it for every completion was 3 % of the worker's CPU in the queue core.
    package var metadata: JSONValue? { try? JSONText.decode(JSONValue.self, from: Data(metadataText.text.utf8)) }
    /// `metadata` as the row stores it.
    private let metadataText: PostgresJSON
    package let zeroRetentionMode: Bool
    package let intelligenceRequested: Bool
    package internal(set) var completedAt: Date
    /// The verdict over every track, with the worker's `DETECTQ_FAKE_THRESHOLD`: the one that decided `is_fake`.
    package let verdict: Verdict
    /// The request whose detection gave this one its verdict (identical media and options): nothing of this
    /// request was sent to the API, and `remoteUUID` is that detection's. Nil for a request detected itself.
    package var reusedFrom: Int?

    package init(
        requestID: Int, remoteUUID: String, item: DetectionItem, metadata: PostgresJSON, zeroRetentionMode: Bool,
        intelligenceRequested: Bool, completedAt: Date, fakeThreshold: Double? = nil, reusedFrom: Int? = nil
    ) {
        self.reusedFrom = reusedFrom
        verdict = item.verdict(threshold: fakeThreshold)
        self.requestID = requestID
        self.remoteUUID = remoteUUID
        self.item = item
        metadataText = metadata
        self.zeroRetentionMode = zeroRetentionMode
        self.intelligenceRequested = intelligenceRequested
        self.completedAt = completedAt
    }

    /// The outcome of a request that has just completed with `item`.
    init(request: DetectionRequest, item: DetectionItem, fakeThreshold: Double?, completedAt: Date = Date(), reusedFrom: Int? = nil) {
        self.init(
            requestID: request.id, remoteUUID: item.uuid, item: item, metadata: request.metadata,
            zeroRetentionMode: request.options.zeroRetentionMode == true, intelligenceRequested: request.options.intelligence == true,
            completedAt: completedAt, fakeThreshold: fakeThreshold, reusedFrom: reusedFrom
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
