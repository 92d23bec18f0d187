/// The audio verdict (`item.metrics`): per-window scores and their aggregate. For a video it is the
/// verdict on its sound track. Empty (`{}`) until the detection completes, and for images.
package struct AudioMetrics: Sendable, Hashable, Decodable {
    package var label: String?
    /// One score per analysed window (`frame_length` seconds each).
    package var score: [Double]?
    package var consistency: Double?
    package var aggregatedScore: Double?
    /// A visualisation image's URL, when `visualize` was asked for ("" otherwise).
    package var image: String?

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        label = container.lenientString(AnyCodingKey("label"))
        score = container.lenientDoubles(AnyCodingKey("score"))
        consistency = container.lenientDouble(AnyCodingKey("consistency"))
        aggregatedScore = container.lenientDouble(AnyCodingKey("aggregated_score"))
        image = container.lenientString(AnyCodingKey("image"))
    }
}

/// The image verdict (`item.image_metrics`).
package struct ImageMetrics: Sendable, Hashable, Decodable {
    /// Image forgery localisation: a score and a heatmap's URL.
    package struct ForgeryLocalization: Sendable, Hashable, Decodable {
        package var score: Double?
        package var heatmap: String?

        package init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            score = container.lenientDouble(AnyCodingKey("score"))
            heatmap = container.lenientString(AnyCodingKey("heatmap"))
        }
    }

    /// A web page holding a matching image, found by reverse image search.
    package struct ReverseSearchSource: Sendable, Hashable, Decodable {
        package var url: String?
        package var title: String?
        package var reason: String?
        /// Such as `known_fake`.
        package var verdict: String?
        package var similarity: Double?

        package init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            url = container.lenientString(AnyCodingKey("url"))
            title = container.lenientString(AnyCodingKey("title"))
            reason = container.lenientString(AnyCodingKey("reason"))
            verdict = container.lenientString(AnyCodingKey("verdict"))
            similarity = container.lenientDouble(AnyCodingKey("similarity"))
        }
    }

    package var type: String?
    package var label: String?
    package var score: Double?
    package var image: String?
    package var ifl: ForgeryLocalization?
    /// Per-detector results; their shape is not documented, so they are kept as JSON.
    package var children: [JSONValue]?
    package var reverseImageSearchSources: [ReverseSearchSource]?

    package init(from decoder: any Decoder) throws {
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
package struct VideoMetrics: Sendable, Hashable, Decodable {
    /// One node of the result tree (`VideoResult`, `ImageResult`, `Segment`, …).
    package struct Node: Sendable, Hashable, Decodable {
        package var type: String?
        package var conclusion: String?
        package var score: Double?
        package var certainty: Double?
        /// `"certainty (%)"`, sent as text such as `"90.0"`.
        package var certaintyPercent: Double?
        /// Seconds into the video, for frame results.
        package var timestamp: Double?
        package var children: [Node]

        package init(from decoder: any Decoder) throws {
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

    package var label: String?
    package var score: Double?
    package var certainty: Double?
    package var treeview: String?
    package var children: [Node]

    package init(from decoder: any Decoder) throws {
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
package struct AudioSourceTracing: Sendable, Hashable, Decodable {
    /// Such as `resemble_ai`, `elevenlabs` or `real`.
    package var label: String?
    package var errorMessage: String?

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        label = container.lenientString(AnyCodingKey("label"))
        errorMessage = container.lenientString(AnyCodingKey("error_message"))
    }
}
