import DetectQueue
import Foundation
import ResembleDetect
import TextEncodings

/// Delivers fake alerts to PagerDuty's Events API v2 (`DETECTQ_PAGERDUTY_ROUTING_KEY`; endpoint
/// `DETECTQ_PAGERDUTY_URL`): a `trigger` event whose `dedup_key` is the alert's event id, so a retried
/// delivery never opens a second incident.
package struct PagerDutyAlertSink: AlertSink {
    package let name: String
    let routingKey: String
    package let url: String
    package let kind: AlertKind

    package static let defaultURL = "https://events.pagerduty.com/v2/enqueue"

    package init(routingKey: String, url: String = PagerDutyAlertSink.defaultURL, kind: AlertKind = .detectionFake) {
        self.routingKey = routingKey
        self.url = url
        self.kind = kind
        name = FakeAlertEvent.processorName(sink: "alert.pagerduty", kind: kind)
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        await AlertDelivery.post(try event(FakeAlertEvent(outcome, kind: kind)), to: url)
    }

    func event(_ alert: FakeAlertEvent) throws -> String {
        let score = alert.score.map { String(format: "%.2f", $0) } ?? "n/a"
        var details: [String: JSONValue] = [
            "request_id": .number(Double(alert.requestID)), "remote_uuid": .string(alert.remoteUUID),
            "label": alert.label.map(JSONValue.string) ?? .null, "score": alert.score.map(JSONValue.number) ?? .null,
            "media_type": alert.mediaType.map(JSONValue.string) ?? .null, "event_id": .string(alert.eventID),
        ]
        if let metadata = alert.metadata { details["metadata"] = metadata }
        let summary = if kind == .detectionFake || kind == .detectionUnreadable {
            "\(kind.title): \(alert.mediaType ?? "media") of request \(alert.requestID) labelled \(alert.label ?? "nothing") (score \(score))"
        } else {
            "\(kind.title) for request \(alert.requestID) (\(alert.remoteUUID))"
        }
        let body = JSONValue.object([
            "routing_key": .string(routingKey),
            "event_action": .string("trigger"),
            "dedup_key": .string(alert.eventID),
            "payload": .object([
                "summary": .string(summary),
                "source": .string("detectq"),
                "severity": .string(alert.event == AlertKind.detectionFake.rawValue ? "critical" : "warning"),
                "timestamp": .string(alert.detectedAt),
                "component": .string("deepfake-detection"),
                "custom_details": .object(details),
            ]),
        ])
        let encoder = JSONText.encoder()
        return String(decoding: try encoder.encode(body), as: UTF8.self)
    }
}
