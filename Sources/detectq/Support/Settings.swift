import DetectQueue
import Foundation
import TOMLKit
import Yams

/// The settings a command runs with: the environment, to which an optional config file (`--config`, TOML or
/// YAML) adds. A variable set in the environment wins over the file, so one host can override a shared file.
///
/// The file uses the environment's names, or the same names in lower case without the `DETECTQ_` prefix:
/// `DETECTQ_CONCURRENCY = 50` and `concurrency = 50` mean the same. A name detectq does not know is an error,
/// so a typo never passes silently.
struct Settings: Sendable {
    /// Every setting detectq reads; `isSecret` ones are never printed.
    static let known: [(name: String, isSecret: Bool)] = [
        ("DATABASE_URL", false), ("DETECTQ_LISTEN_DATABASE_URL", false), ("RESEMBLE_API_TOKEN", true), ("RESEMBLE_API_TOKEN_FILE", false),
        ("RESEMBLE_BASE_URL", false),
        ("DETECTQ_MEDIA_ROOT", false), ("DETECTQ_CALLBACK_URL", false), ("DETECTQ_HTTP_PORT", false),
        ("DETECTQ_CONCURRENCY", false), ("DETECTQ_WORKER_ID", false), ("DETECTQ_API_RATE_LIMIT", false),
        ("DETECTQ_LEASE_SECONDS", false), ("DETECTQ_CALLBACK_TIMEOUT", false), ("DETECTQ_POLL_INTERVAL", false),
        ("DETECTQ_SHUTDOWN_GRACE_SECONDS", false), ("DETECTQ_RETRY_BASE_SECONDS", false), ("DETECTQ_RETRY_MAX_SECONDS", false), ("DETECTQ_RESULT_TIMEOUT", false), ("DETECTQ_CREDIT_RECHECK_SECONDS", false), ("DETECTQ_LOG_FORMAT", false),
        ("DETECTQ_RETRY_AFTER_MAX_SECONDS", false), ("DETECTQ_LOST_ANSWER_SEARCH_PAGES", false), ("DETECTQ_AUTH_RECHECK_SECONDS", false),
        ("DETECTQ_PRIORITY_AGING_SECONDS", false), ("DETECTQ_REUSE_VERDICT_WITHIN", false),
        ("DETECTQ_FAKE_THRESHOLD", false), ("DETECTQ_ALERT_WEBHOOK_URL", false), ("DETECTQ_ALERT_WEBHOOK_SECRET", true),
        ("DETECTQ_SLACK_WEBHOOK_URL", true), ("DETECTQ_PAGERDUTY_ROUTING_KEY", true), ("DETECTQ_PAGERDUTY_URL", false),
        ("DETECTQ_RETENTION_SLA", false), ("DETECTQ_ARCHIVE_DIR", false), ("DETECTQ_PLUGINS_DIR", false),
        ("DETECTQ_PLUGIN_TIMEOUT", false), ("DETECTQ_DASHBOARD", false), ("DETECTQ_DASHBOARD_TOKEN", true),
        ("DETECTQ_DASHBOARD_READONLY", false),
    ]

    /// Where a setting's value came from.
    enum Source: String, Sendable {
        case environment
        case file
    }

    /// The merged settings, as an environment for `WorkerConfiguration.fromEnvironment` and friends.
    let environment: [String: String]
    /// Which of the known settings are set, and where.
    let sources: [String: Source]
    /// The config file, when one was given.
    let file: String?

    /// Reads `file` (when given) under `environment`.
    static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) -> Settings {
        let fromFile = try file.map(read) ?? [:]
        var merged = environment
        var sources: [String: Source] = [:]
        for (name, value) in fromFile where environment[name].map({ $0.trimmingCharacters(in: .whitespaces).isEmpty }) ?? true {
            merged[name] = value
            sources[name] = .file
        }
        for (name, _) in known where sources[name] == nil && !(environment[name] ?? "").trimmingCharacters(in: .whitespaces).isEmpty {
            sources[name] = .environment
        }
        return Settings(environment: merged, sources: sources, file: file)
    }

    /// A config file's settings, by their environment names.
    static func read(_ path: String) throws(ConfigurationError) -> [String: String] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError("--config", expected: "a readable file (\(path): \(error.localizedDescription))")
        }
        let values: [String: String]
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "toml": values = try toml(text, path: path)
        case "yaml", "yml": values = try yaml(text, path: path)
        default: throw ConfigurationError("--config", expected: "a .toml, .yaml or .yml file")
        }
        var settings: [String: String] = [:]
        for (key, value) in values {
            guard let name = canonicalName(key) else {
                throw ConfigurationError(key, expected: "a detectq setting (in \(path)); see `detectq config check --help` for the list")
            }
            settings[name] = value
        }
        return settings
    }

    /// The environment name a config-file key stands for, if any.
    static func canonicalName(_ key: String) -> String? {
        let upper = key.uppercased()
        let names = Set(known.map(\.name))
        if names.contains(upper) { return upper }
        if names.contains("DETECTQ_" + upper) { return "DETECTQ_" + upper }
        return nil
    }

    private static func toml(_ text: String, path: String) throws(ConfigurationError) -> [String: String] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch {
            throw ConfigurationError("--config", expected: "valid TOML (\(path): \(error))")
        }
        var values: [String: String] = [:]
        for (key, value) in table {
            if let text = value.string {
                values[key] = text
            } else if let integer = value.int {
                values[key] = String(integer)
            } else if let number = value.double {
                values[key] = String(number)
            } else if let flag = value.bool {
                values[key] = String(flag)
            } else {
                throw ConfigurationError(key, expected: "a string, number or boolean (in \(path))")
            }
        }
        return values
    }

    private static func yaml(_ text: String, path: String) throws(ConfigurationError) -> [String: String] {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError("--config", expected: "valid YAML (\(path): \(error))")
        }
        guard let node else { return [:] }
        guard let mapping = node.mapping else {
            throw ConfigurationError("--config", expected: "a YAML mapping of settings (\(path))")
        }
        var values: [String: String] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw ConfigurationError("--config", expected: "string keys (\(path))") }
            guard let scalar = value.scalar else {
                throw ConfigurationError(name, expected: "a string, number or boolean (in \(path))")
            }
            values[name] = scalar.string
        }
        return values
    }

    /// A value as it may be printed: secrets hidden, passwords in URLs and connection strings masked.
    static func masked(_ name: String, _ value: String, isSecret: Bool) -> String {
        if isSecret {
            guard let url = URL(string: value), let scheme = url.scheme, let host = url.host else { return "****" }
            return "\(scheme)://\(host)/****"
        }
        guard name == "DATABASE_URL" || name == "DETECTQ_LISTEN_DATABASE_URL" else { return value }
        if var components = URLComponents(string: value), components.scheme != nil, components.password != nil {
            components.password = "****"
            return components.string ?? "****"
        }
        return value.replacingOccurrences(of: #"password\s*=\s*('[^']*'|\S+)"#, with: "password=****", options: .regularExpression)
    }
}
