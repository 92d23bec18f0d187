import DetectqTestSupport
import Foundation
import Postgres
import ResembleDetect
import Testing

@Suite("enqueue, status, retry and cancel as processes", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct OperatorCommandTests {
    func database() async throws -> ([String: String], PostgresConnectionPool) {
        let configuration = try await TestDatabase.createMigratedDatabase()
        return (["DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!)],
                PostgresConnectionPool(configuration: configuration, maximumConnections: 1))
    }

    @Test func enqueuePrintsTheIdAndReportsConstraints() async throws {
        let (environment, pool) = try await database()
        let made = try await DetectqExecutable.run(
            ["enqueue", "--url", "https://cdn.example.com/a.mp4", "--intelligence", "--priority", "5", "--metadata", #"{"case": 9}"#],
            environment: environment
        )
        #expect(made.status == 0, "\(made.standardError)")
        let id = try #require(Int(made.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)))
        let row = try await pool.query("SELECT intelligence, priority, metadata->>'case' AS c FROM detectq.requests WHERE id = \(id)")[0]
        #expect(try row.decode("intelligence", as: Bool.self) && row.decode("priority", as: Int.self) == 5 && row.decode("c", as: String?.self) == "9")

        let refused = try await DetectqExecutable.run(["enqueue", "--url", "https://cdn.example.com/b.wav", "--frame-length", "5"], environment: environment)
        #expect(refused.status != 0)
        #expect(refused.standardError.hasPrefix("detectq enqueue: rejected by requests_frame_length_range"))
        let twoSources = try await DetectqExecutable.run(["enqueue", "--url", "https://a/b.wav", "--token", "t"], environment: environment)
        #expect(twoSources.status != 0 && twoSources.standardError.contains("exactly one of --url, --path and --token"))
        await pool.close()
    }

    @Test func pauseAndResumeSetTheSharedPauseAndStatusShowsWhoWhenAndWhy() async throws {
        let (environment, pool) = try await database()
        let paused = try await DetectqExecutable.run(["pause", "--reason", "incident 42: vendor outage"], environment: environment.merging(["USER": "ops"]) { $1 })
        #expect(paused.status == 0 && paused.standardOutput.hasPrefix("submitting paused on every worker: incident 42"), "\(paused.standardError)")
        let again = try await DetectqExecutable.run(["pause"], environment: environment)
        #expect(again.status == 0 && again.standardOutput.contains("already paused"))
        let text = try await DetectqExecutable.run(["status"], environment: environment)
        #expect(text.standardOutput.hasPrefix("submitting: PAUSED\n  operator since "), "\(text.standardOutput)")
        #expect(text.standardOutput.contains("by detectq pause (ops@") && text.standardOutput.contains(": incident 42: vendor outage"))
        let json = try await DetectqExecutable.run(["status", "--json"], environment: environment)
        let report = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.standardOutput.utf8))
        guard case .array(let pauses)? = report["pauses"] else {
            Issue.record("status --json has pauses: \(json.standardOutput)")
            return
        }
        #expect(pauses.first?["kind"] == .string("operator") && pauses.first?["reason"] == .string("incident 42: vendor outage"))
        let row = try await pool.query("SELECT reason, paused_by FROM detectq.pauses WHERE kind = 'operator'")
        #expect(try row.first?.decode("paused_by", as: String?.self)?.hasPrefix("detectq pause (ops@") == true)
        let resumed = try await DetectqExecutable.run(["resume"], environment: environment)
        #expect(resumed.status == 0 && resumed.standardOutput == "submitting resumed on every worker\n")
        let idle = try await DetectqExecutable.run(["resume"], environment: environment)
        #expect(idle.standardOutput.contains("nothing changed"))
        #expect(try await DetectqExecutable.run(["status"], environment: environment).standardOutput.hasPrefix("submitting: running\n"))
        let blank = try await DetectqExecutable.run(["pause", "--reason", " "], environment: environment)
        #expect(blank.status != 0 && blank.standardError.contains("--reason must not be blank"))
        await pool.close()
    }

    @Test func retryAndCancelGoThroughTheStateMachine() async throws {
        let (environment, pool) = try await database()
        let ids = try await pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/' || n || '.wav' FROM generate_series(1, 3) n RETURNING id
            """).map { try $0.decode("id", as: Int.self) }
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', locked_by = 'w', locked_until = now() + interval '1 minute', attempt = 8
            WHERE id = \(ids[0])
            """)
        try await pool.query("""
            UPDATE detectq.requests SET state = 'failed', locked_by = NULL, locked_until = NULL, error_message = 'HTTP 503' WHERE id = \(ids[0])
            """)

        let retried = try await DetectqExecutable.run(["retry", "\(ids[0])"], environment: environment)
        #expect(retried.status == 0 && retried.standardOutput == "request \(ids[0]): failed -> queued\n", "\(retried.standardError)")
        let row = try await pool.query("SELECT attempt, error_message FROM detectq.requests WHERE id = \(ids[0])")[0]
        #expect(try row.decode("attempt", as: Int.self) == 0 && row.decode("error_message", as: String?.self) == nil, "attempts given back")

        let notFailed = try await DetectqExecutable.run(["retry", "\(ids[1])"], environment: environment)
        #expect(notFailed.status != 0)
        #expect(notFailed.standardError == "request \(ids[1]): cannot retry: it is queued; only a failed request can be retried\n")

        let cancelled = try await DetectqExecutable.run(["cancel", "\(ids[1])", "\(ids[2])", "999999"], environment: environment)
        #expect(cancelled.status != 0, "one of the three does not exist")
        #expect(cancelled.standardOutput.contains("request \(ids[1]): queued -> cancelled"))
        #expect(cancelled.standardError.contains("request 999999: cannot cancel: there is no request 999999"))
        let again = try await DetectqExecutable.run(["cancel", "\(ids[1])"], environment: environment)
        #expect(again.standardError == "request \(ids[1]): cannot cancel: it is already cancelled; only an unfinished request can be cancelled\n")
        let actor = try await pool.query("""
            SELECT worker_id FROM detectq.request_events WHERE request_id = \(ids[1]) AND to_state = 'cancelled'
            """)[0].decode("worker_id", as: String?.self)
        #expect(actor?.hasPrefix("detectq cancel (") == true, "the history says who did it")
        await pool.close()
    }

    @Test func statusCountsStatesFailuresAndBacklog() async throws {
        let (environment, pool) = try await database()
        try await pool.query("INSERT INTO detectq.requests (media_url) SELECT 'https://a/' || n || '.wav' FROM generate_series(1, 4) n")
        try await pool.query("""
            UPDATE detectq.requests SET state = 'cancelled' WHERE id IN (SELECT id FROM detectq.requests ORDER BY id LIMIT 1)
            """)
        let text = try await DetectqExecutable.run(["status"], environment: environment)
        #expect(text.status == 0)
        #expect(text.standardOutput.contains("queued           3") && text.standardOutput.contains("cancelled        1"))
        let json = try await DetectqExecutable.run(["status", "--json"], environment: environment)
        let report = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.standardOutput.utf8))
        #expect(report["states"]?["queued"] == .number(3) && report["states"]?["completed"] == .number(0))
        #expect(report["oldest_claimable_seconds"]?.doubleValue != nil)
        #expect(report["failures_by_reason"] == .array([]) && report["post_task_backlog"] == .object([:]))
        await pool.close()
    }
}

