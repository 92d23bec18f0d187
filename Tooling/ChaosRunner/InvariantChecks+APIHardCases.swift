import DetectQueue
import DetectSimulator
import Foundation
import Postgres

/// The checks and figures of REFERENCE.md section 6 ("When the API misbehaves"): what became of the detections
/// billed behind a lost answer, whether each hard case the producer dealt ended as promised, and what the
/// out-of-credit windows cost.
extension InvariantChecks {
    /// How each adopted request found its detection (`list` or `callback`), by request id, from its history.
    func adoptions() async throws -> [Int: String] {
        try await pool.query("""
            SELECT e.request_id, substring(e.detail FROM '^adopted via ([a-z]+)') AS via
            FROM detectq.request_events e JOIN detectq.requests r ON r.id = e.request_id
            WHERE r.metadata ? 'chaos' AND e.detail LIKE 'adopted via %'
            """).reduce(into: [:]) { adopted, row in
            adopted[try row.decode("request_id", as: Int.self)] = try row.decode("via", as: String?.self) ?? "?"
        }
    }

    /// Every detection the API created for a request other than the one it answered: adopted (the answer was
    /// lost, the worker found it), submitted again behind it, or left unused by a request that ended first.
    /// Tallied by cause (an answer the simulator cut off after billing, or one lost otherwise: a worker
    /// killed while it waited, a timeout), zero-retention requests apart.
    func lostAnswers(_ rows: [Row], adoptions: [Int: String]) -> ChaosReport.LostAnswers {
        var figures = ChaosReport.LostAnswers()
        for row in rows {
            let created = detectionsByMedia[row.mediaKey] ?? []
            for (index, uuid) in created.enumerated() {
                let adopted = uuid == row.remoteUUID ? adoptions[row.id] : nil
                guard adopted != nil || uuid != row.remoteUUID else { continue }
                let cutOff = behindLostAnswers.contains(uuid)
                func tally(_ count: inout ChaosReport.LostAnswers.Tally) {
                    count.billed += 1
                    switch adopted {
                    case "list"?: count.adoptedByList += 1
                    case _?: count.adoptedByCallback += 1
                    case nil where index < created.count - 1: count.submittedAgain += 1
                    case nil: count.unused += 1
                    }
                }
                if row.zeroRetention {
                    tally(&figures.zeroRetention)
                } else if cutOff {
                    tally(&figures.cutOffAfterBilling)
                } else {
                    tally(&figures.otherwiseLost)
                }
            }
        }
        return figures
    }

    /// The hard cases' counts, added to what the run measured itself (the throttle's and the team's figures):
    /// the never-finishing ones dealt, the requests the result timeout ended, and those failed by a 402 or a 429.
    func countHardCases(_ rows: [Row], into figures: inout ChaosReport.HardCaseFigures) {
        figures.neverFinishingDealt = rows.count { $0.hardCase == .neverFinishes || $0.hardCase == .statusUnknown }
        figures.endedByResultTimeout = rows.count { $0.state == .failed && Self.endedByResultTimeout($0) }
        figures.creditWindows = creditWindows
        figures.creditRefusals = creditRefusals
        figures.failedByCredit = rows.count { $0.state == .failed && Self.blamesCredit($0) }
        figures.failedByThrottle = rows.count { $0.state == .failed && Self.blamesThrottle($0) }
    }

    /// Every adopted uuid is one the API created for that request's own media, and no two requests hold the
    /// same uuid.
    func adoptedDetectionsBelong(_ rows: [Row], adoptions: [Int: String]) -> ChaosReport.Invariant {
        let adopted = rows.filter { adoptions[$0.id] != nil }
        let foreign = adopted.filter { row in
            guard let uuid = row.remoteUUID else { return true }
            return !(detectionsByMedia[row.mediaKey] ?? []).contains(uuid)
        }.map(\.id)
        var holders: [String: [Int]] = [:]
        for row in rows { if let uuid = row.remoteUUID { holders[uuid, default: []].append(row.id) } }
        let shared = holders.filter { $0.value.count > 1 }
        return .init(
            name: "every adopted uuid belongs to its request's media; no two requests share a uuid",
            held: foreign.isEmpty && shared.isEmpty,
            detail: "\(adopted.count) adopted (\(adoptions.values.count { $0 == "list" }) via list, "
                + "\(adoptions.values.count { $0 != "list" }) via callback); \(foreign.count) with a uuid the API made for other media"
                + (foreign.isEmpty ? "" : " (ids \(foreign.prefix(5)))")
                + "; \(holders.count) uuids stored, \(shared.count) held by two requests or more"
                + (shared.isEmpty ? "" : " (\(shared.prefix(3).map { "\($0.key): \($0.value)" }.joined(separator: "; ")))")
        )
    }

