import Foundation
import Postgres
import ResembleDetect

/// A row of `detectq.requests` as a worker sees it: what to submit, how to wait, and where it stands.
package struct DetectionRequest: Sendable, Hashable {
    /// Where the media comes from: exactly one of the three, as the database guarantees.
    package enum Media: Sendable, Hashable {
        case url(String)
        /// Relative to the worker's media root; not yet resolved or checked.
        case path(String)
        /// A token the producer obtained from `POST /secure_uploads`; a secret.
        case token(String)
    }

    /// How the worker waits for the verdict (the `wait_mode` column).
    package enum WaitMode: String, Sendable, Hashable, CaseIterable {
        case auto, sync, callback, poll
    }

    package let id: Int
    package var media: Media
    /// The lane it was enqueued in (`queue`), and its group within the lane, if any (`group_key`).
    package var queue: String
    package var groupKey: String?
    package var options: DetectionOptions
    package var waitMode: WaitMode
    package var state: RequestState
    /// The attempt in progress (1 for the first claim).
    package var attempt: Int
    package var maxAttempts: Int
    package var remoteUUID: String?
    package var secureUpload: SecureUploadToken?
    package var lockedBy: String?
    package var pollCount: Int
    package var acceptedAt: Date?
    package var metadata: PostgresJSON
    /// The producer's W3C `traceparent`, whose trace the request's spans continue.
    package var traceparent: String?
    /// The media's SHA-256, lower-case hex: the producer's, or the one the worker computed for a `media_path`.
    package var mediaSHA256: String?
    /// Whether the request may take the verdict of identical media and options (`reuse_verdict`).
    package var reuseVerdict: Bool
    /// Set by a claim: its hash (a producer's) is one no other request has, so it is sent without the lookup of
    /// identical media (`IdenticalMediaLookup.aloneAtClaim`).
    package var hashAlone = false
    /// Set by a claim: since when an earlier attempt has owed an answer (it may have reached the API, whose
    /// answer never arrived); nil when none does. Before such a request is sent again, its lost answer is sought.
    package var unansweredSince: Date?
    /// Set by a claim that spends the shared budget: the slot it reserved for this attempt's first API call.
    package var apiSlot: APISlot?

    /// Whether a failure of the current attempt may be retried.
    package var attemptsLeft: Bool { attempt < maxAttempts }

    /// The columns `init(row:)` reads.
    static let columns = """
        id, media_url, media_path, media_token, visualize, intelligence, audio_source_tracing, use_reverse_search,
        use_ood_detector, zero_retention_mode, frame_length, start_region::float8 AS start_region,
        end_region::float8 AS end_region, max_video_secs::float8 AS max_video_secs,
        max_video_fps::float8 AS max_video_fps, model_types, pipeline, wait_mode, state, attempt, max_attempts,
        remote_uuid, secure_upload_token, secure_upload_token_issued_at, locked_by, poll_count, accepted_at, metadata,
        traceparent, queue, group_key, media_sha256, reuse_verdict
        """

    /// The columns `init(row:)` reads, with the tokens withheld (a media token read as a placeholder, no secure
    /// upload): for commands that change a request's state and never send it, run under roles that may not read
    /// the tokens (`detectq_operator`).
    static let columnsWithoutTokens = columns
        .replacingOccurrences(of: "media_token,", with: "CASE WHEN media_url IS NULL AND media_path IS NULL THEN '(withheld)' END AS media_token,")
        .replacingOccurrences(
            of: "secure_upload_token, secure_upload_token_issued_at,",
            with: "NULL::text AS secure_upload_token, NULL::timestamptz AS secure_upload_token_issued_at,"
        )

    /// A request not read from a row: a claimed, unsent attempt of `media` (the search for lost answers is
    /// tested on these).
    init(id: Int, media: Media, options: DetectionOptions = .init(), attempt: Int = 1, maxAttempts: Int = 8) {
        self.id = id
        self.media = media
        queue = "default"
        self.options = options
        waitMode = .auto
        state = .submitting
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        pollCount = 0
        metadata = PostgresJSON(text: "{}")
        reuseVerdict = true
    }

    init(row: PostgresRow) throws {
        id = try row.decode("id")
        if let url = try row.decode("media_url", as: String?.self) {
            media = .url(url)
        } else if let path = try row.decode("media_path", as: String?.self) {
            media = .path(path)
        } else {
            media = .token(try row.decode("media_token", as: String.self))
        }
        queue = try row.decode("queue")
        groupKey = try row.decode("group_key")
        func flag(_ column: String) throws -> Bool? {
            try row.decode(column, as: Bool.self) ? true : nil
        }
        options = DetectionOptions(
            visualize: try flag("visualize"), frameLength: try row.decode("frame_length"),
            startRegion: try row.decode("start_region"), endRegion: try row.decode("end_region"),
            maxVideoSecs: try row.decode("max_video_secs"), maxVideoFPS: try row.decode("max_video_fps"),
            modelTypes: try row.decode("model_types"), pipeline: try row.decode("pipeline"),
            intelligence: try flag("intelligence"), audioSourceTracing: try flag("audio_source_tracing"),
            useReverseSearch: try flag("use_reverse_search"), useOODDetector: try flag("use_ood_detector"),
            zeroRetentionMode: try flag("zero_retention_mode")
        )
        waitMode = try row.decode("wait_mode")
        state = try row.decode("state")
        attempt = try row.decode("attempt")
        maxAttempts = try row.decode("max_attempts")
        remoteUUID = try row.decode("remote_uuid")
        if let token = try row.decode("secure_upload_token", as: String?.self),
           let issuedAt = try row.decode("secure_upload_token_issued_at", as: Date?.self) {
            secureUpload = SecureUploadToken(token: token, issuedAt: issuedAt)
        }
        lockedBy = try row.decode("locked_by")
        pollCount = try row.decode("poll_count")
        acceptedAt = try row.decode("accepted_at")
        metadata = try row.decode("metadata")
        traceparent = try row.decode("traceparent")
        mediaSHA256 = try row.decode("media_sha256")
        reuseVerdict = try row.decode("reuse_verdict")
    }
}

extension DetectionRequest.WaitMode: PostgresEncodable, PostgresDecodable {}
