import ChaosRunner
import DetectqTestSupport
import Foundation
import Testing

/// The chaos suite's short mode: `detectq chaos` as CI runs it, every fault kind at least once, every
/// invariant held. (`scripts/chaos.sh --duration 1200` is the long run, by hand.)
@Suite("Chaos, short mode", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct ChaosTests {
    @Test func nothingIsLostStuckDoubledOrExposedUnderEveryFault() async throws {
        let outcome = try await DetectqExecutable.run(["chaos", "--duration", "72", "--json"])
        print(outcome.standardError)
        let report = try JSONDecoder().decode(ChaosReport.self, from: Data(outcome.standardOutput.utf8))
        print(report.text)
        #expect(outcome.status == 0)
        for invariant in report.invariants {
            #expect(invariant.held, "\(invariant.name): \(invariant.detail)")
        }
        #expect(report.invariants.count == 18)
        #expect(report.injected["requests repeating an earlier one's media and options", default: 0] > 0, "duplicates were enqueued")
        for fault in Fault.allCases {
            #expect(report.faults[fault.rawValue, default: 0] >= 1, "\(fault.rawValue) was injected")
        }
        for kind in ["API 503s", "API 429s", "API connections dropped", "callbacks lost", "callbacks duplicated", "alert deliveries failed by the sink"] {
            #expect(report.injected[kind, default: 0] > 0, "\(kind) happened")
        }
        for kind in ["API responses lost after handling", "API submissions answered 402 (out of credit)",
                     "API requests answered 429 with no Retry-After (throttle phases)",
                     "detections the team's other services created (busy-team phases)",
                     "API submissions answered 403 (a product the key may not use)"] {
            #expect(report.injected[kind, default: 0] > 0, "\(kind) happened")
        }
        for hardCase in HardCase.allCases {
            #expect(report.injected["hard case dealt: \(hardCase.rawValue)", default: 0] > 0, "\(hardCase.rawValue) was dealt")
        }
        // Every tenth request is a hard case, and about half of those fail on purpose.
        #expect(report.enqueued >= 200 && report.completed > report.enqueued * 8 / 10, "\(report.completed) of \(report.enqueued) completed")
        #expect(report.fakes > 0)
        #expect(report.hardCases.endedByResultTimeout > 0)
    }
}
