import Crypto
import Foundation
import TextEncodings
import Tracing

/// The spans of one request (REFERENCE.md section 7): its claim, its submission (an HTTP client span), its wait,
/// its completion and each post-processor, all with `detectq.request_id`, and all in one trace whichever
/// worker makes them.
///
/// The trace is the producer's when it set `traceparent`; otherwise one of the request's own, with ids derived
/// from the request's id, so that a claim by one worker and a callback taken by another still meet. Spans go
/// to the process's tracer, a no-op until `detectq worker` bootstraps OpenTelemetry. No span carries a token,
/// a media token or a callback secret: only ids, modes, states, the API's host and path, and status codes.
package enum RequestTracing {
    /// The attribute every span of a request carries.
    package static let requestIDAttribute = "detectq.request_id"

    /// The context a request's spans are children of; with no tracer bootstrapped, the empty one, so that a
    /// worker without tracing derives and parses nothing per request.
    package static func context(requestID: Int, traceparent: String?) -> ServiceContext {
        var context = ServiceContext.topLevel
        guard !(InstrumentationSystem.tracer is NoOpTracer) else { return context }
        let carrier = ["traceparent": traceparent ?? derivedTraceparent(requestID: requestID)]
        InstrumentationSystem.instrument.extract(carrier, into: &context, using: TraceparentExtractor())
        return context
    }

    /// `00-<trace id>-<parent id>-01` from the first 24 bytes of SHA-256 over the request's id.
    static func derivedTraceparent(requestID: Int) -> String {
        let digest = Array(SHA256.hash(data: Data("detectq request \(requestID)".utf8)))
        return "00-\(Hex.encode(digest[0..<16]))-\(Hex.encode(digest[16..<24]))-01"
    }

    /// Runs `operation` in a span named `name`, a child of the request's context, tagged with its id.
    package static func withSpan<Result>(
        _ name: String, requestID: Int, traceparent: String?, ofKind kind: SpanKind = .internal,
        _ operation: (any Span) async throws -> Result
    ) async rethrows -> Result {
        try await Tracing.withSpan(name, context: context(requestID: requestID, traceparent: traceparent), ofKind: kind) { span in
            span.attributes[requestIDAttribute] = requestID
            return try await operation(span)
        }
    }

    /// Records a span that has already happened, from `start` to `end`.
    package static func recordSpan(
        _ name: String, requestID: Int, traceparent: String?, from start: Date, to end: Date,
        attributes: [String: any SpanAttributeConvertible] = [:]
    ) {
        guard !(InstrumentationSystem.tracer is NoOpTracer) else { return }
        let span = startSpan(name, at: instant(start), context: context(requestID: requestID, traceparent: traceparent))
        span.attributes[requestIDAttribute] = requestID
        for (key, value) in attributes { span.attributes[key] = value.toSpanAttribute() }
        span.end(at: instant(max(start, end)))
    }

    private static func instant(_ date: Date) -> DefaultTracerClock.Instant {
        DefaultTracerClock.Instant(nanosecondsSinceEpoch: UInt64(max(0, date.timeIntervalSince1970) * 1_000_000_000))
    }
}

/// Reads a `traceparent` out of the one-entry carrier `RequestTracing` builds.
private struct TraceparentExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
