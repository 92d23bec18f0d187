import DetectqTestSupport
import Foundation
import Postgres
import QueueDashboard
import Testing

/// A video's result with a two-level tree, a structured intelligence report and a hostile string from the API.
private let videoResult = #"""
{"uuid": "video-1", "media_type": "video", "status": "completed",
 "metrics": {"label": "fake", "aggregated_score": 0.81, "score": [0.2, 0.7, 0.95, 0.4], "consistency": 0.6},
 "video_metrics": {"label": "Fake", "score": 0.88, "certainty": 0.9, "children": [
   {"type": "VideoResult", "conclusion": "Fake", "score": 0.88, "certainty": 0.9, "children": [
     {"type": "ImageResult", "conclusion": "Fake", "score": 0.91, "timestamp": 1.5, "children": []},
     {"type": "ImageResult", "conclusion": "Real", "score": 0.12, "timestamp": 3.0, "children": []},
     {"type": "AudioResult", "children": []}]}]},
 "intelligence": {"uuid": "i-1", "status": "completed", "description": {
   "fraud": {"type": "impersonation", "confidence": 87, "reasoning": "voice matches a public figure <script>alert('api')</script>"},
   "language": "English"}},
 "zero_retention_mode": true, "filename": "redacted_abc.mp4"}
"""#

@Suite("The dashboard over HTTP", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct DashboardHTTPTests {
    @Test("every page answers 200 with the token, and shows what it is for")
    func everyPage() async throws {
        try await DashboardFixture.serve { dashboard in
            let video = try await dashboard.request(state: "completed", metadata: #"{"case": "election-42"}"#, result: videoResult, fake: true, mediaType: "video", zeroRetention: true)
            try await dashboard.request(state: "failed", error: "the media URL answered 404")
            try await dashboard.request(state: "retrying", error: "the API answered 503")
            try await dashboard.admin.query("""
                INSERT INTO detectq.post_tasks (request_id, processor) VALUES (\(video), 'alert.webhook.fake')
                """)
            try await dashboard.admin.query("""
                INSERT INTO detectq.workers (worker_id, host, pid, concurrency, lease_seconds) VALUES ('worker-a', 'host-a', 42, 16, 30)
                """)

            let overview = try await dashboard.get("/dashboard")
            #expect(overview.status == 200)
            #expect(overview.header("Content-Type") == "text/html; charset=utf-8")
            #expect(overview.body.contains("Fakes found per minute") && overview.body.contains("<svg"))
            #expect(overview.body.contains("worker-a") && overview.body.contains(">live<"), "the worker and its status")
            #expect(overview.body.contains("<code>alert.webhook.fake</code>"), "the post-task backlog")
            #expect(overview.body.contains(#"href="/dashboard/requests?state=failed""#))

            let list = try await dashboard.get("/dashboard/requests")
            #expect(list.status == 200)
            #expect(list.body.contains(#"href="/dashboard/requests/\#(video)""#))

            let page = try await dashboard.get("/dashboard/requests/\(video)")
            #expect(page.status == 200)
            for expected in ["Frame and segment tree", "ImageResult", "at 1.50 s", "impersonation (confidence 87)", "Audio score per window",
                             "file_deleted_at", "not yet purged", "<code>alert.webhook.fake</code>", "election-42", "(inserted)"] {
                #expect(page.body.contains(expected), "the request page shows \(expected)")
            }
            #expect(page.body.contains("<li><span class=\"node-kind\">VideoResult</span>") && page.body.contains("<ul><li>"), "the tree as nested lists")
            let bare = try #require(page.body.firstMatch(of: /<li><span class="node-kind">AudioResult<\/span>[^\n]*/)).output
            #expect(!bare.contains("score") && !bare.contains("pill"), "a node without figures shows none of its parent's: \(bare)")

            let failures = try await dashboard.get("/dashboard/failures")
            #expect(failures.status == 200)
            #expect(failures.body.contains("the media URL answered 404") && failures.body.contains("the API answered 503"))

            #expect(try await dashboard.get("/dashboard/requests/999999").status == 404)
            #expect(try await dashboard.get("/dashboard/requests/abc").status == 404)
            #expect(try await dashboard.get("/dashboard/assets/dashboard.js", auth: .none).status == 200, "assets need no login")
            #expect(overview.header("Content-Security-Policy")?.contains("script-src 'self'") == true)
            #expect(overview.header("X-Frame-Options") == "DENY")
        }
    }

    @Test("a reused verdict's page links to the request it came from, and a waiting request's to the one in flight")
    func identicalMediaPages() async throws {
        try await DashboardFixture.serve { dashboard in
            let hash = String(repeating: "d", count: 64)
            let source = try await dashboard.request(state: "completed", fake: true, zeroRetention: true)
            let inFlight = try await dashboard.request(state: "submitting")
            try await dashboard.admin.query("UPDATE detectq.requests SET media_sha256 = \(hash) WHERE id IN (\(source), \(inFlight))")
            let reused = try await dashboard.request(zeroRetention: true)
            let waiting = try await dashboard.request()
            // As the worker writes them: claimed, then completed with the source's verdict; claimed, then handed back.
            for id in [reused, waiting] {
                try await dashboard.admin.query("""
                    UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_by = 'test-worker',
                        locked_until = now() + interval '1 minute', media_sha256 = \(hash) WHERE id = \(id)
                    """)
            }
            try await dashboard.admin.query("""
                UPDATE detectq.requests r SET state = 'completed', locked_by = NULL, locked_until = NULL, submit_path = 'reused',
                    reused_from = s.id, result = s.result, label = s.label, is_fake = s.is_fake, completed_at = now()
                FROM detectq.requests s WHERE r.id = \(reused) AND s.id = \(source)
                """)
            try await dashboard.admin.query("""
                UPDATE detectq.requests SET state = 'queued', attempt = 0, locked_by = NULL, locked_until = NULL,
                    waiting_for = \(inFlight), run_at = now() + interval '10 minutes' WHERE id = \(waiting)
                """)

            let page = try await dashboard.get("/dashboard/requests/\(reused)")
            #expect(page.status == 200)
            #expect(page.body.contains(#"Verdict reused from <a href="/dashboard/requests/\#(source)">request \#(source)</a>"#))
            #expect(page.body.contains("verdict reused from request \(source)"), "the timeline's detail names it")
            #expect(page.body.contains("no media was sent: the verdict was reused from request \(source)"), "retention says no media was sent")
            #expect(page.body.contains(hash))
            let waitingPage = try await dashboard.get("/dashboard/requests/\(waiting)")
            #expect(waitingPage.body.contains(#"Waiting for the verdict of <a href="/dashboard/requests/\#(inFlight)">request \#(inFlight)</a>"#))
            let sourcePage = try await dashboard.get("/dashboard/requests/\(source)")
            #expect(!sourcePage.body.contains("Verdict reused from"), "a request detected itself says nothing of reuse")
        }
    }

    @Test("hostile metadata, error messages and API strings are shown as text")
    func escaping() async throws {
        try await DashboardFixture.serve { dashboard in
            let hostile = #"{"note": "<script>alert(1)</script>", "<img src=x onerror=alert(2)>": "\"><svg onload=alert(3)>"}"#
            let id = try await dashboard.request(state: "failed", metadata: hostile, error: "<b>bold</b> & <script>alert(4)</script>")
            let video = try await dashboard.request(state: "completed", metadata: hostile, result: videoResult, fake: true, mediaType: "video")
            for path in ["/dashboard/requests", "/dashboard/requests/\(id)", "/dashboard/requests/\(video)", "/dashboard/failures",
                         "/dashboard/requests?q=%3Cscript%3E", "/dashboard/requests?reason=%3Cscript%3Ealert(5)%3C%2Fscript%3E"] {
                let answer = try await dashboard.get(path)
                #expect(answer.status == 200, "\(path)")
                for raw in ["<script>alert", "<img src=x", "<svg onload", "<b>bold"] {
                    #expect(!answer.body.contains(raw), "\(path) renders \(raw) as markup")
                }
            }
            let page = try await dashboard.get("/dashboard/requests/\(id)")
            #expect(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the metadata is there, as text")
            #expect(page.body.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;"), "so is the error")
            let videoPage = try await dashboard.get("/dashboard/requests/\(video)")
            #expect(videoPage.body.contains("public figure &lt;script&gt;alert(&#39;api&#39;)"), "and the API's words")
        }
    }

    @Test("no media token, upload token, callback secret or dashboard token is rendered")
    func noSecrets() async throws {
        try await DashboardFixture.serve { dashboard in
            let mediaToken = "media-token-SECRET-\(UUID().uuidString)"
            let id = try await dashboard.request(state: "failed", media: "media_token", value: mediaToken)
            try await dashboard.admin.query("""
                UPDATE detectq.requests SET callback_secret_hash = 'HASH-SECRET-abcdef', secure_upload_token = 'UPLOAD-SECRET-xyz',
                    secure_upload_token_issued_at = now() WHERE id = \(id)
                """)
            for path in ["/dashboard", "/dashboard/requests", "/dashboard/requests/\(id)", "/dashboard/failures"] {
                let answer = try await dashboard.get(path)
                for secret in [mediaToken, "HASH-SECRET", "UPLOAD-SECRET", DashboardFixture.token] {
                    #expect(!answer.body.contains(secret), "\(path) shows a secret")
                    #expect(!answer.headers.contains { $0.1.contains(secret) }, "\(path) sends a secret in a header")
                }
            }
            #expect(try await dashboard.get("/dashboard/requests/\(id)").body.contains("(set; a secret, not shown)"))
        }
    }

    @Test("without the token every page and action is refused; the login form sets a strict, HttpOnly cookie")
    func authentication() async throws {
        try await DashboardFixture.serve { dashboard in
            let id = try await dashboard.request(state: "failed")
            for path in ["/dashboard", "/dashboard/requests", "/dashboard/requests/\(id)", "/dashboard/failures"] {
                let anonymous = try await dashboard.get(path, auth: .none)
                #expect(anonymous.status == 401, "\(path)")
                #expect(anonymous.body.contains(#"name="token""#), "the login form")
                #expect(!anonymous.body.contains("failed</span>"), "no data")
                let wrong = try await dashboard.get(path, auth: .bearer("not-the-token-0123456789"))
                #expect(wrong.status == 401 && wrong.header("WWW-Authenticate") == "Bearer")
                #expect(try await dashboard.get(path, auth: .cookie("4102444800.deadbeef")).status == 401, "a forged session")
            }
            #expect(try await dashboard.post("/dashboard/requests/\(id)/retry", form: [("csrf", "x")], auth: .none).status == 401)
            #expect(try await dashboard.state(of: id) == "failed")

            let refused = try await dashboard.post("/dashboard/login", form: [("token", "guess-0123456789abcdef")], auth: .none)
            #expect(refused.status == 401 && refused.header("Set-Cookie") == nil)

            let login = try await dashboard.post("/dashboard/login", form: [("token", DashboardFixture.token), ("next", "/dashboard/failures")], auth: .none)
            #expect(login.status == 303 && login.header("Location") == "/dashboard/failures")
            let cookie = try #require(login.header("Set-Cookie"))
            #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/dashboard"))
            let session = try #require(cookie.split(separator: ";")[0].split(separator: "=", maxSplits: 1).last.map(String.init))
            #expect(!session.contains(DashboardFixture.token), "the cookie is not the token")
            #expect(try await dashboard.get("/dashboard", auth: .cookie(session)).status == 200)

            let offsite = try await dashboard.post("/dashboard/login", form: [("token", DashboardFixture.token), ("next", "//evil.example/")], auth: .none)
            #expect(offsite.header("Location") == "/dashboard", "a login never redirects off the dashboard")

            let page = try await dashboard.get("/dashboard", auth: .cookie(session))
            let csrf = try #require(page.formValue("csrf"))
            let logout = try await dashboard.post("/dashboard/logout", form: [("csrf", csrf)], auth: .cookie(session))
            #expect(logout.status == 303 && logout.header("Set-Cookie")?.contains("Max-Age=0") == true)
        }
    }

    @Test("every answer under /dashboard carries the security headers, whatever route made it")
    func securityHeadersOnEveryAnswer() async throws {
        try await DashboardFixture.serve { dashboard in
            let id = try await dashboard.request(state: "failed")
            let answers = [
                ("a page", try await dashboard.get("/dashboard")),
                ("a refusal", try await dashboard.get("/dashboard/failures", auth: .none)),
                ("a redirect", try await dashboard.post("/dashboard/login", form: [("token", DashboardFixture.token)], auth: .none)),
                ("a bad filter", try await dashboard.get("/dashboard/requests?state=nonsense")),
                ("a missing request", try await dashboard.get("/dashboard/requests/\(id + 1000)")),
                ("an asset", try await dashboard.get("/dashboard/assets/dashboard.css", auth: .none)),
            ]
            for (what, answer) in answers {
                #expect(answer.header("Content-Security-Policy")?.hasPrefix("default-src 'none'") == true, "\(what): \(answer.status)")
                #expect(answer.header("X-Content-Type-Options") == "nosniff" && answer.header("X-Frame-Options") == "DENY", "\(what)")
                #expect(answer.header("Referrer-Policy") == "no-referrer", "\(what)")
                #expect(answer.header("Cache-Control") == (what == "an asset" ? "max-age=300" : "no-store"), "\(what)")
            }
        }
    }

    @Test("a form that cannot be read (a field given twice, a nested key) is refused and changes nothing")
    func unreadableFormsAreRefused() async throws {
        try await DashboardFixture.serve { dashboard in
            let id = try await dashboard.request(state: "failed")
            let csrf = try #require(try await dashboard.get("/dashboard/requests/\(id)").formValue("csrf"))
            for form in [[("csrf", csrf), ("csrf", csrf)], [("csrf[]", csrf)]] {
                #expect(try await dashboard.post("/dashboard/requests/\(id)/retry", form: form).status == 403, "\(form.map(\.0))")
            }
            #expect(try await dashboard.state(of: id) == "failed")
            #expect(try await dashboard.post("/dashboard/requests/\(id)/retry", form: [("csrf", csrf)]).status == 303, "the same form, read")
            #expect(try await dashboard.state(of: id) == "queued")
        }
    }

    @Test("actions without the page's CSRF token are refused and change nothing")
    func csrf() async throws {
        try await DashboardFixture.serve { dashboard in
            let id = try await dashboard.request(state: "failed")
            let login = try await dashboard.post("/dashboard/login", form: [("token", DashboardFixture.token)], auth: .none)
            let session = try #require(login.header("Set-Cookie")?.split(separator: ";")[0].split(separator: "=", maxSplits: 1).last.map(String.init))
            let bearerCSRF = try #require(try await dashboard.get("/dashboard/requests/\(id)").formValue("csrf"))
            let sessionCSRF = try #require(try await dashboard.get("/dashboard/requests/\(id)", auth: .cookie(session)).formValue("csrf"))
            #expect(bearerCSRF != sessionCSRF, "the token is bound to the credential")

            for (form, auth) in [([(String, String)](), DashboardFixture.Auth.cookie(session)), ([("csrf", "0000")], .cookie(session)),
                                 ([("csrf", bearerCSRF)], .cookie(session)), ([("csrf", sessionCSRF)], .bearer(DashboardFixture.token))] {
                let answer = try await dashboard.post("/dashboard/requests/\(id)/retry", form: form, auth: auth)
                #expect(answer.status == 403 && answer.body.contains("CSRF"))
            }
            for path in ["/dashboard/failures/retry", "/dashboard/failures/cancel", "/dashboard/logout", "/dashboard/pause", "/dashboard/resume"] {
                #expect(try await dashboard.post(path, form: [("reason", "the API answered 503")], auth: .cookie(session)).status == 403)
            }
            #expect(try await dashboard.state(of: id) == "failed")

            let done = try await dashboard.post("/dashboard/requests/\(id)/retry", form: [("csrf", sessionCSRF)], auth: .cookie(session))
            #expect(done.status == 303)
            #expect(try await dashboard.state(of: id) == "queued")
        }
    }

    @Test("read-only mode hides the actions and refuses them")
    func readOnly() async throws {
        try await DashboardFixture.serve(readOnly: true) { dashboard in
            let failed = try await dashboard.request(state: "failed")
            let queued = try await dashboard.request()
            let page = try await dashboard.get("/dashboard/requests/\(failed)")
            #expect(page.status == 200 && page.body.contains("read-only"))
            #expect(!page.body.contains("/retry\"") && !page.body.contains("/cancel\""))
            #expect(!(try await dashboard.get("/dashboard/failures").body.contains("action=\"/dashboard/failures/")))
            let csrf = try #require(page.formValue("csrf"), "the logout form keeps its token")
            for path in ["/dashboard/requests/\(failed)/retry", "/dashboard/requests/\(queued)/cancel"] {
                let answer = try await dashboard.post(path, form: [("csrf", csrf)])
                #expect(answer.status == 403 && answer.body.contains("read-only"), "\(path)")
            }
            #expect(try await dashboard.post("/dashboard/failures/retry", form: [("csrf", csrf), ("reason", "the API answered 503")]).status == 403)
            #expect(!(try await dashboard.get("/dashboard").body.contains("action=\"/dashboard/pause\"")))
            #expect(try await dashboard.post("/dashboard/pause", form: [("csrf", csrf), ("reason", "x")]).status == 403)
            #expect(try await dashboard.admin.query("SELECT count(*) AS n FROM detectq.pauses")[0].decode("n", as: Int.self) == 0)
            #expect(try await dashboard.state(of: failed) == "failed")
            #expect(try await dashboard.state(of: queued) == "queued")
        }
    }

    @Test("retry and cancel go through the state machine, one request or a whole failure group")
    func actions() async throws {
        try await DashboardFixture.serve { dashboard in
            let failed = try await dashboard.request(state: "failed")
            let queued = try await dashboard.request()
            let completed = try await dashboard.request(state: "completed")
            let csrf = try #require(try await dashboard.get("/dashboard/requests/\(failed)").formValue("csrf"))

            let retried = try await dashboard.post("/dashboard/requests/\(failed)/retry", form: [("csrf", csrf)])
            #expect(retried.status == 303 && retried.header("Location") == "/dashboard/requests/\(failed)?notice=retried")
            #expect(try await dashboard.state(of: failed) == "queued")
            let event: String? = try await dashboard.admin.query("""
                SELECT worker_id FROM detectq.request_events WHERE request_id = \(failed) AND from_state = 'failed'
                """)[0].decode("worker_id")
            #expect(event == "detectq dashboard (test)", "the history names the dashboard")
            #expect(try await dashboard.get("/dashboard/requests/\(failed)?notice=retried").body.contains("queued again"))

            #expect(try await dashboard.post("/dashboard/requests/\(queued)/cancel", form: [("csrf", csrf)]).status == 303)
            #expect(try await dashboard.state(of: queued) == "cancelled")

            let refused = try await dashboard.post("/dashboard/requests/\(completed)/retry", form: [("csrf", csrf)])
            #expect(refused.header("Location") == "/dashboard/requests/\(completed)?notice=refused")
            #expect(try await dashboard.state(of: completed) == "completed")
            #expect(try await dashboard.post("/dashboard/requests/\(completed)/cancel", form: [("csrf", csrf)]).header("Location")?.hasSuffix("refused") == true)
            #expect(try await dashboard.post("/dashboard/requests/99999/retry", form: [("csrf", csrf)]).header("Location")?.hasSuffix("refused") == true)

            var group: [Int] = []
            for _ in 0..<3 { group.append(try await dashboard.request(state: "failed", error: "quota exceeded")) }
            let other = try await dashboard.request(state: "failed", error: "bad media")
            let stillTrying = try await dashboard.request(state: "retrying", error: "quota exceeded")
            let answer = try await dashboard.post("/dashboard/failures/retry", form: [("csrf", csrf), ("reason", "quota exceeded")])
            #expect(answer.status == 303 && answer.header("Location") == "/dashboard/failures?notice=retried&count=3")
            for id in group { #expect(try await dashboard.state(of: id) == "queued") }
            #expect(try await dashboard.state(of: other) == "failed", "another group is left alone")
            #expect(try await dashboard.state(of: stillTrying) == "retrying", "retry touches the failed ones only")

            let cancel = try await dashboard.post("/dashboard/failures/cancel", form: [("csrf", csrf), ("reason", "quota exceeded")])
            #expect(cancel.header("Location") == "/dashboard/failures?notice=cancelled&count=1")
            #expect(try await dashboard.state(of: stillTrying) == "cancelled")
            #expect(try await dashboard.state(of: other) == "failed")
            #expect(try await dashboard.post("/dashboard/failures/retry", form: [("csrf", csrf)]).status == 400, "a group needs its reason")
        }
    }

    @Test("pause and resume submitting through the shared pause, shown on the overview")
    func pauseAndResume() async throws {
        try await DashboardFixture.serve { dashboard in
            let overview = try await dashboard.get("/dashboard")
            #expect(overview.body.contains("action=\"/dashboard/pause\"") && !overview.body.contains("Submitting is paused"))
            let csrf = try #require(overview.formValue("csrf"))
            let paused = try await dashboard.post("/dashboard/pause", form: [("csrf", csrf), ("reason", "vendor <b>incident</b>")])
            #expect(paused.status == 303 && paused.header("Location") == "/dashboard?notice=paused")
            let row = try await dashboard.admin.query("SELECT reason, paused_by FROM detectq.pauses WHERE kind = 'operator'")[0]
            #expect(try row.decode("reason", as: String.self) == "vendor <b>incident</b>")
            #expect(try row.decode("paused_by", as: String?.self) == "detectq dashboard (test)", "the dashboard's actor, as in the event history")
            let shown = try await dashboard.get("/dashboard?notice=paused")
            #expect(shown.body.contains("Submitting is paused") && shown.body.contains("vendor &lt;b&gt;incident&lt;/b&gt;"))
            #expect(shown.body.contains("action=\"/dashboard/resume\"") && !shown.body.contains("action=\"/dashboard/pause\""))
            #expect(try await dashboard.post("/dashboard/pause", form: [("csrf", csrf)]).header("Location") == "/dashboard?notice=already-paused")
            let resumed = try await dashboard.post("/dashboard/resume", form: [("csrf", csrf)])
            #expect(resumed.header("Location") == "/dashboard?notice=resumed")
            #expect(try await dashboard.admin.query("SELECT count(*) AS n FROM detectq.pauses")[0].decode("n", as: Int.self) == 0)
            #expect(try await dashboard.post("/dashboard/resume", form: [("csrf", csrf)]).header("Location") == "/dashboard?notice=not-paused")
        }
    }

    @Test("the needs-review filter lists the completed requests nobody can read the verdict of")
    func needsReview() async throws {
        try await DashboardFixture.serve { dashboard in
            let unreadable = try await dashboard.request(state: "completed")
            try await dashboard.admin.query("UPDATE detectq.requests SET is_fake = NULL, label = 'inconclusive' WHERE id = \(unreadable)")
            let real = try await dashboard.request(state: "completed", fake: false)
            let fake = try await dashboard.request(state: "completed", fake: true)
            let waiting = try await dashboard.request(state: "queued")
            let list = try await dashboard.get("/dashboard/requests?verdict=needs_review")
            #expect(list.status == 200)
            #expect(list.body.contains(#"href="/dashboard/requests/\#(unreadable)""#))
            for other in [real, fake, waiting] {
                #expect(!list.body.contains(#"href="/dashboard/requests/\#(other)""#), "request \(other) has a verdict or none yet")
            }
            #expect(list.body.contains("needs review"), "the filter and the row say so")
            let page = try await dashboard.get("/dashboard/requests/\(unreadable)")
            #expect(page.body.contains("needs review"))
        }
    }

    @Test("filters that cannot be read answer 400 naming the field")
    func badFilters() async throws {
        try await DashboardFixture.serve { dashboard in
            for (query, field) in [("state=bogus", "state"), ("verdict=maybe", "verdict"), ("media_type=text", "media_type"),
                                   ("submit_path=ftp", "submit_path"), ("from=yesterday", "from"), ("before=-3", "before"),
                                   ("after=12@yesterday", "after"), ("before=12@2026-11-22%2010:00:00+00';--", "before")] {
                let answer = try await dashboard.get("/dashboard/requests?\(query)")
                #expect(answer.status == 400 && answer.body.contains(field), "\(query)")
            }
        }
    }
}
