import Foundation
import HTTPTypes
import Hummingbird

/// The request context of the dashboard's signed-in routes: the worker's own context, plus the credential
/// `DashboardAuthentication` found on the request.
struct DashboardRequestContext: ChildRequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by `DashboardAuthentication` before any handler runs; a handler never sees it empty.
    var credential: DashboardAuthenticator.Credential?

    init(context: BasicRequestContext) {
        coreContext = context.coreContext
    }
}

/// Lets a request through to the dashboard's pages and actions only with a valid credential (a bearer header
/// or the login form's session cookie). A browser asking for a page without one gets the login form; a
/// bearer token that is wrong, or an action without a credential, gets a plain 401 naming the variable.
struct DashboardAuthentication: RouterMiddleware {
    let authenticator: DashboardAuthenticator
    /// The login form (status 401) that sends the browser back to `next` once signed in.
    let loginPage: @Sendable (_ next: String) -> Response

    func handle(
        _ request: Request, context: DashboardRequestContext, next: (Request, DashboardRequestContext) async throws -> Response
    ) async throws -> Response {
        let session = request.cookies[DashboardAuthenticator.cookieName]?.value
        if let credential = authenticator.credential(authorization: request.headers[.authorization], session: session) {
            var context = context
            context.credential = credential
            return try await next(request, context)
        }
        if request.method == .get && request.headers[.authorization] == nil {
            return loginPage(request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        }
        return Self.unauthorized()
    }

    /// The answer to a caller without a valid credential that is not a browser asking for a page.
    static func unauthorized() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.wwwAuthenticate] = "Bearer"
        return Response(
            status: .unauthorized, headers: headers,
            body: .init(byteBuffer: .init(string: "the dashboard needs DETECTQ_DASHBOARD_TOKEN, as a bearer token or through /dashboard/login\n"))
        )
    }
}
