import Foundation
import Logging
import Metrics
import Postgres
import ServiceLifecycle
import Synchronization

/// Claims work while there are free slots and runs each claim in a task of its own. It claims when work was
/// announced (a notification, a full batch last time, an idle check), not whenever it wakes: a freed slot or a
/// handed claim alone does not send a claim that would find nothing. On graceful shutdown
/// it stops claiming and waits up to the grace period for what is in flight; cancelled outright, it returns
/// at once, cancelling what is in flight (those claims are given back or left to their leases).
final class ClaimLoop: Service {
    /// How long an idle loop waits for a wake-up before it looks for work anyway: the polling that finds
    /// work whose notification was missed, or all work when the worker cannot `LISTEN`.
    static let idleCheck = Duration.seconds(1)
    /// One claim: its id and the work that carries it through.
    typealias Claimed = (id: Int, work: @Sendable () async -> Void)
    /// One round's claims, and when claiming again may find more.
    typealias Round = (claimed: [Claimed], again: ClaimAgain)

    let slots: Slots
    /// Labels the claim metrics (`requests`, `post_tasks`).
    let kind: String
    let concurrency: Int
    let gracePeriod: Duration
    let logger: Logger
    /// How long this loop waits for a wake-up before it looks anyway (`ClaimLoop.idleCheck`).
    private let lookAnywayAfter: Duration
    private let claim: @Sendable (Int) async throws -> Round
    private let inbox: ClaimInbox?
    private let onStop: @Sendable () -> Void
    private let stopping = Atomic<Bool>(false)

    /// `onStop` is called when the loop is told to stop claiming, so that work in flight can give back what
    /// it has not sent. Claims handed to `inbox` are run like the loop's own.
    init(
        slots: Slots, kind: String, concurrency: Int, gracePeriod: Duration, logger: Logger, inbox: ClaimInbox? = nil,
        idleCheck: Duration = ClaimLoop.idleCheck,
        onStop: @escaping @Sendable () -> Void, claim: @escaping @Sendable (Int) async throws -> Round
    ) {
        self.lookAnywayAfter = idleCheck
        self.slots = slots
        self.kind = kind
        self.concurrency = concurrency
        self.gracePeriod = gracePeriod
        self.logger = logger
        self.inbox = inbox
        self.onStop = onStop
        self.claim = claim
    }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) }

    func run() async {
        await withGracefulShutdownHandler {
            await claimUntilStopped()
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .relaxed)
            self.onStop()
            self.slots.wake.signal()
        }
    }

    private func claimUntilStopped() async {
        await withDiscardingTaskGroup { tasks in
            func start(_ id: Int, _ work: @escaping @Sendable () async -> Void) {
                tasks.addTask {
                    await work()
                    self.slots.free(id)
                }
            }
            func startHanded() {
                let handed = inbox?.takeAll() ?? []
                if !handed.isEmpty { QueueMetrics.claimed(handed.count, kind: kind) }
                for (id, work) in handed { start(id, work) }
            }
            // When a queue's rate or daily limit said work comes due.
            var timedClaim: ContinuousClock.Instant?
            while !isStopping && !Task.isCancelled {
                startHanded()
                let free = concurrency - slots.count
                if free <= 0 {
                    // Full: the next freed slot wakes the loop.
                    slots.wakeWhenFreed(capacity: concurrency)
                } else if slots.takeClaimDue() {
                    let batch = min(free, 100)
                    do {
                        let (claimed, again) = try await claim(batch)
                        if !claimed.isEmpty { QueueMetrics.claimed(claimed.count, kind: kind) }
                        for (id, work) in claimed {
                            slots.take(id)
                            start(id, work)
                        }
                        switch again {
                        case .now:
                            slots.announceWork()
                            continue
                        case .after(let delay):
                            // The sooner of this time and one an earlier claim gave: a claim woken early (by a
                            // notification) that finds the budget booked is told to come back later than the slot
                            // this worker booked last asked for.
                            let due = ContinuousClock.now + delay
                            timedClaim = min(timedClaim ?? due, due)
                        case .whenARequestEnds:
                            slots.announceWorkWhenFreed()
                        case .whenAnnounced:
                            break
                        }
                        if claimed.count == batch {
                            // There may be more: claim again (or as soon as a slot frees).
                            slots.announceWork()
                            continue
                        }
                    } catch {
                        if !Task.isCancelled { logger.error("claiming failed: \(error)") }
                        slots.announceWork()
                    }
                }
                let waited = ContinuousClock.now
                var timeout = lookAnywayAfter
                if let timedClaim { timeout = min(timeout, max(timedClaim - waited, .zero)) }
                await slots.wake.wait(timeout: timeout)
                if let due = timedClaim, ContinuousClock.now >= due {
                    timedClaim = nil
                    slots.announceWork()
                }
                // Nothing announced for a whole idle check: look anyway (a notification missed, a run_at come due).
                if ContinuousClock.now - waited >= lookAnywayAfter { slots.announceWork() }
            }
            let deadline = ContinuousClock.now + gracePeriod
            while slots.count > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
                startHanded()
                let held = slots.count
                slots.wakeWhenFreed(capacity: held)
                await slots.wake.wait(timeout: .milliseconds(100))
            }
            if slots.count > 0 && !Task.isCancelled {
                logger.warning("\(slots.count) claims still in flight at the end of the grace period; their leases will expire and another worker will take them over")
                tasks.cancelAll()
            }
        }
    }
}

