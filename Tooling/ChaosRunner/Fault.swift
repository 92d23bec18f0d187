import DetectSimulator
import Foundation

/// A fault a chaos run injects. Some are events (a kill, a restart); the others are phases that stay on for
/// a while and then lift. The API's hard cases that belong to a request rather than to a moment (failed and
/// never-ending detections, fake audio under a real picture, a forbidden product) are the producer's
/// (`HardCase`).
package enum Fault: String, CaseIterable, Sendable, Codable {
    case workerKilled = "busiest worker killed with SIGKILL and replaced"
    case postgresFastRestart = "PostgreSQL restarted (fast shutdown)"
    case postgresImmediateRestart = "PostgreSQL restarted (immediate shutdown, crash recovery)"
    case postgresFailover = "PostgreSQL primary stopped and its standby promoted (failover)"
    case apiSlow = "API slow (4 s per detection)"
    case apiDroppingConnections = "API dropping connections and losing responses"
    case apiErrors = "API answering 503 and 429"
    case apiLosingAnswers = "API losing a quarter of its answers after billing"
    case apiOutOfCredit = "API out of credit (402)"
    case callbacksLostAndDuplicated = "callbacks lost and duplicated"
    case sinkFailing = "alert sink failing"
    case apiThrottled = "API throttling (429 with no Retry-After, every request)"
    case busyTeam = "the team's other services busy (40 detections a second in List Detects)"

    /// One round of every fault, worker kills twice as often as the rest, in an order drawn from `random`.
    static func deck(using random: inout some RandomNumberGenerator) -> [Fault] {
        (allCases + [.workerKilled]).shuffled(using: &random)
    }

    /// The ticks after a throttle during which no phase that needs the API's traffic is dealt (the throttle's own
    /// and its backoff's: `ChaosRun`'s busy time, two fault intervals and 8 s, at the usual 4 s interval).
    static let throttleBusyTicks = 3

    /// Whether the phase acts on the API's requests or on what they complete (alerts), which a throttle stops.
    var needsAPITraffic: Bool {
        switch self {
        case .apiSlow, .apiDroppingConnections, .apiErrors, .apiLosingAnswers, .apiOutOfCredit, .callbacksLostAndDuplicated, .sinkFailing: true
        default: false
        }
    }

    /// Whether few requests complete while the phase is on and for a while after (no submission goes out, or
    /// each takes seconds), so an alert sink failing then would have nothing to fail.
    var thinsCompletions: Bool {
        self == .apiOutOfCredit || self == .apiSlow
    }

    /// The next card of `deck`, passing over (to deal later) a phase that needs the API's traffic while a
    /// throttle is busy, a throttle while such a phase is on (or while too few cards that need no API traffic are
    /// left to deal during the throttle's busy ticks, before the round's last API phases), the alert sink's failing
    /// while completions are thin, and a phase that thins them while the sink fails, when the deck holds a card
    /// that does not clash.
    static func deal(from deck: inout [Fault], throttleBusy: Bool, apiPhaseActive: Bool, completionsThin: Bool, sinkFailing: Bool) -> Fault {
        // Dealt second to last before the round's last API phase, a throttle once left that phase no traffic to
        // act on (no connection dropped in a whole run).
        let others = deck.filter { $0 != .apiThrottled }
        let throttleWouldStarve = others.contains(where: \.needsAPITraffic) && others.count(where: { !$0.needsAPITraffic }) < throttleBusyTicks
        func clashes(_ fault: Fault) -> Bool {
            if fault == .apiThrottled { return apiPhaseActive || throttleWouldStarve }
            if fault == .sinkFailing && completionsThin { return true }
            if fault.thinsCompletions && sinkFailing { return true }
            return fault.needsAPITraffic && throttleBusy
        }
        guard let index = deck.lastIndex(where: { !clashes($0) }) else { return deck.removeLast() }
        return deck.remove(at: index)
    }

    /// What the phase has injected so far, read from the API's and the alert sink's counts; nil for a phase whose
    /// effect is not counted or grows on its own (slow answers, the team's traffic, the callbacks' background
    /// rates). `ChaosRun` keeps a phase on past its two intervals, one interval at a time, until this has grown:
    /// dealt while another phase kept requests from going out, a phase once injected nothing (no 429 in a 503-and-429
    /// phase under an out-of-credit pause, no 402 in a credit phase under a throttle's backoff), whatever the order.
    func injected(api: SimulatorStats, sinkFailures: Int) -> Int? {
        switch self {
        case .apiDroppingConnections: api.injectedDrops
        case .apiErrors: api.injectedRateLimits
        case .apiLosingAnswers: api.injectedLostResponses
        case .apiOutOfCredit: api.creditRefusals
        case .apiThrottled: api.throttledRequests
        case .sinkFailing: sinkFailures
        case .workerKilled, .postgresFastRestart, .postgresImmediateRestart, .postgresFailover, .apiSlow, .callbacksLostAndDuplicated, .busyTeam: nil
        }
    }

    /// The simulator's faults while `active` phases are on, over a light background that never lifts.
    static func simulatorFaults(active: Set<Fault>) -> FaultInjection {
        var faults = FaultInjection(serverErrorRate: 0.01, lostCallbackRate: 0.05, duplicateCallbackRate: 0.05)
        if active.contains(.apiDroppingConnections) {
            faults.dropRate = 0.15
            faults.lostResponseRate = 0.05
        }
        if active.contains(.apiErrors) {
            faults.serverErrorRate = 0.15
            faults.rateLimitRate = 0.1
        }
        if active.contains(.apiLosingAnswers) {
            faults.lostResponseRate = 0.25
        }
        if active.contains(.callbacksLostAndDuplicated) {
            faults.lostCallbackRate = 0.4
            faults.duplicateCallbackRate = 0.4
        }
        return faults
    }
}
