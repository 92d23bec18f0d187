/// The audio verdict (`item.metrics`): per-window scores and their aggregate. For a video it is the
/// verdict on its sound track. Empty (`{}`) until the detection completes, and for images.
public struct AudioMetrics: Sendable, Hashable, Decodable {
    public var label: String?
    /// One score per analysed window (`frame_length` seconds each).
    public var score: [Double]?
    public var consistency: Double?
    public var aggregatedScore: Double?
    /// A visualisation image's URL, when `visualize` was asked for ("" otherwise).
    public var image: String?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        label = container.lenientString(AnyCodingKey("label"))
        score = container.lenientDoubles(AnyCodingKey("score"))
        consistency = container.lenientDouble(AnyCodingKey("consistency"))
        aggregatedScore = container.lenientDouble(AnyCodingKey("aggregated_score"))
        image = container.lenientString(AnyCodingKey("image"))
    }
}

/// The image verdict (`item.image_metrics`).
public struct ImageMetrics: Sendable, Hashable, Decodable {
    /// Image forgery localisation: a score and a heatmap's URL.
    public struct ForgeryLocalization: Sendable, Hashable, Decodable {
        public var score: Double?
        public var heatmap: String?

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            score = container.lenientDouble(AnyCodingKey("score"))
            heatmap = container.lenientString(AnyCodingKey("heatmap"))
        }
    }

    /// A web page holding a matching image, found by reverse image search.
    public struct ReverseSearchSource: Sendable, Hashable, Decodable {
        public var url: String?
        public var title: String?
        public var reason: String?
        /// Such as `known_fake`.
        public var verdict: String?
        public var similarity: Double?

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            url = container.lenientString(AnyCodingKey("url"))
            title = container.lenientString(AnyCodingKey("title"))
            reason = container.lenientString(AnyCodingKey("reason"))
            verdict = container.lenientString(AnyCodingKey("verdict"))
            similarity = container.lenientDouble(AnyCodingKey("similarity"))
        }
    }

    public var type: String?
    public var label: String?
    public var score: Double?
    public var image: String?
    public var ifl: ForgeryLocalization?
    /// Per-detector results; their shape is not documented, so they are kept as JSON.
    public var children: [JSONValue]?
    public var reverseImageSearchSources: [ReverseSearchSource]?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        type = container.lenientString(AnyCodingKey("type"))
        label = container.lenientString(AnyCodingKey("label"))
        score = container.lenientDouble(AnyCodingKey("score"))
        image = container.lenientString(AnyCodingKey("image"))
        ifl = container.lenient(ForgeryLocalization.self, AnyCodingKey("ifl"))
        children = container.lenient([JSONValue].self, AnyCodingKey("children"))
        reverseImageSearchSources = container.lenient([ReverseSearchSource].self, AnyCodingKey("reverse_image_search_sources"))
    }
}

/// The video verdict (`item.video_metrics`): an overall label and a tree of results per video, frame and
/// segment.
public struct VideoMetrics: Sendable, Hashable, Decodable {
    /// One node of the result tree (`VideoResult`, `ImageResult`, `Segment`, …).
    public struct Node: Sendable, Hashable, Decodable {
        public var type: String?
        public var conclusion: String?
        public var score: Double?
        public var certainty: Double?
        /// `"certainty (%)"`, sent as text such as `"90.0"`.
        public var certaintyPercent: Double?
        /// Seconds into the video, for frame results.
        public var timestamp: Double?
        public var children: [Node]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            type = container.lenientString(AnyCodingKey("type"))
            conclusion = container.lenientString(AnyCodingKey("conclusion"))
            score = container.lenientDouble(AnyCodingKey("score"))
            certainty = container.lenientDouble(AnyCodingKey("certainty"))
            certaintyPercent = container.lenientDouble(AnyCodingKey("certainty (%)"))
            timestamp = container.lenientDouble(AnyCodingKey("timestamp"))
            children = container.lenient([Node].self, AnyCodingKey("children")) ?? []
        }
    }

    public var label: String?
    public var score: Double?
    public var certainty: Double?
    public var treeview: String?
    public var children: [Node]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        label = container.lenientString(AnyCodingKey("label"))
        score = container.lenientDouble(AnyCodingKey("score"))
        certainty = container.lenientDouble(AnyCodingKey("certainty"))
        treeview = container.lenientString(AnyCodingKey("treeview"))
        children = container.lenient([Node].self, AnyCodingKey("children")) ?? []
    }
}

/// Where synthetic audio came from (`item.audio_source_tracing`), present when audio is labelled fake and
/// tracing was asked for.
public struct AudioSourceTracing: Sendable, Hashable, Decodable {
    /// Such as `resemble_ai`, `elevenlabs` or `real`.
    public var label: String?
    public var errorMessage: String?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        label = container.lenientString(AnyCodingKey("label"))
        errorMessage = container.lenientString(AnyCodingKey("error_message"))
    }
}
