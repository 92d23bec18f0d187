import Synchronization
import Testing

/// What one test started (worker processes, servers, workers in this process, clusters), so that all of it is
/// stopped when the test ends, whether it passed, failed or threw. The helpers that start things register
/// their stops here; the `.stopsWhatItStarts` trait gives every test of a suite a registry of its own.
package final class TestResources: Sendable {
    @TaskLocal static var current: TestResources?

    private let stops = Mutex<[@Sendable () async -> Void]>([])

    /// Has `stop` run when the current test ends (in reverse order of registration). Outside a test with the
    /// trait, the caller's own stop is all there is.
    package static func stopAtEnd(_ stop: @escaping @Sendable () async -> Void) {
        current?.stops.withLock { $0.append(stop) }
    }

    /// Runs every registered stop, the last registered first; each is idempotent, so a test may have stopped
    /// some already.
    func stopAll() async {
        while let stop = stops.withLock({ $0.popLast() }) {
            await stop()
        }
    }
}

/// Stops what each test starts when the test ends, pass or fail: see `TestResources`.
package struct StopsWhatItStarts: TestTrait, SuiteTrait, TestScoping {
    package var isRecursive: Bool { true }

    package func scopeProvider(for test: Test, testCase: Test.Case?) -> StopsWhatItStarts? {
        test.isSuite ? nil : self
    }

    package func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let resources = TestResources()
        do {
            try await TestResources.$current.withValue(resources) { try await function() }
        } catch {
            await resources.stopAll()
            throw error
        }
        await resources.stopAll()
    }
}

extension Trait where Self == StopsWhatItStarts {
    /// Every test this applies to stops the processes, servers and workers it started when it ends, pass or fail.
    package static var stopsWhatItStarts: Self { Self() }
}
