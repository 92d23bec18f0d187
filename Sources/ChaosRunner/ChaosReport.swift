import Foundation

/// What a chaos run did and whether every invariant held, printed as figures (and as JSON for tests).
public struct ChaosReport: Sendable, Codable {
    /// One invariant and how the run measured it.
    public struct Invariant: Sendable, Codable {
        public let name: String
        public let held: Bool
        /// The figures behind the verdict.
        public let detail: String
    }

    public var seconds: Double = 0
    public var seed: UInt64 = 0
    public var workers = 0
    public var enqueued = 0
    public var completed = 0
    public var failed = 0
    public var cancelled = 0
    public var fakes = 0
    /// Faults injected by the run, by kind.
    public var faults: [String: Int] = [:]
    /// What the simulator, the sink, the producer and the fleet counted: injected 503s, 429s, drops, lost
    /// callbacks, failed deliveries, retried inserts, cancellations, workers that exited unasked.
    public var injected: [String: Int] = [:]
    public var invariants: [Invariant] = []
    /// Where the workers' logs are kept (when an invariant failed).
    public var logDirectory: String?

    public var allHeld: Bool { invariants.allSatisfy(\.held) }

    /// The report in lines a person reads.
    public var text: String {
        var lines = [
            "chaos run: \(Int(seconds)) s, seed \(seed), \(workers) workers",
            "requests: \(enqueued) enqueued = \(completed) completed + \(failed) failed + \(cancelled) cancelled; \(fakes) fakes",
            "faults injected by the run:",
        ]
        for fault in Fault.allCases { lines.append("  \(fault.rawValue): \(faults[fault.rawValue, default: 0])") }
        lines.append("what the simulator, the sink, the producer and the fleet counted:")
        for (name, count) in injected.sorted(by: { $0.key < $1.key }) { lines.append("  \(name): \(count)") }
        lines.append("invariants:")
        for invariant in invariants {
            lines.append("  \(invariant.held ? "held  " : "BROKEN") \(invariant.name): \(invariant.detail)")
        }
        if let logDirectory { lines.append("worker logs: \(logDirectory)") }
        lines.append(allHeld ? "every invariant held" : "an invariant was broken")
        return lines.joined(separator: "\n")
    }
}
