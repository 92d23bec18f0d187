import DetectSimulator
import Foundation
import Postgres

/// The demo's live progress: the batch's requests by state and its pending post-tasks, redrawn in place on a
/// terminal, printed as a line per change (at most one a second) otherwise.
struct DemoProgress {
    let runID: String
    let connection: PostgresConnection

    /// Follows the batch until every request is final and every post-task done (true), or until `deadline` or
    /// `stopped()` (false).
    func follow(until deadline: Date, stopped: () -> Bool) async throws -> Bool {
        let started = Date()
        let terminal = isatty(STDOUT_FILENO) == 1
        var lastLine = ""
        var lastPrinted = Date.distantPast
        while true {
            let states = try await DemoSummary.states(runID: runID, connection: connection)
            let pending = try await DemoSummary.pendingPostTasks(runID: runID, connection: connection)
            let unfinished = states.filter { !["completed", "failed", "cancelled"].contains($0.key) }.values.reduce(0, +)
            let line = String(format: "%6.1f s", Date().timeIntervalSince(started))
                + " │ queued \(states["queued", default: 0])  submitting \(states["submitting", default: 0])"
                + "  awaiting \(states["awaiting_result", default: 0])  retrying \(states["retrying", default: 0])"
                + " │ completed \(states["completed", default: 0])  failed \(states["failed", default: 0])"
                + " │ post-tasks pending \(pending)"
            let done = unfinished == 0 && pending == 0
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
    var states: [String: Int]
    var fakes: Int
    var alertsSent: Int
    var alertsReceived: Int
    var zeroRetention: Int
    var retentionConfirmed: Int
    var intelligenceRequested: Int
    var archiveRows: Int
    var submitPaths: [String: Int]
    var simulatorSubmissions: Int?
    var submittedMoreThanOnce: Int?
    var drainSeconds: Double
    var wallSeconds: Double

    var total: Int { states.values.reduce(0, +) }
    var finished: Int { states["completed", default: 0] + states["failed", default: 0] + states["cancelled", default: 0] }

    static func states(runID: String, connection: PostgresConnection) async throws -> [String: Int] {
        var states: [String: Int] = [:]
        for row in try await connection.query("""
            SELECT state::text AS state, count(*)::int8 AS n FROM detectq.requests WHERE metadata->>'demo' = \(runID) GROUP BY 1
            """) {
            states[try row.decode("state")] = try row.decode("n")
        }
        return states
    }

    static func pendingPostTasks(runID: String, connection: PostgresConnection) async throws -> Int {
        try await connection.query("""
            SELECT count(*)::int8 AS n FROM detectq.post_tasks t JOIN detectq.requests r ON r.id = t.request_id
            WHERE r.metadata->>'demo' = \(runID) AND t.state IN ('queued', 'running', 'retrying')
            """)[0].decode("n", as: Int.self)
    }

    static func read(
        runID: String, connection: PostgresConnection, started: Date, alertsReceived: Int, simulator: SimulatorStats?
    ) async throws -> DemoSummary {
        let row = try await connection.query("""
            SELECT count(*) FILTER (WHERE r.is_fake)::int8 AS fakes,
                   count(*) FILTER (WHERE r.zero_retention_mode)::int8 AS zero_retention,
                   count(*) FILTER (WHERE r.zero_retention_mode AND r.file_deleted_at IS NOT NULL)::int8 AS retention_confirmed,
                   count(*) FILTER (WHERE r.intelligence)::int8 AS intelligence,
                   (SELECT count(*) FROM detectq.intelligence_archive a JOIN detectq.requests q ON q.id = a.request_id
                     WHERE q.metadata->>'demo' = \(runID))::int8 AS archive_rows,
                   (SELECT count(*) FROM detectq.post_tasks t JOIN detectq.requests q ON q.id = t.request_id
                     WHERE q.metadata->>'demo' = \(runID) AND t.processor LIKE 'alert.%' AND t.state = 'completed')::int8 AS alerts,
                   COALESCE(EXTRACT(EPOCH FROM max(r.completed_at) - min(r.created_at)), 0)::float8 AS drain
            FROM detectq.requests r WHERE r.metadata->>'demo' = \(runID)
            """)[0]
        var paths: [String: Int] = [:]
        for path in try await connection.query("""
            SELECT submit_path, count(*)::int8 AS n FROM detectq.requests
            WHERE metadata->>'demo' = \(runID) AND submit_path IS NOT NULL GROUP BY 1
            """) {
            paths[try path.decode("submit_path")] = try path.decode("n")
        }
        return DemoSummary(
            runID: runID, states: try await states(runID: runID, connection: connection),
            fakes: try row.decode("fakes"), alertsSent: try row.decode("alerts"), alertsReceived: alertsReceived,
            zeroRetention: try row.decode("zero_retention"), retentionConfirmed: try row.decode("retention_confirmed"),
            intelligenceRequested: try row.decode("intelligence"), archiveRows: try row.decode("archive_rows"),
            submitPaths: paths, simulatorSubmissions: simulator?.submissions,
            submittedMoreThanOnce: simulator.map { $0.submissionsByMedia.values.filter { $0 > 1 }.count },
            drainSeconds: try row.decode("drain"), wallSeconds: Date().timeIntervalSince(started)
        )
    }

    /// The summary table.
    var text: String {
        func line(_ name: String, _ value: Int, _ note: String = "") -> String {
            name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%6d", value) + (note.isEmpty ? "" : "   " + note)
        }
        var lines = ["Summary of demo run \(runID)", "  " + line("requests", total)]
        for state in ["completed", "failed", "cancelled"] {
            lines.append("  " + line("  " + state, states[state, default: 0]))
        }
        lines.append("  " + line("  unfinished", total - finished))
        lines.append("  " + line("fakes found", fakes))
        lines.append("  " + line("alerts sent", alertsSent, "pg_notify on detectq_alerts; \(alertsReceived) received by this demo"))
        lines.append("  " + line("retention confirmed", retentionConfirmed, "of \(zeroRetention) zero-retention requests have file_deleted_at"))
        lines.append("  " + line("archive rows", archiveRows, "of \(intelligenceRequested) intelligence requests, in detectq.intelligence_archive"))
        let paths = ["url", "multipart", "secure_upload", "media_token"].compactMap { path in submitPaths[path].map { "\(path) \($0)" } }
        lines.append("  " + "submit paths".padding(toLength: 22, withPad: " ", startingAt: 0) + "      " + paths.joined(separator: ", "))
        if let simulatorSubmissions, let submittedMoreThanOnce {
            lines.append("  " + line("API submissions", simulatorSubmissions, "counted by the simulator; \(submittedMoreThanOnce) media submitted more than once"))
        }
        lines.append("  " + "time to drain".padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%8.1f s", drainSeconds))
        let rate = drainSeconds > 0 ? Double(finished) / drainSeconds : 0
        lines.append("  " + "throughput".padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%8.1f requests/s", rate))
        return lines.joined(separator: "\n")
    }
}
