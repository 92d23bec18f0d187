/// The optional parameters of `POST /detect` (`submit-detection-job.md`, "Optional Parameters"), plus the
/// older pages' `pipeline` and `max_video_fps`. Nil means "not sent": the API applies its default.
package struct DetectionOptions: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Where the API posts the result. It carries a secret, so `description` never shows it.
    package var callbackURL: String?
    package var visualize: Bool?
    /// Window size in seconds, 1–4.
    package var frameLength: Int?
    package var startRegion: Double?
    package var endRegion: Double?
    package var maxVideoSecs: Double?
    package var maxVideoFPS: Double?
    /// `image` or `talking_head`.
    package var modelTypes: String?
    /// Such as `general->facial->object`.
    package var pipeline: String?
    package var intelligence: Bool?
    package var audioSourceTracing: Bool?
    package var useReverseSearch: Bool?
    package var useOODDetector: Bool?
    package var zeroRetentionMode: Bool?

    package init(
        callbackURL: String? = nil, visualize: Bool? = nil, frameLength: Int? = nil, startRegion: Double? = nil,
        endRegion: Double? = nil, maxVideoSecs: Double? = nil, maxVideoFPS: Double? = nil, modelTypes: String? = nil,
        pipeline: String? = nil, intelligence: Bool? = nil, audioSourceTracing: Bool? = nil,
        useReverseSearch: Bool? = nil, useOODDetector: Bool? = nil, zeroRetentionMode: Bool? = nil
    ) {
        self.callbackURL = callbackURL
        self.visualize = visualize
        self.frameLength = frameLength
        self.startRegion = startRegion
        self.endRegion = endRegion
        self.maxVideoSecs = maxVideoSecs
        self.maxVideoFPS = maxVideoFPS
        self.modelTypes = modelTypes
        self.pipeline = pipeline
        self.intelligence = intelligence
        self.audioSourceTracing = audioSourceTracing
        self.useReverseSearch = useReverseSearch
        self.useOODDetector = useOODDetector
        self.zeroRetentionMode = zeroRetentionMode
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case callbackURL = "callback_url"
        case visualize
        case frameLength = "frame_length"
        case startRegion = "start_region"
        case endRegion = "end_region"
        case maxVideoSecs = "max_video_secs"
        case maxVideoFPS = "max_video_fps"
        case modelTypes = "model_types"
        case pipeline
        case intelligence
        case audioSourceTracing = "audio_source_tracing"
        case useReverseSearch = "use_reverse_search"
        case useOODDetector = "use_ood_detector"
        case zeroRetentionMode = "zero_retention_mode"
    }

    /// The options as multipart form fields, in a fixed order: booleans as `true`/`false`, numbers as text.
    package var formFields: [(name: String, value: String)] {
        var fields: [(String, String)] = []
        func add(_ key: CodingKeys, _ value: String?) {
            if let value { fields.append((key.rawValue, value)) }
        }
        func number(_ value: Double?) -> String? {
            value.map { $0.rounded() == $0 && abs($0) < 1e15 ? String(Int($0)) : String($0) }
        }
        add(.callbackURL, callbackURL)
        add(.visualize, visualize.map(String.init))
        add(.frameLength, frameLength.map(String.init))
        add(.startRegion, number(startRegion))
        add(.endRegion, number(endRegion))
        add(.maxVideoSecs, number(maxVideoSecs))
        add(.maxVideoFPS, number(maxVideoFPS))
        add(.modelTypes, modelTypes)
        add(.pipeline, pipeline)
        add(.intelligence, intelligence.map(String.init))
        add(.audioSourceTracing, audioSourceTracing.map(String.init))
        add(.useReverseSearch, useReverseSearch.map(String.init))
        add(.useOODDetector, useOODDetector.map(String.init))
        add(.zeroRetentionMode, zeroRetentionMode.map(String.init))
        return fields
    }

    /// The optional products this request asks for, by their API names: a key may lack access to any of them.
    package var optionalProducts: [String] {
        [("intelligence", intelligence), ("audio_source_tracing", audioSourceTracing), ("use_reverse_search", useReverseSearch),
         ("use_ood_detector", useOODDetector)].compactMap { $0.1 == true ? $0.0 : nil }
    }

    package var description: String {
        formFields.map { $0.name == CodingKeys.callbackURL.rawValue ? "\($0.name)=[redacted]" : "\($0.name)=\($0.value)" }
            .joined(separator: " ")
    }
}

/// What `POST /detect` analyses: exactly one of a public URL, a secure-upload token, or a local file.
package enum MediaSource: Sendable {
    case url(String)
    /// A token from `POST /secure_uploads`; a secret, never logged.
    case mediaToken(String)
    case file(MediaFile)
}
