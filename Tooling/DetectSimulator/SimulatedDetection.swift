import Foundation
import ResembleDetect
import TextEncodings

/// One detection the simulator is processing or has processed.
struct SimulatedDetection: Sendable {
    let uuid: String
    let mediaType: MediaType
    let scenario: SimulatedScenario
    let options: SubmittedOptions
    let sourceURL: String?
    let fileName: String
    let createdAt: Date
    var completesAt: Date
    /// When the intelligence report completes, when one was asked for.
    var intelligenceCompletesAt: Date?
    /// When a zero-retention file is purged.
    var purgesAt: Date?
    /// The uploaded file on disk, removed when the media would be deleted.
    var storedFile: URL?

    /// When the callback is due: once the detection and (by default) its intelligence are done; nil for a
    /// detection that never ends.
    var callbackDueAt: Date? {
        switch scenario.ending {
        case .completes, .fails: max(completesAt, intelligenceCompletesAt ?? completesAt)
        case .neverFinishes, .unknownStatus: nil
        }
    }

    private var isFake: Bool { scenario.isFake }

    /// The item as the API would show it at `now`.
    func item(at now: Date) -> JSONValue {
        let due = now >= completesAt
        let status: String = switch scenario.ending {
        case .completes: due ? "completed" : "processing"
        case .fails: due ? "failed" : "processing"
        case .neverFinishes: "processing"
        case .unknownStatus(let status): due ? status : "processing"
        }
        let completed = status == "completed"
        var item: [String: JSONValue] = [
            "uuid": .string(uuid),
            "media_type": .string(mediaType.description),
            "status": .string(status),
            "created_at": .string(ISO8601Timestamp.format(createdAt)),
            "updated_at": .string(ISO8601Timestamp.format(min(now, completed ? completesAt : now))),
            "visualize": .bool(options.visualize),
            "audio_source_tracing_enabled": .bool(options.audioSourceTracing),
            "use_ood_detector": .bool(options.useOODDetector),
            "extra_params": .object(options.useReverseSearch ? ["use_reverse_search": .bool(true)] : [:]),
            "zero_retention_mode": .bool(options.zeroRetentionMode),
            "file_deleted_at": purgesAt.flatMap { now >= $0 ? .string(ISO8601Timestamp.format($0)) : nil } ?? .null,
            "error_message": { if case .fails(let message) = scenario.ending, due { .string(message) } else { .null } }(),
            "metrics": .object([:]),
            "intelligence": intelligence(at: now),
        ]
        if options.zeroRetentionMode {
            item["url"] = .null
            item["audio_url"] = .null
            item["filename"] = .string(redactedFileName)
        } else {
            let url = JSONValue.string(sourceURL ?? "https://simulator.invalid/media/\(uuid)/\(fileName)")
            item["url"] = url
            item["audio_url"] = url
            item["filename"] = .string(fileName)
        }
        guard completed else { return .object(item) }
        item["duration"] = .string(mediaType == .image ? "0" : "5.2")
        switch mediaType {
        case .image:
            item["image_metrics"] = imageMetrics
        case .video:
            item["metrics"] = audioMetrics
            item["video_metrics"] = videoMetrics
        default:
            item["metrics"] = audioMetrics
            if options.audioSourceTracing && scenario.fakeAudio {
                item["audio_source_tracing"] = .object(["label": .string("resemble_ai"), "error_message": .null])
            }
        }
        return .object(item)
    }

    private var redactedFileName: String {
        let ext = APIFileRules.fileExtension(of: fileName).map { ".\($0)" } ?? ""
        return "redacted_" + uuid.replacingOccurrences(of: "-", with: "").prefix(32) + ext
    }

    private var windowScores: [JSONValue] {
        (scenario.fakeAudio ? ["0.91", "0.94", "0.89"] : ["0.07", "0.11", "0.05"]).map(JSONValue.string)
    }

