import DetectQueue
import Foundation
import Postgres

/// The end-of-run checks of a chaos run: each reads the database, the simulator's record of what it was sent,
/// or the alert sink's record of what it received, and says whether its invariant held, with figures.
struct InvariantChecks: Sendable {
    let pool: PostgresConnectionPool
    /// The simulator's detections per media key, oldest first.
    let detectionsByMedia: [String: [String]]
    /// When the simulator created each detection, by uuid.
    let createdAt: [String: Date]
    let deliveries: AlertLedger.Deliveries
    let confirmedInserts: Set<String>
    /// What the lease monitor saw of killed workers' leases, and the lease time.
    let leases: LeaseMonitor.Figures
    let lease: Double
    /// The detections the simulator created for a submission whose answer it then cut off.
    let behindLostAnswers: Set<String>
    /// How many out-of-credit windows the run dealt, and how many submissions the API answered 402.
    let creditWindows: Int
    let creditRefusals: Int
    /// The workers' output, and the secrets (by kind) that must not appear in it.
    let logs: [URL]
    let secrets: [String: [String]]
    /// Workers that exited without being killed or asked to stop, or failed to stop cleanly when asked.
    let unexpectedExits: [String]
    /// When each failover's promotion ended.
    let failovers: [Date]
    /// When one lane was paused, if the run got that far.
    let pauseWindow: QueueLanes.PauseWindow?

    /// One request as the checks need it.
    struct Row {
        let id: Int
        let key: String
        let mediaKey: String
        let state: RequestState
        let attempt: Int
        let remoteUUID: String?
        let isFake: Bool
        let zeroRetention: Bool
        let hardCase: HardCase?
        let errorMessage: String?
        let audioLabel: String?
        let visualLabel: String?
    }

    func run(into report: inout ChaosReport) async throws {
        let installation = try await Installation.name(pool)
        let rows = try await pool.query("""
            SELECT id, idempotency_key, media_url, media_path, state, attempt, remote_uuid, coalesce(is_fake, false) AS is_fake,
                   zero_retention_mode, metadata->>'case' AS hard_case, error_message, audio_label, visual_label
            FROM detectq.requests WHERE metadata ? 'chaos' ORDER BY id
            """).map { row in
            let id = try row.decode("id", as: Int.self)
            let url = try row.decode("media_url", as: String?.self)
            let ext = ((try row.decode("media_path", as: String?.self) ?? "") as NSString).pathExtension
            return Row(
                id: id, key: try row.decode("idempotency_key"),
                // Workers name each upload after their installation, the request and the attempt; the simulator
                // counts them per request.
                mediaKey: url ?? "file:detectq-\(installation)-\(id)" + (ext.isEmpty ? "" : ".\(ext)"),
                state: try row.decode("state"), attempt: try row.decode("attempt"),
                remoteUUID: try row.decode("remote_uuid"), isFake: try row.decode("is_fake"),
                zeroRetention: try row.decode("zero_retention_mode"),
                hardCase: try row.decode("hard_case", as: String?.self).flatMap(HardCase.init(rawValue:)),
                errorMessage: try row.decode("error_message"), audioLabel: try row.decode("audio_label"),
                visualLabel: try row.decode("visual_label")
            )
        }
        report.enqueued = rows.count
        report.completed = rows.count { $0.state == .completed }
        report.failed = rows.count { $0.state == .failed }
        report.cancelled = rows.count { $0.state == .cancelled }
        report.fakes = rows.count { $0.state == .completed && $0.isFake }
        let adoptions = try await adoptions()
        report.lostAnswers = lostAnswers(rows, adoptions: adoptions)
        countHardCases(rows, into: &report.hardCases)
        let heldForTheDay = try await heldForTheDay()
        report.invariants += [
            try await everyRequestEnds(rows, heldForTheDay: heldForTheDay),
            try await submittedOnce(rows),
            alertedOnce(rows),
            try await postTasksFinish(),
            leasesReleased(),
            try await historiesAreLegal(rows),
            secretsStayOutOfLogs(),
            workersSurvive(),
            adoptedDetectionsBelong(rows, adoptions: adoptions),
            hardCasesEndAsPromised(rows),
            await creditWindowsCostNothing(rows),
            throttlesFailNothing(rows),
            try await claimingResumesAfterFailovers(),
            try await queuesKeptTheirCaps(),
            try await dailyLimitsHeld(rows, held: heldForTheDay),
            try await pausedQueueClaimedNothing(pauseWindow),
            try await reusedVerdictsComeFromTheirSource(rows),
            try await identicalMediaSentOneAtATime(rows),
        ]
    }

