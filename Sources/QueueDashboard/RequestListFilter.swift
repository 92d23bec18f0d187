import DetectQueue
import Foundation
import TextEncodings

/// The request list's filters and page, read from its query string. Every value is checked here; a value
/// that cannot be read is an error naming the field, never a guess.
struct RequestListFilter: Sendable, Hashable {
    /// Fake or real, as the stored verdict says, or completed with no verdict anyone can read.
    enum Verdict: String, Sendable, Hashable, CaseIterable {
        case fake, real
        /// Completed with `is_fake` NULL: raised as `detection.unreadable` for a person to look at.
        case needsReview = "needs_review"
    }

    /// Which page: the newest, the one older than a row, or the one newer than a row (keyset pagination on
    /// `(created_at, id)`, so a page costs the same at any depth and rows inserted meanwhile never shift it).
    enum Page: Sendable, Hashable {
        case newest
        case olderThan(Cursor)
        case newerThan(Cursor)
    }

    /// A row's place in the list: its id and its `created_at` to the microsecond in UTC, written
    /// `<id>@<created_at>` in links.
    struct Cursor: Sendable, Hashable {
        var id: Int
        var createdAt: String

        var text: String { "\(id)@\(createdAt)" }

        init(id: Int, createdAt: String) {
            self.id = id
            self.createdAt = createdAt
        }

        init?(_ text: String) {
            let parts = text.split(separator: "@", maxSplits: 1)
            guard parts.count == 2, let id = Int(parts[0]), id > 0,
                  (try? /\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00/.wholeMatch(in: parts[1])) != nil
            else { return nil }
            self.init(id: id, createdAt: String(parts[1]))
        }
    }

    static let mediaTypes = ["audio", "video", "image"]
    static let submitPaths = SubmitPath.allCases.map(\.rawValue)
    static let pageSize = 50

    var state: RequestState?
    var verdict: Verdict?
    var mediaType: String?
    var submitPath: String?
    /// The requests of one queue (CONTRACT section 8).
    var queue: String?
    /// The requests of one `group_key`, exactly as written.
    var group: String?
    var createdFrom: Date?
    var createdBefore: Date?
    /// Words to find in the metadata's keys and values (PostgreSQL web-search syntax: `"a phrase"`, `or`, `-word`).
    var text: String?
    /// An exact `error_message`: the requests of one failure group.
    var reason: String?
    var page: Page = .newest

    /// A field that could not be read, in words.
    struct Invalid: Error, Sendable, Hashable, CustomStringConvertible {
        let description: String
    }

    init() {}

    init(query: [String: String]) throws(Invalid) {
        func value(_ name: String) -> String? {
            query[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
        }
        func oneOf(_ name: String, _ allowed: [String]) throws(Invalid) -> String? {
            guard let text = value(name) else { return nil }
            guard allowed.contains(text) else { throw Invalid(description: "\(name) must be one of \(allowed.joined(separator: ", "))") }
            return text
        }
        state = try oneOf("state", RequestState.allCases.map(\.rawValue)).flatMap(RequestState.init)
        verdict = try oneOf("verdict", Verdict.allCases.map(\.rawValue)).flatMap(Verdict.init)
        mediaType = try oneOf("media_type", Self.mediaTypes)
        submitPath = try oneOf("submit_path", Self.submitPaths)
        if let name = value("queue") {
            guard QueueSettings.isValidName(name) else { throw Invalid(description: "queue must be 1 to 63 of a-z, 0-9, _, - and .") }
            queue = name
        }
        if let key = value("group") {
            guard key.count <= 200 else { throw Invalid(description: "group must be at most 200 characters (a group_key)") }
            group = key
        }
        createdFrom = try Self.time(value("from"), field: "from")
        createdBefore = try Self.time(value("to"), field: "to")
        text = value("q")
        reason = query["reason"]
        if let older = value("before") {
            guard let cursor = Cursor(older) else { throw Invalid(description: "before must be a position from a list link") }
            page = .olderThan(cursor)
        } else if let newer = value("after") {
            guard let cursor = Cursor(newer) else { throw Invalid(description: "after must be a position from a list link") }
            page = .newerThan(cursor)
        }
    }

    /// The query string of these filters (without the page), for links and forms.
    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if let state { items.append(("state", state.rawValue)) }
        if let verdict { items.append(("verdict", verdict.rawValue)) }
        if let mediaType { items.append(("media_type", mediaType)) }
        if let submitPath { items.append(("submit_path", submitPath)) }
        if let queue { items.append(("queue", queue)) }
        if let group { items.append(("group", group)) }
        if let createdFrom { items.append(("from", Self.formInputTime(createdFrom))) }
        if let createdBefore { items.append(("to", Self.formInputTime(createdBefore))) }
        if let text { items.append(("q", text)) }
        if let reason { items.append(("reason", reason)) }
        return items
    }

    var isFiltered: Bool { !queryItems.isEmpty }

    /// A time as the form's `datetime-local` inputs send it (UTC, to the minute or second), or ISO 8601 with
    /// a zone.
    static func time(_ text: String?, field: String) throws(Invalid) -> Date? {
        guard let text else { return nil }
        for format in ["yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd"] {
            if let date = Formatting.utc(format).date(from: text) { return date }
        }
        if let date = ISO8601Timestamp.parse(text) { return date }
        throw Invalid(description: "\(field) must be a time such as 2026-11-22T14:30 (UTC)")
    }

    static func formInputTime(_ date: Date) -> String {
        Formatting.compactTime(date, separator: "T")
    }
}
