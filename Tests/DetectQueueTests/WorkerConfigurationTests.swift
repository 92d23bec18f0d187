import DetectQueue
import Foundation
import Testing

@Suite("Worker configuration from the environment")
struct WorkerConfigurationTests {
    let simulator = ["RESEMBLE_BASE_URL": "http://127.0.0.1:8787/api/v2"]

    @Test func defaultsFollowTheContract() throws {
        let configuration = try WorkerConfiguration.fromEnvironment(simulator.merging(["DETECTQ_WORKER_ID": "w-1"]) { $1 })
        #expect(configuration.apiRateLimit == 40)
        #expect(configuration.lease == .seconds(30))
        #expect(configuration.callbackTimeout == .seconds(120))
        #expect(configuration.workerID == "w-1")
        #expect(configuration.database.applicationName == "detectq worker w-1", "the event history reads the id from it")
        #expect(configuration.api.token == nil && configuration.callbackURL == nil && configuration.mediaRoot == nil)
        #expect(configuration.concurrency == 100)
        #expect(configuration.api.maximumConnections >= configuration.concurrency, "every request in flight can hold a connection")
        #expect(configuration.reuseVerdictWithin == .seconds(86_400), "DETECTQ_REUSE_VERDICT_WITHIN defaults to 24h")
    }

    @Test func reuseWindowIsADurationAndZeroTurnsReuseOff() throws {
        func window(_ text: String) throws -> Duration? {
            try WorkerConfiguration.fromEnvironment(simulator.merging(["DETECTQ_REUSE_VERDICT_WITHIN": text]) { $1 }).reuseVerdictWithin
        }
        #expect(try window("90m") == .seconds(5_400))
        #expect(try window("7d") == .seconds(604_800))
        #expect(try window("3600") == .seconds(3_600))
        #expect(try window("0") == nil)
        #expect(throws: ConfigurationError.self) { try window("soon") }
        #expect(throws: ConfigurationError.self) { try window("-1h") }
    }

    @Test(arguments: [
        (["DETECTQ_CONCURRENCY": "lots"], "DETECTQ_CONCURRENCY must be a whole number"),
        (["DETECTQ_CONCURRENCY": "0"], "DETECTQ_CONCURRENCY must be a whole number"),
        (["DETECTQ_HTTP_PORT": "70000"], "DETECTQ_HTTP_PORT must be a whole number from 0 to 65535"),
        (["DETECTQ_API_RATE_LIMIT": "-1"], "DETECTQ_API_RATE_LIMIT must be a number from 0.001 to 100000"),
        (["DETECTQ_API_RATE_LIMIT": "nan"], "DETECTQ_API_RATE_LIMIT must be a number from 0.001 to 100000"),
        (["DETECTQ_LEASE_SECONDS": "soon"], "DETECTQ_LEASE_SECONDS must be a number of seconds from 0.1 to 86400"),
        (["DETECTQ_REUSE_VERDICT_WITHIN": "a day"], "DETECTQ_REUSE_VERDICT_WITHIN must be a duration such as 3600, 90m, 24h or 7d"),
        // Numbers that once trapped the worker when they became durations.
        (["DETECTQ_LEASE_SECONDS": "1e300"], "DETECTQ_LEASE_SECONDS must be a number of seconds from 0.1 to 86400"),
        (["DETECTQ_CALLBACK_TIMEOUT": "inf"], "DETECTQ_CALLBACK_TIMEOUT must be a number of seconds from 0.001 to 604800"),
        (["DETECTQ_POLL_INTERVAL": "nan"], "DETECTQ_POLL_INTERVAL must be a number of seconds from 0.001 to 86400"),
        (["DETECTQ_SHUTDOWN_GRACE_SECONDS": "-0"], "DETECTQ_SHUTDOWN_GRACE_SECONDS must be a number of seconds from 0.001 to 86400"),
        (["DETECTQ_RETRY_BASE_SECONDS": "1e-300"], "DETECTQ_RETRY_BASE_SECONDS must be a number of seconds from 0.001 to 86400"),
        (["DETECTQ_RETRY_MAX_SECONDS": "99999999999999999999"], "DETECTQ_RETRY_MAX_SECONDS must be a number of seconds from 0.001 to 604800"),
        (["DETECTQ_CONCURRENCY": "99999999999999999999"], "DETECTQ_CONCURRENCY must be a whole number from 1 to 100000"),
        (["DETECTQ_CALLBACK_URL": "not a url"], "DETECTQ_CALLBACK_URL must be an http or https URL"),
        (["DETECTQ_MEDIA_ROOT": "/no/such/dir"], "DETECTQ_MEDIA_ROOT must be an existing directory"),
        (["RESEMBLE_BASE_URL": "ftp://x"], "RESEMBLE_BASE_URL must be an http or https URL"),
        (["RESEMBLE_BASE_URL": "http://127.0.0.1:999999/api/v2"], "RESEMBLE_BASE_URL must be an http or https URL (with a port"),
        (["DETECTQ_CALLBACK_URL": "http://127.0.0.1:0"], "DETECTQ_CALLBACK_URL must be an http or https URL (with a port"),
    ])
    func aBadSettingNamesItsVariable(settings: [String: String], message: String) {
        let error = #expect(throws: ConfigurationError.self) {
            try WorkerConfiguration.fromEnvironment(simulator.merging(settings) { $1 })
        }
        #expect(error?.description.hasPrefix(message) == true, "\(String(describing: error))")
        #expect(error?.description.contains("\n") == false)
    }

    @Test func theRealAPINeedsAToken() {
        let error = #expect(throws: ConfigurationError.self) { try WorkerConfiguration.fromEnvironment([:]) }
        #expect(error?.variable == "RESEMBLE_API_TOKEN")
        let withToken = try? WorkerConfiguration.fromEnvironment(["RESEMBLE_API_TOKEN": "tok-secret-1"])
        #expect(withToken?.api.token == "tok-secret-1")
    }
}