    /// After every failover some worker claims again within 30 s (REFERENCE.md section 7): the producer keeps
    /// inserting through the faults, and on after the last failover until a claim follows it, so there is always
    /// work to claim.
    private func claimingResumesAfterFailovers() async throws -> ChaosReport.Invariant {
        var delays: [Double] = []
        for failover in failovers {
            delays.append(try await Self.firstClaim(after: failover, on: pool) ?? .infinity)
        }
        let slowest = delays.max() ?? 0
        return ChaosReport.Invariant(
            name: "claiming resumes within 30 s of every failover", held: slowest <= 30,
            detail: failovers.isEmpty
                ? "no failover dealt"
                : "\(failovers.count) failovers; first claim on the promoted primary after "
                    + delays.map { String(format: "%.1f s", $0) }.joined(separator: ", ")
        )
    }

    /// Seconds from `moment` to the first claim after it, if there has been one.
    static func firstClaim(after moment: Date, on pool: PostgresConnectionPool) async throws -> Double? {
        try await pool.query("""
            SELECT EXTRACT(EPOCH FROM min(at) - \(moment))::float8 AS delay
            FROM detectq.request_events WHERE to_state = 'submitting' AND at > \(moment)
            """)[0].decode("delay", as: Double?.self)
    }

    /// Requests enqueued = completed + failed (with a reason) + cancelled (+ those a daily limit holds for the next
    /// UTC day, unfailed), and every confirmed insert is there.
    private func everyRequestEnds(_ rows: [Row], heldForTheDay: Set<Int>) async throws -> ChaosReport.Invariant {
        let ended: Set<RequestState> = [.completed, .failed, .cancelled]
        let unfinished = rows.filter { !ended.contains($0.state) && !heldForTheDay.contains($0.id) }
        let present = Set(rows.map(\.key))
        let lost = confirmedInserts.subtracting(present)
        let reasonless = try await pool.query("""
            SELECT count(*)::int8 AS n FROM detectq.requests
            WHERE metadata ? 'chaos' AND state = 'failed' AND btrim(coalesce(error_message, '')) = ''
            """)[0].decode("n", as: Int.self)
        let reasons = try await pool.query("""
            SELECT left(regexp_replace(error_message, '[0-9]+', 'N', 'g'), 90) AS reason, count(*)::int8 AS n
            FROM detectq.requests WHERE metadata ? 'chaos' AND state = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 3
            """).map { "\(try $0.decode("n", as: Int.self))× \(try $0.decode("reason", as: String.self))" }
        return .init(
            name: "no request lost or stuck",
            held: unfinished.isEmpty && lost.isEmpty && reasonless == 0,
            detail: "\(rows.count) enqueued (\(confirmedInserts.count) inserts confirmed, \(lost.count) missing) = "
                + "\(rows.count - unfinished.count - heldForTheDay.count) ended, \(heldForTheDay.count) held for the next UTC day by a daily limit; "
                + "\(unfinished.count) unfinished"
                + (unfinished.isEmpty ? "" : " (ids \(unfinished.prefix(5).map { "\($0.id) \($0.state.rawValue)" }))")
                + "; \(reasonless) failed without a reason"
                + (reasons.isEmpty ? "" : "; failures: " + reasons.joined(separator: ", "))
        )
    }

