import Foundation

/// The multimodal intelligence report on a detection. It has its own status and may complete after the
/// detection itself.
package struct Intelligence: Sendable, Hashable, Decodable {
    /// The report's text, or its structured form.
    package enum Description: Sendable, Hashable {
        case text(String)
        case structured(StructuredDescription)
    }

    package var uuid: String?
    /// `processing`, `completed` or `failed`; absent in the shortest examples, where the report is complete.
    package var status: DetectionStatus?
    package var errorMessage: String?
    package var description: Description?
    package var createdAt: Date?
    package var detectUUID: String?

    /// True when the report is final: its status says completed, or it carries a description and no status.
    package var isCompleted: Bool {
        status.map { $0 == .completed } ?? (description != nil)
    }

    package init(from decoder: any Decoder) throws {
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
package struct StructuredDescription: Sendable, Hashable, Decodable {
    /// A fraud assessment: its kind, a confidence from 0 to 100, and the reasoning.
    package struct Fraud: Sendable, Hashable, Decodable {
        package var type: String?
        package var confidence: Double?
        package var reasoning: String?

        package init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyCodingKey.self)
            type = container.lenientString(AnyCodingKey("type"))
            confidence = container.lenientDouble(AnyCodingKey("confidence"))
            reasoning = container.lenientString(AnyCodingKey("reasoning"))
        }
    }

    /// Every field as sent (`speaker_info`, `language`, `transcription`, `liveness`, …).
    package var fields: [String: JSONValue]
    package var fraud: Fraud?

    package var speakerInfo: JSONValue? { fields["speaker_info"] }
    package var language: JSONValue? { fields["language"] }
    package var dialect: JSONValue? { fields["dialect"] }
    package var emotion: JSONValue? { fields["emotion"] }
    package var speakingStyle: JSONValue? { fields["speaking_style"] }
    package var context: JSONValue? { fields["context"] }
    package var message: JSONValue? { fields["message"] }
    package var abnormalities: JSONValue? { fields["abnormalities"] }
    package var transcription: JSONValue? { fields["transcription"] }
    package var translation: JSONValue? { fields["translation"] }
    package var misinformation: JSONValue? { fields["misinformation"] }
    package var liveness: JSONValue? { fields["liveness"] }
    package var digitallyAltered: JSONValue? { fields["digitally_altered"] }

    package init(from decoder: any Decoder) throws {
        fields = try [String: JSONValue](from: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        fraud = container.lenient(Fraud.self, AnyCodingKey("fraud"))
    }
}
