import DetectqTestSupport
import Foundation
import Testing

/// `detectq bench` at its smallest scale, as a smoke test of the command (the figures are the benchmark's,
/// by hand): its queue-core workers start and drain, and the table has their rows. It once broke unseen, when
/// the workers it started asked for a rate limit above the setting's range and refused to start.
@Suite("detectq bench at its smallest scale", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct BenchCommandTests {
    @Test func theQueueCoreScenarioRunsToItsTable() async throws {
        let outcome = try await DetectqExecutable.run(["bench", "--only", "core", "--scale", "0.01"], environment: ["DATABASE_URL": ""])
        let printed = outcome.standardOutput + outcome.standardError
        #expect(outcome.status == 0, "\(printed)")
        for row in ["| 1 batched SQL ceiling |", "| 1 queue core, 1 worker |", "| 1 queue core, 2 workers |"] {
            #expect(printed.contains(row), "\(row) in \(printed)")
        }
        // Where a job's CPU went, read from /proc: the throwaway server's processes and the worker's.
        let cpu = try #require(printed.firstMatch(of: /\| 1 queue core, 1 worker: CPU per job \| PostgreSQL (\d+) µs, worker (\d+) µs \|/))
        #expect(Int(cpu.1) ?? 0 > 0 && Int(cpu.2) ?? 0 > 0, "\(cpu.0)")
    }
}
