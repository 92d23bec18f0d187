import Foundation

/// Free TCP ports on the loopback interface, for servers a test, the demo or a benchmark starts.
package enum LoopbackPort {
    /// A port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range
    /// (`net.ipv4.ip_local_port_range`), so that no port the kernel hands out (for port 0, or as the local end of
    /// an outgoing connection) can take it, neither before the server that asked for it binds it nor while that
    /// server is down between a stop and a start (a PostgreSQL cluster restarted, a standby made on its old
    /// primary's port). A port from the ephemeral range could be, and under a full test run beside a busy machine
    /// once was: a worker's HTTP port taken by some connection's local end before the worker bound it.
    package static func free() throws -> Int {
        let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32_768
        let range = 10_000..<max(10_001, min(ephemeralStart, 65_536))
        for _ in 0..<200 {
            if let port = try bindable(Int.random(in: range)) { return port }
        }
        guard let port = try bindable(0) else { throw ClusterError("could not find a free loopback port") }
        return port
    }

    /// Binds a socket to `port` on 127.0.0.1 (0: the kernel's choice) and returns the port bound, or nil when
    /// it is taken.
    private static func bindable(_ port: Int) throws -> Int? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ClusterError("could not open a socket to find a free port") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }
}
