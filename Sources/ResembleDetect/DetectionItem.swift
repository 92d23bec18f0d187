import Foundation
import TextEncodings

/// A detection as the API reports it (`item` in its responses and callbacks): a typed view of the fields
/// the pages document, and the item's exact JSON text, so that nothing the API sends is lost.
package struct DetectionItem: Sendable, Hashable {
    package var uuid: String
    package var mediaType: MediaType?
    /// Absent in the shortest responses (the asynchronous acknowledgement).
    package var status: DetectionStatus?
    package var metrics: AudioMetrics?
    package var imageMetrics: ImageMetrics?
    package var videoMetrics: VideoMetrics?
    package var audioSourceTracing: AudioSourceTracing?
    /// The report, or (with `?experts=true`) the first of the experts' reports.
    package var intelligence: Intelligence?
    /// Every expert's report, when `?experts=true` made `intelligence` an array.
    package var expertIntelligence: [Intelligence]
    package var retention: RetentionStatus
    package var duration: Double?
    package var errorMessage: String?
    package var visualize: Bool?
    package var audioSourceTracingEnabled: Bool?
    package var useOODDetector: Bool?
    /// Deprecated by the API, still sent by older responses.
    package var pipeline: String?
    package var extraParams: JSONValue?
    package var createdAt: Date?
    package var updatedAt: Date?
    /// The item exactly as the API sent it.
    package var rawJSON: String

    /// Decodes an item from its JSON text.
    package init(json: String) throws {
        self = try JSONText.decode(Decoded.self, from: Data(json.utf8)).item
        rawJSON = json
    }

    /// The request's label (see `Verdict`): the label of a track that reads fake, else the primary track's.
    package var label: String? { verdict().label }

    /// The score that goes with `label`.
    package var aggregatedScore: Double? { verdict().score }

    /// True when any track's label reads fake in any case (`fake`, `Fake`, `Likely Fake`); nil without a label.
    package var isFake: Bool? { verdict().isFake }

    /// The audio track's own label (`metrics`).
    package var audioLabel: String? { metrics?.label }

    /// The picture's own label (`video_metrics` or `image_metrics`).
    package var visualLabel: String? { verdict().label(of: .visual) }

    /// What a label says, by the contract's vocabulary (REFERENCE.md section 6, "A verdict nobody can read is
    /// raised, not dropped"), in any case, with `_`, `-` and runs of spaces read as one space.
    package static func reading(ofLabel label: String) -> LabelReading {
        let words = label.lowercased().split(whereSeparator: { $0 == " " || $0 == "_" || $0 == "-" || $0.isNewline || $0 == "\t" })
        let phrase = words.joined(separator: " ")
        if LabelReading.fakeLabels.contains(phrase) { return .fake }
        if LabelReading.realLabels.contains(phrase) { return .real }
        return .unreadable
    }

    /// Whether a label names a fake by the contract's vocabulary (`fake`, `likely fake`, `deepfake`,
    /// `synthetic`, `spoof`, in any case).
    package static func labelReadsFake(_ label: String) -> Bool {
        reading(ofLabel: label) == .fake
    }

    /// True once the detection has finished, well or badly. The pages' own `Prefer: wait` answers carry no
    /// `status`: one that carries a verdict is final.
    package var isFinished: Bool {
        switch status {
        case .completed?, .failed?: true
        case nil: trackVerdicts.contains { $0.label != nil }
        case .processing?, .other?: false
        }
    }

    /// Decodes the typed view; `init(json:)` adds the raw text.
    private struct Decoded: Decodable {
        var item: DetectionItem

        init(from decoder: any Decoder) throws {
            item = try DetectionItem(decoder: decoder)
        }
    }

    private init(decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        func key(_ name: String) -> AnyCodingKey { AnyCodingKey(name) }
        guard let uuid = container.lenientString(key("uuid")), !uuid.isEmpty else {
            throw DecodingError.keyNotFound(key("uuid"), .init(codingPath: [], debugDescription: "the item has no uuid"))
        }
        self.uuid = uuid
        mediaType = container.lenientString(key("media_type")).map(MediaType.init)
        status = container.lenientString(key("status")).map(DetectionStatus.init)
        metrics = container.lenient(AudioMetrics.self, key("metrics"))
        imageMetrics = container.lenient(ImageMetrics.self, key("image_metrics"))
        videoMetrics = container.lenient(VideoMetrics.self, key("video_metrics"))
        audioSourceTracing = container.lenient(AudioSourceTracing.self, key("audio_source_tracing"))
        if let experts = container.lenient([Intelligence].self, key("intelligence")) {
            expertIntelligence = experts
        } else {
            expertIntelligence = container.lenient(Intelligence.self, key("intelligence")).map { [$0] } ?? []
        }
        intelligence = expertIntelligence.first
        retention = try RetentionStatus(from: decoder)
        duration = container.lenientDouble(key("duration"))
        errorMessage = container.lenientString(key("error_message"))
        visualize = container.lenientBool(key("visualize"))
        audioSourceTracingEnabled = container.lenientBool(key("audio_source_tracing_enabled"))
        useOODDetector = container.lenientBool(key("use_ood_detector"))
        pipeline = container.lenientString(key("pipeline"))
        extraParams = container.lenient(JSONValue.self, key("extra_params"))
        createdAt = container.lenientDate(key("created_at"))
        updatedAt = container.lenientDate(key("updated_at"))
        rawJSON = ""
    }
}

