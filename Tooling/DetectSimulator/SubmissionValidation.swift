import Foundation
import ResembleDetect

/// A request the simulated API refuses, with the status and the API's error body.
struct SimulatorRejection: Error, Sendable {
    var status: Int
    var message: String
    var field: String?
    /// Fields of the error body besides `success` and `message` (402's `error_code`, `error`, `details`).
    var extra: [String: JSONValue] = [:]

    static func badRequest(_ message: String, field: String? = nil) -> SimulatorRejection {
        SimulatorRejection(status: 400, message: message, field: field)
    }

    /// The 402 the API answers when the team's account has no credit left (FACTS.md: `error_code`, `error`,
    /// `message`, `details`).
    static let outOfCredit = SimulatorRejection(
        status: 402, message: "Your account does not have enough credits to run this detection", field: nil,
        extra: ["error_code": .string("insufficient_credits"), "error": .string("Insufficient credits"),
                "details": .object(["required": .number(1), "available": .number(0)])]
    )

    /// The 403 the API answers when the key may not use a product the request asked for.
    static func forbidden(product: String) -> SimulatorRejection {
        SimulatorRejection(status: 403, message: "Your API key does not have access to \(product)", field: nil)
    }

    var body: JSONValue {
        var object: [String: JSONValue] = extra.merging(["success": .bool(false), "message": .string(message)]) { $1 }
        if let field { object["errors"] = .object([field: .array([.string(message)])]) }
        return .object(object)
    }
}

/// The validation the API's pages describe for `POST /detect`.
enum SubmissionValidation {
    static let booleanFields = ["visualize", "intelligence", "audio_source_tracing", "use_reverse_search",
                                "use_ood_detector", "zero_retention_mode"]
    static let nonNegativeFields = ["start_region", "end_region", "max_video_secs", "max_video_fps"]

    /// Checks the options (JSON values, or multipart fields as strings) and returns them typed.
    static func options(_ fields: [String: JSONValue]) throws(SimulatorRejection) -> SubmittedOptions {
        var options = SubmittedOptions()
        var flags: [String: Bool] = [:]
        for name in booleanFields {
            switch fields[name] {
            case nil, .null?: continue
            case .bool(let value)?: flags[name] = value
            case .string(let text)? where ["true", "false"].contains(text.lowercased()): flags[name] = text.lowercased() == "true"
            default: throw .badRequest("\(name) must be a boolean", field: name)
            }
        }
        options.visualize = flags["visualize"] ?? false
        options.intelligence = flags["intelligence"] ?? false
        options.audioSourceTracing = flags["audio_source_tracing"] ?? false
        options.useReverseSearch = flags["use_reverse_search"] ?? false
        options.useOODDetector = flags["use_ood_detector"] ?? false
        options.zeroRetentionMode = flags["zero_retention_mode"] ?? flags["privacy_mode"] ?? false

        if let frame = fields["frame_length"], frame != .null {
            guard let value = frame.doubleValue, value.rounded() == value, (1...4).contains(value) else {
                throw .badRequest("frame_length must be an integer from 1 to 4", field: "frame_length")
            }
            options.frameLength = Int(value)
        }
        var numbers: [String: Double] = [:]
        for name in nonNegativeFields {
            guard let value = fields[name], value != .null else { continue }
            guard let number = value.doubleValue, number >= 0, number.isFinite else {
                throw .badRequest("\(name) must be a non-negative number", field: name)
            }
            numbers[name] = number
        }
        if let start = numbers["start_region"], let end = numbers["end_region"], end <= start {
            throw .badRequest("end_region must be greater than start_region", field: "end_region")
        }
        if let model = fields["model_types"], model != .null {
            guard let text = model.stringValue, ["image", "talking_head"].contains(text) else {
                throw .badRequest("model_types must be image or talking_head", field: "model_types")
            }
        }
        if let callback = fields["callback_url"], callback != .null {
            guard let text = callback.stringValue, let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased()),
                  url.host != nil
            else { throw .badRequest("callback_url must be an http or https URL", field: "callback_url") }
            options.callbackURL = text
        }
        return options
    }

    /// Checks a public media URL and returns the media type its extension names.
    static func mediaURL(_ value: JSONValue) throws(SimulatorRejection) -> (url: String, mediaType: MediaType) {
        guard let text = value.stringValue, let url = URL(string: text), url.scheme?.lowercased() == "https",
              let host = url.host, !host.isEmpty
        else { throw .badRequest("url must be a public HTTPS URL", field: "url") }
        let ext = url.pathExtension.lowercased()
        if ext.isEmpty { return (text, .audio) }
        guard let mediaType = APIFileRules.mediaType(forExtension: ext) else {
            throw .badRequest("url must point to a supported media file; .\(ext) is not supported", field: "url")
        }
        return (text, mediaType)
    }

    /// Checks an uploaded file against the file constraints.
    static func file(_ upload: StreamedFile, capped: Bool) throws(SimulatorRejection) -> MediaType {
        guard let ext = APIFileRules.fileExtension(of: upload.fileName), let mediaType = APIFileRules.mediaType(forExtension: ext) else {
            throw .badRequest(
                "Unsupported file type. Allowed extensions: " + APIFileRules.allowedExtensions.sorted().map { ".\($0)" }.joined(separator: ", "),
                field: "file"
            )
        }
        guard APIFileRules.accepts(contentType: upload.contentType, forExtension: ext) else {
            throw .badRequest("Content type \(upload.contentType) does not match the .\(ext) extension", field: "file")
        }
        guard upload.size > 0 else { throw .badRequest("The uploaded file is empty", field: "file") }
        if capped && upload.size > APIFileRules.directUploadLimit {
            throw .badRequest(
                "File exceeds the 150 MB direct-upload limit. Upload larger files with the Secure Uploads API "
                    + "(POST /api/v2/secure_uploads) and submit the returned token as media_token.",
                field: "file"
            )
        }
        return mediaType
    }

}
