import Foundation
import Postgres
import ResembleDetect

/// Looks for the detection an earlier attempt created when its answer was lost (REFERENCE.md section 6): the API
/// has no idempotency key, so a submission cut off, timed out or killed may already have been billed.
///
/// It reads List Detects in pages of 1,000, each page on the shared budget, back to the time the request has
/// owed an answer since (`unanswered_since`) less a minute of clock skew, however busy the team account: it
/// collects matches from every item of a page, whatever their order, and stops after a page wholly older than
/// that cutoff (or the list's last page), at most `pageLimit` pages (`DETECTQ_LOST_ANSWER_SEARCH_PAGES`). A
/// page the API fails is asked again (a 429 through the shared pause, other faults with a short backoff); a
/// search that still cannot finish throws `Incomplete`, which is the API's trouble and costs the request
/// nothing. A `media_url` request matches by `url`; an upload by `filename`, since the worker names every upload
/// after its installation, request and attempt (`detectq-k3f9q-42-3.wav`); the options the item records must
/// agree with the request's. It answers only with a unique match that no other request holds. Zero-retention
/// detections redact `url` and `filename`, and a producer's own token names no file of ours: those are never
/// looked for here.
struct LostAnswerSearch: Sendable {
    let client: any DetectAPI
    let budget: APIBudget
    let store: any RequestStorage
    /// This deployment's name (`detectq.installation`), carried in upload names.
    let installation: String
    /// How many pages one search may read.
    let pageLimit: Int
    let workerID: String?

    /// How far before `unanswered_since` the list is read, for clocks that disagree.
    static let clockSkew: TimeInterval = 60
    /// Items per page: the most List Detects gives.
    static let pageSize = 1_000
    /// How often a page that fails (other than by a 429) is asked for before the search gives up for now.
    static let pageTries = 4

    /// The search could not read a page it needed; nothing is known of the detection yet.
    struct Incomplete: Error, CustomStringConvertible {
        let description: String
    }

    /// The name an upload of `request` carries in its attempt: `detectq-<installation>-<id>-<attempt>.<ext>`.
    static func uploadName(of request: DetectionRequest, installation: String, path: String) -> String {
        let ext = (path as NSString).pathExtension
        return "detectq-\(installation)-\(request.id)-\(request.attempt)" + (ext.isEmpty ? "" : ".\(ext)")
    }

    /// Whether the search can find anything for `request`.
    static func applies(to request: DetectionRequest) -> Bool {
        guard request.unansweredSince != nil, request.remoteUUID == nil, request.options.zeroRetentionMode != true else { return false }
        if case .token = request.media { return false }
        return true
    }

    /// Whether `item` is a detection one of `request`'s earlier attempts created, in this installation.
    static func matches(_ item: DetectionItem, _ request: DetectionRequest, installation: String) -> Bool {
        switch request.media {
        case .url(let url):
            guard item.retention.url == url else { return false }
        case .path:
            guard let name = item.retention.filename, name.hasPrefix("detectq-\(installation)-\(request.id)-") else { return false }
        case .token:
            return false
        }
        let options = request.options
        return (item.visualize ?? false) == (options.visualize ?? false)
            && (item.audioSourceTracingEnabled ?? false) == (options.audioSourceTracing ?? false)
            && (item.useOODDetector ?? false) == (options.useOODDetector ?? false)
            && (item.retention.zeroRetentionMode ?? false) == (options.zeroRetentionMode ?? false)
    }

    /// What a search came to.
    enum Finding: Equatable {
        /// The one detection an earlier attempt created, that no other request holds.
        case found(String)
        /// None (or more than one) was found; `reachedCutoff` says whether the search read back to its cutoff,
        /// so that nothing older than its start is left to find.
        case notFound(reachedCutoff: Bool)
    }

    /// The uuid of the one detection an earlier attempt of `request` created, if the API lists exactly one
    /// that no other request holds.
    func find(for request: DetectionRequest) async throws -> String? {
        if case .found(let uuid) = try await search(for: request) { return uuid }
        return nil
    }

    /// Searches for the detection an earlier attempt of `request` created.
    func search(for request: DetectionRequest) async throws -> Finding {
        guard Self.applies(to: request), let since = request.unansweredSince else { return .notFound(reachedCutoff: true) }
        let cutoff = since.addingTimeInterval(-Self.clockSkew)
        var candidates: [String] = []
        var reachedCutoff = false
        for page in 1...max(1, pageLimit) {
            let listed = try await read(page: page)
            var olderThanCutoff = 0
            for item in listed.items {
                if let created = item.createdAt, created < cutoff { olderThanCutoff += 1 }
                if Self.matches(item, request, installation: installation) { candidates.append(item.uuid) }
            }
            if olderThanCutoff == listed.items.count || page >= listed.pageCount {
                reachedCutoff = true
                break
            }
        }
        let held = try await store.remoteUUIDsHeld(candidates, byOtherThan: request.id)
        let free = Set(candidates).subtracting(held)
        if free.count == 1, let uuid = free.first { return .found(uuid) }
        return .notFound(reachedCutoff: reachedCutoff)
    }

    /// One page, asked again while the API fails it: a 429 waits out the shared pause, any other fault is
    /// asked again after a short backoff, `pageTries` times in all.
    private func read(page: Int) async throws -> DetectionPage {
        var delay = Duration.milliseconds(500)
        for tried in 1...Self.pageTries {
            do {
                return try await budget.call(by: workerID) { try await client.detections(page: page, pageSize: Self.pageSize) }
            } catch let error as DetectAPIError {
                guard case .retryable(_, _, let retryAfter) = error else {
                    if case .authentication = error { throw error }
                    throw Incomplete(description: "List Detects page \(page) failed: \(error)")
                }
                guard tried < Self.pageTries else {
                    throw Incomplete(description: "List Detects page \(page) failed \(tried) times: \(error)")
                }
                if let retryAfter { try await budget.throttled(retryAfter: retryAfter, by: workerID) }
                try await Task.sleep(for: delay)
                delay *= 2
            }
        }
        throw Incomplete(description: "List Detects page \(page) could not be read")
    }
}
