import ArgumentParser
import DetectQueue
import Foundation
import Postgres
import ResembleDetect
import TextEncodings

/// `detectq status`: counts by state, each queue and why it waits, the oldest claimable request's age, claims per
/// worker, failures grouped by reason, and the post-task backlog per processor.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the queue: states, age, workers, failures, post-tasks.")

    @Flag(help: "Print one JSON object, for scripts (with --watch, one compact object per line).") var json = false

    @Flag(help: "Refresh until interrupted.") var watch = false

    @Option(help: "Seconds between refreshes with --watch.", transform: SecondsOption.parser("--interval", in: .milliseconds(100)...(.seconds(86_400))))
    var interval: Duration = .seconds(2)

    /// The status as one JSON-encodable value.
    struct Report: Encodable {
        var states: [String: Int] = [:]
        var oldestClaimableSeconds: Double?
        var inFlightByWorker: [String: Int] = [:]
        var failuresByReason: [Failure] = []
        var postTaskBacklog: [String: [String: Int]] = [:]
        var pauses: [Pause] = []
        var queues: [Queue] = []
        /// Requests completed today (UTC) with the verdict of identical media, never sent (CONTRACT section 9).
        var reusedToday = 0
        /// Requests waiting for the verdict of identical media in flight.
        var waitingForIdenticalMedia = 0
        var vacuumHorizon = Horizon()

        /// What holds back vacuum: the oldest snapshot's holder and age, and what it has cost the requests' table.
        struct Horizon: Encodable {
            var heldBy: String?
            var ageTransactions = 0
            /// Seconds since its transaction began; nil when this role may not see it.
            var heldSeconds: Double?
            var deadRequestVersions = 0
            var claimIndexBytes = 0
            var warning = false

            enum CodingKeys: String, CodingKey {
                case warning
                case heldBy = "held_by"
                case ageTransactions = "age_transactions"
                case heldSeconds = "held_seconds"
                case deadRequestVersions = "dead_request_versions"
                case claimIndexBytes = "claim_index_bytes"
            }
        }

        /// One queue: what it has due, in flight and billed today, and why its due requests wait, if they do.
        struct Queue: Encodable {
            var name: String
            var weight: Int
            var due: Int
            var inFlight: Int
            var billedToday: Int
            var paused: Bool
            var waits: [String]

            enum CodingKeys: String, CodingKey {
                case name, weight, due, paused, waits
                case inFlight = "in_flight"
                case billedToday = "billed_today"
            }
        }

        /// A shared pause in force: who set it, when, why, and until when (none for an operator's).
        struct Pause: Encodable {
            var kind: String
            var reason: String
            var pausedBy: String?
            var pausedAt: String
            var until: String?

            enum CodingKeys: String, CodingKey {
                case kind, reason, until
                case pausedBy = "paused_by"
                case pausedAt = "paused_at"
            }
        }

        struct Failure: Encodable {
            var reason: String
            var count: Int
        }

        enum CodingKeys: String, CodingKey {
            case states
            case oldestClaimableSeconds = "oldest_claimable_seconds"
            case inFlightByWorker = "in_flight_by_worker"
            case failuresByReason = "failures_by_reason"
            case postTaskBacklog = "post_task_backlog"
            case pauses, queues
            case reusedToday = "reused_today"
            case waitingForIdenticalMedia = "waiting_for_identical_media"
            case vacuumHorizon = "vacuum_horizon"
        }
    }

    func run() async throws {
        let pool = PostgresConnectionPool(configuration: .fromEnvironment(applicationName: "detectq status"), maximumConnections: 1)
        do {
            try await show(pool)
        } catch {
            await pool.close()
            throw error
        }
        await pool.close()
    }

    /// Prints the report once, or again every `interval` with `--watch`.
    private func show(_ pool: PostgresConnectionPool) async throws {
        let encoder = JSONText.encoder(pretty: !watch)
        let clearsScreen = watch && !json && isatty(STDOUT_FILENO) == 1
        repeat {
            let report: Report
            do {
                report = try await Self.report(pool)
            } catch {
                FileHandle.standardError.write(Data("detectq status: \(error)\n".utf8))
                throw ExitCode.failure
            }
            if json {
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                if clearsScreen { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                if watch { print("detectq status at \(Date().formatted(date: .omitted, time: .standard)), every \(interval.seconds.formatted()) s (Ctrl-C to stop)") }
                print(Self.text(report))
                if watch && !clearsScreen { print("") }
            }
            fflush(nil)
            if watch { try await Task.sleep(for: interval) }
        } while watch
    }

    static func report(_ pool: PostgresConnectionPool) async throws -> Report {
        var report = Report()
        let depth = try await QueueDepth.read(pool)
        report.states = Dictionary(uniqueKeysWithValues: depth.requests.map { ($0.key.rawValue, $0.value) })
        report.oldestClaimableSeconds = depth.oldestClaimableAge
        for holder in try await QueueBreakdown.leaseHolders(pool) where holder.requests > 0 {
            report.inFlightByWorker[holder.workerID] = holder.requests
        }
        report.failuresByReason = try await QueueBreakdown.failureGroups(pool, limit: 100)
            .filter { $0.failed > 0 }
            .sorted { ($0.failed, $1.reason) > ($1.failed, $0.reason) }
            .prefix(20)
            .map { Report.Failure(reason: $0.reason, count: $0.failed) }
        report.pauses = try await SharedPause(pool: pool).current().map {
            Report.Pause(kind: $0.kind.rawValue, reason: $0.reason, pausedBy: $0.pausedBy,
                         pausedAt: ISO8601Timestamp.format($0.pausedAt), until: $0.until.map(ISO8601Timestamp.format))
        }
        report.queues = try await QueueOverview.read(pool).map {
            Report.Queue(
                name: $0.settings.name, weight: $0.settings.weight, due: $0.due, inFlight: $0.inFlight, billedToday: $0.billedToday,
                paused: $0.settings.pause != nil, waits: $0.holds.map(\.description)
            )
        }
        let reuse = try await ReuseSummary.read(pool)
        (report.reusedToday, report.waitingForIdenticalMedia) = (reuse.reusedToday, reuse.waiting)
        let horizon = try await VacuumHorizon.read(pool)
        report.vacuumHorizon = Report.Horizon(
            heldBy: horizon.holder?.description, ageTransactions: horizon.ageTransactions, heldSeconds: horizon.heldSeconds,
            deadRequestVersions: horizon.deadRequestVersions, claimIndexBytes: horizon.claimIndexBytes, warning: horizon.warrantsWarning
        )
        for backlog in try await QueueBreakdown.postTaskBacklogs(pool) {
            report.postTaskBacklog[backlog.processor] = Dictionary(uniqueKeysWithValues: backlog.counts.map { ($0.key.rawValue, $0.value) })
        }
        return report
    }

    static func text(_ report: Report) -> String {
        var lines = report.pauses.isEmpty ? ["submitting: running"] : ["submitting: PAUSED"]
        for pause in report.pauses {
            let until = pause.until.map { ", until \($0)" } ?? ", until `detectq resume`"
            lines.append("  \(pause.kind) since \(pause.pausedAt) by \(pause.pausedBy ?? "unknown")\(until): \(pause.reason)")
        }
        lines.append("requests:")
        for state in RequestState.allCases.map(\.rawValue) {
            lines.append("  \(state.padding(toLength: 16, withPad: " ", startingAt: 0)) \(report.states[state] ?? 0)")
        }
        lines.append("identical media: \(report.reusedToday) reused today (not sent to the API), "
            + "\(report.waitingForIdenticalMedia) waiting for one in flight")
        lines.append("queues:")
        for queue in report.queues {
            let waits = queue.waits.isEmpty ? (queue.paused ? "; paused" : "") : "; waits: " + queue.waits.joined(separator: "; ")
            lines.append("  \(queue.name) (weight \(queue.weight)): \(queue.due) due, \(queue.inFlight) in flight, \(queue.billedToday) billed today\(waits)")
        }
        lines.append(horizonLine(report.vacuumHorizon))
        lines.append("oldest claimable: " + (report.oldestClaimableSeconds.map { String(format: "%.1f s", $0) } ?? "none"))
        lines.append("in flight by worker:" + (report.inFlightByWorker.isEmpty ? " none" : ""))
        for (worker, count) in report.inFlightByWorker.sorted(by: { $0.key < $1.key }) { lines.append("  \(worker): \(count)") }
        lines.append("failures by reason:" + (report.failuresByReason.isEmpty ? " none" : ""))
        for failure in report.failuresByReason { lines.append("  \(failure.count) × \(failure.reason)") }
        lines.append("post-task backlog:" + (report.postTaskBacklog.isEmpty ? " none" : ""))
        for (processor, states) in report.postTaskBacklog.sorted(by: { $0.key < $1.key }) {
            lines.append("  \(processor): " + states.sorted(by: { $0.key < $1.key }).map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    /// What holds back vacuum, in one line; a warning and what to do when it has held too long.
    static func horizonLine(_ horizon: Report.Horizon) -> String {
        let cost = "\(horizon.deadRequestVersions) dead request versions, claim index \(String(format: "%.1f MB", Double(horizon.claimIndexBytes) / 1e6))"
        guard let holder = horizon.heldBy else { return "vacuum horizon: nothing holds it back (\(cost))" }
        let held = horizon.heldSeconds.map { "for \(Int($0)) s" } ?? "(its start is hidden from this role: pg_read_all_stats shows it)"
        let line = "vacuum horizon: \(horizon.ageTransactions) transactions old, held by \(holder) \(held) (\(cost))"
        guard horizon.warning else { return line }
        return "WARNING " + line + "\n  vacuum keeps every request version changed since, and each claim steps over them:"
            + " end that transaction (pg_terminate_backend for a session left idle in one)"
    }
}
