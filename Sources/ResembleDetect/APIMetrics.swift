import Metrics

/// The API client's metrics, reported through swift-metrics to whatever backend the process bootstraps: every
/// request's duration and its outcome, by endpoint (the route's template, such as `GET /detect/{uuid}`).
package enum APIMetrics {
    /// Requests by `endpoint` and `status` (the HTTP status, `network_error`, or `error`).
    package static let requests = "detectq_api_requests_total"
    /// Request durations by `endpoint`, uploads included.
    package static let requestDuration = "detectq_api_request_duration_seconds"

    static func record(endpoint: String, status: String, duration: Duration) {
        Counter(label: requests, dimensions: [("endpoint", endpoint), ("status", status)]).increment()
        Timer(label: requestDuration, dimensions: [("endpoint", endpoint)]).record(duration: duration)
    }
}
