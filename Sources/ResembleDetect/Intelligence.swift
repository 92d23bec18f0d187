import Foundation

/// The multimodal intelligence report on a detection. It has its own status and may complete after the
/// detection itself.
public struct Intelligence: Sendable, Hashable, Decodable {
    /// The report's text, or its structured form.
    public enum Description: Sendable, Hashable {
        case text(String)
        case structured(StructuredDescription)
    }

    public var uuid: String?
    /// `processing`, `completed` or `failed`; absent in the shortest examples, where the report is complete.
    public var status: DetectionStatus?
    public var errorMessage: String?
    public var description: Description?
    public var createdAt: Date?
    public var detectUUID: String?

    /// True when the report is final: its status says completed, or it carries a description and no status.
    public var isCompleted: Bool {
        status.map { $0 == .completed } ?? (description != nil)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        uuid = container.lenientString(AnyCodingKey("uuid"))
        status = container.lenientString(AnyCodingKey("status")).map(DetectionStatus.init)
        errorMessage = container.lenientString(AnyCodingKey("error_message"))
        createdAt = container.lenientDate(AnyCodingKey("created_at"))
        detectUUID = container.lenientString(AnyCodingKey("detect_uuid"))
        if let text = container.lenientString(AnyCodingKey("description")) {
            description = .text(text)
        } else if let structured = container.lenient(StructuredDescription.self, AnyCodingKey("description")) {
            description = .structured(structured)
        }
    }
}

/// The structured form of an intelligence report. Most fields are prose or small objects whose shape varies,
/// so they are kept as JSON; the fraud assessment is typed.
public struct StructuredDescription: Sendable, Hashable, Decodable {
    /// A fraud assessment: its kind, a confidence from 0 to 100, and the reasoning.
    public struct Fraud: Sendable, Hashable, Decodable {
        public var type: String?
        public var confidence: Double?
        public var reasoning: String?

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            type = container.lenientString(AnyCodingKey("type"))
            confidence = container.lenientDouble(AnyCodingKey("confidence"))
            reasoning = container.lenientString(AnyCodingKey("reasoning"))
        }
    }

    /// Every field as sent (`speaker_info`, `language`, `transcription`, `liveness`, …).
    public var fields: [String: JSONValue]
    public var fraud: Fraud?

    public var speakerInfo: JSONValue? { fields["speaker_info"] }
    public var language: JSONValue? { fields["language"] }
    public var dialect: JSONValue? { fields["dialect"] }
    public var emotion: JSONValue? { fields["emotion"] }
    public var speakingStyle: JSONValue? { fields["speaking_style"] }
    public var context: JSONValue? { fields["context"] }
    public var message: JSONValue? { fields["message"] }
    public var abnormalities: JSONValue? { fields["abnormalities"] }
    public var transcription: JSONValue? { fields["transcription"] }
    public var translation: JSONValue? { fields["translation"] }
    public var misinformation: JSONValue? { fields["misinformation"] }
    public var liveness: JSONValue? { fields["liveness"] }
    public var digitallyAltered: JSONValue? { fields["digitally_altered"] }

    public init(from decoder: any Decoder) throws {
        fields = try [String: JSONValue](from: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        fraud = container.lenient(Fraud.self, AnyCodingKey("fraud"))
    }
}
