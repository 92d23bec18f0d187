import Foundation
import InputNumbers
import Postgres
import ResembleDetect

/// A worker's settings, read from the environment (REFERENCE.md section 5). A missing or malformed setting
/// stops the worker at start with one line naming the variable and what it expected.
package struct WorkerConfiguration: Sendable {
    package var database: PostgresConfiguration
    /// `DETECTQ_LISTEN_DATABASE_URL`: a direct session connection used only for `LISTEN`, for a worker whose
    /// `DATABASE_URL` is a transaction-pooling PgBouncer. Nil listens on `database` when it keeps sessions,
    /// and polls when it does not.
    package var listenDatabase: PostgresConfiguration?
    package var api: DetectClientConfiguration
    /// `DETECTQ_MEDIA_ROOT`; nil refuses every `media_path` request with a reason.
    package var mediaRoot: MediaRoot?
    /// `DETECTQ_CALLBACK_URL`: the public base URL of this worker's callback receiver.
    package var callbackURL: String?
    package var httpPort: Int
    package var concurrency: Int
    package var workerID: String
    package var apiRateLimit: Double
    package var lease: Duration
    package var callbackTimeout: Duration
    /// `DETECTQ_POLL_INTERVAL`: the first wait before polling an accepted request; later polls wait longer,
    /// up to `maximumPollInterval` (the vendor's own clients start at 2 s and grow to 10 s).
    package var pollInterval: Duration
    package var maximumPollInterval: Duration
    /// How long a worker asked to stop waits for its requests in flight before leaving them to their leases.
    package var shutdownGracePeriod: Duration
    package var retryPolicy: RetryPolicy
    /// `DETECTQ_RESULT_TIMEOUT`: how long after the API accepted a request its result may take; a request
    /// still unfinished then (processing, or a status the worker does not know) fails, naming its uuid.
    package var resultTimeout: Duration
    /// `DETECTQ_CREDIT_RECHECK_SECONDS`: while the account is out of credit, how often one submission probes.
    package var creditRecheck: Duration
    /// `DETECTQ_FAKE_THRESHOLD`: a track whose score is at or above it reads fake, whatever its label.
    package var fakeThreshold: Double?
    /// `DETECTQ_RETRY_AFTER_MAX_SECONDS`: the longest pause a 429's `Retry-After` may ask for.
    package var longestRetryAfter: Duration = .seconds(3_600)
    /// `DETECTQ_LOST_ANSWER_SEARCH_PAGES`: how many pages of 1,000 a search for a lost answer may read.
    package var lostAnswerSearchPages = 20
    /// `DETECTQ_AUTH_RECHECK_SECONDS`: while the API refuses the token, how often one call that bills
    /// nothing (a List Detects page) probes again.
    package var authRecheck: Duration = .seconds(60)
    /// `DETECTQ_PRIORITY_AGING_SECONDS`: a request due this long counts as one priority higher, and one more for
    /// each such period again, so that low-priority work is delayed, never starved.
    package var priorityAging: Duration = WorkerConfiguration.defaultPriorityAging
    /// `DETECTQ_REUSE_VERDICT_WITHIN`: how old a verdict of identical media and options may be and still be reused
    /// (CONTRACT section 9); nil (`0`) turns reuse, and waiting for identical media in flight, off.
    package var reuseVerdictWithin: Duration? = .seconds(86_400)

    /// The default of `DETECTQ_PRIORITY_AGING_SECONDS`.
    package static let defaultPriorityAging = Duration.seconds(600)

    /// A worker's `application_name` is this and its id; the event history takes the id back from it.
    private static let applicationNamePrefix = "detectq worker "
    /// The longest worker id that fits in `application_name` whole.
    package static let maximumWorkerIDLength = PostgresConfiguration.applicationNameLimit - applicationNamePrefix.utf8.count

    /// `host:pid`, the host name shortened when the two would not fit in `maximumWorkerIDLength`.
    private static func defaultWorkerID() -> String {
        let pid = ":\(getpid())"
        var host = Substring(ProcessInfo.processInfo.hostName)
        while host.utf8.count + pid.utf8.count > maximumWorkerIDLength { host = host.dropLast() }
        return host + pid
    }

    private static let day = Duration.seconds(86_400)
    private static let week = Duration.seconds(604_800)

    /// Reads the settings from `environment`.
    package static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) -> WorkerConfiguration {
        let reader = EnvironmentReader(environment)
        var token = reader.text("RESEMBLE_API_TOKEN")
        let tokenFile = reader.text("RESEMBLE_API_TOKEN_FILE")
        if let tokenFile {
            guard token == nil else {
                throw ConfigurationError("RESEMBLE_API_TOKEN_FILE", expected: "unset while RESEMBLE_API_TOKEN is set (set one of the two)")
            }
            do {
                token = try TokenFile.read(tokenFile)
            } catch {
                throw ConfigurationError("RESEMBLE_API_TOKEN_FILE", expected: "a readable file holding the API token (\(error))")
            }
        }
        let baseURL = try reader.url("RESEMBLE_BASE_URL", default: DetectClientConfiguration.defaultBaseURL)
        if token == nil && baseURL == DetectClientConfiguration.defaultBaseURL {
            throw ConfigurationError("RESEMBLE_API_TOKEN", expected: "the API token (required for the real API; point RESEMBLE_BASE_URL at `detectq simulate` to run without one)")
        }
        let workerID = reader.text("DETECTQ_WORKER_ID") ?? Self.defaultWorkerID()
        guard workerID.utf8.count <= maximumWorkerIDLength else {
            throw ConfigurationError(
                "DETECTQ_WORKER_ID", expected: "at most \(maximumWorkerIDLength) bytes (it travels in application_name, which the event history reads)"
            )
        }
        let database = PostgresConfiguration.fromEnvironment(environment, applicationName: applicationNamePrefix + workerID)
        var mediaRoot: MediaRoot?
        if let root = reader.text("DETECTQ_MEDIA_ROOT") {
            do {
                mediaRoot = try MediaRoot(path: root)
            } catch {
                throw ConfigurationError("DETECTQ_MEDIA_ROOT", expected: "an existing directory (\(error))")
            }
        }
        let concurrency = try reader.integer("DETECTQ_CONCURRENCY", default: 100, in: 1...100_000)
        let pollInterval = try reader.seconds("DETECTQ_POLL_INTERVAL", default: .seconds(2), in: .milliseconds(1)...day)
        var listenDatabase: PostgresConfiguration?
        if let listenURL = reader.text("DETECTQ_LISTEN_DATABASE_URL") {
            listenDatabase = PostgresConfiguration(connectionString: listenURL, applicationName: database.applicationName)
        }
        let reuseWithin = try reader.duration("DETECTQ_REUSE_VERDICT_WITHIN", default: .seconds(86_400), in: .zero...(.seconds(31_536_000)))
        return WorkerConfiguration(
            database: database,
            listenDatabase: listenDatabase,
            // Every request in flight may hold a connection (Prefer: wait), and polls need a few more.
            api: DetectClientConfiguration(baseURL: baseURL, token: token, tokenFile: tokenFile, maximumConnections: concurrency + 16),
            mediaRoot: mediaRoot,
            callbackURL: try reader.optionalURL("DETECTQ_CALLBACK_URL"),
            httpPort: try reader.integer("DETECTQ_HTTP_PORT", default: 8080, in: 0...65_535),
            concurrency: concurrency,
            workerID: workerID,
            apiRateLimit: try reader.number("DETECTQ_API_RATE_LIMIT", default: 40, in: 0.001...100_000),
            lease: try reader.seconds("DETECTQ_LEASE_SECONDS", default: .seconds(30), in: .milliseconds(100)...day),
            callbackTimeout: try reader.seconds("DETECTQ_CALLBACK_TIMEOUT", default: .seconds(120), in: .milliseconds(1)...week),
            pollInterval: pollInterval,
            maximumPollInterval: max(.seconds(10), pollInterval),
            shutdownGracePeriod: try reader.seconds("DETECTQ_SHUTDOWN_GRACE_SECONDS", default: .seconds(25), in: .milliseconds(1)...day),
            retryPolicy: RetryPolicy(
                base: try reader.seconds("DETECTQ_RETRY_BASE_SECONDS", default: .seconds(2), in: .milliseconds(1)...day),
                cap: try reader.seconds("DETECTQ_RETRY_MAX_SECONDS", default: .seconds(600), in: .milliseconds(1)...week)
            ),
            resultTimeout: try reader.seconds("DETECTQ_RESULT_TIMEOUT", default: .seconds(3_600), in: .seconds(1)...week),
            creditRecheck: try reader.seconds("DETECTQ_CREDIT_RECHECK_SECONDS", default: .seconds(60), in: .milliseconds(100)...day),
            fakeThreshold: reader.text("DETECTQ_FAKE_THRESHOLD") == nil ? nil : try reader.number("DETECTQ_FAKE_THRESHOLD", default: 0, in: 0...1),
            longestRetryAfter: try reader.seconds("DETECTQ_RETRY_AFTER_MAX_SECONDS", default: .seconds(3_600), in: .seconds(1)...day),
            lostAnswerSearchPages: try reader.integer("DETECTQ_LOST_ANSWER_SEARCH_PAGES", default: 20, in: 1...10_000),
            authRecheck: try reader.seconds("DETECTQ_AUTH_RECHECK_SECONDS", default: .seconds(60), in: .milliseconds(100)...day),
            priorityAging: try reader.seconds("DETECTQ_PRIORITY_AGING_SECONDS", default: defaultPriorityAging, in: .seconds(1)...week),
            reuseVerdictWithin: reuseWithin == .zero ? nil : reuseWithin
        )
    }
}

