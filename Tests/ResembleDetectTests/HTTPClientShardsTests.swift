import AsyncHTTPClient
@testable import ResembleDetect
import Synchronization
import Testing

/// The Detect client's connections are spread over HTTP clients of at most 256 each, and every exchange goes
/// through the one with the fewest in flight, so no client waits at its limit while another has room.
@Suite("The Detect client's HTTP clients")
struct HTTPClientShardsTests {
    /// 300 exchanges held on a client of 600 connections split 100 to each of its three HTTP clients. When one
    /// client's hundred end, the next 150 fill it first: the three end within one exchange of each other, where
    /// taking the clients in turn would leave 50 against 150.
    @Test func exchangesGoWhereFewestAreInFlight() async throws {
        let shards = HTTPClientShards(configuration: HTTPClient.Configuration(), maximumConnections: 600, idleTimeout: .seconds(1))
        let exchanges = Exchanges()
        try await withThrowingTaskGroup(of: Void.self) { group in
            func hold(_ count: Int) {
                for _ in 0..<count {
                    group.addTask {
                        // Counted as ended only once the shards have counted it so.
                        let ticket = try await shards.withLeastBusy { client in
                            let ticket = exchanges.begin(on: client)
                            while !exchanges.isReleased(ticket) { try await Task.sleep(for: .milliseconds(5)) }
                            return ticket
                        }
                        exchanges.end(ticket)
                    }
                }
            }
            hold(300)
            try await exchanges.waitUntilInFlight(300)
            #expect(exchanges.inFlightPerClient == [100, 100, 100])
            exchanges.releaseOneClient()
            try await exchanges.waitUntilInFlight(200)
            hold(150)
            try await exchanges.waitUntilInFlight(350)
            let after = exchanges.inFlightPerClient
            #expect(after.count == 3 && (after.max() ?? 0) - (after.min() ?? 0) <= 1, "\(after)")
            exchanges.releaseAll()
            try await group.waitForAll()
        }
        try await shards.shutdown()
    }

    @Test func aClientOfFewConnectionsIsOneHTTPClient() async throws {
        let shards = HTTPClientShards(configuration: HTTPClient.Configuration(), maximumConnections: 64, idleTimeout: .seconds(1))
        let exchanges = Exchanges()
        for _ in 0..<3 {
            try await shards.withLeastBusy { client in exchanges.end(exchanges.begin(on: client)) }
        }
        #expect(exchanges.clientsUsed == 1)
        try await shards.shutdown()
    }
}

/// Exchanges held open on the HTTP clients, each by a ticket, until the test releases them.
private final class Exchanges: Sendable {
    private struct State {
        var clientOf: [Int: ObjectIdentifier] = [:]
        var inFlight: Set<Int> = []
        var released: Set<Int> = []
    }

    private let state = Mutex(State())

    func begin(on client: HTTPClient) -> Int {
        state.withLock { state in
            let ticket = state.clientOf.count
            state.clientOf[ticket] = ObjectIdentifier(client)
            state.inFlight.insert(ticket)
            return ticket
        }
    }

    func end(_ ticket: Int) { state.withLock { _ = $0.inFlight.remove(ticket) } }

    func isReleased(_ ticket: Int) -> Bool { state.withLock { $0.released.contains(ticket) } }

    /// Releases the exchanges in flight on one client.
    func releaseOneClient() {
        state.withLock { state in
            guard let client = state.inFlight.first.flatMap({ state.clientOf[$0] }) else { return }
            state.released.formUnion(state.inFlight.filter { state.clientOf[$0] == client })
        }
    }

    func releaseAll() { state.withLock { $0.released.formUnion($0.inFlight) } }

    /// Exchanges in flight on each client that has any, fewest first.
    var inFlightPerClient: [Int] {
        state.withLock { state in
            Dictionary(grouping: state.inFlight) { state.clientOf[$0] }.values.map(\.count).sorted()
        }
    }

    var clientsUsed: Int { state.withLock { Set($0.clientOf.values).count } }

    func waitUntilInFlight(_ count: Int) async throws {
        while state.withLock({ $0.inFlight.count }) != count { try await Task.sleep(for: .milliseconds(5)) }
    }
}
