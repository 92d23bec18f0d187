import Foundation
@testable import ResembleDetect
import Testing
import TextEncodings

/// Every JSON example of the API's pages, copied byte for byte by scripts/extract-api-fixtures.py.
enum Fixtures {
    static let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures")

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }
}

@Suite("Every example in the API's pages decodes")
struct FixtureTests {
    @Test func everyPageExampleIsAFixture() {
        #expect(Fixtures.names.filter { $0.contains("-response-") }.count == 12)
        #expect(Fixtures.names.filter { $0.contains("-request-") }.count == 5)
    }

    @Test(arguments: Fixtures.names)
    func decodes(_ name: String) throws {
        let bytes = try Fixtures.bytes(name)
        let text = String(decoding: bytes, as: UTF8.self)
        if name.contains("-request-") {
            let options = try JSONDecoder().decode(DetectionOptions.self, from: Data(bytes))
            let source = try JSONDecoder().decode([String: JSONValue].self, from: Data(bytes))
            #expect((source["url"] != nil) != (source["media_token"] != nil), "exactly one media source")
            #expect(options.frameLength.map { (1...4).contains($0) } ?? true)
        } else if text.contains("\"items\"") {
            let page = try DetectResponses.page(from: bytes)
            #expect(!page.items.isEmpty)
        } else if text.contains("\"item\"") {
            let item = try DetectResponses.item(from: bytes)
            #expect(item.uuid == "DETECTION_UUID")
            #expect(item.rawJSON.hasPrefix("{") && item.rawJSON.hasSuffix("}"))
            #expect(try JSONDecoder().decode(JSONValue.self, from: Data(item.rawJSON.utf8))["uuid"] == .string("DETECTION_UUID"))
        } else {
            let retention = try RetentionStatus(json: text)
            #expect(retention.zeroRetentionMode == true)
        }
    }

