@testable import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// One suite for both keepers of the shared pauses: `SharedPause` on PostgreSQL and `InMemoryPauses`, and for
/// both slot schedules of the rate limit.
@Suite("Shared pauses and slots: PostgreSQL and in memory alike", .stopsWhatItStarts)
struct PauseStorageConformanceTests {
    enum Kind: String, CustomTestStringConvertible {
        case memory, postgres

        var testDescription: String { rawValue }

        static var available: [Kind] { TestDatabase.isEnabled ? [.memory, .postgres] : [.memory] }

        func make() async throws -> (pauses: any PauseStorage, slots: any SlotStorage) {
            switch self {
            case .memory:
                let pauses = InMemoryPauses()
                return (pauses, InMemorySlots(pauses: pauses))
            case .postgres:
                let pool = PostgresConnectionPool(configuration: try await TestDatabase.createMigratedDatabase(), maximumConnections: 2)
                TestResources.stopAtEnd { await pool.close() }
                return (SharedPause(pool: pool), PostgresSlots(pool: pool))
            }
        }
    }

    @Test(arguments: Kind.available)
    func outOfCreditClosesTheGateAndOneProbeGoesPerRecheck(kind: Kind) async throws {
        let (pauses, _) = try await kind.make()
        #expect(try await pauses.gate(recheck: .seconds(60)) == .open)
        #expect(try await pauses.pauseOutOfCredit(reason: "402", by: "w1", recheck: .seconds(60)))
        #expect(try await pauses.gate(recheck: .seconds(60)) == .closed, "no probe before the recheck")
        // Another 402 moves the next probe: to now, here.
        #expect(try await !pauses.pauseOutOfCredit(reason: "402", by: "w2", recheck: .zero), "already in force")
        #expect(try await pauses.gate(recheck: .seconds(60)) == .probe)
        #expect(try await pauses.gate(recheck: .seconds(60)) == .closed, "one probe per recheck")
        #expect(try await pauses.endOutOfCredit())
        #expect(try await pauses.gate(recheck: .seconds(60)) == .open)
        #expect(try await !pauses.endOutOfCredit())
    }

    @Test(arguments: Kind.available)
    func aThrottleWithoutRetryAfterBacksOffFromOneSecondAndOneWithItPausesForIt(kind: Kind) async throws {
        let (pauses, _) = try await kind.make()
        let before = Date()
        let first = try await pauses.pauseRateLimited(retryAfter: nil, by: "w1")
        let after = Date()
        #expect(first >= before.addingTimeInterval(0.95) && first <= after.addingTimeInterval(1.05), "the backoff starts at one second")
        let longer = try await pauses.pauseRateLimited(retryAfter: .seconds(30), by: "w2")
        #expect(longer >= after.addingTimeInterval(29.9), "a Retry-After longer than the pause in force extends it")
        #expect(try await pauses.isRateLimited())
        let again = try await pauses.pauseRateLimited(retryAfter: nil, by: "w3")
        #expect(abs(again.timeIntervalSince(longer)) < 0.01, "a 429 without Retry-After during a pause leaves it as it is")
        let entry = try #require(try await pauses.current().first { $0.kind == .rateLimited })
        #expect(entry.reason.contains("Retry-After 30 s") && entry.pausedBy == "w2")
    }

    @Test(arguments: Kind.available)
    func noSlotIsGrantedBeforeAThrottleEndsAndSlotsAreSpacedByTheRate(kind: Kind) async throws {
        let (pauses, slots) = try await kind.make()
        let burst = try await slots.reserve(3, ratePerSecond: 10)
        #expect(burst.count == 3)
        for (earlier, later) in zip(burst, burst.dropFirst()) {
            #expect(abs(later.slot.timeIntervalSince(earlier.slot) - 0.1) < 0.001, "a tenth of a second apart at 10/s")
        }
        let until = try await pauses.pauseRateLimited(retryAfter: .seconds(30), by: "w1")
        let after = try #require(try await slots.reserve(1, ratePerSecond: 10).first)
        #expect(after.slot >= until.addingTimeInterval(-0.01) && after.wait > 20, "the next slot waits for the pause's end")
    }
}
