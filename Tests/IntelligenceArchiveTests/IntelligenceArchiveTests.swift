import DetectQueue
import DetectqTestSupport
import Foundation
import IntelligenceArchive
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport

@Suite("The intelligence archive", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct IntelligenceArchiveTests {
    @Test func intelligenceIsArchivedOnceCompletedInTheTableAndAsAFile() async throws {
        let harness = try await WorkerHarness.start(.init(intelligenceDelay: .seconds(60)))
        let archive = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-archive-\(UUID().uuidString)")
        let asked = [
            try await harness.insert("media_url, intelligence", ["https://cdn.example.com/fake-a.wav", true]),
            try await harness.insert("media_url, intelligence", ["https://cdn.example.com/b.mp4", true]),
        ]
        let notAsked = try await harness.insert("media_url", ["https://cdn.example.com/c.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [IntelligenceArchiver(directory: archive)])
        try await harness.waitUntilFinished(asked + [notAsked])
        let waits = {
            try await harness.pool.query("""
                SELECT count(*) AS n FROM detectq.post_task_events WHERE from_state = 'running' AND to_state = 'queued'
                """)[0].decode("n", as: Int.self)
        }
        try await waitUntil("the archiver has waited for both reports, still processing") { try await waits() >= 2 }
        #expect(try await harness.pool.query("SELECT count(*) AS n FROM detectq.intelligence_archive")[0].decode("n", as: Int.self) == 0)
        await harness.simulator.state.fastForward()
        try await harness.waitUntilProcessed(asked + [notAsked])
        await worker.stop()

        let rows = try await harness.pool.query("SELECT request_id, remote_uuid, intelligence FROM detectq.intelligence_archive ORDER BY request_id")
        #expect(try rows.map { try $0.decode("request_id", as: Int.self) } == asked)
        for row in rows {
            let uuid = try row.decode("remote_uuid", as: String.self)
            let stored = try JSONDecoder().decode(JSONValue.self, from: Data(try row.decode("intelligence", as: PostgresJSON.self).text.utf8))
            #expect(stored["status"] == .string("completed"))
            let files = FileManager.default.enumerator(atPath: archive.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix("\(uuid).json") } ?? []
            #expect(files.count == 1, "one file for \(uuid)")
            let file = try #require(files.first)
            #expect(file.split(separator: "/").count == 4, "<yyyy>/<mm>/<dd>/<uuid>.json: \(file)")
            let written = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: archive.appendingPathComponent(file)))
            #expect(written == stored, "the file and the row hold the same report")
        }
        try? FileManager.default.removeItem(at: archive)
        await harness.stop()
    }

    @Test func aReportThatNeverFinishesIsGivenUpOnAfterTheBoundedWaitSayingWhy() async throws {
        let harness = try await WorkerHarness.start(.init(intelligenceDelay: .seconds(3_600)))
        let id = try await harness.insert("media_url, intelligence", ["https://cdn.example.com/slow-report.wav", true])
        let worker = harness.startWorker(
            try harness.configuration(), postProcessors: [IntelligenceArchiver(directory: nil, maximumWait: .seconds(1))]
        )
        let ended = {
            try await harness.pool.query("""
                SELECT state::text AS state, last_error FROM detectq.post_tasks WHERE request_id = \(id) AND processor = 'archive.intelligence'
                """).first
        }
        try await waitUntil("the archive task has ended") { try await ended()?.decode("state", as: String.self) == "failed" }
        await worker.stop()
        let reason = try await ended()?.decode("last_error", as: String?.self) ?? ""
        #expect(reason.contains("had not completed") && reason.contains("given up on"), "\(reason)")
        #expect(try await harness.pool.query("SELECT count(*) AS n FROM detectq.intelligence_archive")[0].decode("n", as: Int.self) == 0)
    }
}
