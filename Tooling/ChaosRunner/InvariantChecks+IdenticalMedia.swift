import DetectQueue
import Foundation
import Postgres

/// The checks of REFERENCE.md section 9 ("Spending each detection once"): a reused verdict is the verdict of a
/// completed request with the same hash and options, and identical media with identical options is never
/// sent twice at once, only again after the earlier one failed or was cancelled.
extension InvariantChecks {
    /// The options forwarded to the API of the request `row` names, as one text to compare (a missing option as `-`).
    private static func options(of row: String) -> String {
        let columns = [
            "visualize", "intelligence", "audio_source_tracing", "use_reverse_search", "use_ood_detector", "zero_retention_mode",
            "frame_length", "start_region", "end_region", "max_video_secs", "max_video_fps", "model_types", "pipeline",
        ]
        return "concat_ws('|', " + columns.map { "coalesce(\(row).\($0)::text, '-')" }.joined(separator: ", ") + ")"
    }

    /// Every reused verdict came from a completed request that was detected itself, with the same hash and options,
    /// and is that request's verdict; and nothing of the reusing request reached the API.
    func reusedVerdictsComeFromTheirSource(_ rows: [Row]) async throws -> ChaosReport.Invariant {
        // The option lists are SQL of this file's own, not values: the query is written out, not interpolated.
        let checked = try await pool.query(PostgresQuery(sql: """
            SELECT r.id,
                   s.id IS NOT NULL AND s.state = 'completed' AND s.reused_from IS NULL AND s.media_sha256 = r.media_sha256
                   AND \(Self.options(of: "s")) = \(Self.options(of: "r"))
                   AND s.result = r.result AND s.is_fake IS NOT DISTINCT FROM r.is_fake AND r.state = 'completed' AS sound
            FROM detectq.requests r LEFT JOIN detectq.requests s ON s.id = r.reused_from
            WHERE r.metadata ? 'chaos' AND r.reused_from IS NOT NULL
            """, parameters: []))
        var unsound: [Int] = []
        for row in checked where try !row.decode("sound", as: Bool.self) { unsound.append(try row.decode("id")) }
        let reused = Set(try checked.map { try $0.decode("id", as: Int.self) })
        let sent = rows.filter { reused.contains($0.id) && !(detectionsByMedia[$0.mediaKey] ?? []).isEmpty }.map(\.id)
        return .init(
            name: "a reused verdict is a completed detection's with the same hash and options, and costs nothing",
            held: unsound.isEmpty && sent.isEmpty,
            detail: "\(reused.count) requests reused a verdict; \(unsound.count) from no such source"
                + (unsound.isEmpty ? "" : " (ids \(unsound.prefix(5)))") + "; \(sent.count) of them reached the API"
                + (sent.isEmpty ? "" : " (ids \(sent.prefix(5)))")
        )
    }

    /// Of the requests with identical media and options, each one sent to the API was sent after every earlier
    /// one sent had ended failed or cancelled (a failure's hand-over): never while one was in flight, and never
    /// after one completed (its verdict was there to reuse).
    func identicalMediaSentOneAtATime(_ rows: [Row]) async throws -> ChaosReport.Invariant {
        var groups: [String: [(id: Int, state: RequestState, endedAt: Date?)]] = [:]
        for row in try await pool.query(PostgresQuery(sql: """
            SELECT r.id, r.state, r.media_sha256 || '/' || \(Self.options(of: "r")) AS identity,
                   (SELECT max(e.at) FROM detectq.request_events e
                    WHERE e.request_id = r.id AND e.to_state IN ('completed', 'failed', 'cancelled')) AS ended_at
            FROM detectq.requests r
            WHERE r.metadata ? 'chaos' AND r.media_sha256 IS NOT NULL AND r.reuse_verdict
            """, parameters: [])) {
            groups[try row.decode("identity"), default: []].append(
                (try row.decode("id"), try row.decode("state"), try row.decode("ended_at"))
            )
        }
        let mediaKeys = Dictionary(uniqueKeysWithValues: rows.map { ($0.id, $0.mediaKey) })
        var repeatedGroups = 0
        var handOvers = 0
        var overlapping: [Int] = []
        for members in groups.values where members.count > 1 {
            repeatedGroups += 1
            // Each request sent, by when the API created its first detection.
            let sent = members.compactMap { member -> (id: Int, state: RequestState, endedAt: Date?, firstSent: Date)? in
                let created = (detectionsByMedia[mediaKeys[member.id] ?? ""] ?? []).compactMap { createdAt[$0] }
                return created.min().map { (member.id, member.state, member.endedAt, $0) }
            }.sorted { $0.firstSent < $1.firstSent }
            for (earlier, later) in zip(sent, sent.dropFirst()) {
                let handedOver = [.failed, .cancelled].contains(earlier.state) && (earlier.endedAt ?? .distantFuture) <= later.firstSent
                if handedOver { handOvers += 1 } else { overlapping.append(later.id) }
            }
        }
        return .init(
            name: "identical media and options never sent twice at once",
            held: overlapping.isEmpty,
            detail: "\(repeatedGroups) media repeated by later requests; \(handOvers) sent again after the earlier one failed or was "
                + "cancelled; \(overlapping.count) sent while an identical one was in flight or had completed"
                + (overlapping.isEmpty ? "" : " (ids \(overlapping.prefix(5)))")
        )
    }
}
