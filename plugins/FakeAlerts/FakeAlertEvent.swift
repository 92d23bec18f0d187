import DetectQueue
import Foundation
import ResembleDetect
import TextEncodings

extension AlertKind {
    /// The detection found a fake (any track reads fake, or passes `DETECTQ_FAKE_THRESHOLD`; see `Verdict`).
    package static let detectionFake = AlertKind("detection.fake", title: "Deepfake detected")
    /// The detection completed with no verdict anyone can read (`is_fake` NULL): it needs a person's review.
    package static let detectionUnreadable = AlertKind("detection.unreadable", title: "Unreadable verdict needs review")
    /// The kinds the sinks alert on of their own accord, deciding from the outcome; any other kind they
    /// deliver only when a processor raises it.
    package static let decidedAtCompletion: [AlertKind] = [.detectionFake, .detectionUnreadable]

    /// Whether a sink of this kind alerts on `outcome` of its own accord.
    package func isDecided(by outcome: DetectionOutcome) -> Bool {
        switch self {
        case .detectionFake: outcome.verdict.isFake == true
        case .detectionUnreadable: outcome.verdict.isUnreadable
        default: false
        }
    }
}

/// A post-processor that delivers alerts of one kind to one sink; it applies on its own to fakes and to
/// unreadable verdicts, and to any other kind when a processor raises it.
package protocol AlertSink: PostProcessor {
    var kind: AlertKind { get }
}

extension AlertSink {
    package func applies(to outcome: DetectionOutcome) -> Bool {
        kind.isDecided(by: outcome)
    }

    package var deliveredAlert: AlertKind? { kind }
}

/// The alert every sink delivers (REFERENCE.md section 4): `event`, a stable `event_id`, the request, the
/// verdict, the producer's metadata and when the detection completed.
package struct FakeAlertEvent: Sendable, Encodable {
    package let event: String
    /// Stable across retries and sinks: the event's kind and the API's uuid for the detection.
    package let eventID: String
    package let requestID: Int
    package let remoteUUID: String
    package let mediaType: String?
    package let label: String?
    package let score: Double?
    /// The tracks that read fake (`audio`, `visual`): a cloned voice over real footage names `audio` only.
    package let fakeTracks: [String]
    package let metadata: JSONValue?
    package let metadataTruncated: Bool?
    package let detectedAt: String
    /// The request whose detection gave this one its verdict (identical media, never sent); absent otherwise.
    package let reusedFrom: Int?

    package init(_ outcome: DetectionOutcome, kind: AlertKind = .detectionFake) {
        event = kind.rawValue
        // A reused verdict's detection is its source's: the request, a different one, makes the event its own.
        eventID = "\(kind.rawValue):\(outcome.remoteUUID)" + (outcome.reusedFrom == nil ? "" : ":\(outcome.requestID)")
        reusedFrom = outcome.reusedFrom
        requestID = outcome.requestID
        remoteUUID = outcome.remoteUUID
        mediaType = outcome.item.mediaType?.description
        label = outcome.verdict.label
        score = outcome.verdict.score
        fakeTracks = outcome.verdict.fakeTracks.map(\.rawValue)
        metadata = outcome.metadata
        metadataTruncated = nil
        detectedAt = ISO8601Timestamp.format(outcome.completedAt)
    }

    private init(copying event: FakeAlertEvent) {
        self.event = event.event
        eventID = event.eventID
        requestID = event.requestID
        remoteUUID = event.remoteUUID
        mediaType = event.mediaType
        label = event.label
        score = event.score
        fakeTracks = event.fakeTracks
        metadata = nil
        metadataTruncated = true
        detectedAt = event.detectedAt
        reusedFrom = event.reusedFrom
    }

    /// The same event without its metadata, for channels with a size limit.
    package var withoutMetadata: FakeAlertEvent { FakeAlertEvent(copying: self) }

    /// The processor name of a sink for an alert kind: the sink's own name for fakes, `<sink>/<kind>` else.
    package static func processorName(sink: String, kind: AlertKind) -> String {
        kind == .detectionFake ? sink : "\(sink)/\(kind.rawValue)"
    }

    enum CodingKeys: String, CodingKey {
        case event
        case eventID = "event_id"
        case requestID = "request_id"
        case remoteUUID = "remote_uuid"
        case mediaType = "media_type"
        case label, score, metadata
        case fakeTracks = "fake_tracks"
        case metadataTruncated = "metadata_truncated"
        case detectedAt = "detected_at"
        case reusedFrom = "reused_from"
    }

    /// The event as JSON (keys sorted, so that a retry sends the same bytes).
    package func json() throws -> String {
        let encoder = JSONText.encoder()
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
