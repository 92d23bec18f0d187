import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("The dashboard's Queues page and the request list's queue and group filters", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct QueuesPageTests {
    /// Inserts `count` requests into `queue` (in `group`), and moves the first `claimed` of them to submitting
    /// as a claim does; returns their ids.
    @discardableResult
    static func requests(_ dashboard: DashboardFixture, queue: String, group: String? = nil, count: Int, claimed: Int = 0) async throws -> [Int] {
        let ids: [Int] = try await dashboard.admin.query(PostgresQuery(sql: """
            INSERT INTO detectq.requests (media_url, queue, group_key)
            SELECT 'https://cdn.example.com/' || $1 || '-' || n || '.wav', $1, $2 FROM generate_series(1, $3) AS n
            RETURNING id
            """, parameters: [queue, group, count])).map { try $0.decode("id") }.sorted()
        if claimed > 0 {
            try await dashboard.admin.query("""
                UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_by = 'test-worker', locked_until = now() + interval '1 minute'
                WHERE id = ANY(\(Array(ids.prefix(claimed))))
                """)
        }
        return ids
    }

    @Test("each queue shows its settings, load, claims per minute and why it waits")
    func page() async throws {
        try await DashboardFixture.serve { dashboard in
            try await Self.requests(dashboard, queue: "live", count: 5, claimed: 3)
            try await Self.requests(dashboard, queue: "backfill", count: 4)
            try await dashboard.admin.query("""
                UPDATE detectq.queues SET weight = 4, max_in_flight = 3, rate_limit = 2.5, daily_limit = 1000 WHERE name = 'live'
                """)
            try await dashboard.admin.query("""
                UPDATE detectq.queues SET paused_at = now(), paused_by = 'alice', pause_reason = 'vendor <b>incident</b>' WHERE name = 'backfill'
                """)

            let page = try await dashboard.get("/dashboard/queues")
            #expect(page.status == 200)
            #expect(page.body.contains(#"<a href="/dashboard/queues" aria-current="page">Queues</a>"#))
            let live = try #require(Self.article("live", in: page.body))
            for expected in [">4<", ">3<", "2.5 /s", "1,000", "Claimed per minute"] {
                #expect(live.contains(expected), "live's section shows \(expected)")
            }
            #expect(live.contains(#"<tr><th>Max in flight</th><td class="num">3</td><th>In flight</th><td class="num">3</td></tr>"#))
            #expect(live.contains("Waits: at its max_in_flight (3 in flight)"), "two due, three in flight of three")
            #expect(live.contains(#"<th>Claimed, last hour</th><td class="num">3</td>"#), "the three claims, read from detectq.queue_claims")
            #expect(live.contains(": 3</title></rect>"), "one bar of the chart holds the three claims")
            #expect(live.contains(#"href="/dashboard/requests?queue=live""#))
            let backfill = try #require(Self.article("backfill", in: page.body))
            #expect(backfill.contains(">paused<") && backfill.contains("Waits: paused by alice"))
            #expect(backfill.contains("vendor &lt;b&gt;incident&lt;/b&gt;") && !backfill.contains("<b>incident"))
            #expect(backfill.contains(#"action="/dashboard/queues/resume""#) && !backfill.contains(#"action="/dashboard/queues/pause""#))
            #expect(live.contains(#"action="/dashboard/queues/pause""#) && !live.contains(#"action="/dashboard/queues/resume""#))
            #expect(backfill.contains(#"<th>Claimed, last hour</th><td class="num">0</td>"#))
            let idle = try #require(Self.article("default", in: page.body))
            #expect(idle.contains(">idle<") && !idle.contains("Waits:"))
        }
    }

    @Test("set, create, pause and resume act on detectq.queues as detectq queue does, and say so")
    func actions() async throws {
        try await DashboardFixture.serve { dashboard in
            try await Self.requests(dashboard, queue: "live", count: 1)
            let csrf = try #require(try await dashboard.get("/dashboard/queues").formValue("csrf"))

            let set = try await dashboard.post("/dashboard/queues/set", form: [
                ("csrf", csrf), ("name", "live"), ("weight", "4"), ("max_in_flight", "20"), ("group_max_in_flight", ""),
                ("rate_limit", "2.5"), ("daily_limit", "1000"),
            ])
            #expect(set.status == 303 && set.header("Location") == "/dashboard/queues?notice=queue-set&queue=live#queue-live")
            var row = try await dashboard.admin.query("SELECT weight, max_in_flight, group_max_in_flight, rate_limit, daily_limit FROM detectq.queues WHERE name = 'live'")[0]
            #expect(try row.decode("weight", as: Int.self) == 4 && row.decode("max_in_flight", as: Int?.self) == 20)
            #expect(try row.decode("group_max_in_flight", as: Int?.self) == nil && row.decode("rate_limit", as: Double?.self) == 2.5)
            #expect(try row.decode("daily_limit", as: Int?.self) == 1000)
            let shown = try await dashboard.get("/dashboard/queues?notice=queue-set&queue=live")
            #expect(shown.body.contains("Saved the settings of queue live"))
            #expect(shown.body.contains(#"name="rate_limit" value="2.5""#), "the form holds the saved values")

            let cleared = try await dashboard.post("/dashboard/queues/set", form: [
                ("csrf", csrf), ("name", "live"), ("weight", ""), ("max_in_flight", ""), ("rate_limit", " "), ("daily_limit", "1000"),
            ])
            #expect(cleared.status == 303)
            row = try await dashboard.admin.query("SELECT weight, max_in_flight, rate_limit, daily_limit FROM detectq.queues WHERE name = 'live'")[0]
            #expect(try row.decode("weight", as: Int.self) == 4, "an empty weight leaves it as it is")
            #expect(try row.decode("max_in_flight", as: Int?.self) == nil && row.decode("rate_limit", as: Double?.self) == nil, "an empty limit is none")
            #expect(try row.decode("daily_limit", as: Int?.self) == 1000)

            for (field, value) in [("weight", "0"), ("max_in_flight", "-1"), ("rate_limit", "fast"), ("daily_limit", "1e3")] {
                let refused = try await dashboard.post("/dashboard/queues/set", form: [("csrf", csrf), ("name", "live"), (field, value)])
                #expect(refused.status == 400 && refused.body.contains(field) && refused.body.contains("nothing was changed"), "\(field)=\(value)")
            }
            for name in ["Live Uploads", "", String(repeating: "a", count: 64), "a/b"] {
                let refused = try await dashboard.post("/dashboard/queues/set", form: [("csrf", csrf), ("name", name), ("weight", "2")])
                #expect(refused.status == 400 && refused.body.contains("requests_queue_name"), "\(name)")
            }
            #expect(try await dashboard.admin.query("SELECT weight FROM detectq.queues WHERE name = 'live'")[0].decode("weight", as: Int.self) == 4)

            let created = try await dashboard.post("/dashboard/queues/set", form: [("csrf", csrf), ("name", "reports"), ("weight", "2")])
            #expect(created.header("Location") == "/dashboard/queues?notice=queue-created&queue=reports#queue-reports")
            #expect(try await dashboard.admin.query("SELECT weight FROM detectq.queues WHERE name = 'reports'")[0].decode("weight", as: Int.self) == 2)

            let paused = try await dashboard.post("/dashboard/queues/pause", form: [("csrf", csrf), ("name", "live"), ("reason", "vendor incident")])
            #expect(paused.header("Location") == "/dashboard/queues?notice=queue-paused&queue=live#queue-live")
            let pause = try await dashboard.admin.query("SELECT paused_by, pause_reason FROM detectq.queues WHERE name = 'live'")[0]
            #expect(try pause.decode("paused_by", as: String?.self) == "detectq dashboard (test)", "the dashboard's actor")
            #expect(try pause.decode("pause_reason", as: String?.self) == "vendor incident")
            #expect(try await dashboard.admin.query("SELECT count(*) AS n FROM detectq.pauses")[0].decode("n", as: Int.self) == 0, "only the queue is paused")
            #expect(try await dashboard.post("/dashboard/queues/pause", form: [("csrf", csrf), ("name", "live")]).header("Location")?
                .contains("notice=queue-already-paused") == true)
            let status = try await dashboard.get("/dashboard/queues?notice=queue-paused&queue=live")
            #expect(status.body.contains("Queue live is paused"))
            #expect(try #require(Self.article("live", in: status.body)).contains("Waits: paused by detectq dashboard (test)"))

            try await dashboard.admin.query("UPDATE detectq.requests SET state = 'cancelled' WHERE queue = 'live'")
            #expect(try #require(Self.article("live", in: try await dashboard.get("/dashboard/queues").body))
                .contains("Nothing due; paused by detectq dashboard (test)"), "a pause shows with nothing due too")
            #expect(try await dashboard.post("/dashboard/queues/resume", form: [("csrf", csrf), ("name", "live")]).header("Location")?
                .contains("notice=queue-resumed") == true)
            #expect(try await dashboard.admin.query("SELECT paused_at IS NULL AS running FROM detectq.queues WHERE name = 'live'")[0].decode("running", as: Bool.self))
            #expect(try await dashboard.post("/dashboard/queues/resume", form: [("csrf", csrf), ("name", "live")]).header("Location")?
                .contains("notice=queue-not-paused") == true)
            #expect(!(try await dashboard.get("/dashboard/queues?notice=queue-set&queue=%3Cb%3E").body.contains("Saved the settings")),
                    "a notice names only a queue a request could name")
        }
    }

    @Test("the queue actions need the page's CSRF token and are refused in read-only mode")
    func refusals() async throws {
        try await DashboardFixture.serve { dashboard in
            for path in ["/dashboard/queues/set", "/dashboard/queues/pause", "/dashboard/queues/resume"] {
                let answer = try await dashboard.post(path, form: [("csrf", "0000"), ("name", "default"), ("weight", "9")])
                #expect(answer.status == 403 && answer.body.contains("CSRF"), "\(path)")
            }
            let row = try await dashboard.admin.query("SELECT weight, paused_at IS NULL AS running FROM detectq.queues WHERE name = 'default'")[0]
            #expect(try row.decode("weight", as: Int.self) == 1 && row.decode("running", as: Bool.self))
        }
        try await DashboardFixture.serve(readOnly: true) { dashboard in
            let page = try await dashboard.get("/dashboard/queues")
            #expect(page.status == 200 && page.body.contains("default"))
            #expect(!page.body.contains(#"action="/dashboard/queues/"#), "no queue action is offered")
            let csrf = try #require(page.formValue("csrf"), "the logout form keeps its token")
            for path in ["/dashboard/queues/set", "/dashboard/queues/pause"] {
                let answer = try await dashboard.post(path, form: [("csrf", csrf), ("name", "default"), ("weight", "9")])
                #expect(answer.status == 403 && answer.body.contains("read-only"), "\(path)")
            }
            let row = try await dashboard.admin.query("SELECT weight, paused_at IS NULL AS running FROM detectq.queues WHERE name = 'default'")[0]
            #expect(try row.decode("weight", as: Int.self) == 1 && row.decode("running", as: Bool.self))
        }
    }

    @Test("the request list filters by queue and by group, and links each row's queue and group")
    func requestListFilters() async throws {
        try await DashboardFixture.serve { dashboard in
            let acme = try await Self.requests(dashboard, queue: "imports", group: "acme", count: 2)
            let globex = try await Self.requests(dashboard, queue: "imports", group: "globex", count: 2)
            let live = try await Self.requests(dashboard, queue: "live", group: "acme", count: 1)
            let plain = try await dashboard.request()
            func listed(_ query: String) async throws -> Set<Int> {
                let answer = try await dashboard.get("/dashboard/requests?" + query)
                #expect(answer.status == 200, "\(query)")
                return Set(answer.body.matches(of: /<a href="\/dashboard\/requests\/(\d+)">/).compactMap { Int($0.output.1) })
            }
            #expect(try await listed("queue=imports") == Set(acme + globex))
            #expect(try await listed("queue=imports&group=acme") == Set(acme))
            #expect(try await listed("group=acme") == Set(acme + live), "a group_key is matched across queues unless a queue is chosen")
            #expect(try await listed("queue=default") == [plain])
            #expect(try await listed("queue=nothing-here").isEmpty)

            let list = try await dashboard.get("/dashboard/requests?queue=imports")
            #expect(list.body.contains(#"<option value="imports" selected>imports</option>"#), "the queue select holds every queue, the chosen one selected")
            #expect(list.body.contains(#"<option value="live">live</option>"#))
            #expect(list.body.contains(#"href="/dashboard/requests?queue=imports&amp;group=globex""#), "a row's group narrows the list to it")
            for (query, field) in [("queue=Live%20Uploads", "queue"), ("group=" + String(repeating: "g", count: 201), "group")] {
                let answer = try await dashboard.get("/dashboard/requests?\(query)")
                #expect(answer.status == 400 && answer.body.contains(field), "\(query)")
            }
        }
    }

    /// The `<article>` of queue `name` on the Queues page.
    static func article(_ name: String, in body: String) -> String? {
        guard let start = body.range(of: #"<article class="queue" id="queue-\#(name)">"#) else { return nil }
        guard let end = body.range(of: "</article>", range: start.upperBound..<body.endIndex) else { return nil }
        return String(body[start.lowerBound..<end.upperBound])
    }
}