    @Test func audioScoresArriveAsStrings() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-2.json"))
        #expect(item.mediaType == .audio)
        #expect(item.metrics?.score == [0.9, 0.8, 0.7])
        #expect(item.metrics?.consistency == 0.85)
        #expect(item.aggregatedScore == 0.80)
        #expect(item.label == "fake")
        #expect(item.isFake == true)
        #expect(item.duration == 5.2)
        guard case .text(let description)? = item.intelligence?.description else {
            Issue.record("the intelligence description is text")
            return
        }
        #expect(description.hasPrefix("Adult male speaker"))
        #expect(item.intelligence?.isCompleted == true)
        #expect(item.createdAt == ISO8601Timestamp.parse("2024-01-15T10:30:00Z"))
    }

    @Test func listScoresArriveAsNumbersAndOlderRetentionFields() throws {
        let page = try DetectResponses.page(from: Fixtures.bytes("list-detects-response-1.json"))
        #expect(page.page == 1 && page.pageCount == 5 && page.pageSize == 20 && page.totalCount == 87)
        let item = try #require(page.items.first)
        #expect(item.metrics?.score == [0.92, 0.88, 0.95])
        #expect(item.aggregatedScore == 0.92)
        #expect(item.isFake == false)
        #expect(item.status == .completed)
        #expect(item.retention.zeroRetentionMode == false, "read from the older privacy_mode")
        #expect(item.retention.mediaDeleted == false)
        #expect(item.retention.isPurged == false)
        #expect(item.videoMetrics == nil && item.imageMetrics == nil)
        #expect(item.createdAt == ISO8601Timestamp.parse("2025-12-10T15:30:00.000Z"))
        #expect(item.createdAt != nil)
    }

    @Test func imageVerdictAndReverseSearch() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-4.json"))
        #expect(item.mediaType == .image)
        #expect(item.label == "Fake")
        #expect(item.isFake == true)
        #expect(item.aggregatedScore == 1)
        #expect(item.imageMetrics?.ifl?.score == 1)
        #expect(item.imageMetrics?.reverseImageSearchSources?.map(\.verdict) == ["known_fake", "known_fake"])
        #expect(item.imageMetrics?.reverseImageSearchSources?.last?.similarity == 0.9)
        #expect(item.extraParams?["use_reverse_search"] == .bool(true))
        #expect(item.retention.fileDeletedAt == nil)
        #expect(item.intelligence?.detectUUID == "DETECTION_UUID")
    }

    @Test func videoTreeIsRecursive() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-5.json"))
        #expect(item.mediaType == .video)
        #expect(item.label == "Fake")
        #expect(item.aggregatedScore == 0.95)
        let video = try #require(item.videoMetrics?.children.first)
        #expect(video.type == "VideoResult" && video.certaintyPercent == 90)
        let frame = try #require(video.children.first)
        #expect(frame.timestamp == 0.23)
        #expect(frame.children.first?.type == "Segment")
        #expect(frame.children.first?.certaintyPercent == 99.5)
        #expect(item.metrics?.label == "fake", "the audio track's own verdict is kept")
    }

    @Test func zeroRetentionRedactsAndLaterPurges() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-6.json"))
        #expect(item.retention.zeroRetentionMode == true)
        #expect(item.retention.url == nil && item.retention.audioURL == nil)
        #expect(item.retention.filename == "redacted_abc123def4567890abcd1234.mp3")
        #expect(!item.retention.isPurged)
        let purged = try RetentionStatus(json: String(decoding: Fixtures.bytes("submit-detection-job-response-7.json"), as: UTF8.self))
        #expect(purged.fileDeletedAt == ISO8601Timestamp.parse("2024-01-15T10:31:00Z"))
        #expect(purged.isPurged)
    }

    /// The pages' `Prefer: wait` answers carry a verdict and no `status`: they are final, not polled again.
    @Test(arguments: [2, 3, 4, 5, 6])
    func aSynchronousAnswerWithAVerdictIsFinal(example: Int) throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-\(example).json"))
        #expect(item.label != nil)
        #expect(item.isFinished, "example \(example) has a verdict and status \(String(describing: item.status))")
    }

    @Test func aVideoKeepsEachTracksVerdictAndIsFakeWhenEitherIs() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-5.json"))
        #expect(item.audioLabel == "fake" && item.visualLabel == "Fake")
        #expect(item.verdict().fakeTracks == [.visual, .audio])
        let clonedVoice = try DetectionItem(json: """
            {"uuid": "u", "media_type": "video", "metrics": {"label": "fake", "aggregated_score": "0.9"},
             "video_metrics": {"label": "Real", "score": 0.1}}
            """)
        #expect(clonedVoice.isFake == true && clonedVoice.label == "fake" && clonedVoice.aggregatedScore == 0.9)
        #expect(clonedVoice.verdict().fakeTracks == [.audio] && clonedVoice.visualLabel == "Real")
        #expect(clonedVoice.isFinished)
    }

    @Test func theAsynchronousAcknowledgementHasNoVerdict() throws {
        let item = try DetectResponses.item(from: Fixtures.bytes("submit-detection-job-response-1.json"))
        #expect(item.label == nil && item.isFake == nil && item.aggregatedScore == nil)
        #expect(item.status == nil && !item.isFinished)
        #expect(item.intelligence == nil)
    }

    @Test func unknownFieldsAndOddShapesNeverFailTheItem() throws {
        let body = Array("""
            {"success": true, "item": {"uuid": "u-1", "status": "completed", "media_type": "hologram",
             "metrics": {"label": "Likely Fake", "score": ["0.7", 0.9, "n/a"], "aggregated_score": "0.81"},
             "intelligence": [{"status": "completed", "description": {"fraud": {"type": "impersonation", "confidence": "87"},
                                "transcription": "hello"}}, {"status": "processing"}],
             "future_field": {"nested": [1, 2, 3]}, "duration": null, "created_at": "not a date"}}
            """.utf8)
        let item = try DetectResponses.item(from: body)
        #expect(item.mediaType == .other("hologram"))
        #expect(item.isFake == true, "Likely Fake reads fake")
        #expect(item.metrics?.score == [0.7, 0.9])
        #expect(item.aggregatedScore == 0.81)
        #expect(item.expertIntelligence.count == 2)
        guard case .structured(let description)? = item.intelligence?.description else {
            Issue.record("a structured description")
            return
        }
        #expect(description.fraud?.confidence == 87)
        #expect(description.transcription == .string("hello"))
        #expect(item.rawJSON.contains("\"future_field\": {\"nested\": [1, 2, 3]}"))
        #expect(item.createdAt == nil)
    }

    @Test func malformedResponsesAreClassified() {
        #expect(throws: DetectAPIError.malformedResponse("the response has no item")) {
            try DetectResponses.item(from: Array("{\"success\": false}".utf8))
        }
        #expect(throws: DetectAPIError.self) { try DetectResponses.item(from: Array("not json".utf8)) }
        #expect(throws: DetectAPIError.self) { try DetectResponses.item(from: Array("{\"item\": {\"status\": 1}}".utf8)) }
    }

    @Test func labelsReadFakeInAnyCase() {
        for label in ["fake", "Fake", "FAKE", "Likely Fake", "likely_fake"] {
            #expect(DetectionItem.labelReadsFake(label), "\(label)")
        }
        for label in ["real", "Real", "Likely Real", "fakeless", ""] {
            #expect(!DetectionItem.labelReadsFake(label), "\(label)")
        }
    }
}
