import ArgumentParser
import DetectQueue
import Foundation
import QueueDashboard

/// `detectq config check`: the settings a worker would run with, secrets masked, and every error in them.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Inspect detectq's configuration.",
        subcommands: [Check.self]
    )

    /// `detectq config check [--config FILE]`.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Print the effective settings (secrets masked) and check them; exits 1 on any error.",
            discussion: "Settings: " + Settings.known.map(\.name).joined(separator: ", ")
                + ". A config file may give them in lower case without the DETECTQ_ prefix; the environment wins over it."
        )

        @Option(help: "A TOML or YAML file of settings, under the environment.") var config: String?

        @Flag(help: "Skip the database connection check.") var offline = false

        func run() async throws {
            let settings: Settings
            do {
                settings = try Settings.load(file: config)
            } catch {
                print("error: \(error)")
                throw ExitCode.failure
            }
            print("settings" + (settings.file.map { " (the environment, then \($0))" } ?? " (the environment)") + ":")
            let width = Settings.known.map(\.name.count).max() ?? 0
            for (name, isSecret) in Settings.known {
                let value = settings.environment[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
                let shown = value.map { Settings.masked(name, $0, isSecret: isSecret) } ?? "(default)"
                let source = settings.sources[name].map { "  [\($0.rawValue)]" } ?? ""
                print("  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(shown)\(source)")
            }
            var errors = Self.errors(in: settings.environment)
            if let worker = try? WorkerConfiguration.fromEnvironment(settings.environment) {
                print("effective: concurrency \(worker.concurrency), rate limit \(worker.apiRateLimit.formatted())/s, lease \(worker.lease.seconds.formatted()) s, API \(worker.api.baseURL), worker id \(worker.workerID)")
                if !offline {
                    do {
                        try await WorkerCommand.checkDatabase(worker.database)
                        print("database: reachable, detectq schema present")
                    } catch let error as ConfigurationError {
                        errors.append(error)
                    }
                }
            }
            guard errors.isEmpty else {
                for error in errors { print("error: \(error)") }
                throw ExitCode.failure
            }
            print("ok")
        }

        /// Every error in `environment`, each naming its setting: after each one, the setting is dropped (its
        /// default used) and the check runs again, so one pass finds them all.
        static func errors(in environment: [String: String]) -> [ConfigurationError] {
            var environment = environment
            var errors: [ConfigurationError] = []
            while errors.count < Settings.known.count {
                do {
                    _ = try WorkerCommand.jsonLogs(environment["DETECTQ_LOG_FORMAT"])
                    _ = try WorkerConfiguration.fromEnvironment(environment)
                    _ = try WorkerCommand.postProcessors(environment)
                    break
                } catch let error as ConfigurationError {
                    errors.append(error)
                    guard environment.removeValue(forKey: error.variable) != nil else { break }
                } catch {
                    break
                }
            }
            do {
                _ = try DashboardConfiguration.forWorker(environment)
            } catch {
                errors.append(error)
            }
            return errors
        }
    }
}
