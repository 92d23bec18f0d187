import Foundation

/// What a chaos run did and whether every invariant held, printed as figures (and as JSON for tests).
package struct ChaosReport: Sendable, Codable {
    /// One invariant and how the run measured it.
    package struct Invariant: Sendable, Codable {
        package let name: String
        package let held: Bool
        /// The figures behind the verdict.
        package let detail: String
    }

    /// What became of the detections the API created, and billed, whose answer never reached a worker.
    package struct LostAnswers: Sendable, Codable {
        /// The detections of one cause.
        package struct Tally: Sendable, Codable {
            package var billed = 0
            package var adoptedByList = 0
            package var adoptedByCallback = 0
            package var submittedAgain = 0
            /// Left unused by a request that ended (cancelled) before it was found or sent again.
            package var unused = 0

            var line: String {
                "\(billed) billed; \(adoptedByList + adoptedByCallback) adopted (\(adoptedByList) via list, "
                    + "\(adoptedByCallback) via callback), \(submittedAgain) submitted again, \(unused) unused"
            }
        }

        /// Answers the simulator cut off after creating the detection.
        package var cutOffAfterBilling = Tally()
        /// Answers lost otherwise: a worker killed while it waited, a timeout, a database outage.
        package var otherwiseLost = Tally()
        /// Zero-retention requests, counted apart: List Detects redacts them, so only a callback finds them.
        package var zeroRetention = Tally()

        /// The share of the billed detections (zero retention apart) that were submitted again.
        package var resubmittedShare: Double {
            let billed = cutOffAfterBilling.billed + otherwiseLost.billed
            return billed == 0 ? 0 : Double(cutOffAfterBilling.submittedAgain + otherwiseLost.submittedAgain) / Double(billed)
        }
    }

    /// How the API's hard cases ended: the result timeout and the out-of-credit windows.
    package struct HardCaseFigures: Sendable, Codable {
        package var neverFinishingDealt = 0
        package var endedByResultTimeout = 0
        package var creditWindows = 0
        package var creditRefusals = 0
        package var failedByCredit = 0
        /// How long the throttle phases lasted in all, the requests the fleet sent into them (each answered 429
        /// with no `Retry-After`), and the requests that failed by a 429.
        package var throttleSeconds = 0.0
        package var throttledRequests = 0
        package var failedByThrottle = 0
        /// Detections the team's other services created in List Detects beside ours.
        package var teamDetections = 0

        /// 429s sent into a throttle, per second of throttling.
        package var throttledPerSecond: Double { throttleSeconds > 0 ? Double(throttledRequests) / throttleSeconds : 0 }
    }

    package var seconds: Double = 0
    package var seed: UInt64 = 0
    package var workers = 0
    package var enqueued = 0
    package var completed = 0
    package var failed = 0
    package var cancelled = 0
    package var fakes = 0
    /// Faults injected by the run, by kind.
    package var faults: [String: Int] = [:]
    /// What the simulator, the sink, the producer and the fleet counted: injected 503s, 429s, drops, lost
    /// callbacks, failed deliveries, retried inserts, cancellations, workers that exited unasked.
    package var injected: [String: Int] = [:]
    package var lostAnswers = LostAnswers()
    package var hardCases = HardCaseFigures()
    package var invariants: [Invariant] = []
    /// Where the workers' logs are kept (when an invariant failed).
    package var logDirectory: String?

    package var allHeld: Bool { invariants.allSatisfy(\.held) }

    /// The report in lines a person reads.
    package var text: String {
        var lines = [
            "chaos run: \(Int(seconds)) s, seed \(seed), \(workers) workers",
            "requests: \(enqueued) enqueued = \(completed) completed + \(failed) failed + \(cancelled) cancelled; \(fakes) fakes",
            "faults injected by the run:",
        ]
        for fault in Fault.allCases { lines.append("  \(fault.rawValue): \(faults[fault.rawValue, default: 0])") }
        lines.append("what the simulator, the sink, the producer and the fleet counted:")
        for (name, count) in injected.sorted(by: { $0.key < $1.key }) { lines.append("  \(name): \(count)") }
        let lost = lostAnswers
        let again = lost.cutOffAfterBilling.submittedAgain + lost.otherwiseLost.submittedAgain
        let billed = lost.cutOffAfterBilling.billed + lost.otherwiseLost.billed
        lines += [
            "lost answers (detections the API created and billed whose answer never reached a worker):",
            "  cut off after billing: \(lost.cutOffAfterBilling.line)",
            "  lost otherwise (a worker killed while it waited, a timeout, an outage): \(lost.otherwiseLost.line)",
            "  zero-retention requests, apart (List Detects redacts them): \(lost.zeroRetention.line)",
            String(format: "  submitted again behind a lost answer: %d of %d (%.1f %%; the goal is at most 10 %%), with %d detections of the team's other services in List Detects beside them",
                   again, billed, lost.resubmittedShare * 100, hardCases.teamDetections),
            "the API's hard cases:",
            "  ended by DETECTQ_RESULT_TIMEOUT: \(hardCases.endedByResultTimeout) (never-finishing requests dealt: \(hardCases.neverFinishingDealt))",
            "  out-of-credit windows: \(hardCases.creditWindows), \(hardCases.creditRefusals) submissions answered 402, "
                + "\(hardCases.failedByCredit) requests failed by them",
            String(format: "  throttle phases (429 with no Retry-After): %.0f s, %d requests sent into them (%.2f a second), %d requests failed by them",
                   hardCases.throttleSeconds, hardCases.throttledRequests, hardCases.throttledPerSecond, hardCases.failedByThrottle),
        ]
        lines.append("invariants:")
        for invariant in invariants {
            lines.append("  \(invariant.held ? "held  " : "BROKEN") \(invariant.name): \(invariant.detail)")
        }
        if let logDirectory { lines.append("worker logs: \(logDirectory)") }
        lines.append(allHeld ? "every invariant held" : "an invariant was broken")
        return lines.joined(separator: "\n")
    }
}
