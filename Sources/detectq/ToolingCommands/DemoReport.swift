import DetectQueue
import DetectSimulator
import Foundation
import Postgres

/// The demo's live progress: the batch's requests by state and its pending post-tasks, redrawn in place on a
/// terminal, printed as a line per change (at most one a second) otherwise.
struct DemoProgress {
    let runID: String
    let pool: PostgresConnectionPool

    /// Follows the batch until, with nothing more `enqueuing()`, every request is final and every post-task
    /// done (true), or until `deadline` or `stopped()` (false).
    func follow(until deadline: Date, enqueuing: () -> Bool, stopped: () -> Bool) async throws -> Bool {
        let started = Date()
        let terminal = isatty(STDOUT_FILENO) == 1
        var lastLine = ""
        var lastPrinted = Date.distantPast
        while true {
            let progress = try await BatchOutcome.progress(key: "demo", value: runID, on: pool)
            let line = String(format: "%6.1f s", Date().timeIntervalSince(started))
                + " │ queued \(progress[.queued])  submitting \(progress[.submitting])"
                + "  awaiting \(progress[.awaitingResult])  retrying \(progress[.retrying])"
                + " │ completed \(progress[.completed])  failed \(progress[.failed])"
                + " │ post-tasks pending \(progress.pendingPostTasks)"
            let done = !enqueuing() && progress.unfinished == 0 && progress.pendingPostTasks == 0
            let ending = done || stopped() || Date() >= deadline
            if terminal {
                print("\r" + line + "\u{1B}[K", terminator: ending ? "\n" : "")
            } else if ending || (line.dropFirst(8) != lastLine.dropFirst(8) && Date().timeIntervalSince(lastPrinted) >= 1) {
                print(line)
                lastPrinted = Date()
            }
            lastLine = line
            fflush(nil)
            if ending { return done }
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}

/// What the demo's batch came to, read back from the database (and from the simulator when there is one).
struct DemoSummary {
    var runID: String
    var outcome: BatchOutcome
    var alertsReceived: Int
    var simulatorSubmissions: Int?
    var submittedMoreThanOnce: Int?
    var wallSeconds: Double

    static func read(
        runID: String, pool: PostgresConnectionPool, started: Date, alertsReceived: Int, simulator: SimulatorStats?
    ) async throws -> DemoSummary {
        DemoSummary(
            runID: runID, outcome: try await BatchOutcome.read(key: "demo", value: runID, on: pool), alertsReceived: alertsReceived,
            simulatorSubmissions: simulator?.submissions,
            submittedMoreThanOnce: simulator.map { $0.submissionsByMedia.values.filter { $0 > 1 }.count },
            wallSeconds: Date().timeIntervalSince(started)
        )
    }

    /// The summary table.
    var text: String {
        func line(_ name: String, _ value: Int, _ note: String = "") -> String {
            name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%6d", value) + (note.isEmpty ? "" : "   " + note)
        }
        let progress = outcome.progress
        var lines = [
            "Summary of demo run \(runID)",
            "  \(progress.total) requests, \(outcome.detections) detections, \(outcome.reused) reused (identical media is detected once)",
            "  " + line("requests", progress.total),
        ]
        for state in [RequestState.completed, .failed, .cancelled] {
            lines.append("  " + line("  " + state.rawValue, progress[state]))
        }
        lines.append("  " + line("  unfinished", progress.unfinished))
        lines.append("  " + line("reused", outcome.reused, "verdicts of identical media and options, not sent to the API"))
        lines.append("  " + line("fakes found", outcome.fakes))
        lines.append("  " + line("alerts sent", outcome.alertsSent, "pg_notify on detectq_alerts; \(alertsReceived) received by this demo"))
        lines.append("  " + line(
            "retention confirmed", outcome.retentionConfirmed, "of \(outcome.zeroRetention) zero-retention requests have file_deleted_at"
        ))
        lines.append("  " + line(
            "archive rows", outcome.archiveRows, "of \(outcome.intelligenceRequested) intelligence requests, in detectq.intelligence_archive"
        ))
        let paths = SubmitPath.allCases.map(\.rawValue).compactMap { path in outcome.submitPaths[path].map { "\(path) \($0)" } }
        lines.append("  " + "submit paths".padding(toLength: 22, withPad: " ", startingAt: 0) + "      " + paths.joined(separator: ", "))
        if let simulatorSubmissions, let submittedMoreThanOnce {
            lines.append("  " + line("API submissions", simulatorSubmissions, "counted by the simulator; \(submittedMoreThanOnce) media submitted more than once"))
        }
        if !outcome.lanes.isEmpty { lines.append("  wait from INSERT to claim, by lane") }
        for lane in outcome.lanes {
            func seconds(_ value: Double?) -> String { value.map { String(format: "%.2f s", $0) } ?? "-" }
            lines.append("  " + line("  " + lane.queue, lane.requests,
                "median \(seconds(lane.waitMedian)), p95 \(seconds(lane.wait95)), longest \(seconds(lane.waitLongest))"))
        }
        lines.append("  " + "time to drain".padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%8.1f s", outcome.drainSeconds))
        let rate = outcome.drainSeconds > 0 ? Double(progress.finished) / outcome.drainSeconds : 0
        lines.append("  " + "throughput".padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%8.1f requests/s", rate))
        return lines.joined(separator: "\n")
    }
}
