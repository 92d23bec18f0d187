import AsyncHTTPClient
import DetectqTestSupport
import EmbeddedPostgres
import Foundation
import NIOCore
import Postgres
import Testing

/// `detectq dashboard` and the worker's own dashboard, as processes: off unless enabled, refused without a
/// token, and serving the same pages either way.
@Suite("The dashboard as a command and on the worker's port", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct DashboardCommandTests {
    static let token = "dashboard-command-token-5f1e"

    static func get(_ url: String, token: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    @Test func withoutATokenTheCommandStopsAtStartNamingTheVariable() async throws {
        for token in ["", "too-short"] {
            let outcome = try await DetectqExecutable.run(["dashboard"], environment: ["DETECTQ_DASHBOARD_TOKEN": token])
            #expect(outcome.status == 1)
            let lines = outcome.standardError.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains("DETECTQ_DASHBOARD_TOKEN"), "\(outcome.standardError)")
        }
        let worker = try await DetectqExecutable.run(["worker"], environment: [
            "DETECTQ_DASHBOARD": "1", "DETECTQ_DASHBOARD_TOKEN": "", "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2",
        ])
        #expect(worker.status == 1 && worker.standardError.contains("DETECTQ_DASHBOARD_TOKEN"), "\(worker.standardError)")
        let flag = try await DetectqExecutable.run(["config", "check", "--offline"], environment: ["DETECTQ_DASHBOARD": "maybe"])
        #expect(flag.status == 1 && flag.standardOutput.contains("DETECTQ_DASHBOARD must be 1 or 0"), "\(flag.standardOutput)")
    }

    @Test func theCommandServesThePagesBehindTheToken() async throws {
        let database = try await TestDatabase.createMigratedDatabase()
        let uri = try TestDatabase.connectionURI(database: database.database!)
        let port = try LoopbackPort.free()
        let dashboard = try await DetectqProcess.start(["dashboard", "--port", "\(port)"], environment: [
            "DATABASE_URL": uri, "DETECTQ_DASHBOARD_TOKEN": Self.token,
        ])
        _ = try? await dashboard.waitForLine(containing: "dashboard listening")
        let base = "http://127.0.0.1:\(port)"
        let anonymous = try? await Self.get(base + "/dashboard")
        let overview = try? await Self.get(base + "/dashboard", token: Self.token)
        let failures = try? await Self.get(base + "/dashboard/failures", token: Self.token)
        let output = dashboard.output
        let status = await dashboard.stop()
        #expect(anonymous?.status == 401)
        #expect(overview?.status == 200 && overview?.body.contains("Overview") == true)
        #expect(failures?.status == 200)
        #expect(status == 0, "a clean stop on SIGTERM")
        #expect(!output.contains(Self.token), "the token is not logged")
    }

    @Test func aWorkerServesTheDashboardOnlyWhenEnabledAndListsItselfLive() async throws {
        let database = try await TestDatabase.createMigratedDatabase()
        let uri = try TestDatabase.connectionURI(database: database.database!)
        let environment = ["DATABASE_URL": uri, "RESEMBLE_BASE_URL": "http://127.0.0.1:9/api/v2", "DETECTQ_DASHBOARD_TOKEN": Self.token]

        let plainPort = try LoopbackPort.free()
        let plain = try await DetectqProcess.start(["worker"], environment: environment.merging([
            "DETECTQ_HTTP_PORT": "\(plainPort)", "DETECTQ_WORKER_ID": "plain-worker",
        ]) { $1 })
        _ = try? await plain.waitForLine(containing: "worker started")
        let off = try? await Self.get("http://127.0.0.1:\(plainPort)/dashboard", token: Self.token)
        _ = await plain.stop()
        #expect(off?.status == 404, "off unless DETECTQ_DASHBOARD=1")

        let port = try LoopbackPort.free()
        let worker = try await DetectqProcess.start(["worker"], environment: environment.merging([
            "DETECTQ_HTTP_PORT": "\(port)", "DETECTQ_WORKER_ID": "dashboard-worker", "DETECTQ_DASHBOARD": "1",
            "DETECTQ_DASHBOARD_READONLY": "1",
        ]) { $1 })
        _ = try? await worker.waitForLine(containing: "worker started")
        let anonymous = try? await Self.get("http://127.0.0.1:\(port)/dashboard")
        let overview = try? await Self.get("http://127.0.0.1:\(port)/dashboard", token: Self.token)
        let health = try? await Self.get("http://127.0.0.1:\(port)/healthz")
        _ = await worker.stop()
        #expect(anonymous?.status == 401)
        #expect(overview?.status == 200)
        #expect(overview?.body.contains("<code>dashboard-worker</code>") == true && overview?.body.contains(">live<") == true, "the worker is listed live")
        #expect(overview?.body.contains("<code>plain-worker</code>") == true && overview?.body.contains(">stopped<") == true, "the one before it stopped cleanly")
        #expect(overview?.body.contains("read-only") == true)
        #expect(health?.status == 200, "the worker's own doors still answer")
    }
}
