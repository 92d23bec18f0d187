import Foundation
import Postgres

/// A detection request as a producer inserts it, for the commands that enqueue on a user's behalf
/// (`detectq enqueue`, `detectq demo`). Programs insert with their own SQL; this writes the same plain
/// INSERT, naming only the columns given, so every other column takes the default the schema sets and
/// every check the schema makes applies.
package struct NewRequest: Sendable {
    /// Where the API gets the media: exactly one of the three media columns.
    package enum Media: Sendable, Hashable {
        /// `media_url`: a public HTTPS URL the API fetches.
        case url(String)
        /// `media_path`: a file under the worker's `DETECTQ_MEDIA_ROOT`.
        case path(String)
        /// `media_token`: a token from `POST /secure_uploads`.
        case token(String)
    }

    package var media: Media
    package var waitMode: String?
    package var priority: Int?
    package var maxAttempts: Int?
    package var idempotencyKey: String?
    /// The `metadata` column's JSON object, as text.
    package var metadata: String?
    package var runAt: Date?
    package var frameLength: Int?
    package var startRegion: Double?
    package var endRegion: Double?
    package var maxVideoSecs: Double?
    package var maxVideoFps: Double?
    package var modelTypes: String?
    package var pipeline: String?
    package var visualize = false
    package var intelligence = false
    package var audioSourceTracing = false
    package var useReverseSearch = false
    package var useOodDetector = false
    package var zeroRetentionMode = false
    /// The producer's W3C `traceparent`, whose trace the request's spans continue.
    package var traceparent: String?
    /// The lane (`queue`; nil: `default`) and the group within it (`group_key`).
    package var queue: String?
    package var groupKey: String?
    /// The media's SHA-256 as 64 hex characters (`media_sha256`), when the producer knows it.
    package var mediaSHA256: String?
    /// False: the request is detected by itself even when identical media was detected before (`reuse_verdict`).
    package var reuseVerdict = true

    package init(media: Media) {
        self.media = media
    }

    /// The INSERT of this request, returning its `id`.
    var insertion: PostgresQuery {
        var columns: [(String, any PostgresEncodable)] = []
        func add(_ column: String, _ value: (any PostgresEncodable)?) {
            if let value { columns.append((column, value)) }
        }
        switch media {
        case .url(let url): add("media_url", url)
        case .path(let path): add("media_path", path)
        case .token(let token): add("media_token", token)
        }
        add("wait_mode", waitMode)
        add("priority", priority)
        add("max_attempts", maxAttempts)
        add("idempotency_key", idempotencyKey)
        add("metadata", metadata.map { PostgresJSON(text: $0) })
        add("run_at", runAt)
        add("frame_length", frameLength)
        add("start_region", startRegion)
        add("end_region", endRegion)
        add("max_video_secs", maxVideoSecs)
        add("max_video_fps", maxVideoFps)
        add("model_types", modelTypes)
        add("pipeline", pipeline)
        add("traceparent", traceparent)
        add("queue", queue)
        add("group_key", groupKey)
        add("media_sha256", mediaSHA256)
        if !reuseVerdict { add("reuse_verdict", false) }
        let flags = [
            ("visualize", visualize), ("intelligence", intelligence), ("audio_source_tracing", audioSourceTracing),
            ("use_reverse_search", useReverseSearch), ("use_ood_detector", useOodDetector), ("zero_retention_mode", zeroRetentionMode),
        ]
        for (column, flag) in flags where flag {
            add(column, true)
        }
        let sql = "INSERT INTO detectq.requests (\(columns.map(\.0).joined(separator: ", "))) VALUES ("
            + (1...columns.count).map { "$\($0)" }.joined(separator: ", ") + ") RETURNING id"
        return PostgresQuery(sql: sql, parameters: columns.map(\.1))
    }
}

extension RequestStore {
    /// Inserts `requests` in order, each by its own INSERT as a producer would; returns their new ids. A row
    /// the schema refuses throws the database's error, which names the constraint.
    package func enqueue(_ requests: [NewRequest]) async throws -> [Int] {
        var ids: [Int] = []
        for request in requests {
            ids.append(try await pool.query(request.insertion)[0].decode("id", as: Int.self))
        }
        return ids
    }
}