    /// Each hard case ends as the contract promises (a cancellation ends any of them), and no ordinary request
    /// ends by a hard case's path.
    func hardCasesEndAsPromised(_ rows: [Row]) -> ChaosReport.Invariant {
        var wrong: [String] = []
        var dealt = 0
        for row in rows where row.state != .cancelled {
            if row.hardCase != nil { dealt += 1 }
            if let problem = problem(with: row) { wrong.append("\(row.id) \(row.hardCase?.rawValue ?? "ordinary"): \(problem)") }
        }
        return .init(
            name: "every hard case of the API ends as REFERENCE.md section 6 promises",
            held: wrong.isEmpty,
            detail: "\(dealt) hard cases ended (fakes in one track alerted with that track, failed detections failed once with "
                + "the API's message, never-ending ones failed by the result timeout, forbidden products failed alone); "
                + "\(wrong.count) ended otherwise" + (wrong.isEmpty ? "" : " (\(wrong.prefix(4).joined(separator: "; ")))")
        )
    }

    /// Out-of-credit windows end without failing anything, and leave no pause behind once the API has credit.
    func creditWindowsCostNothing(_ rows: [Row]) async -> ChaosReport.Invariant {
        let failed = rows.filter { $0.state == .failed && Self.blamesCredit($0) }.map(\.id)
        let leftOver = (try? await pool.query("SELECT count(*)::int8 AS n FROM detectq.pauses WHERE kind = 'out_of_credit'")
            .first?.decode("n", as: Int.self)) ?? nil
        return .init(
            name: "out-of-credit windows fail nothing and leave no pause behind",
            held: failed.isEmpty && leftOver == 0,
            detail: "\(creditWindows) windows, \(creditRefusals) submissions answered 402; \(failed.count) requests failed by them"
                + (failed.isEmpty ? "" : " (ids \(failed.prefix(5)))")
                + "; out-of-credit pauses left after the drain: \(leftOver.map(String.init) ?? "unreadable")"
        )
    }

    /// A throttle fails nothing: no request ends `failed` by a 429, however long the throttle phases last.
    func throttlesFailNothing(_ rows: [Row]) -> ChaosReport.Invariant {
        let failed = rows.filter { $0.state == .failed && Self.blamesThrottle($0) }.map(\.id)
        return .init(
            name: "a throttle fails nothing",
            held: failed.isEmpty,
            detail: "\(failed.count) requests failed by a 429" + (failed.isEmpty ? "" : " (ids \(failed.prefix(5)))")
        )
    }

    /// What is wrong with how `row` ended, or nil when it ended as promised.
    private func problem(with row: Row) -> String? {
        let message = row.errorMessage ?? ""
        let alertedTracks = deliveries.fakeTracksByRequest[row.id]
        switch row.hardCase {
        case .fakeAudio?, .fakeVisual?:
            let audioFake = row.hardCase == .fakeAudio
            guard row.state == .completed else { return "\(row.state.rawValue) (\(message))" }
            guard row.isFake else { return "completed as not fake" }
            guard row.audioLabel?.lowercased() == (audioFake ? "fake" : "real"),
                  row.visualLabel?.lowercased() == (audioFake ? "real" : "fake")
            else { return "labels audio \(row.audioLabel ?? "none"), visual \(row.visualLabel ?? "none")" }
            guard alertedTracks == row.hardCase?.fakeTracks else { return "alerted with fake_tracks \(alertedTracks ?? [])" }
        case .detectionFails?:
            guard row.state == .failed, message.contains(SimulatedScenario.failureMessage) else {
                return "\(row.state.rawValue), error_message \(message.isEmpty ? "none" : message)"
            }
            guard alertedTracks == nil else { return "alerted" }
        case .neverFinishes?, .statusUnknown?:
            guard row.state == .failed, Self.endedByResultTimeout(row) else {
                return "\(row.state.rawValue), error_message \(message.isEmpty ? "none" : message)"
            }
            if row.hardCase == .statusUnknown, !message.contains("queued_for_review") { return "the message names no status: \(message)" }
        case .forbiddenProduct?:
            guard row.state == .failed, message.contains("HTTP 403"), message.contains(HardCase.forbiddenProductName) else {
                return "\(row.state.rawValue), error_message \(message.isEmpty ? "none" : message)"
            }
            if let created = detectionsByMedia[row.mediaKey], !created.isEmpty { return "\(created.count) detections created" }
        case nil:
            guard row.state == .failed else { return nil }
            if Self.endedByResultTimeout(row) || message.contains("HTTP 403") || Self.blamesCredit(row) || Self.blamesThrottle(row) {
                return "an ordinary request failed by a hard case's path: \(message)"
            }
        }
        return nil
    }

    /// Whether the request failed by `DETECTQ_RESULT_TIMEOUT`, its message naming its uuid.
    private static func endedByResultTimeout(_ row: Row) -> Bool {
        guard let message = row.errorMessage, message.contains("DETECTQ_RESULT_TIMEOUT") else { return false }
        return row.remoteUUID.map(message.contains) ?? false
    }

    /// Whether the request's failure blames a 429.
    private static func blamesThrottle(_ row: Row) -> Bool {
        guard let message = row.errorMessage?.lowercased() else { return false }
        return message.contains("http 429") || message.contains("too many requests")
    }

    /// Whether the request's failure blames the account's credit.
    private static func blamesCredit(_ row: Row) -> Bool {
        guard let message = row.errorMessage?.lowercased() else { return false }
        return message.contains("http 402") || message.contains("out of credit")
    }
}