@Suite("show and prune as processes", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ShowAndPruneTests {
    @Test func showPrintsTheRequestAndItsHistory() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!)]
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        let id = try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/s.wav') RETURNING id")[0]
            .decode("id", as: Int.self)
        try await pool.query("UPDATE detectq.requests SET state = 'cancelled' WHERE id = \(id)")
        let shown = try await DetectqExecutable.run(["show", "\(id)"], environment: environment)
        #expect(shown.status == 0)
        #expect(shown.standardOutput.hasPrefix("request \(id): cancelled (attempt 0 of 8)"))
        #expect(shown.standardOutput.contains("https://cdn.example.com/s.wav"))
        #expect(shown.standardOutput.contains("- -> queued") && shown.standardOutput.contains("queued -> cancelled"))
        let missing = try await DetectqExecutable.run(["show", "424242"], environment: environment)
        #expect(missing.status != 0 && missing.standardError == "detectq show: there is no request 424242\n")
        await pool.close()
    }

    @Test func pruneDeletesOldFinishedRequestsOnly() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: configuration.database!)]
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        try await pool.query("INSERT INTO detectq.requests (media_url) SELECT 'https://a/' || n || '.wav' FROM generate_series(1, 7) n")
        try await pool.query("UPDATE detectq.requests SET state = 'cancelled' WHERE id IN (SELECT id FROM detectq.requests ORDER BY id LIMIT 5)")
        // An UPDATE that sets updated_at itself keeps its value (the trigger only fills it in when it is not set).
        try await pool.query("UPDATE detectq.requests SET updated_at = now() - interval '40 days' WHERE id IN (SELECT id FROM detectq.requests ORDER BY id LIMIT 6)")
        let pruned = try await DetectqExecutable.run(["prune", "--older-than", "30d", "--batch-size", "2"], environment: environment)
        #expect(pruned.status == 0, "\(pruned.standardError)")
        #expect(pruned.standardOutput == "pruned 5 finished requests older than 30d\n")
        let left = try await pool.query("SELECT state::text AS state FROM detectq.requests ORDER BY id").map { try $0.decode("state", as: String.self) }
        #expect(left == ["queued", "queued"], "an old unfinished request and a new one stay")
        #expect(try await pool.query("SELECT count(*) AS n FROM detectq.request_events WHERE request_id NOT IN (SELECT id FROM detectq.requests)")[0]
            .decode("n", as: Int.self) == 0, "their events went with them")
        let bad = try await DetectqExecutable.run(["prune", "--older-than", "soon"], environment: environment)
        #expect(bad.status != 0 && bad.standardError.contains("--older-than must be a duration"))
        await pool.close()
    }
}
