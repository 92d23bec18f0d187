import CLibPQ
import Dispatch
import Foundation
import Synchronization

/// One connection to PostgreSQL through libpq.
///
/// libpq blocks, so every call on the connection runs on the connection's own serial dispatch queue and
/// hands its result back through a continuation: Swift's cooperative thread pool never waits on the network.
/// A connection that was lost (a server restart, a terminated backend) is re-established before the next
/// statement; the statement that found it lost fails once with a `.connection` error.
package final class PostgresConnection: @unchecked Sendable {
    // `connection` is read and written only on `queue`; `cancelHandle` is guarded by its mutex.
    private var connection: OpaquePointer?
    private let queue: DispatchQueue
    private let cancelHandle = Mutex<CancelHandle?>(nil)
    package let configuration: PostgresConfiguration

    private init(configuration: PostgresConfiguration) {
        self.configuration = configuration
        queue = DispatchQueue(label: "detectq.postgres.connection")
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    /// Opens a connection; throws a `.connection` error naming what libpq reported.
    package static func connect(_ configuration: PostgresConfiguration) async throws -> PostgresConnection {
        let connection = PostgresConnection(configuration: configuration)
        try await connection.onQueue { try connection.open() }
        return connection
    }

    /// Runs one parameterised statement and returns its rows.
    @discardableResult
    package func query(_ query: PostgresQuery) async throws -> PostgresRows {
        let statement = StatementCancellation()
        return try await withTaskCancellationHandler {
            // Ended however this returns (even cancelled before it was queued), so no cancel is sent for it later.
            defer { statement.end() }
            try Task.checkCancellation()
            return try await onQueue {
                guard statement.begin() else { throw CancellationError() }
                defer { statement.end() }
                return try self.run(query)
            }
        } onCancel: {
            self.cancel(statement)
        }
    }

    /// Runs a script of several statements with no parameters, for trusted, static SQL only (migrations):
    /// values always go through `query(_:)`.
    package func executeScript(_ script: String) async throws {
        try await onQueue {
            let connection = try self.readyConnection()
            _ = try self.check(PQexec(connection, script), on: connection)
        }
    }

    /// Runs `statement`, a `COPY … FROM STDIN`, and sends it `data` in the statement's format (text by
    /// default: one row per line, tab-separated, `\N` for NULL); returns the number of rows copied. Trusted,
    /// static SQL only, as for scripts: the values travel in `data`.
    package func copyIn(_ statement: String, data: Data) async throws -> Int {
        try await onQueue {
            let connection = try self.readyConnection()
            guard let started = PQexec(connection, statement) else {
                throw PostgresError(kind: .connection, message: libpqErrorMessage(connection))
            }
            let start = ResultHandle(started)
            guard PQresultStatus(start.pointer) == PGRES_COPY_IN else {
                _ = try self.check(start.pointer, on: connection)
                throw PostgresError(kind: .server, message: "not a COPY … FROM STDIN statement")
            }
            let sent = data.withUnsafeBytes { buffer -> Bool in
                var offset = 0
                while offset < buffer.count {
                    let length = min(1 << 16, buffer.count - offset)
                    let chunk = buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self)
                    guard PQputCopyData(connection, chunk, Int32(length)) == 1 else { return false }
                    offset += length
                }
                return true
            }
            guard PQputCopyEnd(connection, sent ? nil : "the data could not be sent") == 1 else {
                throw PostgresError(kind: .connection, message: libpqErrorMessage(connection))
            }
            var outcome: Result<Int, PostgresError> = .failure(PostgresError(kind: .connection, message: libpqErrorMessage(connection)))
            while let next = PQgetResult(connection) {
                let result = ResultHandle(next)
                if PQresultStatus(next) == PGRES_COMMAND_OK {
                    outcome = .success(Int(String(cString: PQcmdTuples(next))) ?? 0)
                } else {
                    outcome = .failure(Self.error(from: result.pointer, connection: connection))
                }
            }
            return try outcome.get()
        }
    }

    /// Runs `body` inside a transaction: commits when it returns, rolls back when it throws.
    /// `COMMIT` and `ROLLBACK` run even when the task has been cancelled, so no transaction is left open.
    package func transaction<Result>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await query("BEGIN")
        let result: Result
        do {
            result = try await body(self)
        } catch {
            try? await transactionControl("ROLLBACK")
            throw error
        }
        try await transactionControl("COMMIT")
        return result
    }

    private func transactionControl(_ statement: PostgresQuery) async throws {
        _ = try await onQueue { try self.run(statement) }
    }

    /// Closes the connection; later statements fail with a `.closed` error.
    package func close() async {
        await onQueue {
            self.cancelHandle.withLock { $0 = nil }
            if let connection = self.connection { PQfinish(connection) }
            self.connection = nil
        }
    }

    /// True when the connection is open, healthy and outside any transaction, so it can serve someone else.
    func isReusable() async -> Bool {
        await onQueue {
            guard let connection = self.connection, PQstatus(connection) == CONNECTION_OK else { return false }
            return PQtransactionStatus(connection) == PQTRANS_IDLE
        }
    }

    /// The server process serving this connection (`pg_backend_pid()`), or nil when not connected.
    package func backendProcessID() async -> Int32? {
        await onQueue {
            guard let connection = self.connection, PQstatus(connection) == CONNECTION_OK else { return nil }
            return PQbackendPID(connection)
        }
    }

    // MARK: - On the connection's queue

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }

    private func open() throws {
        let connection = try configuration.openLibPQConnection()
        self.connection = connection
        try prepareSession(connection)
    }

    /// Fixes the session settings the decoders rely on, and keeps a cancel handle for this backend. They are
    /// the parameters PgBouncer tracks per client (it sets them again on each server connection it lends), so
    /// they hold behind a transaction-pooling PgBouncer too.
    private func prepareSession(_ connection: OpaquePointer) throws {
        let settings = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET client_encoding = 'UTF8'"
        _ = try check(PQexec(connection, settings), on: connection)
        let handle = PQgetCancel(connection).map(CancelHandle.init)
        cancelHandle.withLock { $0 = handle }
    }

    /// The open connection, re-established first if it was lost while idle or found broken.
    private func readyConnection() throws -> OpaquePointer {
        guard let connection else {
            throw PostgresError(kind: .closed, message: "the connection was closed")
        }
        if PQstatus(connection) == CONNECTION_OK, Self.hasPendingInput(connection) {
            // An idle connection has nothing to read unless the server is telling us it is going away
            // (or sent a notification); reading it lets libpq notice a connection that is already dead.
            if PQconsumeInput(connection) == 1 { Self.discardNotifications(connection) }
        }
        if PQstatus(connection) != CONNECTION_OK {
            PQreset(connection)
            guard PQstatus(connection) == CONNECTION_OK else {
                throw PostgresError(kind: .connection, message: libpqErrorMessage(connection))
            }
            try prepareSession(connection)
        }
        return connection
    }

    private func run(_ query: PostgresQuery) throws -> PostgresRows {
        try execute(query, on: try readyConnection())
    }

    /// Runs a parameterised statement on a connection known to be ready (on the queue).
    private func execute(_ query: PostgresQuery, on connection: OpaquePointer) throws -> PostgresRows {
        let parameters = query.parameters
        let values = parameters.map { $0.text.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        let types = parameters.map { $0.type.rawValue }
        let valuePointers = values.map { $0.map { UnsafePointer($0) } }
        let result = PQexecParams(
            connection, query.sql, Int32(parameters.count), types, valuePointers, nil, nil, 0
        )
        return PostgresRows(result: try check(result, on: connection))
    }

    /// Turns a libpq result into a handle, or into a `PostgresError` when the statement failed.
    private func check(_ result: OpaquePointer?, on connection: OpaquePointer) throws -> ResultHandle {
        guard let result else {
            throw PostgresError(kind: .connection, message: libpqErrorMessage(connection))
        }
        let handle = ResultHandle(result)
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return handle
        default:
            throw Self.error(from: result, connection: connection)
        }
    }

    private static func error(from result: OpaquePointer, connection: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        let sqlState = field("C").map(SQLState.init(rawValue:))
        let lost = PQstatus(connection) != CONNECTION_OK
        guard sqlState != nil, !lost || sqlState?.errorClass == "57" else {
            return PostgresError(
                kind: .connection,
                message: "the connection to the server was lost: " + libpqErrorMessage(connection),
                sqlState: sqlState
            )
        }
        return PostgresError(
            kind: lost ? .connection : .server,
            message: field("M") ?? libpqErrorMessage(connection),
            sqlState: sqlState,
            severity: field("V") ?? field("S"),
            detail: field("D"),
            hint: field("H"),
            schema: field("s"),
            table: field("t"),
            column: field("c"),
            dataType: field("d"),
            constraint: field("n")
        )
    }

    private static func hasPendingInput(_ connection: OpaquePointer) -> Bool {
        var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) > 0
    }

    private static func discardNotifications(_ connection: OpaquePointer) {
        while let notification = PQnotifies(connection) { PQfreemem(notification) }
    }

    // MARK: - Cancellation

    /// Cancels `statement` (its awaiting task was cancelled): one not yet sent is never sent; one running is
    /// cancelled on the server. A cancel request that reaches the server before the statement does is ignored
    /// there, so it is sent again every 100 ms until the statement ends (for at most 10 s).
    private func cancel(_ statement: StatementCancellation) {
        statement.cancel()
        sendCancel(statement, timesLeft: 100, after: .now())
    }

    private func sendCancel(_ statement: StatementCancellation, timesLeft: Int, after time: DispatchTime) {
        DispatchQueue.global().asyncAfter(deadline: time) {
            guard statement.whileRunning({ self.cancelHandle.withLock { handle in handle?.cancel() } }), timesLeft > 1 else { return }
            self.sendCancel(statement, timesLeft: timesLeft - 1, after: .now() + .milliseconds(100))
        }
    }
}

