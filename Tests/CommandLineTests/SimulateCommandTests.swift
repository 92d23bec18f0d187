import DetectqTestSupport
import Foundation
import ResembleDetect
import Testing

@Suite("detectq simulate as a process", .stopsWhatItStarts)
struct SimulateCommandTests {
    @Test func theStandaloneSimulatorAnswersAndRequiresTheToken() async throws {
        let simulator = try await DetectqProcess.start(["simulate", "--port", "0"], environment: ["RESEMBLE_API_TOKEN": "readme-token"])
        let line = try await simulator.waitForLine(containing: "listening on")
        let baseURL = try #require(line.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init))
        #expect(line.contains("bearer token required"))
        #expect(!line.contains("readme-token"))

        let client = DetectClient(configuration: .init(baseURL: baseURL, token: "readme-token"))
        let item = try await client.submit(.url("https://example.com/fake-media.mp4"), options: .init(intelligence: true), wait: true)
        #expect(item.status == .completed && item.isFake == true && item.mediaType == .video)
        let fetched = try await client.detection(uuid: item.uuid)
        #expect(fetched.uuid == item.uuid)
        try await client.shutdown()

        let stranger = DetectClient(configuration: .init(baseURL: baseURL, token: "wrong"))
        await #expect(throws: DetectAPIError.authentication(status: 401, message: "Invalid or missing API token")) {
            try await stranger.detection(uuid: item.uuid)
        }
        try await stranger.shutdown()
        #expect(await simulator.stop() == 0, "SIGTERM stops it cleanly")
    }

    @Test func aBadOptionIsRefusedWithItsName() async throws {
        let outcome = try await DetectqExecutable.run(["simulate", "--error-rate", "1.5"])
        #expect(outcome.status != 0)
        #expect(outcome.standardError.contains("--error-rate must be a probability from 0 to 1"))
    }
}
