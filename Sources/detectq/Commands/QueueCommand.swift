import ArgumentParser
import DetectQueue
import Foundation
import Postgres

/// `detectq queue list|set|pause|resume`: the queues' shares of the API, their limits and pauses (CONTRACT
/// section 8).
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "List queues; set a queue's weight and limits; pause or resume one queue.",
        subcommands: [QueueListCommand.self, QueueSetCommand.self, QueuePauseCommand.self, QueueResumeCommand.self]
    )

    /// Refuses a name no request could use, in the words of the constraint.
    static func validate(name: String) throws {
        guard QueueSettings.isValidName(name) else {
            throw ValidationError("a queue's name is 1 to 63 of a-z, 0-9, _, - and . (requests_queue_name); '\(name)' is not")
        }
    }

    /// One queue's settings on one line.
    static func describe(_ settings: QueueSettings) -> String {
        func limit<Value>(_ value: Value?) -> String { value.map { "\($0)" } ?? "none" }
        return "weight \(settings.weight), max_in_flight \(limit(settings.maxInFlight)), "
            + "group_max_in_flight \(limit(settings.groupMaxInFlight)), rate_limit \(settings.rateLimit.map { "\($0.formatted())/s" } ?? "none"), "
            + "daily_limit \(limit(settings.dailyLimit))"
    }
}

/// `detectq queue list`: every queue's settings, what it has due, in flight and billed today, and why it waits.
struct QueueListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Every queue: settings, due, in flight, billed today, why it waits.")

    func run() async throws {
        let queues = try await withOperatorPool("queue list") { try await QueueOverview.read($0) }
        let header = ["QUEUE", "WEIGHT", "MAX-IN-FLIGHT", "GROUP-MAX", "RATE/S", "DAILY", "DUE", "IN-FLIGHT", "BILLED-TODAY", "STATUS"]
        let rows = queues.map { queue -> [String] in
            let settings = queue.settings
            let status = queue.holds.isEmpty
                ? (settings.pause.map { _ in "paused" } ?? "running")
                : "waits: " + queue.holds.map(\.description).joined(separator: "; ")
            return [
                settings.name, "\(settings.weight)", settings.maxInFlight.map(String.init) ?? "-", settings.groupMaxInFlight.map(String.init) ?? "-",
                settings.rateLimit.map { $0.formatted() } ?? "-", settings.dailyLimit.map(String.init) ?? "-",
                "\(queue.due)", "\(queue.inFlight)", "\(queue.billedToday)", status,
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.indices.map { column in
                column == row.count - 1 ? row[column] : row[column].padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  "))
        }
    }
}

/// `detectq queue set NAME [--weight N] [--max-in-flight N|none] …`: changes a queue's share and limits; with no
/// option, makes the queue with its defaults.
struct QueueSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set a queue's weight and limits (`none` removes a limit); with no option, create it with its defaults."
    )

    @Argument(help: "The queue's name.") var name: String
    @Option(help: "Its share of the claims while other queues wait too (a whole number, 1 or more).") var weight: String?
    @Option(name: .customLong("max-in-flight"), help: "Requests submitting or awaiting a result at once, across all workers, or `none`.")
    var maxInFlight: String?
    @Option(name: .customLong("group-max-in-flight"), help: "The same, per group_key, or `none`.") var groupMaxInFlight: String?
    @Option(help: "Requests per second of the shared API budget, or `none`.") var rate: String?
    @Option(name: .customLong("daily-limit"), help: "Detections billed per UTC day, or `none`.") var dailyLimit: String?

    /// The change the options ask for, each value checked.
    func change() throws -> QueueSettingsChange {
        let given: [QueueSettingsChange.Field: String?] = [
            .weight: weight, .maxInFlight: maxInFlight, .groupMaxInFlight: groupMaxInFlight, .rateLimit: rate, .dailyLimit: dailyLimit,
        ]
        do {
            return try QueueSettingsChange(text: given.compactMapValues { $0 }, name: \.option)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func validate() throws {
        try QueueCommand.validate(name: name)
        _ = try change()
    }

    func run() async throws {
        let change = try change()
        let settings = try await withOperatorPool("queue set") { try await QueueSettingsStore(pool: $0).set(name, change).settings }
        print("queue \(settings.name): \(QueueCommand.describe(settings))")
    }
}

/// `detectq queue pause NAME [--reason TEXT]`: its requests are not claimed; callbacks, polls and
/// post-processing of the ones in flight go on.
struct QueuePauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop claiming one queue's requests (those in flight finish; nothing fails)."
    )

    @Argument(help: "The queue's name.") var name: String
    @Option(help: "Why, for `detectq queue list`, `detectq status`, the dashboard and whoever resumes.") var reason = "paused by an operator"

    func validate() throws {
        try QueueCommand.validate(name: name)
        guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ValidationError("--reason must not be blank") }
    }

    func run() async throws {
        let paused = try await withOperatorPool("queue pause") {
            try await QueueSettingsStore(pool: $0).pause(name, reason: reason, by: operatorName("queue pause"))
        }
        print(paused
            ? "queue \(name) paused: \(reason) (detectq queue resume \(name) restarts it)"
            : "queue \(name) was already paused; nothing changed (detectq queue list says by whom)")
    }
}

/// `detectq queue resume NAME`: ends a queue's pause.
struct QueueResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "End one queue's pause.")

    @Argument(help: "The queue's name.") var name: String

    func validate() throws {
        try QueueCommand.validate(name: name)
    }

    func run() async throws {
        let resumed = try await withOperatorPool("queue resume") { try await QueueSettingsStore(pool: $0).resume(name) }
        print(resumed ? "queue \(name) resumed" : "queue \(name) was not paused; nothing changed")
    }
}
