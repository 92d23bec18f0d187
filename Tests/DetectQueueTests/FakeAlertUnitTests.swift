import DetectQueue
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
import Testing

@Suite("Fake alert rules")
struct FakeAlertUnitTests {
    func outcome(label: String, score: String, metadata: String = "{}") throws -> DetectionOutcome {
        let item = try DetectionItem(json: """
            {"uuid": "u-1", "media_type": "audio", "status": "completed", "metrics": {"label": "\(label)", "aggregated_score": "\(score)"}}
            """)
        return DetectionOutcome(
            requestID: 7, remoteUUID: "u-1", item: item, metadata: PostgresJSON(text: metadata), zeroRetentionMode: false,
            intelligenceRequested: false, completedAt: Date(timeIntervalSince1970: 1_700_000_000)
        )
    }

    @Test func aFakeLabelOrAScoreAtTheThresholdAlerts() throws {
        let plain = FakeAlertPolicy()
        #expect(plain.isFake(try outcome(label: "Fake", score: "0.2")))
        #expect(!plain.isFake(try outcome(label: "real", score: "0.99")))
        let strict = FakeAlertPolicy(threshold: 0.8)
        #expect(strict.isFake(try outcome(label: "real", score: "0.8")))
        #expect(!strict.isFake(try outcome(label: "real", score: "0.79")))
    }

    @Test func theEventHasTheContractsFieldsAndAStableID() throws {
        let event = FakeAlertEvent(try outcome(label: "fake", score: "0.92", metadata: #"{"case": 881}"#))
        let first = try event.json()
        #expect(first == (try FakeAlertEvent(try outcome(label: "fake", score: "0.92", metadata: #"{"case": 881}"#)).json()), "a retry sends the same bytes")
        let fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(first.utf8))
        #expect(Set(fields.keys) == ["event", "event_id", "request_id", "remote_uuid", "media_type", "label", "score", "metadata", "detected_at"])
        #expect(fields["event_id"] == .string("detection.fake:u-1"))
        #expect(fields["detected_at"] == .string("2023-11-14T22:13:20.000Z"))
    }

    @Test func anOversizedEventDropsItsMetadataAndSaysSo() throws {
        let big = #"{"notes": ""# + String(repeating: "x", count: 10_000) + #""}"#
        let event = FakeAlertEvent(try outcome(label: "fake", score: "0.9", metadata: big))
        #expect(try event.json().utf8.count > 8_000)
        let trimmed = try JSONDecoder().decode([String: JSONValue].self, from: Data(try event.withoutMetadata.json().utf8))
        #expect(trimmed["metadata"] == nil && trimmed["metadata_truncated"] == .bool(true))
        #expect(trimmed["event_id"] == .string("detection.fake:u-1"))
    }

    @Test func theWebhookSignatureIsHMACSHA256OverTimestampDotBody() {
        let signature = WebhookAlertSink.signature(body: #"{"a":1}"#, secret: "secret", at: Date(timeIntervalSince1970: 1_700_000_000))
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        #expect(signature == "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686")
    }
}
