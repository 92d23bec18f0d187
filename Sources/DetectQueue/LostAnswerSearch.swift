import Foundation
import Postgres
import ResembleDetect

/// Looks for the detection an earlier attempt created when its answer was lost (CONTRACT section 6): the API
/// has no idempotency key, so a submission cut off, timed out or killed may already have been billed.
///
/// It reads List Detects newest first, spending the shared budget on each page, back to the time the
/// request has owed an answer since (`unanswered_since`) less a minute of clock skew. A `media_url` request
/// matches by `url`; an upload by `filename`, since the worker names every upload after its request and
/// attempt (`detectq-42-3.wav`); the options the item records must agree with the request's. It answers
/// only with a unique match that no other request holds. Zero-retention detections redact `url` and
/// `filename`, and a producer's own token names no file of ours: those are never looked for here.
struct LostAnswerSearch: Sendable {
    let client: any DetectAPI
    let budget: APIBudget
    let store: RequestStore

    /// How far before `unanswered_since` the list is read, for clocks that disagree.
    static let clockSkew: TimeInterval = 60
    /// Items per page, and how many pages one search may read before it gives up.
    static let pageSize = 100
    static let pageLimit = 10

    /// The name an upload of `request` carries in its attempt: `detectq-<id>-<attempt>.<ext>`.
    static func uploadName(of request: DetectionRequest, path: String) -> String {
        let ext = (path as NSString).pathExtension
        return "detectq-\(request.id)-\(request.attempt)" + (ext.isEmpty ? "" : ".\(ext)")
    }

    /// Whether the search can find anything for `request`.
    static func applies(to request: DetectionRequest) -> Bool {
        guard request.unansweredSince != nil, request.remoteUUID == nil, request.options.zeroRetentionMode != true else { return false }
        if case .token = request.media { return false }
        return true
    }

    /// Whether `item` is a detection one of `request`'s earlier attempts created.
    static func matches(_ item: DetectionItem, _ request: DetectionRequest) -> Bool {
        switch request.media {
        case .url(let url):
            guard item.retention.url == url else { return false }
        case .path:
            guard let name = item.retention.filename, name.hasPrefix("detectq-\(request.id)-") else { return false }
        case .token:
            return false
        }
        let options = request.options
        return (item.visualize ?? false) == (options.visualize ?? false)
            && (item.audioSourceTracingEnabled ?? false) == (options.audioSourceTracing ?? false)
            && (item.useOODDetector ?? false) == (options.useOODDetector ?? false)
            && (item.retention.zeroRetentionMode ?? false) == (options.zeroRetentionMode ?? false)
    }

    /// The uuid of the one detection an earlier attempt of `request` created, if the API lists exactly one
    /// that no other request holds.
    func find(for request: DetectionRequest) async throws -> String? {
        guard Self.applies(to: request), let since = request.unansweredSince else { return nil }
        let cutoff = since.addingTimeInterval(-Self.clockSkew)
        var candidates: [String] = []
        pages: for page in 1...Self.pageLimit {
            try await budget.acquire()
            let listed = try await client.detections(page: page, pageSize: Self.pageSize)
            for item in listed.items {
                if let created = item.createdAt, created < cutoff { break pages }
                if Self.matches(item, request) { candidates.append(item.uuid) }
            }
            if page >= listed.pageCount || listed.items.isEmpty { break }
        }
        let held = try await store.remoteUUIDsHeld(candidates, byOtherThan: request.id)
        let free = Set(candidates).subtracting(held)
        return free.count == 1 ? free.first : nil
    }
}
