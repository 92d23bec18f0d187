import DetectQueue
import Foundation

/// Delivers fake alerts inside the database: `pg_notify('detectq_alerts', <the alert's JSON>)`, for
/// consumers that `LISTEN detectq_alerts`. NOTIFY payloads are limited to 8000 bytes, so an alert whose
/// metadata would pass that is sent without it (`"metadata_truncated": true`).
package struct PgNotifyAlertSink: AlertSink {
    package let name: String
    package let kind: AlertKind
    static let channel = "detectq_alerts"
    package var effects: Set<PostProcessingEffect> { [.notify(channel: Self.channel)] }
    static let payloadLimit = 7_900

    package init(kind: AlertKind = .detectionFake) {
        self.kind = kind
        name = FakeAlertEvent.processorName(sink: "alert.pg_notify", kind: kind)
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        let event = FakeAlertEvent(outcome, kind: kind)
        var payload = try event.json()
        if payload.utf8.count > Self.payloadLimit { payload = try event.withoutMetadata.json() }
        try await context.notify(channel: Self.channel, payload: payload)
        return .done
    }
}