/// The kind of media a detection analysed.
package enum MediaType: Sendable, Hashable, CustomStringConvertible {
    case audio, video, image
    /// A kind the pages do not name yet, kept as sent.
    case other(String)

    package init(_ text: String) {
        switch text.lowercased() {
        case "audio": self = .audio
        case "video": self = .video
        case "image": self = .image
        default: self = .other(text)
        }
    }

    package var description: String {
        switch self {
        case .audio: "audio"
        case .video: "video"
        case .image: "image"
        case .other(let text): text
        }
    }
}

/// Where a detection (or an intelligence report) is in its processing.
package enum DetectionStatus: Sendable, Hashable, CustomStringConvertible {
    case processing, completed, failed
    /// A status the pages do not name, kept as sent.
    case other(String)

    package init(_ text: String) {
        switch text.lowercased() {
        case "processing": self = .processing
        case "completed": self = .completed
        case "failed": self = .failed
        default: self = .other(text)
        }
    }

    package var description: String {
        switch self {
        case .processing: "processing"
        case .completed: "completed"
        case .failed: "failed"
        case .other(let text): text
        }
    }
}

/// The zero-retention (older: privacy mode) fields of an item: whether the media is to be purged, and when
/// it was. A non-null `file_deleted_at` is the purge signal.
package struct RetentionStatus: Sendable, Hashable, Decodable {
    /// `zero_retention_mode`, or the older `privacy_mode` when only that is sent.
    package var zeroRetentionMode: Bool?
    package var mediaRedacted: Bool?
    package var mediaDeleted: Bool?
    package var fileDeletedAt: Date?
    /// Null in zero-retention mode.
    package var url: String?
    package var audioURL: String?
    /// Tokenized (`redacted_<token>.<ext>`) in zero-retention mode.
    package var filename: String?

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        zeroRetentionMode = container.lenientBool(AnyCodingKey("zero_retention_mode"))
            ?? container.lenientBool(AnyCodingKey("privacy_mode"))
        mediaRedacted = container.lenientBool(AnyCodingKey("media_redacted"))
        mediaDeleted = container.lenientBool(AnyCodingKey("media_deleted"))
        fileDeletedAt = container.lenientDate(AnyCodingKey("file_deleted_at"))
        url = container.lenientString(AnyCodingKey("url"))
        audioURL = container.lenientString(AnyCodingKey("audio_url"))
        filename = container.lenientString(AnyCodingKey("filename"))
    }

    /// Decodes the retention fields from a JSON object's text (an item, or the pages' purge example).
    package init(json: String) throws {
        self = try JSONText.decode(RetentionStatus.self, from: Data(json.utf8))
    }

    /// True once the API says the media file has been purged.
    package var isPurged: Bool { fileDeletedAt != nil || mediaDeleted == true }
}

/// What a track's label says: fake, real, or nothing a screen may act on.
package enum LabelReading: Sendable, Hashable {
    case fake
    case real
    /// A label outside the vocabulary: read neither way, and raised for review.
    case unreadable

    /// The labels that read fake.
    static let fakeLabels: Set<String> = ["fake", "likely fake", "deepfake", "synthetic", "spoof"]
    /// The labels that read real.
    static let realLabels: Set<String> = ["real", "likely real", "not fake", "genuine", "authentic", "bona fide"]
}
