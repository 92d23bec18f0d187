/// A bounded pool of PostgreSQL connections shared by many tasks.
///
/// At most `maximumConnections` connections are ever open; a task that finds them all busy waits its turn
/// (in arrival order, and gives up its place if it is cancelled). Connections are opened lazily, and one
/// that comes back broken or inside a transaction is closed rather than handed to someone else.
package actor PostgresConnectionPool {
    package nonisolated let configuration: PostgresConfiguration
    package nonisolated let maximumConnections: Int

    private var idle: [PostgresConnection] = []
    /// Connections open or being opened, idle or leased.
    private var openCount = 0
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<Grant, any Error>)] = []
    private var nextWaiterID: UInt64 = 0
    private var isClosed = false

    /// What a waiting task is handed: a connection to use, or leave to open one itself.
    private enum Grant: Sendable {
        case connection(PostgresConnection)
        case permitToConnect
    }

    package init(configuration: PostgresConfiguration, maximumConnections: Int) {
        precondition(maximumConnections > 0, "a pool needs room for at least one connection")
        self.configuration = configuration
        self.maximumConnections = maximumConnections
    }

    /// Lends a connection to `body` for its duration.
    package nonisolated func withConnection<Result>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await lease()
        do {
            let result = try await body(connection)
            await giveBack(connection)
            return result
        } catch {
            await giveBack(connection)
            throw error
        }
    }

    /// Runs one statement on any connection of the pool.
    @discardableResult
    package nonisolated func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await withConnection { try await $0.query(query) }
    }

    /// Runs `body` in a transaction on one connection: committed when it returns, rolled back when it throws.
    package nonisolated func transaction<Result>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await withConnection { try await $0.transaction(body) }
    }

    /// Closes idle connections now and leased ones as they come back; waiting and later leases fail.
    package func close() async {
        isClosed = true
        let waiting = waiters
        waiters.removeAll()
        for waiter in waiting { waiter.continuation.resume(throwing: Self.closedError) }
        let connections = idle
        idle.removeAll()
        openCount -= connections.count
        for connection in connections { await connection.close() }
    }

    // MARK: - Leasing

    private func lease() async throws -> PostgresConnection {
        if isClosed { throw Self.closedError }
        if let connection = idle.popLast() { return connection }
        if openCount < maximumConnections {
            openCount += 1
            return try await openReservedConnection()
        }
        switch try await waitForGrant() {
        case .connection(let connection): return connection
        case .permitToConnect: return try await openReservedConnection()
        }
    }

    /// Opens a connection for a slot already counted in `openCount`; on failure frees the slot for the next waiter.
    private func openReservedConnection() async throws -> PostgresConnection {
        do {
            return try await PostgresConnection.connect(configuration)
        } catch {
            openCount -= 1
            grantFreeSlot()
            throw error
        }
    }

    private func waitForGrant() async throws -> Grant {
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters.append((id, continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
    }

    private func giveBack(_ connection: PostgresConnection) async {
        let reusable = await connection.isReusable()
        guard reusable, !isClosed else {
            openCount -= 1
            await connection.close()
            grantFreeSlot()
            return
        }
        if waiters.isEmpty {
            idle.append(connection)
        } else {
            waiters.removeFirst().continuation.resume(returning: .connection(connection))
        }
    }

    /// A slot came free without a connection to hand on: let the first waiter open one.
    private func grantFreeSlot() {
        guard !isClosed, !waiters.isEmpty, openCount < maximumConnections else { return }
        openCount += 1
        waiters.removeFirst().continuation.resume(returning: .permitToConnect)
    }

    private static let closedError = PostgresError(kind: .closed, message: "the connection pool was closed")
}