    /// No submission after a `remote_uuid` was stored (no detection of the request's media created after the
    /// request first moved on with a uuid: accepted, completed or failed by the API), and at most one per attempt.
    /// A request may adopt an earlier detection than its last (a lost answer found after the next attempt sent):
    /// that resubmission came before any uuid was stored, and is counted with those.
    private func submittedOnce(_ rows: [Row]) async throws -> ChaosReport.Invariant {
        var storedAt: [Int: Date] = [:]
        for row in try await pool.query("""
            SELECT e.request_id, min(e.at) AS at FROM detectq.request_events e JOIN detectq.requests r ON r.id = e.request_id
            WHERE r.remote_uuid IS NOT NULL AND e.to_state IN ('awaiting_result', 'completed', 'failed') GROUP BY 1
            """) {
            storedAt[try row.decode("request_id", as: Int.self)] = try row.decode("at", as: Date.self)
        }
        var afterStored: [Int] = []
        var overAttempts: [Int] = []
        var unknownUUID: [Int] = []
        var resubmittedBeforeUUID = 0
        for row in rows {
            let created = detectionsByMedia[row.mediaKey] ?? []
            if created.count > row.attempt { overAttempts.append(row.id) }
            if let uuid = row.remoteUUID {
                if !created.contains(uuid) { unknownUUID.append(row.id) }
                if let stored = storedAt[row.id], created.contains(where: { (createdAt[$0] ?? .distantPast) > stored }) {
                    afterStored.append(row.id)
                }
            }
            resubmittedBeforeUUID += max(0, created.count - 1)
        }
        let submissions = rows.reduce(0) { $0 + (detectionsByMedia[$1.mediaKey]?.count ?? 0) }
        return .init(
            name: "no request submitted again once its remote_uuid was stored",
            held: afterStored.isEmpty && overAttempts.isEmpty && unknownUUID.isEmpty,
            detail: "\(submissions) submissions for \(rows.count) requests; \(afterStored.count) after a stored remote_uuid"
                + "\(afterStored.isEmpty ? "" : " (ids \(afterStored.prefix(5)))"); \(overAttempts.count) with more submissions than attempts; "
                + "\(unknownUUID.count) stored uuids the API never issued; \(resubmittedBeforeUUID) resubmissions before any "
                + "remote_uuid was stored (allowed: an answer lost on the way, or a worker killed while it waited)"
        )
    }

    /// Every fake alerted at least once, with one stable event id per request, distinct across requests.
    private func alertedOnce(_ rows: [Row]) -> ChaosReport.Invariant {
        let fakes = rows.filter { $0.state == .completed && $0.isFake }
        let fakeIDs = Set(fakes.map(\.id))
        let unalerted = fakes.filter { deliveries.eventIDsByRequest[$0.id]?.isEmpty ?? true }.map(\.id)
        let unstable = deliveries.eventIDsByRequest.filter { Set($0.value).count > 1 }.keys.sorted()
        let firstIDs = deliveries.eventIDsByRequest.compactMap(\.value.first)
        let shared = firstIDs.count - Set(firstIDs).count
        let notFake = deliveries.eventIDsByRequest.keys.filter { !fakeIDs.contains($0) }.sorted()
        let total = deliveries.eventIDsByRequest.values.reduce(0) { $0 + $1.count }
        return .init(
            name: "every fake alerted at least once, one event_id per request",
            held: unalerted.isEmpty && unstable.isEmpty && shared == 0 && notFake.isEmpty && deliveries.rejected == 0,
            detail: "\(fakes.count) fakes, \(fakes.count - unalerted.count) alerted (\(total) deliveries accepted, "
                + "\(total - (fakes.count - unalerted.count)) of them repeats); \(unalerted.count) never alerted"
                + "\(unalerted.isEmpty ? "" : " (ids \(unalerted.prefix(5)))"); \(unstable.count) requests with two event ids; "
                + "\(shared) event ids shared between requests; \(notFake.count) alerts for requests that are not fakes; "
                + "\(deliveries.rejected) deliveries with a bad signature or body"
        )
    }