/// A setting that is missing or malformed: one line naming the variable and what it expected. It never
/// repeats a value, which may be a secret.
package struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    package let variable: String
    package let expected: String

    package init(_ variable: String, expected: String) {
        self.variable = variable
        self.expected = expected
    }

    /// The setting named by a number that could not be read.
    package init(_ error: InputNumberError) {
        self.init(error.source, expected: error.expected)
    }

    package var description: String { "\(variable) must be \(expected)" }
}

/// Reads typed settings from an environment, treating empty values as unset; a value it cannot read is a
/// `ConfigurationError` naming the variable.
package struct EnvironmentReader: Sendable {
    let environment: [String: String]

    package init(_ environment: [String: String]) {
        self.environment = environment
    }

    /// The value of `name`, or nil when it is unset or blank.
    package func text(_ name: String) -> String? {
        environment[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
    }

    func integer(_ name: String, default value: Int, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        try read(name, default: value) { raw throws(InputNumberError) in try InputNumbers.count(raw, from: name, in: range) }
    }

    func number(_ name: String, default value: Double, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        try read(name, default: value) { raw throws(InputNumberError) in try InputNumbers.amount(raw, from: name, in: range) }
    }

    /// A setting in seconds, as a duration in `range`.
    package func seconds(_ name: String, default value: Duration, in range: ClosedRange<Duration>) throws(ConfigurationError) -> Duration {
        try read(name, default: value) { raw throws(InputNumberError) in try InputNumbers.seconds(raw, from: name, in: range) }
    }

    /// A duration as people write it (`3600`, `90m`, `24h`, `7d`) in `range`.
    package func duration(_ name: String, default value: Duration, in range: ClosedRange<Duration>) throws(ConfigurationError) -> Duration {
        try read(name, default: value) { raw throws(InputNumberError) in try InputNumbers.duration(raw, from: name, in: range) }
    }

    /// The setting `name` read by `parse`, or `value` when it is unset; a value `parse` refuses names the variable.
    private func read<Value>(
        _ name: String, default value: Value, _ parse: (String) throws(InputNumberError) -> Value
    ) throws(ConfigurationError) -> Value {
        guard let raw = text(name) else { return value }
        do {
            return try parse(raw)
        } catch {
            throw ConfigurationError(error)
        }
    }

    func url(_ name: String, default value: String) throws(ConfigurationError) -> String {
        try optionalURL(name) ?? value
    }

    /// A base URL: an http or https URL, without its trailing slash.
    func optionalURL(_ name: String) throws(ConfigurationError) -> String? {
        try httpURL(name).map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// An http or https URL with a host, and a port from 1 to 65535 if it names one, as given.
    package func httpURL(_ name: String) throws(ConfigurationError) -> String? {
        guard let raw = text(name) else { return nil }
        guard let url = URL(string: raw), ["http", "https"].contains(url.scheme?.lowercased()), url.host != nil,
              (1...65_535).contains(url.port ?? 443)
        else {
            throw ConfigurationError(name, expected: "an http or https URL (with a port from 1 to 65535, if any)")
        }
        return raw
    }
}
