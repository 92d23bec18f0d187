import CLibPQ
import Foundation
import Synchronization

/// A notification sent with `NOTIFY channel, 'payload'` or `pg_notify(channel, payload)`.
package struct PostgresNotification: Sendable, Hashable {
    package let channel: String
    package let payload: String
    /// The server process that sent it.
    package let senderProcessID: Int32
}

/// What a listener reports.
package enum PostgresListenerEvent: Sendable, Hashable {
    /// The listener is connected and its `LISTEN`s are in place: at the start and after every reconnection.
    /// Notifications sent while it was disconnected are lost, so a consumer re-checks its tables on this.
    case listening
    case notification(PostgresNotification)
}

/// Receives `NOTIFY`s on a dedicated connection, driven by a thread of its own that waits in `poll(2)` on the
/// connection's socket. A lost connection is re-established with backoff and its `LISTEN`s re-issued.
package enum PostgresNotificationListener {
    /// Starts listening on `channels`. The listener runs until the consumer stops iterating (or drops the stream).
    package static func listen(
        _ configuration: PostgresConfiguration, channels: [String]
    ) -> AsyncStream<PostgresListenerEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: PostgresListenerEvent.self, bufferingPolicy: .bufferingNewest(10_000)
        )
        let loop = ListenerLoop(configuration: configuration, channels: channels, continuation: continuation)
        continuation.onTermination = { _ in loop.stop() }
        let thread = Thread { loop.run() }
        thread.name = "detectq.postgres.listener"
        thread.start()
        return stream
    }
}

/// The listener's thread: connect, LISTEN, wait for input, deliver, and start over when the connection breaks.
private final class ListenerLoop: Sendable {
    let configuration: PostgresConfiguration
    let channels: [String]
    let continuation: AsyncStream<PostgresListenerEvent>.Continuation
    private let stopped = Atomic<Bool>(false)
    /// How long one `poll(2)` waits before looking at `stopped` again.
    private let pollMilliseconds: Int32 = 200

    init(configuration: PostgresConfiguration, channels: [String], continuation: AsyncStream<PostgresListenerEvent>.Continuation) {
        self.configuration = configuration
        self.channels = channels
        self.continuation = continuation
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
    }

    private var isStopped: Bool { stopped.load(ordering: .relaxed) }

    func run() {
        var backoff = 0.05
        while !isStopped {
            if let connection = connectAndListen() {
                backoff = 0.05
                continuation.yield(.listening)
                receive(on: connection)
                PQfinish(connection)
            }
            guard !isStopped else { break }
            sleep(seconds: backoff)
            backoff = min(backoff * 2, 5)
        }
        continuation.finish()
    }

    private func connectAndListen() -> OpaquePointer? {
        guard let connection = try? configuration.openLibPQConnection() else { return nil }
        for channel in channels {
            let quoted = "\"" + channel.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            let result = PQexec(connection, "LISTEN " + quoted)
            let ok = result.map { PQresultStatus($0) == PGRES_COMMAND_OK } ?? false
            PQclear(result)
            guard ok else {
                PQfinish(connection)
                return nil
            }
        }
        return connection
    }

    /// Delivers notifications until the connection breaks or the listener is stopped.
    private func receive(on connection: OpaquePointer) {
        while !isStopped {
            var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, pollMilliseconds)
            if ready < 0 && errno != EINTR { return }
            guard ready > 0 else { continue }
            guard PQconsumeInput(connection) == 1 else { return }
            while let notification = PQnotifies(connection) {
                continuation.yield(.notification(PostgresNotification(
                    channel: String(cString: notification.pointee.relname),
                    payload: String(cString: notification.pointee.extra),
                    senderProcessID: notification.pointee.be_pid
                )))
                PQfreemem(notification)
            }
            if PQstatus(connection) != CONNECTION_OK { return }
        }
    }

    private func sleep(seconds: Double) {
        var remaining = seconds
        while remaining > 0, !isStopped {
            Thread.sleep(forTimeInterval: min(remaining, 0.1))
            remaining -= 0.1
        }
    }
}
