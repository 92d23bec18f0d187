import Hummingbird
import Logging
import ServiceLifecycle

/// A Hummingbird application running in a task of this process (the simulator, a test's recorder, the chaos
/// run's alert sink), stopped the graceful way: the listener closes, requests in progress finish, idle
/// connections close. Cancelling such a task instead makes Hummingbird log errors on the way down
/// ("Waiting on child channel: CancellationError()"), which a clean run must not show.
package struct InProcessServer: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    /// Starts `application` in a task of its own.
    package init(_ application: some ApplicationProtocol) {
        let group = ServiceGroup(configuration: .init(
            services: [application], logger: Logger(label: "detectq.in-process-server", factory: { _ in SwiftLogNoOpLogHandler() })
        ))
        self.group = group
        task = Task { try await group.run() }
    }

    /// Shuts the server down gracefully and waits for it; after `limit` (a request that will not finish),
    /// the server's task is cancelled.
    package func stop(within limit: Duration = .seconds(10)) async {
        await group.triggerGracefulShutdown()
        let task = task
        await withTaskGroup(of: Bool.self) { waits in
            waits.addTask {
                _ = await task.result
                return true
            }
            waits.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            if await waits.next() == false { task.cancel() }
            waits.cancelAll()
        }
    }
}