    private var audioMetrics: JSONValue {
        .object([
            "image": .string(options.visualize ? "https://simulator.invalid/visualize/\(uuid).png" : ""),
            "label": .string(scenario.unreadableLabels ? SimulatedScenario.unreadableLabel : scenario.fakeAudio ? "fake" : "real"),
            "score": .array(windowScores),
            "consistency": .string("0.85"),
            "aggregated_score": .string(scenario.fakeAudio ? "0.92" : "0.08"),
        ])
    }

    private var imageMetrics: JSONValue {
        var metrics: [String: JSONValue] = [
            "ifl": .object(["score": .number(scenario.fakePicture ? 0.97 : 0.03), "heatmap": .string("https://simulator.invalid/heatmap/\(uuid).png")]),
            "type": .string("FinalResult"),
            "image": .string("https://simulator.invalid/image/\(uuid).png"),
            "label": .string(scenario.unreadableLabels ? SimulatedScenario.unreadableLabel : scenario.fakePicture ? "Fake" : "Real"),
            "score": .number(scenario.fakePicture ? 0.96 : 0.04),
            "children": .array([]),
        ]
        if options.useReverseSearch {
            metrics["reverse_image_search_sources"] = .array(scenario.fakePicture ? [.object([
                "url": .string("https://stock.example.com/ai-generated/"), "title": .string("stock.example.com"),
                "reason": .string("This image is listed as AI-generated."), "verdict": .string("known_fake"),
                "similarity": .number(0.98),
            ])] : [])
        }
        return .object(metrics)
    }

    private var videoMetrics: JSONValue {
        let conclusion = JSONValue.string(scenario.unreadableLabels ? SimulatedScenario.unreadableLabel : scenario.fakePicture ? "Fake" : "Real")
        let score = JSONValue.number(scenario.fakePicture ? 0.95 : 0.05)
        let segment = JSONValue.object([
            "type": .string("Segment"), "conclusion": conclusion, "score": score, "certainty": .number(0.995),
            "certainty (%)": .string("99.5"),
        ])
        let frame = JSONValue.object([
            "type": .string("ImageResult"), "conclusion": conclusion, "score": score, "certainty": .number(0.95),
            "certainty (%)": .string("95.0"), "timestamp": .number(0.23), "children": .array([segment]),
        ])
        return .object([
            "label": conclusion, "score": score, "certainty": .number(0.93), "treeview": .string("..."),
            "children": .array([.object([
                "type": .string("VideoResult"), "conclusion": conclusion, "score": score, "certainty": .number(0.9),
                "certainty (%)": .string("90.0"), "children": .array([frame]),
            ])]),
        ])
    }

    private func intelligence(at now: Date) -> JSONValue {
        guard options.intelligence, let doneAt = intelligenceCompletesAt else { return .null }
        let done = now >= doneAt
        return .object([
            "uuid": .string("intel-" + uuid),
            "status": .string(done ? "completed" : "processing"),
            "error_message": .null,
            "description": done ? .object([
                "speaker_info": .string("Adult speaker, neutral tone"),
                "language": .string("English"),
                "transcription": .string("This is a simulated recording."),
                "abnormalities": .string(isFake ? "Synthetic prosody detected" : "None"),
                "fraud": .object([
                    "type": .string(isFake ? "impersonation" : "none"), "confidence": .number(isFake ? 88 : 4),
                    "reasoning": .string("Simulated assessment"),
                ]),
            ]) : .null,
            "created_at": .string(ISO8601Timestamp.format(createdAt)),
            "detect_uuid": .string(uuid),
        ])
    }
}

/// The options of a submission, validated.
struct SubmittedOptions: Sendable {
    var callbackURL: String?
    var visualize = false
    var frameLength: Int?
    var intelligence = false
    var audioSourceTracing = false
    var useReverseSearch = false
    var useOODDetector = false
    var zeroRetentionMode = false
}
