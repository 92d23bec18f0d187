import DetectQueue
import Foundation
import Postgres

/// One row of the request list.
struct RequestSummary: Sendable, Hashable {
    var id: Int
    var state: RequestState
    var media: String
    var mediaType: String?
    var submitPath: String?
    var label: String?
    var isFake: Bool?
    var score: Double?
    var attempt: Int
    var maxAttempts: Int
    var createdAt: Date
    var errorMessage: String?
    var metadata: String
    var queue: String
    var groupKey: String?
    var cursor: RequestListFilter.Cursor
}

/// A page of the request list and whether there are pages on either side of it.
struct RequestListPage: Sendable, Hashable {
    var rows: [RequestSummary]
    var hasNewer: Bool
    var hasOlder: Bool
}

/// The request list's SQL: the filters as parameters, newest first, a page at a time by keyset on
/// `(created_at, id)`. The indexes of migration 0004 serve it, so a page is fast at any depth of a large table.
enum RequestListQuery {
    /// The media source as the list shows it: a URL or a path, never a media token.
    static let mediaColumn = """
        CASE WHEN media_url IS NOT NULL THEN media_url WHEN media_path IS NOT NULL THEN media_path
             ELSE '(media token)' END
        """

    /// `created_at` to the microsecond, in UTC, whatever the session's DateStyle and TimeZone.
    static let cursorTime = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"

    /// The metadata search; the expression and the predicate are the index's (migration 0025), word for word,
    /// so the index serves it. The index holds only requests with metadata: an empty document matches no words.
    static let metadataDocument = #"jsonb_to_tsvector('simple'::regconfig, metadata, '["key", "string", "numeric"]')"#
    static let metadataGiven = "metadata <> '{}'::jsonb"

    static func page(_ filter: RequestListFilter, pageSize: Int = RequestListFilter.pageSize, on pool: PostgresConnectionPool) async throws -> RequestListPage {
        var builder = Builder()
        var conditions = builder.conditions(for: filter)
        let ascending: Bool
        switch filter.page {
        case .newest:
            ascending = false
        case .olderThan(let cursor):
            conditions.append("(created_at, id) < (\(builder.bind(cursor.createdAt))::timestamptz, \(builder.bind(cursor.id)))")
            ascending = false
        case .newerThan(let cursor):
            conditions.append("(created_at, id) > (\(builder.bind(cursor.createdAt))::timestamptz, \(builder.bind(cursor.id)))")
            ascending = true
        }
        let limit = builder.bind(pageSize + 1)
        let sql = """
            SELECT id, state::text AS state, \(mediaColumn) AS media, media_type, submit_path, label, is_fake,
                   aggregated_score, attempt, max_attempts, created_at, error_message,
                   left(metadata::text, 160) AS metadata, queue, group_key, \(cursorTime) AS cursor_at
            FROM detectq.requests
            \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
            ORDER BY created_at \(ascending ? "ASC" : "DESC"), id \(ascending ? "ASC" : "DESC")
            LIMIT \(limit)
            """
        let rows = try await pool.query(PostgresQuery(sql: sql, parameters: builder.parameters))
        var summaries = try rows.map { row in
            RequestSummary(
                id: try row.decode("id"), state: try row.decode("state"), media: try row.decode("media"),
                mediaType: try row.decode("media_type"), submitPath: try row.decode("submit_path"),
                label: try row.decode("label"), isFake: try row.decode("is_fake"), score: try row.decode("aggregated_score"),
                attempt: try row.decode("attempt"), maxAttempts: try row.decode("max_attempts"),
                createdAt: try row.decode("created_at"),
                errorMessage: try row.decode("error_message"), metadata: try row.decode("metadata"),
                queue: try row.decode("queue"), groupKey: try row.decode("group_key"),
                cursor: .init(id: try row.decode("id"), createdAt: try row.decode("cursor_at"))
            )
        }
        let more = summaries.count > pageSize
        if more { summaries.removeLast() }
        switch filter.page {
        case .newest:
            return RequestListPage(rows: summaries, hasNewer: false, hasOlder: more)
        case .olderThan:
            return RequestListPage(rows: summaries, hasNewer: true, hasOlder: more)
        case .newerThan:
            return RequestListPage(rows: summaries.reversed(), hasNewer: more, hasOlder: true)
        }
    }

    /// Collects SQL conditions and binds their values as `$n` parameters.
    struct Builder {
        private(set) var parameters: [any PostgresEncodable] = []

        mutating func bind(_ value: some PostgresEncodable) -> String {
            parameters.append(value)
            return "$\(parameters.count)"
        }

        mutating func conditions(for filter: RequestListFilter) -> [String] {
            var conditions: [String] = []
            if let state = filter.state { conditions.append("state = \(bind(state.rawValue))::detectq.request_state") }
            switch filter.verdict {
            case .fake?: conditions.append("is_fake")
            case .real?: conditions.append("NOT is_fake")
            case .needsReview?: conditions.append("state = 'completed' AND is_fake IS NULL")
            case nil: break
            }
            if let mediaType = filter.mediaType { conditions.append("media_type = \(bind(mediaType))") }
            if let submitPath = filter.submitPath { conditions.append("submit_path = \(bind(submitPath))") }
            if let queue = filter.queue { conditions.append("queue = \(bind(queue))") }
            if let group = filter.group { conditions.append("group_key = \(bind(group))") }
            if let from = filter.createdFrom { conditions.append("created_at >= \(bind(from))") }
            if let to = filter.createdBefore { conditions.append("created_at < \(bind(to))") }
            if let text = filter.text {
                conditions.append("\(RequestListQuery.metadataGiven) AND \(RequestListQuery.metadataDocument) @@ websearch_to_tsquery('simple', \(bind(text)))")
            }
            if let reason = filter.reason {
                conditions.append("state IN ('failed', 'retrying') AND coalesce(error_message, '(no reason)') = \(bind(reason))")
            }
            return conditions
        }
    }
}
