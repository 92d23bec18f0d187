import DetectQueue

/// How the dashboard is served: the token every page asks for, and whether its actions are allowed.
package struct DashboardConfiguration: Sendable, Hashable {
    /// `DETECTQ_DASHBOARD_TOKEN`: a bearer token, or what the login form takes. A secret: never logged or
    /// rendered.
    package var token: String
    /// `DETECTQ_DASHBOARD_READONLY=1`: pages only; retry and cancel are hidden and refused.
    package var readOnly: Bool

    /// Tokens shorter than this are refused: the dashboard can retry and cancel work.
    package static let minimumTokenLength = 16

    package init(token: String, readOnly: Bool) {
        self.token = token
        self.readOnly = readOnly
    }

    /// The dashboard `detectq dashboard` serves: it needs a token.
    package static func fromEnvironment(_ environment: [String: String]) throws(ConfigurationError) -> DashboardConfiguration {
        let reader = EnvironmentReader(environment)
        guard let token = reader.text("DETECTQ_DASHBOARD_TOKEN"), token.count >= minimumTokenLength else {
            throw ConfigurationError("DETECTQ_DASHBOARD_TOKEN", expected: "a secret of at least \(minimumTokenLength) characters (the dashboard's login)")
        }
        return DashboardConfiguration(token: token, readOnly: try flag(reader, "DETECTQ_DASHBOARD_READONLY"))
    }

    /// The dashboard a worker serves on its HTTP port: nil unless `DETECTQ_DASHBOARD=1`.
    package static func forWorker(_ environment: [String: String]) throws(ConfigurationError) -> DashboardConfiguration? {
        guard try flag(EnvironmentReader(environment), "DETECTQ_DASHBOARD") else { return nil }
        return try fromEnvironment(environment)
    }

    private static func flag(_ reader: EnvironmentReader, _ name: String) throws(ConfigurationError) -> Bool {
        switch reader.text(name)?.lowercased() {
        case nil, "0", "false", "no", "off": false
        case "1", "true", "yes", "on": true
        default: throw ConfigurationError(name, expected: "1 or 0")
        }
    }
}
