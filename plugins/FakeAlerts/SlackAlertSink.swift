import DetectQueue
import Foundation
import ResembleDetect
import TextEncodings

/// Delivers fake alerts to a Slack incoming webhook (`DETECTQ_SLACK_WEBHOOK_URL`) as a readable message in
/// Slack's block format: the verdict, score, media type, request and the producer's metadata.
package struct SlackAlertSink: AlertSink {
    package let name: String
    package let url: String
    package let kind: AlertKind

    package init(url: String, kind: AlertKind = .detectionFake) {
        self.url = url
        self.kind = kind
        name = FakeAlertEvent.processorName(sink: "alert.slack", kind: kind)
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        await AlertDelivery.post(try Self.message(FakeAlertEvent(outcome, kind: kind), kind: kind), to: url)
    }

    /// The Slack message: a fallback `text` and `blocks` (a header, the verdict's fields, the metadata).
    static func message(_ event: FakeAlertEvent, kind: AlertKind) throws -> String {
        let score = event.score.map { String(format: "%.2f", $0) } ?? "n/a"
        let summary = switch kind {
        case .detectionFake: "Fake \(event.mediaType ?? "media") detected (request \(event.requestID), score \(score))"
        case .detectionUnreadable: "Unreadable verdict on \(event.mediaType ?? "media") needs review (request \(event.requestID), label \(event.label ?? "none"))"
        default: "\(kind.title) for request \(event.requestID) (\(event.mediaType ?? "media"))"
        }
        func field(_ label: String, _ value: String) -> JSONValue {
            .object(["type": .string("mrkdwn"), "text": .string("*\(label)*\n\(value)")])
        }
        var blocks: [JSONValue] = [
            .object(["type": .string("header"), "text": .object(["type": .string("plain_text"), "text": .string(":rotating_light: \(summary)")])]),
            .object(["type": .string("section"), "fields": .array([
                field("Verdict", event.label ?? (event.event == AlertKind.detectionFake.rawValue ? "fake" : "none")), field("Score", score), field("Media type", event.mediaType ?? "unknown"),
                field("Request", "\(event.requestID)"), field("Detection", "`\(event.remoteUUID)`"), field("Detected at", event.detectedAt),
            ])]),
        ]
        if let metadata = event.metadata, metadata != .object([:]) {
            let encoder = JSONText.encoder()
            let text = String(decoding: try encoder.encode(metadata), as: UTF8.self)
            blocks.append(.object(["type": .string("section"), "text": .object(["type": .string("mrkdwn"), "text": .string("*Metadata*\n```\(text.prefix(2_800))```")])]))
        }
        blocks.append(.object(["type": .string("context"), "elements": .array([.object(["type": .string("mrkdwn"), "text": .string("event `\(event.eventID)` · detectq")])])]))
        let encoder = JSONText.encoder()
        return String(decoding: try encoder.encode(JSONValue.object(["text": .string(summary), "blocks": .array(blocks)])), as: UTF8.self)
    }
}
