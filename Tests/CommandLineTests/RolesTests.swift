import AsyncHTTPClient
import DetectQueue
import DetectSimulator
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import NIOCore
import Postgres
import Testing

/// The four roles of REFERENCE.md section 10, each tried under a login role that holds only its membership:
/// what it may do (a producer's INSERT, the worker, every command, the dashboard) and what it is refused.
@Suite("Least-privilege roles", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct RolesTests {
    /// A database with detectq's schema and roles, and a way in as a login role of one of them.
    struct Setup {
        let configuration: PostgresConfiguration
        let owner: PostgresConnectionPool

        static func make() async throws -> Setup {
            let configuration = try await TestDatabase.createMigratedDatabase()
            let uri = try TestDatabase.connectionURI(database: configuration.database!)
            let applied = try await serially { try await DetectqExecutable.run(["roles", "--apply"], environment: ["DATABASE_URL": uri]) }
            #expect(applied.status == 0 && applied.standardOutput.hasPrefix("roles ready: detectq_producer"), "\(applied.standardError)")
            return Setup(configuration: configuration, owner: PostgresConnectionPool(configuration: configuration, maximumConnections: 2))
        }

        /// Applying the roles (and making login roles) changes roles the whole test server shares: one at a time.
        static func serially<Result: Sendable>(_ body: @Sendable () async throws -> Result) async throws -> Result {
            try await RolesApplication.shared.run(body)
        }

        /// A new login role holding only `role`, and the connection URI a process uses to log in as it.
        func login(as role: String) async throws -> (uri: String, configuration: PostgresConfiguration) {
            let name = "login_" + role.replacingOccurrences(of: "detectq_", with: "") + "_" + UUID().uuidString.prefix(8).lowercased()
            let owner = owner
            _ = try await Self.serially { try await owner.query(PostgresQuery(sql: "CREATE ROLE \(name) LOGIN IN ROLE \(role)", parameters: [])).count }
            guard var components = URLComponents(string: try TestDatabase.connectionURI(database: configuration.database!)) else {
                throw TestSetupError("DATABASE_URL must be a postgresql:// URI")
            }
            components.user = name
            let uri = try components.string ?? { throw TestSetupError("no URI for \(name)") }()
            return (uri, PostgresConfiguration(connectionString: uri))
        }

        func insert(_ count: Int) async throws -> [Int] {
            try await owner.query(PostgresQuery(sql: """
                INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/roles-' || n || '.wav' FROM generate_series(1, $1::int) AS n
                RETURNING id
                """, parameters: [count])).map { try $0.decode("id", as: Int.self) }
        }
    }

    /// Runs `sql` as the connection and returns the SQLSTATE it was refused with, or nil when it ran.
    static func refusal(_ sql: String, on connection: PostgresConnection) async -> String? {
        do {
            try await connection.query(PostgresQuery(sql: sql, parameters: []))
            return nil
        } catch let error as PostgresError {
            return error.sqlState?.code ?? "\(error)"
        } catch {
            return "\(error)"
        }
    }

    static let insufficientPrivilege = "42501"

    @Test func theRolesCoverEveryTableAndColumnAndTheScriptRunsAgain() async throws {
        let setup = try await Setup.make()
        let tables = try await setup.owner.query("""
            SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'detectq' AND table_type = 'BASE TABLE'
            """).map { try $0.decode("name", as: String.self) }
        #expect(Set(tables) == Set(DatabaseRoles.tables), "every table has its grants decided")
        let columns = try await setup.owner.query("""
            SELECT column_name::text AS name FROM information_schema.columns WHERE table_schema = 'detectq' AND table_name = 'requests'
            """).map { try $0.decode("name", as: String.self) }
        #expect(Set(columns) == Set(DatabaseRoles.requestColumns), "every column of requests has its grants decided")
        let uri = try TestDatabase.connectionURI(database: setup.configuration.database!)
        let again = try await Setup.serially { try await DetectqExecutable.run(["roles", "--apply"], environment: ["DATABASE_URL": uri]) }
        #expect(again.status == 0, "safe to run again: \(again.standardError)")
        let printed = try await DetectqExecutable.run(["roles"])
        #expect(printed.status == 0 && printed.standardOutput == DatabaseRoles.script, "prints the SQL without a database")
        let secretReaders = try await setup.owner.query("""
            SELECT DISTINCT grantee::text AS role FROM information_schema.column_privileges
            WHERE table_schema = 'detectq' AND table_name = 'requests' AND privilege_type = 'SELECT'
              AND column_name IN ('callback_secret_hash', 'earlier_callback_secret_hashes', 'media_token', 'secure_upload_token')
              AND grantee::text LIKE 'detectq\\_%'
            """).map { try $0.decode("role", as: String.self) }
        #expect(secretReaders == ["detectq_worker"], "only the worker reads a secret's column: \(secretReaders)")
        await setup.owner.close()
    }

    @Test func aProducerInsertsAndReadsOutcomesButNeitherSecretsNorAVerdictItCouldChange() async throws {
        let setup = try await Setup.make()
        let producer = try await setup.login(as: DatabaseRoles.producer)
        let connection = try await PostgresConnection.connect(producer.configuration)
        let id = try await connection.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, metadata) VALUES ('https://cdn.example.com/p.wav', 'poll', '{"upload": 7}')
            RETURNING id
            """)[0].decode("id", as: Int.self)
        let read = try await connection.query(PostgresQuery(sql: "SELECT state::text AS state, label, is_fake FROM detectq.requests WHERE id = $1", parameters: [id]))
        #expect(try read[0].decode("state", as: String.self) == "queued")
        #expect(try await connection.query(PostgresQuery(sql: "SELECT to_state::text FROM detectq.request_events WHERE request_id = $1", parameters: [id])).count == 1)
        let enqueued = try await DetectqExecutable.run(["enqueue", "--url", "https://cdn.example.com/cli.wav"], environment: ["DATABASE_URL": producer.uri])
        #expect(enqueued.status == 0, "detectq enqueue as a producer: \(enqueued.standardError)")

        #expect(await Self.refusal("UPDATE detectq.requests SET label = 'real', is_fake = false WHERE id = \(id)", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("SELECT callback_secret_hash FROM detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("SELECT media_token FROM detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("""
            INSERT INTO detectq.requests (media_url, callback_secret_hash) VALUES ('https://cdn.example.com/forged.wav', 'abc')
            """, on: connection) == Self.insufficientPrivilege, "a producer cannot plant a callback secret")
        #expect(await Self.refusal("DELETE FROM detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("INSERT INTO detectq.request_events (request_id, to_state) VALUES (\(id), 'completed')", on: connection)
            == Self.insufficientPrivilege, "nor forge its history")
        await connection.close()
        let counts = try await KeptCounts.both(setup.owner)
        #expect(counts.kept == counts.counted, "the triggers kept the counts for a producer that may not write them")
        await setup.owner.close()
    }

    @Test func aViewerReadsStatusShowAndTheDashboardButChangesNothing() async throws {
        let setup = try await Setup.make()
        let ids = try await setup.insert(2)
        let viewer = try await setup.login(as: DatabaseRoles.viewer)
        let environment = ["DATABASE_URL": viewer.uri]
        let status = try await DetectqExecutable.run(["status"], environment: environment)
        #expect(status.status == 0 && status.standardOutput.contains("queued"), "\(status.standardError)")
        let show = try await DetectqExecutable.run(["show", "\(ids[0])"], environment: environment)
        #expect(show.status == 0 && show.standardOutput.contains("roles-1.wav"), "\(show.standardError)")
        let cancel = try await DetectqExecutable.run(["cancel", "\(ids[0])"], environment: environment)
        #expect(cancel.status != 0 && cancel.standardError.contains("permission denied"), "a viewer's cancel is refused: \(cancel.standardError)")
        let pause = try await DetectqExecutable.run(["pause"], environment: environment)
        #expect(pause.status != 0 && pause.standardError.contains("permission denied"), "\(pause.standardError)")

        let port = try LoopbackPort.free()
        let dashboard = try await DetectqProcess.start(["dashboard", "--port", "\(port)"], environment: [
            "DATABASE_URL": viewer.uri, "DETECTQ_DASHBOARD_TOKEN": Dashboard.token, "DETECTQ_DASHBOARD_READONLY": "1",
        ])
        _ = try? await dashboard.waitForLine(containing: "dashboard listening")
        let base = "http://127.0.0.1:\(port)/dashboard"
        var pages: [String: Int] = [:]
        for path in ["", "/requests", "/requests/\(ids[0])", "/failures"] {
            pages[path] = (try? await Dashboard.get(base + path))?.status
        }
        _ = await dashboard.stop()
        #expect(pages.values.allSatisfy { $0 == 200 } && pages.count == 4, "every page as a viewer: \(pages); \(dashboard.output.suffix(1500))")

        let connection = try await PostgresConnection.connect(viewer.configuration)
        #expect(await Self.refusal("SELECT earlier_callback_secret_hashes FROM detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("UPDATE detectq.requests SET state = 'queued' WHERE id = \(ids[1])", on: connection) == Self.insufficientPrivilege)
        await connection.close()
        await setup.owner.close()
    }

    @Test func aViewersStatusNamesTheSnapshotThatHoldsBackVacuumThoughNotWhenItBegan() async throws {
        let setup = try await Setup.make()
        let producer = try await setup.login(as: DatabaseRoles.producer)
        let snapshot = try await PostgresConnection.connect(producer.configuration)
        try await snapshot.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        let pid = try await snapshot.query("SELECT pg_backend_pid()::int8 AS pid, (SELECT count(*) FROM detectq.request_events) AS events")[0]
            .decode("pid", as: Int.self)
        for _ in 0..<3 { try await setup.owner.query("SELECT txid_current()") }
        let viewer = try await setup.login(as: DatabaseRoles.viewer)
        let status = try await DetectqExecutable.run(["status", "--json"], environment: ["DATABASE_URL": viewer.uri])
        #expect(status.status == 0, "\(status.standardError)")
        let horizon = try #require(
            (try JSONSerialization.jsonObject(with: Data(status.standardOutput.utf8)) as? [String: Any])?["vacuum_horizon"] as? [String: Any]
        )
        let holder = producer.uri.split(separator: "@")[0].split(separator: "/").last.map(String.init) ?? "?"
        #expect((horizon["held_by"] as? String)?.hasPrefix("session pid \(pid), role \(holder)") == true, "\(horizon)")
        #expect((horizon["age_transactions"] as? Int ?? 0) >= 3, "three transactions since the snapshot: \(horizon)")
        #expect(horizon["held_seconds"] == nil, "a viewer may not see when another role's transaction began: \(horizon)")
        #expect(horizon["warning"] as? Bool == false, "young, and fewer than a million transactions old")
        let text = try await DetectqExecutable.run(["status"], environment: ["DATABASE_URL": viewer.uri])
        #expect(text.standardOutput.contains("vacuum horizon: ") && text.standardOutput.contains("pg_read_all_stats shows it"), "\(text.standardOutput)")

        // The schema's owner (a superuser here) sees when it began.
        let seen = try await VacuumHorizon.read(setup.owner)
        guard case .session(pid, holder, _, "idle in transaction")? = seen.holder else {
            Issue.record("the owner sees the session, its role and its state: \(seen)")
            return
        }
        #expect((seen.heldSeconds ?? -1) >= 0 && (seen.heldSeconds ?? .infinity) < 600)
        try await snapshot.query("COMMIT")
        await snapshot.close()
        let released = try await VacuumHorizon.read(setup.owner)
        if case .session(pid, _, _, _)? = released.holder { Issue.record("the snapshot was let go, yet its session still holds: \(released)") }
        await setup.owner.close()
    }

    @Test func anOperatorRetriesCancelsPausesAndPrunesFromCommandsAndTheDashboardButHasNoDDL() async throws {
        let setup = try await Setup.make()
        let ids = try await setup.insert(3)
        try await setup.owner.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'submitting', attempt = 8, locked_by = 'w', locked_until = now() + interval '1 minute' WHERE id = ANY($1)
            """, parameters: [Array(ids.prefix(2))]))
        try await setup.owner.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET state = 'failed', locked_by = NULL, locked_until = NULL, error_message = 'HTTP 503' WHERE id = ANY($1)
            """, parameters: [Array(ids.prefix(2))]))
        let operatorLogin = try await setup.login(as: DatabaseRoles.operator)
        let environment = ["DATABASE_URL": operatorLogin.uri]
        for arguments in [["retry", "\(ids[0])"], ["cancel", "\(ids[2])"], ["pause", "--reason", "roles test"], ["status"], ["resume"]] {
            let outcome = try await DetectqExecutable.run(arguments, environment: environment)
            #expect(outcome.status == 0, "\(arguments.joined(separator: " ")) as an operator: \(outcome.standardError)")
        }
        try await setup.owner.query(PostgresQuery(sql: """
            UPDATE detectq.requests SET updated_at = now() - interval '40 days' WHERE id = $1
            """, parameters: [ids[2]]))
        let pruned = try await DetectqExecutable.run(["prune", "--older-than", "30d"], environment: environment)
        #expect(pruned.status == 0 && pruned.standardOutput.hasPrefix("pruned 1 finished"), "prune as an operator: \(pruned.standardOutput) \(pruned.standardError)")

        let port = try LoopbackPort.free()
        let dashboard = try await DetectqProcess.start(["dashboard", "--port", "\(port)"], environment: [
            "DATABASE_URL": operatorLogin.uri, "DETECTQ_DASHBOARD_TOKEN": Dashboard.token,
        ])
        _ = try? await dashboard.waitForLine(containing: "dashboard listening")
        let base = "http://127.0.0.1:\(port)/dashboard"
        let page = try? await Dashboard.get(base + "/requests/\(ids[1])")
        let csrf = page.flatMap { Dashboard.csrf(in: $0.body) }
        let retried = try? await Dashboard.post(base + "/requests/\(ids[1])/retry", form: "csrf=\(csrf ?? "")")
        _ = await dashboard.stop()
        // The client follows the redirect back to the request's page.
        #expect(retried?.status == 200 && csrf != nil, "the dashboard's retry as an operator: \(retried?.body.prefix(600) ?? "no answer"); \(dashboard.output.suffix(1500))")
        let states = try await setup.owner.query(PostgresQuery(sql: "SELECT id, state::text AS state FROM detectq.requests WHERE id = ANY($1) ORDER BY id", parameters: [ids]))
            .map { try $0.decode("state", as: String.self) }
        #expect(states == ["queued", "queued"], "retried by the command and by the dashboard; the cancelled one pruned: \(states)")

        let connection = try await PostgresConnection.connect(operatorLogin.configuration)
        #expect(await Self.refusal("CREATE TABLE detectq.operator_notes (note text)", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("SELECT callback_secret_hash FROM detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("UPDATE detectq.requests SET label = 'real' WHERE id = \(ids[0])", on: connection) == Self.insufficientPrivilege,
                "an operator changes states, not verdicts")
        await connection.close()
        await setup.owner.close()
    }

    @Test func aWorkerRunsEveryRequestToItsEndWithPostTasksButHasNoDDLOrTruncate() async throws {
        let setup = try await Setup.make()
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .milliseconds(50)))
        let sink = try await HTTPRecorder.start()
        try await setup.owner.query("""
            INSERT INTO detectq.requests (media_url, wait_mode, intelligence)
            SELECT 'https://cdn.example.com/' || CASE WHEN n % 2 = 0 THEN 'fake-' ELSE '' END || 'worker-' || n || '.wav',
                   (ARRAY['sync', 'poll', 'callback'])[1 + n % 3], n % 4 = 0
            FROM generate_series(1, 12) AS n
            """)
        let workerLogin = try await setup.login(as: DatabaseRoles.worker)
        let port = try LoopbackPort.free()
        let worker = try await DetectqProcess.start(["worker"], environment: [
            "DATABASE_URL": workerLogin.uri, "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": "least-privilege",
            "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_CALLBACK_URL": "http://127.0.0.1:\(port)", "DETECTQ_POLL_INTERVAL": "0.3",
            "DETECTQ_ALERT_WEBHOOK_URL": sink.baseURL + "/alerts", "DETECTQ_ALERT_WEBHOOK_SECRET": "roles-webhook-secret",
            // The simulator posts each callback once, as a real sender may give up: one refused under the suite's
            // load (a 503 while the database is slow to answer) is then found by the poll after this, inside the wait.
            "DETECTQ_CALLBACK_TIMEOUT": "10",
        ])
        do {
            try await waitUntil("every request and post-task finished under the worker role") {
                let open = try await setup.owner.query("""
                    SELECT (SELECT count(*) FROM detectq.requests WHERE state NOT IN ('completed', 'failed', 'cancelled'))
                         + (SELECT count(*) FROM detectq.post_tasks WHERE state NOT IN ('completed', 'failed')) AS n
                    """)[0].decode("n", as: Int.self)
                return open == 0
            }
        } catch {
            let unfinished = try await setup.owner.query("""
                SELECT id FROM detectq.requests WHERE state NOT IN ('completed', 'failed', 'cancelled') ORDER BY id
                """).map { try $0.decode("id", as: Int.self) }
            let lines = worker.output.split(separator: "\n").filter { line in
                unfinished.contains { line.contains("request_id=\($0) ") } || line.contains(" warning ") || line.contains(" error ")
            }
            let callbacks = await simulator.state.snapshot()
            Issue.record("""
                \(error); unfinished \(unfinished); callbacks sent \(callbacks.callbacksSent), refused \(callbacks.callbackFailures); \
                the worker's lines for them and its warnings:
                \(lines.suffix(60).joined(separator: "\n"))
                """)
        }
        let status = await worker.stop()
        #expect(status == 0, "a clean stop")
        #expect(!worker.output.contains("permission denied"), "\(worker.output.suffix(3000))")
        let completed = try await setup.owner.query("SELECT count(*) AS n FROM detectq.requests WHERE state = 'completed'")[0].decode("n", as: Int.self)
        #expect(completed == 12)
        let postTasks = try await setup.owner.query("SELECT count(*) AS n FROM detectq.post_tasks WHERE state = 'completed'")[0].decode("n", as: Int.self)
        #expect(postTasks >= 6, "the fakes' alerts ran: \(postTasks)")
        #expect(sink.deliveries.count >= 6)
        let counts = try await KeptCounts.both(setup.owner)
        #expect(counts.kept == counts.counted)

        let connection = try await PostgresConnection.connect(workerLogin.configuration)
        #expect(await Self.refusal("CREATE TABLE detectq.worker_notes (note text)", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("TRUNCATE detectq.requests", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("DROP TABLE detectq.workers", on: connection) == Self.insufficientPrivilege)
        #expect(await Self.refusal("SELECT callback_secret_hash, media_token FROM detectq.requests", on: connection) == nil, "the worker reads them")
        await connection.close()
        await setup.owner.close()
    }
}

/// Changes to the server's shared roles, one at a time in this process: two at once race on its catalogs.
private actor RolesApplication {
    static let shared = RolesApplication()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func run<Result: Sendable>(_ body: @Sendable () async throws -> Result) async throws -> Result {
        while busy { await withCheckedContinuation { waiting.append($0) } }
        busy = true
        defer {
            busy = false
            if !waiting.isEmpty { waiting.removeFirst().resume() }
        }
        return try await body()
    }
}

/// The dashboard as the role tests reach it: the token, a page, its CSRF field, a form posted.
private enum Dashboard {
    static let token = "roles-dashboard-token-9c2d"

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    static func post(_ url: String, form: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: form))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    static func csrf(in page: String) -> String? {
        guard let range = page.range(of: #"name="csrf" value="([^"]+)""#, options: .regularExpression) else { return nil }
        return String(page[range]).components(separatedBy: "value=\"").last?.dropLast().description
    }
}
