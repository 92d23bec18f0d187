import Foundation
import Synchronization

/// The shared pauses of the API's use, as every worker on one database sees them (`detectq.pauses`): a 429's
/// pause of every call, an account out of credit, an operator's pause. `SharedPause` keeps them in PostgreSQL;
/// `InMemoryPauses` in memory, for tests of the worker's policy that need no database.
package protocol PauseStorage: Sendable {
    /// Whether the caller may submit now; while out of credit, one caller in each `recheck` gets `.probe`.
    func gate(recheck: Duration) async throws -> SharedPause.Gate
    /// The pauses in force.
    func current() async throws -> [SharedPause.Entry]
    /// Whether a 429's pause is in force now.
    func isRateLimited() async throws -> Bool
    /// Pauses every API call after a 429 (`SharedPause.pauseRateLimited`); returns when the pause ends.
    func pauseRateLimited(retryAfter: Duration?, by workerID: String?) async throws -> Date
    /// Pauses submitting because the account is out of credit; true when this call started the pause.
    func pauseOutOfCredit(reason: String, by workerID: String?, recheck: Duration) async throws -> Bool
    /// Ends an out-of-credit pause; true when one was in force.
    func endOutOfCredit() async throws -> Bool
}

/// The slot schedule of the API's rate limit, shared by every worker (`detectq.api_budget`): `PostgresSlots`
/// keeps it in the database, `InMemorySlots` in memory.
package protocol SlotStorage: Sendable {
    /// Reserves `count` consecutive slots `1 / ratePerSecond` apart, none before a 429's pause ends; returns
    /// each slot and how many seconds until it.
    func reserve(_ count: Int, ratePerSecond: Double) async throws -> [(slot: Date, wait: Double)]
    /// Hears of a slot a claim reserved (in the claim's own statement) as its request's first call takes it.
    func noteGranted(_ slot: Date)
}

extension SlotStorage {
    /// The schedule itself has nothing to do: the claim's statement moved it already.
    package func noteGranted(_ slot: Date) {}
}

/// The shared pauses in memory, with the same rules as `SharedPause`'s SQL.
package final class InMemoryPauses: PauseStorage {
    private struct Pause {
        var entry: SharedPause.Entry
        var backoffSeconds: Double?
    }

    private let pauses = Mutex<[SharedPause.Kind: Pause]>([:])

    package init() {}

    package func gate(recheck: Duration) async throws -> SharedPause.Gate {
        pauses.withLock { pauses in
            if pauses[.operator] != nil { return .closed }
            guard let credit = pauses[.outOfCredit] else { return .open }
            let now = Date()
            guard (credit.entry.until ?? now) <= now else { return .closed }
            pauses[.outOfCredit]?.entry.until = now.addingTimeInterval(recheck.seconds)
            return .probe
        }
    }

    package func current() async throws -> [SharedPause.Entry] {
        pauses.withLock { pauses in
            pauses.values.map(\.entry).filter { $0.kind != .rateLimited || ($0.until ?? .distantPast) > Date() }
                .sorted { $0.kind.rawValue < $1.kind.rawValue }
        }
    }

    package func isRateLimited() async throws -> Bool {
        pauses.withLock { ($0[.rateLimited]?.entry.until ?? .distantPast) > Date() }
    }

    package func pauseRateLimited(retryAfter: Duration?, by workerID: String?) async throws -> Date {
        pauses.withLock { pauses in
            let now = Date()
            let reason = SharedPause.throttleReason(retryAfter: retryAfter)
            guard let existing = pauses[.rateLimited], let until = existing.entry.until else {
                let until = now.addingTimeInterval(retryAfter?.seconds ?? 1)
                pauses[.rateLimited] = Pause(
                    entry: .init(kind: .rateLimited, reason: reason, pausedBy: workerID, pausedAt: now, until: until),
                    backoffSeconds: retryAfter == nil ? 1 : nil
                )
                return until
            }
            var pause = existing
            let inForce = until > now
            if !inForce { pause.entry.pausedAt = now }
            if let retryAfter {
                pause.entry.reason = reason
                pause.entry.pausedBy = workerID
                pause.entry.until = max(until, now.addingTimeInterval(retryAfter.seconds))
            } else if !inForce {
                pause.entry.reason = reason
                pause.entry.pausedBy = workerID
                let continues = until > now.addingTimeInterval(-SharedPause.throttleContinues.seconds)
                let backoff = continues ? min(SharedPause.longestThrottleBackoff.seconds, (pause.backoffSeconds ?? 0.5) * 2) : 1
                pause.backoffSeconds = backoff
                pause.entry.until = now.addingTimeInterval(backoff)
            }
            pauses[.rateLimited] = pause
            return pause.entry.until ?? now
        }
    }

    package func pauseOutOfCredit(reason: String, by workerID: String?, recheck: Duration) async throws -> Bool {
        pauses.withLock { pauses in
            let until = Date().addingTimeInterval(recheck.seconds)
            if pauses[.outOfCredit] != nil {
                pauses[.outOfCredit]?.entry.until = until
                return false
            }
            pauses[.outOfCredit] = Pause(entry: .init(kind: .outOfCredit, reason: reason, pausedBy: workerID, pausedAt: Date(), until: until))
            return true
        }
    }

    package func endOutOfCredit() async throws -> Bool {
        pauses.withLock { $0.removeValue(forKey: .outOfCredit) != nil }
    }
}

/// The rate limit's slot schedule in memory, with the same rules as `APIBudget`'s SQL: after an idle spell at
/// most one slot lies in the past, and no slot falls inside a 429's pause.
package final class InMemorySlots: SlotStorage {
    private let pauses: InMemoryPauses
    private let nextSlot = Mutex(Date.distantPast)

    package init(pauses: InMemoryPauses) {
        self.pauses = pauses
    }

    package func reserve(_ count: Int, ratePerSecond: Double) async throws -> [(slot: Date, wait: Double)] {
        let pausedUntil = try await pauses.current().first { $0.kind == .rateLimited }?.until ?? .distantPast
        let interval = 1 / ratePerSecond
        return nextSlot.withLock { next in
            let now = Date()
            let first = max(next, now.addingTimeInterval(-APIBudget.tolerance(ratePerSecond)), pausedUntil)
            next = first.addingTimeInterval(interval * Double(count))
            return (0..<count).map { index in
                let slot = first.addingTimeInterval(interval * Double(index))
                return (slot, slot.timeIntervalSince(now))
            }
        }
    }
}
