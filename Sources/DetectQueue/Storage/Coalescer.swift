import ServiceLifecycle
import Synchronization

/// Group commit for database writes: callers hand in one item each; while a batch is being written the next
/// items gather, and go together in the next batch. An idle coalescer writes a lone item at once, so it adds
/// no latency; under load it turns many round trips into one.
///
/// It is a `Service`: while its `run()` runs (in the worker's service group) it writes the batches in tasks
/// of its own, and on graceful shutdown it writes what is still pending before it returns. Where nothing runs
/// it (a command, a test), each item is written alone in the caller's task.
///
/// `write` receives a batch and returns one result per item, in order. When a batch of several fails, each
/// item is written again on its own, so one bad item cannot fail the others.
actor Coalescer<Item: Sendable, Output: Sendable>: Service {
    private typealias Waiter = (item: Item, continuation: CheckedContinuation<Output, any Error>)

    private let maximumBatch: Int
    private let maximumConcurrentBatches: Int
    private let write: @Sendable ([Item]) async throws -> [Output]
    private var pending: [Waiter] = []
    private var batchesInFlight = 0
    private var running = false
    private let stopping = Atomic<Bool>(false)
    private let wake = WakeSignal()

    init(maximumBatch: Int = 500, maximumConcurrentBatches: Int = 2, write: @escaping @Sendable ([Item]) async throws -> [Output]) {
        self.maximumBatch = maximumBatch
        self.maximumConcurrentBatches = maximumConcurrentBatches
        self.write = write
    }

    /// Writes `item` in the next batch and returns its result.
    func submit(_ item: Item) async throws -> Output {
        guard running else { return try await write([item])[0] }
        return try await withCheckedThrowingContinuation { continuation in
            pending.append((item, continuation))
            wake.signal()
        }
    }

    func run() async {
        running = true
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { batches in
                while !Task.isCancelled && !(stopping.load(ordering: .relaxed) && pending.isEmpty && batchesInFlight == 0) {
                    if let batch = nextBatch() {
                        batches.addTask {
                            await Self.run(batch, write: self.write)
                            await self.batchFinished()
                        }
                        continue
                    }
                    await wake.wait(timeout: .seconds(1))
                }
            }
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .relaxed)
            self.wake.signal()
        }
        running = false
        for waiter in pending { waiter.continuation.resume(throwing: CancellationError()) }
        pending = []
    }

    private func nextBatch() -> [Waiter]? {
        guard !pending.isEmpty, batchesInFlight < maximumConcurrentBatches else { return nil }
        let batch = Array(pending.prefix(maximumBatch))
        pending.removeFirst(batch.count)
        batchesInFlight += 1
        return batch
    }

    private func batchFinished() {
        batchesInFlight -= 1
        wake.signal()
    }

    private static func run(_ batch: [Waiter], write: @Sendable ([Item]) async throws -> [Output]) async {
        do {
            let outputs = try await write(batch.map(\.item))
            precondition(outputs.count == batch.count, "a coalesced write must return one result per item")
            for (waiter, output) in zip(batch, outputs) { waiter.continuation.resume(returning: output) }
        } catch where batch.count > 1 {
            for waiter in batch {
                do {
                    waiter.continuation.resume(returning: try await write([waiter.item])[0])
                } catch {
                    waiter.continuation.resume(throwing: error)
                }
            }
        } catch {
            batch[0].continuation.resume(throwing: error)
        }
    }
}
