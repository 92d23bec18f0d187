import Crypto
import DetectQueue
import Foundation
import TextEncodings

/// Who may see the dashboard, and proof that a form was sent from it.
///
/// A caller proves itself with the token as a bearer header, or with a session cookie the login form sets.
/// Sessions are stateless, so every worker and dashboard process sharing the token accepts them: the cookie
/// is `<expiry>.<HMAC(token, expiry)>`, and changing the token ends every session. Each form carries a CSRF
/// token bound to the caller's credential, so a page on another site cannot post one.
struct DashboardAuthenticator: Sendable {
    private let key: SymmetricKey
    private let token: String

    static let cookieName = "detectq_dashboard"
    static let sessionLength: TimeInterval = 12 * 3600

    /// What a request proved itself with.
    enum Credential: Sendable, Hashable {
        case bearer
        /// The session cookie's value.
        case session(String)
    }

    init(token: String) {
        self.token = token
        key = SymmetricKey(data: SHA256.hash(data: Data("detectq dashboard \(token)".utf8)))
    }

    /// The credential an incoming request carries, if it is valid: an `Authorization: Bearer` header, or
    /// else the session cookie's value, `session`.
    func credential(authorization: String?, session: String?, now: Date = Date()) -> Credential? {
        if let authorization {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
            return SecretComparison.equal(String(parts[1]), token) ? .bearer : nil
        }
        guard let session, isValidSession(session, now: now) else { return nil }
        return .session(session)
    }

    /// Whether a login form's token is the right one.
    func acceptsLogin(_ candidate: String) -> Bool {
        SecretComparison.equal(candidate, token)
    }

    /// A new session cookie's value, valid for `sessionLength`.
    func newSession(now: Date = Date()) -> String {
        let expiry = Int(now.timeIntervalSince1970 + Self.sessionLength)
        return "\(expiry).\(mac("session|\(expiry)"))"
    }

    func isValidSession(_ value: String, now: Date) -> Bool {
        let parts = value.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let expiry = Int(parts[0]), TimeInterval(expiry) > now.timeIntervalSince1970 else { return false }
        return SecretComparison.equal(String(parts[1]), mac("session|\(expiry)"))
    }

    /// The CSRF token forms carry for this credential.
    func csrfToken(for credential: Credential) -> String {
        switch credential {
        case .bearer: mac("csrf|bearer")
        case .session(let session): mac("csrf|session|\(session)")
        }
    }

    func acceptsCSRF(_ candidate: String?, for credential: Credential) -> Bool {
        guard let candidate else { return false }
        return SecretComparison.equal(candidate, csrfToken(for: credential))
    }

    private func mac(_ message: String) -> String {
        Hex.encode(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: key))
    }
}
