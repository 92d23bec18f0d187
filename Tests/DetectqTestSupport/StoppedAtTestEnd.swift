import DetectSimulator
import EmbeddedPostgres

extension DetectSimulator {
    /// Starts a simulator in this process that is stopped when the test ends (`.stopsWhatItStarts`).
    package static func startForTest(configuration: SimulatorConfiguration = .init()) async throws -> DetectSimulator {
        let simulator = try await start(configuration: configuration)
        TestResources.stopAtEnd { await simulator.stop() }
        return simulator
    }
}

extension ThrowawayPostgresCluster {
    /// Starts a throwaway cluster that is destroyed when the test ends (`.stopsWhatItStarts`).
    package static func startForTest(durableCommits: Bool = false) async throws -> ThrowawayPostgresCluster {
        let cluster = try await start(durableCommits: durableCommits)
        TestResources.stopAtEnd { await cluster.destroy() }
        return cluster
    }

    /// Starts a streaming standby of this cluster that is destroyed when the test ends.
    package func makeStandbyForTest() async throws -> ThrowawayPostgresCluster {
        let standby = try await makeStandby()
        TestResources.stopAtEnd { await standby.destroy() }
        return standby
    }
}
