import DetectqTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Postgres
import QueueDashboard

/// A dashboard over a migrated database of its own, driven through HummingbirdTesting's router mode (no
/// socket: the requests go straight to the router), and answers seen as the browser would first see them,
/// redirects unfollowed. The browser check (`scripts/dashboard-browser-check.sh`) serves it for real.
struct DashboardFixture {
    static let token = "test-dashboard-token-0123456789"

    let configuration: PostgresConfiguration
    let admin: PostgresConnectionPool
    let client: any TestClientProtocol

    /// How a request proves itself.
    enum Auth {
        case none
        case bearer(String)
        case cookie(String)
    }

    /// An answer: its status, headers and body.
    struct Answer {
        var status: Int
        var headers: [(String, String)]
        var body: String

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        /// The value of the form field `name` in the page (the first one).
        func formValue(_ name: String) -> String? {
            guard let match = body.firstMatch(of: try! Regex(#"name="\#(name)" value="([^"]*)""#)) else { return nil }
            return match.output[1].substring.map(String.init)
        }
    }

    /// Runs `body` against a dashboard on its router, then closes its pools.
    static func serve<Result: Sendable>(
        readOnly: Bool = false, _ body: @escaping @Sendable (DashboardFixture) async throws -> Result
    ) async throws -> Result {
        var configuration = try await TestDatabase.createMigratedDatabase()
        let admin = PostgresConnectionPool(configuration: configuration, maximumConnections: 4)
        configuration.applicationName = "detectq dashboard (test)"
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 4)
        let dashboard = try Dashboard(configuration: .init(token: token, readOnly: readOnly), pool: pool)
        let router = Router()
        dashboard.routes(into: router)
        let application = Application(router: router, logger: Logger(label: "dashboard-test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let served = configuration
        do {
            let result = try await application.test(.router) { client in
                try await body(DashboardFixture(configuration: served, admin: admin, client: client))
            }
            await pool.close()
            await admin.close()
            return result
        } catch {
            await pool.close()
            await admin.close()
            throw error
        }
    }

    func get(_ path: String, auth: Auth = .bearer(Self.token)) async throws -> Answer {
        try await send(.get, path, auth: auth, form: nil)
    }

    func post(_ path: String, form: [(String, String)], auth: Auth = .bearer(Self.token)) async throws -> Answer {
        try await send(.post, path, auth: auth, form: form)
    }

    private func send(_ method: HTTPRequest.Method, _ path: String, auth: Auth, form: [(String, String)]?) async throws -> Answer {
        var headers = HTTPFields()
        switch auth {
        case .none: break
        case .bearer(let token): headers[.authorization] = "Bearer \(token)"
        case .cookie(let value): headers[.cookie] = "detectq_dashboard=\(value)"
        }
        var body: ByteBuffer?
        if let form {
            var components = URLComponents()
            components.queryItems = form.map { URLQueryItem(name: $0.0, value: $0.1) }
            headers[.contentType] = "application/x-www-form-urlencoded"
            body = ByteBuffer(string: (components.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B"))
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
        return Answer(
            status: Int(response.status.code), headers: response.headers.map { ($0.name.rawName, $0.value) }, body: String(buffer: response.body)
        )
    }

    // MARK: - Rows

    /// Inserts a request and walks it, through legal transitions, to `state`.
    @discardableResult
    func request(
        state: String = "queued", media: String = "media_url", value: String? = nil, metadata: String = "{}",
        error: String = "the API answered 503", result: String? = nil, fake: Bool? = nil, mediaType: String = "audio",
        submitPath: String = "url", zeroRetention: Bool = false
    ) async throws -> Int {
        let mediaValue = value ?? "https://cdn.example.com/\(UUID().uuidString).wav"
        let id: Int = try await admin.query(PostgresQuery(sql: """
            INSERT INTO detectq.requests (\(media), metadata, zero_retention_mode) VALUES ($1, $2::jsonb, $3) RETURNING id
            """, parameters: [mediaValue, metadata, zeroRetention]))[0].decode("id")
        guard state != "queued" else { return id }
        try await admin.query("""
            UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_by = 'test-worker',
                locked_until = now() + interval '1 minute', submit_path = \(submitPath) WHERE id = \(id)
            """)
        switch state {
        case "submitting":
            break
        case "completed":
            let item = result ?? #"{"uuid": "u-\#(id)", "media_type": "\#(mediaType)", "status": "completed", "metrics": {"label": "\#(fake == true ? "fake" : "real")", "aggregated_score": 0.5, "score": [0.1, 0.9]}}"#
            try await admin.query("""
                UPDATE detectq.requests SET state = 'completed', locked_by = NULL, locked_until = NULL,
                    remote_uuid = \("u-\(id)"), result = \(item)::jsonb, completed_at = now(), media_type = \(mediaType),
                    label = \(fake == true ? "fake" : "real"), is_fake = \(fake ?? false), aggregated_score = \(fake == true ? 0.93 : 0.07)
                WHERE id = \(id)
                """)
        case "failed", "retrying":
            try await admin.query("""
                UPDATE detectq.requests SET state = \(state)::detectq.request_state, locked_by = NULL, locked_until = NULL,
                    error_message = \(error) WHERE id = \(id)
                """)
        default:
            throw TestSetupError("no way to \(state) here")
        }
        return id
    }

    func state(of id: Int) async throws -> String {
        try await admin.query("SELECT state::text AS state FROM detectq.requests WHERE id = \(id)")[0].decode("state")
    }
}