    /// Post-processing is at least once: every task ran to the end.
    private func postTasksFinish() async throws -> ChaosReport.Invariant {
        let counts = try await pool.query("""
            SELECT t.state::text AS state, count(*)::int8 AS n FROM detectq.post_tasks t
            JOIN detectq.requests r ON r.id = t.request_id WHERE r.metadata ? 'chaos' GROUP BY 1
            """).reduce(into: [String: Int]()) { $0[try $1.decode("state")] = try $1.decode("n") }
        let unfinished = counts.filter { $0.key != "completed" }.values.reduce(0, +)
        return .init(
            name: "every post-task completed",
            held: unfinished == 0,
            detail: counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        )
    }

    /// A dead worker's lease is taken over within one lease time of its expiry.
    private func workersSurvive() -> ChaosReport.Invariant {
        .init(
            name: "no worker exits on its own; each drains cleanly when asked",
            held: unexpectedExits.isEmpty,
            detail: unexpectedExits.isEmpty ? "every exit was a kill or a clean stop" : unexpectedExits.joined(separator: "; ")
        )
    }

    private func leasesReleased() -> ChaosReport.Invariant {
        .init(
            name: "no dead worker's lease outlives its expiry by a lease time",
            held: leases.worstOverdue <= lease,
            detail: String(
                format: "%d leases held by killed workers; %d samples; the longest one stayed expired: %.1f s (limit %.0f s)",
                leases.orphaned, leases.samples, leases.worstOverdue, lease
            )
        )
    }

    /// Every request's history is a legal path through the state machine that ends in its state.
    private func historiesAreLegal(_ rows: [Row]) async throws -> ChaosReport.Invariant {
        let events = try await pool.query("""
            SELECT e.request_id, e.from_state::text AS from_state, e.to_state::text AS to_state
            FROM detectq.request_events e JOIN detectq.requests r ON r.id = e.request_id
            WHERE r.metadata ? 'chaos' ORDER BY e.request_id, e.id
            """)
        var paths: [Int: [(from: String?, to: String)]] = [:]
        for event in events {
            paths[try event.decode("request_id"), default: []].append((try event.decode("from_state"), try event.decode("to_state")))
        }
        var illegal: [String] = []
        for row in rows {
            let path = paths[row.id] ?? []
            var current: RequestState?
            for (from, to) in path {
                guard let next = RequestState(rawValue: to), from == current?.rawValue,
                      current.map({ $0.canChange(to: next) }) ?? (next == .queued)
                else {
                    illegal.append("\(row.id): \(from ?? "NULL")→\(to) after \(current?.rawValue ?? "nothing")")
                    break
                }
                current = next
            }
            if current != row.state, illegal.last?.hasPrefix("\(row.id):") != true {
                illegal.append("\(row.id): history ends in \(current?.rawValue ?? "nothing"), the row is \(row.state.rawValue)")
            }
        }
        return .init(
            name: "every request's history is a legal path through the state machine",
            held: illegal.isEmpty,
            detail: "\(events.count) transitions over \(rows.count) requests; \(illegal.count) illegal"
                + (illegal.isEmpty ? "" : " (\(illegal.prefix(3).joined(separator: "; ")))")
        )
    }

    /// The API token, the webhook secret and the callback secrets never reach a worker's output.
    private func secretsStayOutOfLogs() -> ChaosReport.Invariant {
        var bytes = 0
        var leaks: [String] = []
        for log in logs {
            guard let text = try? String(contentsOf: log, encoding: .utf8) else { continue }
            bytes += text.utf8.count
            // Every secret is one word of letters, digits, '-' and '_', so the log's words are what to search.
            let words = Set(text.split { !($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
            for (name, values) in secrets where values.contains(where: { words.contains(Substring($0)) }) {
                leaks.append("\(name) in \(log.lastPathComponent)")
            }
        }
        return .init(
            name: "secrets never logged",
            held: leaks.isEmpty,
            detail: "\(logs.count) worker logs, \(bytes / 1024) KiB, searched for "
                + secrets.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value.count))" }.joined(separator: ", ") + ": "
                + (leaks.isEmpty ? "not found" : leaks.joined(separator: ", "))
        )
    }
}
