import DetectQueue
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
import Testing

@Suite("Fake alert rules")
struct FakeAlertUnitTests {
    func outcome(label: String, score: String, metadata: String = "{}", threshold: Double? = nil) throws -> DetectionOutcome {
        try outcome(#"{"uuid": "u-1", "media_type": "audio", "status": "completed", "metrics": {"label": "\#(label)", "aggregated_score": "\#(score)"}}"#,
                    metadata: metadata, threshold: threshold)
    }

    func outcome(_ item: String, metadata: String = "{}", threshold: Double? = nil) throws -> DetectionOutcome {
        DetectionOutcome(
            requestID: 7, remoteUUID: "u-1", item: try DetectionItem(json: item), metadata: PostgresJSON(text: metadata), zeroRetentionMode: false,
            intelligenceRequested: false, completedAt: Date(timeIntervalSince1970: 1_700_000_000), fakeThreshold: threshold
        )
    }

    @Test func aFakeLabelOrAScoreAtTheThresholdAlerts() throws {
        let fake = AlertKind.detectionFake
        #expect(fake.isDecided(by: try outcome(label: "Fake", score: "0.2")))
        #expect(!fake.isDecided(by: try outcome(label: "real", score: "0.99")))
        #expect(fake.isDecided(by: try outcome(label: "real", score: "0.8", threshold: 0.8)))
        #expect(!fake.isDecided(by: try outcome(label: "real", score: "0.79", threshold: 0.8)))
    }

    @Test func aClonedVoiceOverRealFootageIsAFakeNamingTheAudioTrack() throws {
        let video = try outcome("""
            {"uuid": "u-1", "media_type": "video", "status": "completed",
             "metrics": {"label": "fake", "aggregated_score": "0.91"},
             "video_metrics": {"label": "real", "score": 0.12, "certainty": 0.9, "children": []}}
            """)
        #expect(AlertKind.detectionFake.isDecided(by: video))
        #expect(video.verdict.fakeTracks == [.audio])
        #expect(video.verdict.label == "fake" && video.verdict.score == 0.91, "the verdict that made it fake")
        #expect(video.verdict.label(of: .visual) == "real" && video.verdict.label(of: .audio) == "fake")
        let fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(try FakeAlertEvent(video).json().utf8))
        #expect(fields["fake_tracks"] == .array([.string("audio")]))
        #expect(fields["label"] == .string("fake"))

        let real = try outcome("""
            {"uuid": "u-2", "media_type": "video", "status": "completed",
             "metrics": {"label": "real", "aggregated_score": "0.1"}, "video_metrics": {"label": "real", "score": 0.2}}
            """)
        #expect(!AlertKind.detectionFake.isDecided(by: real) && real.verdict.fakeTracks.isEmpty)
        #expect(real.verdict.label == "real" && real.verdict.score == 0.2, "the picture's verdict leads for a real video")
        let fakePicture = try outcome("""
            {"uuid": "u-3", "media_type": "image", "status": "completed", "image_metrics": {"label": "Fake", "score": 0.88}}
            """)
        #expect(fakePicture.verdict.fakeTracks == [.visual] && fakePicture.verdict.isFake == true)
        let bothAtThreshold = try outcome("""
            {"uuid": "u-4", "media_type": "video", "status": "completed",
             "metrics": {"label": "real", "aggregated_score": "0.75"}, "video_metrics": {"label": "real", "score": 0.8}}
            """, threshold: 0.7)
        #expect(bothAtThreshold.verdict.fakeTracks == [.visual, .audio])
    }

    @Test func theEventHasTheContractsFieldsAndAStableID() throws {
        let event = FakeAlertEvent(try outcome(label: "fake", score: "0.92", metadata: #"{"case": 881}"#))
        let first = try event.json()
        #expect(first == (try FakeAlertEvent(try outcome(label: "fake", score: "0.92", metadata: #"{"case": 881}"#)).json()), "a retry sends the same bytes")
        let fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(first.utf8))
        #expect(Set(fields.keys) == ["event", "event_id", "request_id", "remote_uuid", "media_type", "label", "score", "fake_tracks", "metadata", "detected_at"])
        #expect(fields["event_id"] == .string("detection.fake:u-1"))
        #expect(fields["detected_at"] == .string("2023-11-14T22:13:20.000Z"))
    }

    @Test func aReusedVerdictsAlertCarriesReusedFromAndAnEventOfItsOwn() throws {
        var reused = try outcome(label: "fake", score: "0.92")
        reused.reusedFrom = 3
        let fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(try FakeAlertEvent(reused).json().utf8))
        #expect(fields["reused_from"] == .number(3))
        #expect(fields["remote_uuid"] == .string("u-1"), "the detection the verdict came from")
        #expect(fields["event_id"] == .string("detection.fake:u-1:7"), "not the source's event: a sink deduplicating by event_id hears of both")
        #expect(FakeAlertEvent(reused).withoutMetadata.reusedFrom == 3)
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
