import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// The request list against the database's own answer: the same rows, in the same order, on every page,
/// under every filter, walking older and then newer, while new requests arrive.
@Suite("The request list pages by keyset", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct KeysetPaginationTests {
    /// The ids on a list page, in order.
    static func ids(_ body: String) -> [Int] {
        body.matches(of: /<td class="num"><a href="\/dashboard\/requests\/(\d+)">/).compactMap { Int($0.output.1) }
    }

    static func link(_ body: String, _ label: String) -> String? {
        body.firstMatch(of: try! Regex(#"<a class="button secondary" href="([^"]+)">[^<]*\#(label)"#)).flatMap { $0.output[1].substring.map(String.init) }?
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    @Test("walking every page older, then newer, returns exactly the matching rows in order, under each filter")
    func walk() async throws {
        try await DashboardFixture.serve { dashboard in
            var metadata: [Int: String] = [:]
            for n in 0..<260 {
                let state = ["queued", "completed", "failed", "completed"][n % 4]
                let tag = n % 3 == 0 ? "alpha" : "beta"
                let id = try await dashboard.request(
                    state: state, metadata: #"{"team": "\#(tag)", "n": \#(n)}"#, fake: n % 5 == 0,
                    mediaType: n % 7 == 0 ? "video" : "audio", submitPath: n % 2 == 0 ? "url" : "multipart"
                )
                metadata[id] = tag
            }
            try await dashboard.admin.query("UPDATE detectq.requests SET created_at = now() - make_interval(mins => id::int % 50)")
            let middle = try await dashboard.admin.query("SELECT to_char((now() - interval '20 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS t")[0].decode("t", as: String.self)

            let cases: [(String, String)] = [
                ("", "true"),
                ("state=completed", "state = 'completed'"),
                ("verdict=fake", "is_fake"),
                ("verdict=real", "NOT is_fake"),
                ("media_type=video", "media_type = 'video'"),
                ("submit_path=multipart", "submit_path = 'multipart'"),
                ("q=alpha", "metadata->>'team' = 'alpha'"),
                ("from=\(middle)", "created_at >= '\(middle)'::timestamp AT TIME ZONE 'UTC'"),
                ("to=\(middle)&state=failed", "created_at < '\(middle)'::timestamp AT TIME ZONE 'UTC' AND state = 'failed'"),
            ]
            for (query, condition) in cases {
                let expected: [Int] = try await dashboard.admin.query(PostgresQuery(sql: "SELECT id FROM detectq.requests WHERE \(condition) ORDER BY created_at DESC, id DESC", parameters: []))
                    .map { try $0.decode("id") }
                #expect(!expected.isEmpty, "\(query) matches something")

                var seen: [Int] = []
                var pages: [[Int]] = []
                var path: String? = "/dashboard/requests" + (query.isEmpty ? "" : "?" + query)
                var lastPath = path!
                var inserted = false
                while let next = path {
                    let answer = try await dashboard.get(next)
                    #expect(answer.status == 200, "\(next)")
                    let ids = Self.ids(answer.body)
                    #expect(ids.count <= 50)
                    pages.append(ids)
                    seen += ids
                    lastPath = next
                    if !inserted {
                        // A request that arrives mid-walk is newer than every page still to come: it must not shift them.
                        try await dashboard.request(state: "completed", metadata: #"{"team": "alpha"}"#, fake: true, mediaType: "video", submitPath: "multipart")
                        inserted = true
                    }
                    path = Self.link(answer.body, "Older")
                }
                #expect(seen == expected, "older pages for \(query.isEmpty ? "no filter" : query)")
                #expect(pages.dropLast().allSatisfy { $0.count == 50 }, "full pages until the last")

                // And back up from the last page: every row before it, plus only rows that arrived since.
                var answer = try await dashboard.get(lastPath)
                var newer: [Int] = []
                while let link = Self.link(answer.body, "Newer") {
                    answer = try await dashboard.get(link)
                    newer = Self.ids(answer.body) + newer
                }
                let before = Array(seen.dropLast(pages.last?.count ?? 0))
                #expect(Array(newer.suffix(before.count)) == before, "newer pages for \(query)")
                #expect(newer.dropLast(before.count).allSatisfy { !expected.contains($0) }, "only new arrivals above them")
            }
        }
    }

    /// The metadata search reads its index (migration 0025), which holds only requests that carry metadata: with
    /// 20,000 requests without any, the dashboard's search finds the five that match by the index, as the
    /// server's own count of that index's scans shows, rather than by reading the table.
    @Test func theMetadataSearchReadsAnIndexOfTheRequestsWithMetadata() async throws {
        try await DashboardFixture.serve { dashboard in
            try await dashboard.admin.query("""
                INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/plain-' || n || '.wav' FROM generate_series(1, 20000) AS n
                """)
            var matching: [Int] = []
            for n in 0..<5 { matching.append(try await dashboard.request(metadata: #"{"team": "gamma", "n": \#(n)}"#)) }
            _ = try await dashboard.request(metadata: #"{"team": "delta"}"#)
            try await dashboard.admin.query("ANALYZE detectq.requests")
            let definition = try await dashboard.admin.query("""
                SELECT indexdef FROM pg_indexes WHERE schemaname = 'detectq' AND indexname = 'requests_metadata_words_idx'
                """)[0].decode("indexdef", as: String.self)
            #expect(definition.hasSuffix("WHERE (metadata <> '{}'::jsonb)"), "\(definition)")
            func scans() async throws -> Int {
                try await dashboard.admin.query("""
                    SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = 'detectq' AND indexrelname = 'requests_metadata_words_idx'
                    """)[0].decode("idx_scan", as: Int.self)
            }
            let before = try await scans()
            let answer = try await dashboard.get("/dashboard/requests?q=gamma")
            #expect(answer.status == 200)
            #expect(Self.ids(answer.body) == matching.reversed())
            // A backend reports its scans when it next goes idle, within seconds.
            try await waitUntil("the search's scan of requests_metadata_words_idx is counted") { try await scans() > before }
        }
    }
}