/// The cancellation state of one statement: cancelled or not, and whether it is on the wire. A cancel is
/// sent to the server only while the statement runs, under the same lock that ends it, so it never reaches
/// a later statement on the connection.
private final class StatementCancellation: Sendable {
    private enum Phase { case waiting, running, ended }
    private let state = Mutex<(phase: Phase, cancelled: Bool)>((.waiting, false))

    /// Called on the connection's queue before sending; false when the statement was cancelled first.
    func begin() -> Bool {
        state.withLock { state in
            guard !state.cancelled else {
                state.phase = .ended
                return false
            }
            state.phase = .running
            return true
        }
    }

    func end() {
        state.withLock { $0.phase = .ended }
    }

    func cancel() {
        state.withLock { $0.cancelled = true }
    }

    /// Runs `body` if the statement is running, holding it from ending meanwhile; false once it has ended.
    func whileRunning(_ body: () -> Void) -> Bool {
        state.withLock { state in
            if state.phase == .running { body() }
            return state.phase != .ended
        }
    }
}

/// libpq's cancel object for one backend; `PQcancel` is the one libpq call designed to run on another thread.
private final class CancelHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) {
        self.pointer = pointer
    }

    func cancel() {
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(pointer, &buffer, Int32(buffer.count))
    }

    deinit {
        PQfreeCancel(pointer)
    }
}
