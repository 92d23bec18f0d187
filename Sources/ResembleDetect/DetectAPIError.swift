import Foundation
import InputNumbers
import TextEncodings

/// Everything that can go wrong talking to the Detect API, sorted by what the caller should do about it.
/// Descriptions never contain the API token, media tokens or callback URLs.
package enum DetectAPIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Worth trying again later: a network failure, a timeout, 408, 429 or a 5xx. `retryAfter` is the
    /// server's `Retry-After`, when it sent one.
    case retryable(String, status: Int?, retryAfter: Duration?)
    /// The API refused our credentials (401) or their access (403): a configuration fault, not the request's.
    case authentication(status: Int, message: String)
    /// The account has no credit left (402): nothing is wrong with the request, which can be sent once
    /// credit is back; `message` is the API's own.
    case outOfCredit(message: String)
    /// The API refused this request for good (400, 404, 413, 422, …); `message` is the API's own.
    case permanent(status: Int, message: String)
    /// The API answered with something that is not the documented shape.
    case malformedResponse(String)
    /// The media breaks the API's file constraints, found before any byte was sent.
    case invalidMedia(String)

    package var description: String {
        switch self {
        case .retryable(let reason, let status, let retryAfter):
            var text = status.map { "HTTP \($0): \(reason)" } ?? reason
            if let retryAfter { text += " (retry after \(retryAfter.components.seconds)s)" }
            return text
        case .authentication(let status, let message):
            return "the API refused the token (HTTP \(status)): \(message)"
        case .outOfCredit(let message):
            return "the account is out of credit (HTTP 402): \(message)"
        case .permanent(let status, let message):
            return "the API rejected the request (HTTP \(status)): \(message)"
        case .malformedResponse(let reason):
            return "the API's response could not be read: \(reason)"
        case .invalidMedia(let reason):
            return reason
        }
    }

    /// The HTTP status the API answered with, when it answered.
    package var httpStatus: Int? {
        switch self {
        case .retryable(_, let status, _): status
        case .authentication(let status, _), .permanent(let status, _): status
        case .outOfCredit: 402
        case .malformedResponse, .invalidMedia: nil
        }
    }

    /// A short name for the kind of failure, for traces and metrics: never the message.
    package var kind: String {
        switch self {
        case .retryable: "retryable"
        case .authentication: "authentication"
        case .outOfCredit: "out_of_credit"
        case .permanent: "permanent"
        case .malformedResponse: "malformed_response"
        case .invalidMedia: "invalid_media"
        }
    }

    /// Classifies a non-2xx response by its status, with the message from its body.
    static func from(status: Int, body: [UInt8], retryAfter: String?, secrets: [String]) -> DetectAPIError {
        let message = apiMessage(in: body, secrets: secrets) ?? HTTPStatusText.reason(status)
        switch status {
        case 401, 403:
            return .authentication(status: status, message: message)
        case 402:
            return .outOfCredit(message: message)
        case 408, 429, 500...599:
            return .retryable(message, status: status, retryAfter: retryAfter.flatMap(parseRetryAfter))
        default:
            return .permanent(status: status, message: message)
        }
    }

    /// The API's error text: `message`, `error` and the field errors of `{success: false, …}`, secrets masked.
    static func apiMessage(in body: [UInt8], secrets: [String]) -> String? {
        guard case .object(let object)? = try? JSONText.decode(JSONValue.self, from: Data(body)) else {
            return nil
        }
        var parts: [String] = []
        if let message = object["message"]?.stringValue { parts.append(message) }
        if let error = object["error"]?.stringValue, !parts.contains(error) { parts.append(error) }
        if case .object(let fields)? = object["errors"] {
            for (field, value) in fields.sorted(by: { $0.key < $1.key }) {
                let texts: [String] = if case .array(let list) = value { list.compactMap(\.stringValue) } else { [value.stringValue ?? ""] }
                parts.append("\(field): \(texts.joined(separator: "; "))")
            }
        }
        guard !parts.isEmpty else { return nil }
        var text = parts.joined(separator: " — ")
        for secret in secrets where secret.count >= 4 {
            text = text.replacingOccurrences(of: secret, with: "[redacted]")
        }
        return String(text.prefix(1_000))
    }

    /// The longest `Retry-After` honoured; a longer one (or an absurd one such as `99999999999999999999`) is read as this.
    package static let longestRetryAfter = Duration.seconds(86_400)

    /// `Retry-After` as whole seconds or as an HTTP date, at most `longestRetryAfter`.
    static func parseRetryAfter(_ value: String) -> Duration? {
        InputNumbers.retryAfter(value, longest: longestRetryAfter)
    }
}

/// Short reasons for statuses whose body carried no message.
enum HTTPStatusText {
    static func reason(_ status: Int) -> String {
        switch status {
        case 400: "bad request"
        case 401: "unauthorized"
        case 402: "payment required (insufficient credit)"
        case 403: "forbidden"
        case 404: "not found"
        case 408: "request timeout"
        case 413: "payload too large"
        case 422: "unprocessable entity"
        case 429: "too many requests"
        case 500...599: "server error"
        default: "unexpected status"
        }
    }
}
