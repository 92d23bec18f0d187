import AsyncHTTPClient
import Synchronization

/// The Detect client's connections, spread over several HTTP clients of at most `connectionsPerClient`
/// each. AsyncHTTPClient's pool walks every connection it holds on each event, so 5,000 connections in one
/// pool cost the worker most of a core just to send a wave of 5,000 requests. Each exchange goes through the
/// client with the fewest exchanges in flight, so no client waits at its limit while another has room.
final class HTTPClientShards: Sendable {
    static let connectionsPerClient = 256

    private let clients: [HTTPClient]
    private let inFlight: Mutex<[Int]>

    /// `configuration` for every client, with at most `maximumConnections` connections among them.
    init(configuration: HTTPClient.Configuration, maximumConnections: Int, idleTimeout: Duration) {
        let connections = max(1, maximumConnections)
        let count = (connections + Self.connectionsPerClient - 1) / Self.connectionsPerClient
        clients = (0..<count).map { index in
            var shard = configuration
            let limit = connections / count + (index < connections % count ? 1 : 0)
            shard.connectionPool = .init(
                idleTimeout: .nanoseconds(Int64(idleTimeout.seconds * 1e9)), concurrentHTTP1ConnectionsPerHostSoftLimit: limit
            )
            return HTTPClient(eventLoopGroupProvider: .singleton, configuration: shard)
        }
        inFlight = Mutex(Array(repeating: 0, count: count))
    }

    /// Runs `exchange` on the least busy client; it counts as in flight until `exchange` returns.
    func withLeastBusy<Result: Sendable>(_ exchange: (HTTPClient) async throws -> Result) async throws -> Result {
        let index = inFlight.withLock { counts in
            let least = counts.indices.min { counts[$0] < counts[$1] } ?? 0
            counts[least] += 1
            return least
        }
        defer { inFlight.withLock { $0[index] -= 1 } }
        return try await exchange(clients[index])
    }

    /// Closes every client's connections; call it once, when done.
    func shutdown() async throws {
        for client in clients { try await client.shutdown() }
    }
}