/// Claims a worker already holds, handed to its claim loop to run as if the loop had claimed them: the
/// post-tasks a completion created under this worker's lease. Their slots are taken when they are handed, so
/// the lease heartbeat covers them from then on. Handed after the loop has stopped, a claim is not run: its
/// lease expires and another worker takes it over, as after a crash.
final class ClaimInbox: Sendable {
    private let slots: Slots
    private let waiting = Mutex<[ClaimLoop.Claimed]>([])

    init(slots: Slots) {
        self.slots = slots
    }

    func hand(_ claims: [ClaimLoop.Claimed]) {
        guard !claims.isEmpty else { return }
        for claim in claims { slots.take(claim.id) }
        waiting.withLock { $0.append(contentsOf: claims) }
        slots.wake.signal()
    }

    func takeAll() -> [ClaimLoop.Claimed] {
        waiting.withLock { waiting in
            defer { waiting.removeAll() }
            return waiting
        }
    }
}

/// A loop that does one round of work every `interval` (plus up to `jitterMilliseconds`, so that workers started together
/// drift apart), or at once after a round that found more to do, until it is told to stop: the poller, the
/// lease heartbeat and the rescue.
struct PeriodicLoop: Service {
    let name: String
    let interval: Duration
    /// Up to this many milliseconds more, drawn each round.
    var jitterMilliseconds = 0
    let logger: Logger
    /// One round; returns true when there is more to do at once.
    let round: @Sendable () async throws -> Bool

    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    if try await round() { continue }
                } catch {
                    if !Task.isCancelled { logger.error("\(name) failed: \(error)") }
                }
                try? await Task.sleep(for: interval + .milliseconds(Int.random(in: 0...jitterMilliseconds)))
            }
        }
    }
}

/// Wakes the claim loops when work becomes claimable (and after every reconnection), until it is told to stop;
/// it ends at once when there is nothing to listen on (behind a transaction pool with no listen URL).
struct WakeListener: Service {
    let database: PostgresConfiguration
    /// `DETECTQ_LISTEN_DATABASE_URL`, when set.
    let listenDatabase: PostgresConfiguration?
    let requests: Slots
    let postTasks: Slots
    let logger: Logger

    func run() async {
        await cancelWhenGracefulShutdown {
            // A service that returns ends the worker, so one with nothing to listen on waits for the stop.
            // Nothing to listen on: the service ends, and the group goes on without it (`.ignore`).
            guard let source = await listenSource() else { return }
            for await event in PostgresNotificationListener.listen(source, channels: ["detectq_requests", "detectq_post_tasks"]) {
                switch event {
                case .notification(let notification) where notification.channel == "detectq_post_tasks":
                    postTasks.announceWork()
                case .notification:
                    requests.announceWork()
                case .listening:
                    requests.announceWork()
                    postTasks.announceWork()
                }
            }
        }
    }

    /// Where to `LISTEN`: the listen URL when given; else `DATABASE_URL` when it keeps sessions. Behind a
    /// transaction pool a `LISTEN` hears nothing, so the worker says so once and relies on its polling (nil).
    /// Until the database answers the question it is asked again, as the claim loop retries.
    private func listenSource() async -> PostgresConfiguration? {
        if let listenDatabase { return listenDatabase }
        var delay = Duration.milliseconds(250)
        while !Task.isCancelled {
            do {
                switch try await SessionPooling.of(database) {
                case .session:
                    return database
                case .transaction:
                    logger.notice("""
                        DATABASE_URL pools transactions (PgBouncer pool_mode = transaction), where LISTEN hears nothing, and \
                        DETECTQ_LISTEN_DATABASE_URL is not set: this worker looks for new work every \(ClaimLoop.idleCheck) instead
                        """)
                    return nil
                }
            } catch {
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
        return nil
    }
}

/// The claims a loop holds, and the signal that wakes it: when work is announced (which also makes the next
/// round claim), when a claim is handed to it, or when a slot frees while it waits for one. The in-flight
/// gauge `gauge` follows the claims.
final class Slots: Sendable {
    let wake = WakeSignal()
    private let held = Mutex<Set<Int>>([])
    private let claimDue = Atomic<Bool>(true)
    private let waitingForFree = Atomic<Bool>(false)
    private let claimWhenFreed = Atomic<Bool>(false)
    private let gauge: Meter

    init(gauge: Meter) {
        self.gauge = gauge
    }

    var count: Int { held.withLock { $0.count } }
    var ids: [Int] { held.withLock { Array($0) } }

    func take(_ id: Int) {
        gauge.set(held.withLock { $0.insert(id); return $0.count })
    }

    /// Frees `id`'s slot; wakes the loop if it is waiting for one, and announces work if a cap held work back.
    func free(_ id: Int) {
        gauge.set(held.withLock { $0.remove(id); return $0.count })
        if claimWhenFreed.exchange(false, ordering: .sequentiallyConsistent) { announceWork() }
        if waitingForFree.exchange(false, ordering: .sequentiallyConsistent) { wake.signal() }
    }

    /// A cap on requests in flight held work back: the next freed slot announces work.
    func announceWorkWhenFreed() {
        claimWhenFreed.store(true, ordering: .sequentiallyConsistent)
    }

    /// There may be work to claim: the loop's next round claims.
    func announceWork() {
        claimDue.store(true, ordering: .sequentiallyConsistent)
        wake.signal()
    }

    /// Whether work was announced since the last claim; the answer clears it.
    func takeClaimDue() -> Bool {
        claimDue.exchange(false, ordering: .sequentiallyConsistent)
    }

    /// Asks for a wake-up when the next slot frees; wakes at once if fewer than `capacity` are held already
    /// (one freed before the asking).
    func wakeWhenFreed(capacity: Int) {
        waitingForFree.store(true, ordering: .sequentiallyConsistent)
        if count < capacity { wake.signal() }
    }
}
