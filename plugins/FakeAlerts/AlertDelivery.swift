import AsyncHTTPClient
import DetectQueue
import Foundation
import InputNumbers
import NIOCore

/// POSTs an alert to an HTTP sink and reads the answer the same way for every sink: any 2xx is done, a
/// 4xx other than 408 and 429 fails the task (the sink refuses it for good), anything else (408, 429, 5xx,
/// a network error) is retried, no sooner than the sink's `Retry-After`.
enum AlertDelivery {
    /// The longest `Retry-After` a sink can ask for; an absurd one waits this long.
    static let longestRetryAfter = Duration.seconds(3_600)

    static func post(_ body: String, to url: String, headers: [(String, String)] = []) async -> PostProcessingResult {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "detectq")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            _ = try await response.body.collect(upTo: 1 << 20)
        } catch {
            return .retry(after: .zero, reason: "the sink could not be reached: \(String(describing: error))")
        }
        let status = Int(response.status.code)
        switch status {
        case 200..<300:
            return .done
        case 408, 429, 500...:
            let retryAfter = response.headers.first(name: "Retry-After").flatMap { InputNumbers.retryAfter($0, longest: longestRetryAfter) }
            return .retry(after: retryAfter ?? .zero, reason: "the sink answered HTTP \(status)")
        default:
            return .failed(reason: "the sink refused the alert with HTTP \(status)")
        }
    }
}
