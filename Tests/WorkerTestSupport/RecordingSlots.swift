import DetectQueue
import Foundation
import Postgres
import Synchronization

/// The API budget's slot schedule in `detectq.api_budget`, as the workers share it, keeping every slot it
/// grants (on the database's clock): the budget's promise is about these, whatever a busy machine does to the
/// moment each request then reaches the API.
package final class RecordingSlots: SlotStorage {
    private let inner: PostgresSlots
    private let granted = Mutex<[Date]>([])

    package init(pool: PostgresConnectionPool) {
        inner = PostgresSlots(pool: pool)
    }

    package func reserve(_ count: Int, ratePerSecond: Double) async throws -> [(slot: Date, wait: Double)] {
        let slots = try await inner.reserve(count, ratePerSecond: ratePerSecond)
        granted.withLock { $0.append(contentsOf: slots.map(\.slot)) }
        return slots
    }

    package func noteGranted(_ slot: Date) {
        granted.withLock { $0.append(slot) }
    }

    /// The most slots granted in any one second (a window starting at a granted slot).
    package var peakPerSecond: Int {
        let slots = granted.withLock { $0 }.sorted()
        var peak = 0
        var start = 0
        for end in slots.indices {
            while slots[end].timeIntervalSince(slots[start]) >= 1 { start += 1 }
            peak = max(peak, end - start + 1)
        }
        return peak
    }

    /// How many slots were granted.
    package var count: Int { granted.withLock { $0.count } }
}
