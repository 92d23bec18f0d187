import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("detectq config check and worker --config", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ConfigCommandTests {
    /// Settings for a worker that would run against the simulator, so no token is needed.
    let base = ["RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2", "RESEMBLE_API_TOKEN": "", "DETECTQ_CONCURRENCY": ""]

    func file(_ name: String, _ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-config-\(UUID().uuidString)-\(name)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aTOMLFileIsReadUnderTheEnvironmentAndSecretsAreMasked() async throws {
        let database = try await TestDatabase.createMigratedDatabase()
        let config = try file("detectq.toml", """
            resemble_api_token = "tok-very-secret-123"
            concurrency = 12
            DETECTQ_API_RATE_LIMIT = 7.5
            alert_webhook_secret = "hook-secret-456"
            lease_seconds = 45
            """)
        // Trust authentication ignores the password, which must still never be printed.
        var url = try #require(URLComponents(string: try TestDatabase.connectionURI(database: database.database!)))
        url.password = "pw-789"
        let outcome = try await DetectqExecutable.run(["config", "check", "--config", config], environment: base.merging([
            "DATABASE_URL": try #require(url.string), "DETECTQ_LEASE_SECONDS": "20",
            "DETECTQ_LISTEN_DATABASE_URL": "postgresql://listener:pw-listen-321@db.internal/media",
        ]) { $1 })
        #expect(outcome.status == 0, "\(outcome.standardOutput)\(outcome.standardError)")
        let output = outcome.standardOutput
        for secret in ["tok-very-secret-123", "hook-secret-456", "pw-789", "pw-listen-321"] {
            #expect(!output.contains(secret), "\(secret) must be masked")
        }
        #expect(output.contains("postgresql://postgres:****@"))
        #expect(output.contains("postgresql://listener:****@db.internal/media"))
        #expect(output.range(of: #"RESEMBLE_API_TOKEN\s+\*\*\*\*\s+\[file\]"#, options: .regularExpression) != nil)
        #expect(output.range(of: #"DETECTQ_CONCURRENCY\s+12\s+\[file\]"#, options: .regularExpression) != nil)
        #expect(output.range(of: #"DETECTQ_LEASE_SECONDS\s+20\s+\[environment\]"#, options: .regularExpression) != nil, "the environment wins")
        #expect(output.contains("effective: concurrency 12, rate limit 7.5/s, lease 20 s"))
        #expect(output.contains("database: reachable, detectq schema present"))
        #expect(output.hasSuffix("ok\n"))
    }

    @Test func everyErrorIsListedNamingItsSettingAndTheExitIsNonZero() async throws {
        let config = try file("detectq.yaml", """
            concurrency: many
            fake_threshold: 3
            http_port: 70000
            """)
        let outcome = try await DetectqExecutable.run(["config", "check", "--offline", "--config", config], environment: base)
        #expect(outcome.status == 1)
        let errors = outcome.standardOutput.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        #expect(errors.count == 3, "\(outcome.standardOutput)")
        #expect(errors.contains("error: DETECTQ_CONCURRENCY must be a whole number from 1 to 100000"))
        #expect(errors.contains("error: DETECTQ_HTTP_PORT must be a whole number from 0 to 65535"))
        #expect(errors.contains("error: DETECTQ_FAKE_THRESHOLD must be a number from 0 to 1"))
    }

    @Test func anUnknownSettingOrFormatIsRefused() async throws {
        let typo = try await DetectqExecutable.run(["config", "check", "--offline", "--config", try file("a.toml", "concurency = 5\n")], environment: base)
        #expect(typo.status == 1)
        #expect(typo.standardOutput.contains("error: concurency must be a detectq setting"))
        let format = try await DetectqExecutable.run(["config", "check", "--offline", "--config", try file("a.ini", "x=1\n")], environment: base)
        #expect(format.status == 1)
        #expect(format.standardOutput.contains("error: --config must be a .toml, .yaml or .yml file"))
        let broken = try await DetectqExecutable.run(["config", "check", "--offline", "--config", try file("b.toml", "a = = 1\n")], environment: base)
        #expect(broken.status == 1)
        #expect(broken.standardOutput.contains("error: --config must be valid TOML"))
    }

    @Test func theWorkerStopsAtStartOnABadConfigFileWithOneLine() async throws {
        let outcome = try await DetectqExecutable.run(["worker", "--config", try file("w.yml", "lease_seconds: -1\n")], environment: base)
        #expect(outcome.status == 1)
        #expect(outcome.standardError == "detectq worker: DETECTQ_LEASE_SECONDS must be a number of seconds from 0.1 to 86400\n")
    }
}

@Suite("detectq status --watch", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct StatusWatchTests {
    @Test func watchRefreshesUntilInterruptedAndJSONGivesOneObjectALine() async throws {
        let database = try await TestDatabase.createMigratedDatabase()
        let environment = ["DATABASE_URL": try TestDatabase.connectionURI(database: database.database!)]
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 1)
        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/a.wav')")

        let text = try await DetectqProcess.start(["status", "--watch", "--interval", "0.2"], environment: environment)
        try await waitUntil("status --watch refreshes") { text.output.components(separatedBy: "detectq status at").count - 1 >= 2 }
        let output = text.output
        await text.stop(signal: SIGINT)
        #expect(output.components(separatedBy: "detectq status at").count - 1 >= 2, "it refreshed: \(output)")
        #expect(output.contains("queued           1"))

        let json = try await DetectqProcess.start(["status", "--watch", "--json", "--interval", "0.2"], environment: environment)
        _ = try await json.waitForLine(containing: "\"states\"")
        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/b.wav')")
        try await waitUntil("a report counts the new request") { json.output.contains(#""queued":2"#) }
        let lines = json.output.split(separator: "\n")
        await json.stop()
        #expect(lines.count >= 2)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect((object?["states"] as? [String: Int])?["queued"] != nil, "each line is a whole report: \(line)")
        }
        #expect(lines.last.map { $0.contains(#""queued":2"#) } == true, "a later line sees the new request")
        await pool.close()
    }
}

@Suite("detectq demo", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts, .serialized)
struct DemoCommandTests {
    /// The summary's number for `name` (a line that starts with it after the indentation).
    func number(_ name: String, in output: String) -> Int? {
        for line in output.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix(name + " ") {
            let rest = line.trimmingCharacters(in: .whitespaces).dropFirst(name.count).trimmingCharacters(in: .whitespaces)
            return Int(rest.prefix { $0.isNumber })
        }
        return nil
    }

    @Test func withDATABASE_URLTheSummaryMatchesTheDatabase() async throws {
        let database = try await TestDatabase.createDatabase()
        let outcome = try await DetectqExecutable.run(["demo", "--requests", "14", "--live", "4", "--live-every", "0.2", "--latency", "0.2"], environment: [
            "DATABASE_URL": try TestDatabase.connectionURI(database: database.database!), "RESEMBLE_API_TOKEN": "",
        ])
        let output = outcome.standardOutput
        #expect(outcome.status == 0, "\(output)\(outcome.standardError)")
        let runID = try #require(output.firstMatch(of: /Summary of demo run ([0-9a-f]+)/)?.1).description
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 1)
        func count(_ sql: String) async throws -> Int {
            try await pool.query(PostgresQuery(sql: "SELECT count(*) AS n " + sql, parameters: [runID]))[0].decode("n", as: Int.self)
        }
        let mine = "FROM detectq.requests WHERE metadata->>'demo' = $1"
        #expect(number("requests", in: output) == 22)
        #expect(try await count(mine) == 22)
        #expect(number("completed", in: output) == (try await count(mine + " AND state = 'completed'")))
        #expect(number("completed", in: output) == 22)
        #expect(output.contains("22 requests, 19 detections, 3 reused"), "three copies of earlier files spent no detection")
        #expect(number("reused", in: output) == 3)
        #expect(try await count(mine + " AND submit_path = 'reused' AND reused_from IS NOT NULL") == 3)
        #expect(number("unfinished", in: output) == 0)
        #expect(number("demo-backfill", in: output) == 18 && number("demo-live", in: output) == 4, "each lane's line")
        #expect(try await count(mine + " AND queue = 'demo-backfill'") == 18)
        #expect(try await count(mine + " AND queue = 'demo-live'") == 4)
        #expect(try await count("FROM detectq.queues WHERE name = 'demo-live' AND weight = 4 AND $1 <> ''") == 1, "the live lane weighs 4")
        #expect(output.range(of: #"demo-live\s+4\s+median \d+\.\d\d s, p95 \d+\.\d\d s, longest \d+\.\d\d s"#, options: .regularExpression) != nil)
        #expect(try await count(mine + " AND queue = 'demo-live' AND created_at > (SELECT min(created_at) + interval '0.5 s' \(mine))") >= 1,
                "the live requests were trickled in while the backfill drained, not enqueued with it")
        #expect(number("fakes found", in: output) == (try await count(mine + " AND is_fake")))
        #expect(number("fakes found", in: output) == 11, "7 of the 14 alternate, the large file is fake, 2 of the 4 live, and one copy")
        #expect(number("alerts sent", in: output) == (try await count("""
            FROM detectq.post_tasks t JOIN detectq.requests r ON r.id = t.request_id
            WHERE r.metadata->>'demo' = $1 AND t.processor LIKE 'alert.%' AND t.state = 'completed'
            """)))
        #expect(output.range(of: #"alerts sent\s+11\s+pg_notify on detectq_alerts; 11 received by this demo"#, options: .regularExpression) != nil)
        #expect(number("archive rows", in: output) == (try await count("""
            FROM detectq.intelligence_archive a JOIN detectq.requests r ON r.id = a.request_id WHERE r.metadata->>'demo' = $1
            """)))
        #expect(number("retention confirmed", in: output) == (try await count(mine + " AND zero_retention_mode AND file_deleted_at IS NOT NULL")))
        #expect(try await count(mine + " AND submit_path = 'secure_upload'") == 1, "the large file went through a secure upload")
        #expect(number("API submissions", in: output) == 19)
        #expect(output.contains("0 media submitted more than once"))
        #expect(output.contains("detectq show <id>"), "it says where to look next")
        await pool.close()
    }

    @Test func withNoSettingsItStartsAndRemovesItsOwnClusterAndSimulator() async throws {
        let outcome = try await DetectqExecutable.run(["demo", "--requests", "4", "--no-large-file", "--latency", "0.1"], environment: [
            "DATABASE_URL": "", "RESEMBLE_API_TOKEN": "",
        ])
        let output = outcome.standardOutput
        #expect(outcome.status == 0, "\(output)\(outcome.standardError)")
        let directory = try #require(output.firstMatch(of: /PostgreSQL on 127\.0\.0\.1:\d+, in (\S+)/)?.1).description
        #expect(!FileManager.default.fileExists(atPath: directory), "the cluster's directory is removed")
        #expect(output.contains("stopped and removed the throwaway PostgreSQL cluster"))
        #expect(output.contains("stopped the simulator"))
        #expect(number("completed", in: output) == 13, "4 in the backfill lane, a copy of its one file, and 8 live, by default")
        #expect(number("demo-backfill", in: output) == 5 && number("demo-live", in: output) == 8)
        #expect(output.contains("the throwaway cluster is gone"))
    }
}
