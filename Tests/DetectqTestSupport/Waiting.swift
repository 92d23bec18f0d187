/// How long a test waits for a condition before it fails: long enough for a machine busy with other work (the
/// stress run competes with one CPU-bound process per core), and a test that waits for what it asserts
/// never waits longer than the condition takes to come true.
package let generousDeadline: Duration = .seconds(120)

/// Waits until `condition` holds, checking every `interval`; throws a `TestSetupError` naming `what` if it
/// has not held by `timeout`. Tests wait for the condition they assert, never for a guessed duration.
package func waitUntil(
    _ what: String, timeout: Duration = generousDeadline, interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async throws {
    _ = try await waitFor(what, timeout: timeout, interval: interval) { try await condition() ? true : nil }
}

/// Waits until `value` returns something, checking every `interval`, and returns it; throws a
/// `TestSetupError` naming `what` if nothing came by `timeout`.
package func waitFor<Value>(
    _ what: String, timeout: Duration = generousDeadline, interval: Duration = .milliseconds(50),
    _ value: () async throws -> Value?
) async throws -> Value {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let found = try await value() { return found }
        guard ContinuousClock.now < deadline else { throw TestSetupError("timed out after \(timeout) waiting until \(what)") }
        try await Task.sleep(for: interval)
    }
}
