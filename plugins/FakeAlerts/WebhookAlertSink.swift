import Crypto
import DetectQueue
import Foundation
import TextEncodings

/// Delivers fake alerts to a generic webhook (`DETECTQ_ALERT_WEBHOOK_URL`): the alert's JSON, the header
/// `X-Detectq-Event-Id`, and, when `DETECTQ_ALERT_WEBHOOK_SECRET` is set,
/// `X-Detectq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.
package struct WebhookAlertSink: AlertSink {
    package let name: String
    package let url: String
    let secret: String?
    package let kind: AlertKind

    package init(url: String, secret: String?, kind: AlertKind = .detectionFake) {
        self.url = url
        self.secret = secret
        self.kind = kind
        name = FakeAlertEvent.processorName(sink: "alert.webhook", kind: kind)
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        let event = FakeAlertEvent(outcome, kind: kind)
        let body = try event.json()
        var headers = [("X-Detectq-Event-Id", event.eventID)]
        if let secret {
            headers.append(("X-Detectq-Signature", Self.signature(body: body, secret: secret, at: Date())))
        }
        return await AlertDelivery.post(body, to: url, headers: headers)
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 with the secret over "<t>.<body>">`.
    package static func signature(body: String, secret: String, at date: Date) -> String {
        let timestamp = Int(date.timeIntervalSince1970)
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "t=\(timestamp),v1=" + Hex.encode(mac)
    }
}
