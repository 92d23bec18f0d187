import DetectSimulator
import DetectqTestSupport
import Foundation
import Postgres
import PropertyBased
import Testing
import WorkerTestSupport
@testable import DetectQueue

/// Records the metadata every completed request reaches its post-processors with.
actor MetadataLog {
    private(set) var byRequest: [Int: String] = [:]
    func note(_ id: Int, _ metadata: String) { byRequest[id] = metadata }
}

/// A post-processor for every result that notes the metadata it was given.
struct NoteMetadata: PostProcessor {
    let name = "test.metadata"
    let log: MetadataLog

    func applies(to outcome: DetectionOutcome) -> Bool { true }

    func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        await log.note(outcome.requestID, String(decoding: try JSONEncoder().encode(outcome.metadata), as: UTF8.self))
        return .done
    }
}

@Suite("Hostile input to the queue: stored verbatim, never executed", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct SQLInjectionTests {
    static let drop = "'); DROP TABLE public.detectq_canary; --"

    @Test func injectionThroughEveryProducerColumnIsStoredAndPassedOnVerbatim() async throws {
        let harness = try await WorkerHarness.start()
        try await harness.pool.query("CREATE TABLE public.detectq_canary (x int)")
        let hostileFile = #"a"b\#(Self.drop) $1 %s.wav"#
        try harness.writeMedia(hostileFile, "RIFF FAKE voice")
        let metadata = PostgresJSON(text: """
            {"note": "\(Self.drop.replacingOccurrences(of: "\"", with: "\\\""))", "k'ey\\"": "$1 $$ \\\\x00 %s%n", "nested": {"sql": "1; SELECT pg_sleep(10)"}}
            """)
        var ids: [String: Int] = [:]
        ids["media_url"] = try await harness.insert("media_url, metadata, idempotency_key", [
            "https://cdn.example.com/fake\(Self.drop.replacingOccurrences(of: " ", with: "%20")).wav", metadata, Self.drop,
        ])
        ids["media_path"] = try await harness.insert("media_path, metadata", [hostileFile, metadata])
        ids["missing media_path"] = try await harness.insert("media_path", ["x\(Self.drop).wav"])
        ids["media_token"] = try await harness.insert("media_token", ["tok\(Self.drop)"])
        ids["pipeline"] = try await harness.insert("media_url, pipeline", ["https://cdn.example.com/p.wav", Self.drop])
        let log = MetadataLog()
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [NoteMetadata(log: log)])
        // Post-tasks run after completion: what they were given is asserted once they are done.
        try await harness.waitUntilProcessed(Array(ids.values))
        await worker.stop()

        let canary = try await harness.pool.query("SELECT to_regclass('public.detectq_canary')::text AS t")[0].decode("t", as: String?.self)
        #expect(canary == "detectq_canary", "nothing was executed")
        let stored = try await harness.pool.query("""
            SELECT media_url, media_path, media_token, pipeline, idempotency_key, metadata = \(metadata) AS same_metadata,
                   state::text AS state, error_message
            FROM detectq.requests WHERE id = \(ids["media_url"]!)
            """)[0]
        #expect(try stored.decode("idempotency_key", as: String?.self) == Self.drop)
        #expect(try stored.decode("same_metadata", as: Bool.self))
        #expect(try stored.decode("state", as: String.self) == "completed")
        let pathRow = try await harness.row(ids["media_path"]!)
        let pathError = try pathRow.decode("error_message", as: String?.self) ?? ""
        #expect(try pathRow.decode("state", as: String.self) == "completed", "\(pathError)")
        #expect(try pathRow.decode("is_fake", as: Bool?.self) == true, "the hostile file name was uploaded and judged")
        let missing = try await harness.row(ids["missing media_path"]!)
        #expect(try missing.decode("state", as: String.self) == "failed")
        #expect(try missing.decode("error_message", as: String?.self)?.contains("x\(Self.drop).wav") == true, "the reason quotes the path verbatim")
        let token = try await harness.row(ids["media_token"]!)
        #expect(try token.decode("state", as: String.self) == "failed")
        #expect(try token.decode("error_message", as: String?.self)?.contains("media_token") == true)
        let passed = await log.byRequest
        for id in [ids["media_url"]!, ids["media_path"]!] {
            let given = try #require(passed[id])
            let same = try await harness.pool.query("SELECT \(PostgresJSON(text: given))::jsonb = \(metadata) AS same")[0].decode("same", as: Bool.self)
            #expect(same, "post-processors get the producer's metadata verbatim: \(given)")
        }
        await harness.stop()
    }
}

@Suite("Callback secrets")
struct CallbackSecretTests {
    @Test func theComparisonIsEqualityWhateverTheStrings() async {
        let text = Gen.ascii.string(of: 0...40)
        await propertyCheck(count: 2_000, input: text, text, Gen.int(in: 0...39)) { left, right, position in
            #expect(SecretComparison.equal(left, right) == (left == right))
            #expect(SecretComparison.equal(left, left))
            // The same length, one character different anywhere: the hard case for a comparison that stops early.
            guard !left.isEmpty else { return }
            var bytes = Array(left.utf8)
            bytes[position % bytes.count] ^= 0x01
            #expect(!SecretComparison.equal(left, String(decoding: bytes, as: UTF8.self)))
        }
    }

    @Test func onlyTheSecretsHashIsStored() {
        let secret = "8f1c0b5e-3a1d-4c65-9a57-0f1d2e3c4b5a"
        let hash = RequestProcessor.hash(secret)
        #expect(hash != secret && !hash.contains(secret) && hash.count == 64)
        #expect(RequestProcessor.hash(secret) == hash, "the same secret always hashes the same")
    }
}
