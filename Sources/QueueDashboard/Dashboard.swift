import DetectQueue
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Postgres

/// The web dashboard: server-rendered pages under `/dashboard` to watch the queue (overview, request list,
/// request page, failures, queues) and act on it (retry, cancel, pause, resume, a queue's settings and pause),
/// for `detectq dashboard` and, when enabled, the worker's own HTTP port.
///
/// Every page needs the token (a bearer header, or the login form's session cookie); every action is a POST
/// with a CSRF token, goes through the same state machine as `detectq retry` and `detectq cancel`, and is
/// refused in read-only mode. All text is escaped by the templates, and no secret is read for a page.
package struct Dashboard: Sendable {
    let configuration: DashboardConfiguration
    let queries: DashboardQueries
    let administration: RequestAdministration
    let queueSettings: QueueSettingsStore
    let authenticator: DashboardAuthenticator
    let renderer: DashboardRenderer
    let logger: Logger

    /// Group actions change at most this many requests per press, so a request never runs for minutes.
    static let groupActionLimit = 1_000
    /// A wrong login waits this long before its answer, to slow guessing.
    static let failedLoginDelay: Duration = .milliseconds(300)

    /// A dashboard reading and changing the queue through `pool`.
    package init(configuration: DashboardConfiguration, pool: PostgresConnectionPool, logger: Logger = Logger(label: "detectq.dashboard")) throws {
        self.configuration = configuration
        queries = DashboardQueries(pool: pool)
        administration = RequestAdministration(store: RequestStore(pool: pool))
        queueSettings = QueueSettingsStore(pool: pool)
        authenticator = DashboardAuthenticator(token: configuration.token)
        renderer = try DashboardRenderer()
        self.logger = logger
    }

    /// Adds the dashboard's routes, all under `/dashboard`: the assets and the login form open to anyone,
    /// every page and action behind `DashboardAuthentication`.
    package func routes(into router: Router<BasicRequestContext>) {
        let open = router.group("dashboard").add(middleware: DashboardSecurityHeaders())
        open.get("assets/dashboard.css") { _, _ in asset(DashboardRenderer.stylesheet, type: "text/css; charset=utf-8") }
        open.get("assets/dashboard.js") { _, _ in asset(DashboardRenderer.script, type: "text/javascript; charset=utf-8") }
        open.get("assets/favicon.svg") { _, _ in asset(DashboardRenderer.icon, type: "image/svg+xml") }
        open.get("login") { request, _ in
            login(next: FormFields(request.uri.query)["next"], error: nil, status: .ok)
        }
        open.post("login") { request, _ in await logIn(request) }

        let signedIn = router.group("dashboard", context: DashboardRequestContext.self)
            .add(middleware: DashboardSecurityHeaders())
            .add(middleware: DashboardAuthentication(authenticator: authenticator) { next in
                login(next: next, error: nil, status: .unauthorized)
            })
        signedIn.post("logout") { request, context in
            await action(request, context, evenWhenReadOnly: true) { _ in
                var response = redirect(to: "/dashboard/login")
                response.setCookie(Cookie(name: DashboardAuthenticator.cookieName, value: "", maxAge: 0, path: "/dashboard", httpOnly: true, sameSite: .strict))
                return response
            }
        }
        signedIn.get("") { request, context in await page(request, context) { try await overview(request, $0) } }
        signedIn.get("requests") { request, context in await page(request, context) { try await requestList(request, $0) } }
        signedIn.get("requests/:id") { request, context in
            await page(request, context) { try await requestPage(context.parameters.get("id").flatMap(Int.init), request, $0) }
        }
        signedIn.get("failures") { request, context in await page(request, context) { try await failures(request, $0) } }
        signedIn.post("requests/:id/retry") { request, context in
            await change(request, context, verb: "retried") { try await administration.retry([$0]) }
        }
        signedIn.post("requests/:id/cancel") { request, context in
            await change(request, context, verb: "cancelled") { try await administration.cancel([$0]) }
        }
        signedIn.post("pause") { request, context in
            await action(request, context) { fields in
                let reason = fields["reason"].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 }
                let paused = try await SharedPause(pool: queries.pool).pause(reason: reason ?? "paused from the dashboard", by: nil)
                logger.info("dashboard: submitting \(paused ? "paused" : "was already paused") on every worker")
                return redirect(to: "/dashboard?" + Formatting.query([("notice", paused ? "paused" : "already-paused")]))
            }
        }
        signedIn.post("resume") { request, context in
            await action(request, context) { _ in
                let resumed = try await SharedPause(pool: queries.pool).resume()
                logger.info("dashboard: submitting \(resumed ? "resumed" : "was not paused")")
                return redirect(to: "/dashboard?" + Formatting.query([("notice", resumed ? "resumed" : "not-paused")]))
            }
        }
        signedIn.get("queues") { request, context in await page(request, context) { try await queues(request, $0) } }
        signedIn.post("queues/set") { request, context in
            await queueAction(request, context) { name, fields in
                // A limit left empty is no limit; an empty weight leaves the weight as it is.
                var text: [QueueSettingsChange.Field: String] = [:]
                for field in QueueSettingsChange.Field.allCases {
                    guard let value = fields[field.column]?.trimmingCharacters(in: .whitespaces) else { continue }
                    if value.isEmpty {
                        if field != .weight { text[field] = "none" }
                    } else {
                        text[field] = value
                    }
                }
                let change: QueueSettingsChange
                do {
                    change = try QueueSettingsChange(text: text, name: \.column)
                } catch {
                    return plain("\(error); nothing was changed\n", status: .badRequest)
                }
                let created = try await queueSettings.set(name, change).created
                logger.info("dashboard: queue \(name) \(created ? "created" : "settings changed")")
                return queuesRedirect(notice: created ? "queue-created" : "queue-set", name: name)
            }
        }
        signedIn.post("queues/pause") { request, context in
            await queueAction(request, context) { name, fields in
                let reason = fields["reason"].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 }
                let paused = try await queueSettings.pause(name, reason: reason ?? "paused from the dashboard", by: nil)
                logger.info("dashboard: queue \(name) \(paused ? "paused" : "was already paused")")
                return queuesRedirect(notice: paused ? "queue-paused" : "queue-already-paused", name: name)
            }
        }
        signedIn.post("queues/resume") { request, context in
            await queueAction(request, context) { name, _ in
                let resumed = try await queueSettings.resume(name)
                logger.info("dashboard: queue \(name) \(resumed ? "resumed" : "was not paused")")
                return queuesRedirect(notice: resumed ? "queue-resumed" : "queue-not-paused", name: name)
            }
        }
        signedIn.post("failures/retry") { request, context in await changeGroup(request, context, state: .failed, verb: "retried") }
        signedIn.post("failures/cancel") { request, context in await changeGroup(request, context, state: .retrying, verb: "cancelled") }
    }

    // MARK: - Pages

    private func overview(_ request: Request, _ chrome: Chrome) async throws -> Response {
        var chrome = chrome
        chrome.title = "Overview"
        chrome.onOverview = true
        chrome.refreshes = true
        chrome.notice = Self.notice(FormFields(request.uri.query))
        let overview = try await queries.overview()
        return html(renderer.render(OverviewPageBuilder.page(overview, chrome: chrome), template: "overview"))
    }

    private func requestList(_ request: Request, _ chrome: Chrome) async throws -> Response {
        var chrome = chrome
        chrome.title = "Requests"
        chrome.onRequests = true
        let filter: RequestListFilter
        do {
            filter = try RequestListFilter(query: FormFields(request.uri.query).values)
        } catch {
            return message(chrome, heading: "That filter cannot be read", text: error.description, status: .badRequest)
        }
        let started = ContinuousClock.now
        let page = try await RequestListQuery.page(filter, on: queries.pool)
        let elapsed = ContinuousClock.now - started
        let queues = try await queries.queueNames()
        return html(renderer.render(
            RequestListPageBuilder.page(page, filter: filter, queues: queues, chrome: chrome, elapsed: elapsed), template: "requests"
        ))
    }

    private func requestPage(_ id: Int?, _ request: Request, _ chrome: Chrome) async throws -> Response {
        var chrome = chrome
        guard let id, let detail = try await queries.request(id: id) else {
            return message(chrome, heading: "No such request", text: "There is no request with that id; it may have been pruned.", status: .notFound)
        }
        chrome.title = "Request \(id)"
        chrome.onRequests = true
        chrome.refreshes = !detail.state.successors.isEmpty
        chrome.notice = Self.notice(FormFields(request.uri.query))
        return html(renderer.render(RequestPageBuilder.page(detail, chrome: chrome), template: "request"))
    }

    private func failures(_ request: Request, _ chrome: Chrome) async throws -> Response {
        var chrome = chrome
        chrome.title = "Failures"
        chrome.onFailures = true
        chrome.refreshes = true
        chrome.notice = Self.notice(FormFields(request.uri.query))
        let groups = try await QueueBreakdown.failureGroups(queries.pool, limit: 100)
        return html(renderer.render(FailuresPageBuilder.page(groups, chrome: chrome), template: "failures"))
    }

    private func queues(_ request: Request, _ chrome: Chrome) async throws -> Response {
        var chrome = chrome
        chrome.title = "Queues"
        chrome.onQueues = true
        chrome.refreshes = true
        chrome.notice = Self.notice(FormFields(request.uri.query))
        let overview = try await queries.queues()
        return html(renderer.render(QueuesPageBuilder.page(overview, chrome: chrome), template: "queues"))
    }

    // MARK: - Actions

    /// An action on the queue its form names (`name`), refused when no request could name such a queue.
    private func queueAction(
        _ request: Request, _ context: DashboardRequestContext,
        _ body: @escaping @Sendable (String, FormFields) async throws -> Response
    ) async -> Response {
        await action(request, context) { fields in
            guard let name = fields["name"]?.trimmingCharacters(in: .whitespaces), QueueSettings.isValidName(name) else {
                return plain("a queue's name is 1 to 63 of a-z, 0-9, _, - and . (requests_queue_name); nothing was changed\n", status: .badRequest)
            }
            return try await body(name, fields)
        }
    }

    private func queuesRedirect(notice: String, name: String) -> Response {
        redirect(to: "/dashboard/queues?" + Formatting.query([("notice", notice), ("queue", name)]) + "#queue-" + name)
    }

    private func change(
        _ request: Request, _ context: DashboardRequestContext, verb: String,
        _ apply: @escaping @Sendable (Int) async throws -> [(Int, RequestAdministration.Outcome)]
    ) async -> Response {
        let id = context.parameters.get("id").flatMap(Int.init)
        return await action(request, context) { _ in
            guard let id else { return plain("not found\n", status: .notFound) }
            let notice: String
            switch try await apply(id).first?.1 {
            case .changed?:
                notice = verb
                logger.info("dashboard: request \(id) \(verb)")
            case .refused(let reason)?:
                notice = "refused"
                logger.info("dashboard: request \(id) not \(verb): \(reason)")
            case nil:
                notice = "refused"
            }
            return redirect(to: "/dashboard/requests/\(id)?" + Formatting.query([("notice", notice)]))
        }
    }

    private func changeGroup(_ request: Request, _ context: DashboardRequestContext, state: RequestState, verb: String) async -> Response {
        await action(request, context) { fields in
            guard let reason = fields["reason"] else { return plain("the form names no failure reason\n", status: .badRequest) }
            let ids = try await queries.failureGroupMembers(reason: reason, state: state, limit: Self.groupActionLimit)
            let outcomes = state == .failed ? try await administration.retry(ids) : try await administration.cancel(ids)
            let changed = outcomes.filter { if case .changed = $0.1 { true } else { false } }.count
            logger.info("dashboard: \(changed) of \(ids.count) \(state.rawValue) requests \(verb) in a failure group")
            return redirect(to: "/dashboard/failures?" + Formatting.query([("notice", verb), ("count", String(changed))]))
        }
    }

    /// Runs a page's body for the caller `DashboardAuthentication` let through.
    private func page(_ request: Request, _ context: DashboardRequestContext, _ body: (Chrome) async throws -> Response) async -> Response {
        guard let credential = context.credential else { return DashboardAuthentication.unauthorized() }
        let chrome = Chrome(title: "", csrf: authenticator.csrfToken(for: credential), readOnly: configuration.readOnly)
        do {
            return try await body(chrome)
        } catch {
            logger.error("dashboard page \(request.uri.path) failed: \(error)")
            return message(chrome, heading: "The database did not answer", text: "\(error)", status: .serviceUnavailable)
        }
    }

    /// Runs an action for the caller `DashboardAuthentication` let through, when its form carries the right
    /// CSRF token, unless the dashboard is read-only and the action changes the queue.
    private func action(
        _ request: Request, _ context: DashboardRequestContext, evenWhenReadOnly: Bool = false,
        _ body: @Sendable (FormFields) async throws -> Response
    ) async -> Response {
        guard let credential = context.credential else { return DashboardAuthentication.unauthorized() }
        let fields: FormFields
        do {
            fields = FormFields(String(buffer: try await request.body.collect(upTo: 64 * 1024)))
        } catch {
            return plain("the form is too large\n", status: .contentTooLarge)
        }
        if configuration.readOnly && !evenWhenReadOnly {
            return plain("this dashboard is read-only (DETECTQ_DASHBOARD_READONLY); nothing was changed\n", status: .forbidden)
        }
        guard authenticator.acceptsCSRF(fields["csrf"], for: credential) else {
            return plain("the form's CSRF token is missing or wrong; reload the page and try again\n", status: .forbidden)
        }
        do {
            return try await body(fields)
        } catch {
            logger.error("dashboard action \(request.uri.path) failed: \(error)")
            return plain("the database did not answer; nothing may have changed: \(error)\n", status: .serviceUnavailable)
        }
    }

    private func logIn(_ request: Request) async -> Response {
        let fields = FormFields((try? await request.body.collect(upTo: 16 * 1024)).map { String(buffer: $0) })
        guard let token = fields["token"], authenticator.acceptsLogin(token) else {
            try? await Task.sleep(for: Self.failedLoginDelay)
            return login(next: fields["next"], error: "That token is not the dashboard's.", status: .unauthorized)
        }
        var response = redirect(to: Self.safeNext(fields["next"]))
        response.setCookie(Cookie(
            name: DashboardAuthenticator.cookieName, value: authenticator.newSession(), maxAge: Int(DashboardAuthenticator.sessionLength),
            path: "/dashboard", httpOnly: true, sameSite: .strict
        ))
        return response
    }

    /// Where a login may send the browser: a dashboard path on this host, never another site.
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/dashboard"), !next.hasPrefix("//"), !next.contains("\\"),
              !next.contains("\r"), !next.contains("\n"), !next.hasPrefix("/dashboard/login")
        else { return "/dashboard" }
        return next
    }

    /// The fixed sentence a redirect's `notice` code stands for; codes only, so a link cannot put words on the page.
    static func notice(_ fields: FormFields) -> String? {
        let count = fields["count"].flatMap(Int.init)
        switch fields["notice"] {
        case "retried": return count.map { "Retried \($0) failed request(s); they are queued again." } ?? "Retried: the request is queued again."
        case "cancelled": return count.map { "Cancelled \($0) retrying request(s)." } ?? "Cancelled."
        case "refused": return "Nothing changed: the request is not in a state that allows it (its state is below)."
        case "paused": return "Submitting is paused on every worker; callbacks, polls and post-processing go on."
        case "already-paused": return "Nothing changed: submitting was already paused by an operator."
        case "resumed": return "Submitting resumed on every worker."
        case "not-paused": return "Nothing changed: submitting was not paused by an operator."
        default: break
        }
        // A queue's name may be shown: only names a request could use (a-z, 0-9, _, - and .) are.
        guard let queue = fields["queue"], QueueSettings.isValidName(queue) else { return nil }
        switch fields["notice"] {
        case "queue-set": return "Saved the settings of queue \(queue); every worker's next claim follows them."
        case "queue-created": return "Created queue \(queue)."
        case "queue-paused": return "Queue \(queue) is paused: its requests are not claimed; those in flight finish."
        case "queue-already-paused": return "Nothing changed: queue \(queue) was already paused."
        case "queue-resumed": return "Queue \(queue) resumed."
        case "queue-not-paused": return "Nothing changed: queue \(queue) was not paused."
        default: return nil
        }
    }

    // MARK: - Responses

    private func login(next: String?, error: String?, status: HTTPResponse.Status) -> Response {
        html(renderer.render(LoginPageModel(next: Self.safeNext(next), error: error), template: "login"), status: status)
    }

    private func message(_ chrome: Chrome, heading: String, text: String, status: HTTPResponse.Status) -> Response {
        var chrome = chrome
        chrome.title = heading
        return html(renderer.render(MessagePageModel(chrome: chrome, heading: heading, message: text), template: "message"), status: status)
    }

    private func html(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: Self.headers(type: "text/html; charset=utf-8"), body: .init(byteBuffer: .init(string: body)))
    }

    private func plain(_ body: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: Self.headers(type: "text/plain; charset=utf-8"), body: .init(byteBuffer: .init(string: body)))
    }

    private func redirect(to location: String) -> Response {
        var headers = Self.headers(type: "text/plain; charset=utf-8")
        headers[.location] = location
        return Response(status: .seeOther, headers: headers, body: .init(byteBuffer: .init(string: "see \(location)\n")))
    }

    private func asset(_ text: String, type: String) -> Response {
        var headers = Self.headers(type: type)
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: .init(string: text)))
    }

    /// An answer's content type; the rest of its headers come from `DashboardSecurityHeaders`.
    static func headers(type: String) -> HTTPFields {
        [.contentType: type]
    }
}

/// The headers on every answer under `/dashboard`: no framing, no sniffing, no referrer, nothing cached
/// (unless the route says otherwise, as the assets do), and only the dashboard's own stylesheet and script.
struct DashboardSecurityHeaders<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.referrerPolicy] = "no-referrer"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }
}

extension HTTPField.Name {
    static let xFrameOptions = Self("X-Frame-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
}
