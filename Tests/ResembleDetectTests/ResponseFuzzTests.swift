import DetectqTestSupport
import Foundation
@testable import ResembleDetect
import Testing

/// Mutated API responses, error bodies and `Retry-After` values fed to every decoder the client runs on what
/// the API sends: none may crash, hang or leak a secret into an error message.
@Suite("Fuzzing the API response decoders")
struct ResponseFuzzTests {
    static let secret = "sk-live-0123456789abcdef"
    static let regressions = Fixtures.directory.appendingPathComponent("fuzz-regressions")

    /// The API pages' responses, an error body carrying the secret, and every kept crash reproducer.
    static func corpus() throws -> [[UInt8]] {
        let examples = try Fixtures.names.filter { $0.contains("-response-") }.map(Fixtures.bytes)
        let errors = [
            #"{"success":false,"message":"Invalid token \#(secret)","errors":{"url":["must be https"],"file":"too large"}}"#,
            #"{"success":true,"item":{"uuid":"u","status":"processing"}}"#,
            #"{"success":true,"token":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}"#,
        ].map { Array($0.utf8) }
        let kept = try FileManager.default.contentsOfDirectory(at: regressions, includingPropertiesForKeys: nil)
            .map { Array(try Data(contentsOf: $0)) }
        return examples + errors + kept
    }

    /// Runs every decoder on `input`; a decoder may refuse it, but only with its typed error, and an error's
    /// text never shows the secret.
    static func exercise(_ input: [UInt8], retryAfter: String, status: Int) {
        _ = try? DetectResponses.item(from: input)
        _ = try? DetectResponses.page(from: input)
        _ = try? DetectionItem(json: String(decoding: input, as: UTF8.self))
        let error = DetectAPIError.from(status: status, body: input, retryAfter: retryAfter, secrets: [secret])
        #expect(!error.description.contains(secret), "the API token leaked into an error: \(error.description)")
        _ = DetectAPIError.parseRetryAfter(retryAfter).map { #expect($0 >= .zero && $0 <= DetectAPIError.longestRetryAfter) }
    }

    @Test func everyKeptReproducerStillDecodesWithoutACrash() throws {
        for url in try FileManager.default.contentsOfDirectory(at: Self.regressions, includingPropertiesForKeys: nil) {
            let bytes = Array(try Data(contentsOf: url))
            Self.exercise(bytes, retryAfter: String(decoding: bytes.prefix(64), as: UTF8.self), status: 429)
        }
    }

    @Test func mutatedResponsesNeverCrashTheDecoders() throws {
        var mutator = Mutator(corpus: try Self.corpus(), tokens: [Self.secret, "\\u0073k-live-"])
        // Said first, so that a crash (which ends the process before the summary) still names its seed.
        print("fuzzing the response decoders (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        let budget = fuzzBudget(defaultSeconds: 10)
        let deadline = ContinuousClock.now + budget
        var executions = 0
        let retryAfters = ["1", "120", "0.5", "Wed, 21 Oct 2026 07:28:00 GMT", "1e300", "inf", "-1", "nan", "999999999999999999"]
        while ContinuousClock.now < deadline {
            let input = mutator.input()
            let status = [400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503].randomElement(using: &mutator)!
            Self.exercise(input, retryAfter: mutator.shortString(from: retryAfters), status: status)
            executions += 1
        }
        print("fuzzed the response decoders with \(executions) inputs in \(budget) (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        #expect(executions > 1_000)
    }

    @Test(arguments: ["1e300", "inf", "Infinity", "-0", "99999999999999999999", "1e19"])
    func anAbsurdRetryAfterIsCappedNotACrash(value: String) {
        let parsed = DetectAPIError.parseRetryAfter(value)
        #expect(parsed.map { $0 >= .zero && $0 <= .seconds(86_400) } ?? true, "\(value) → \(String(describing: parsed))")
    }

    @Test func aSecretCutByTheMessageLimitIsStillMasked() {
        let body = #"{"success":false,"message":"\#(String(repeating: "x", count: 990))\#(Self.secret)"}"#
        let error = DetectAPIError.from(status: 400, body: Array(body.utf8), retryAfter: nil, secrets: [Self.secret])
        #expect(!error.description.contains(String(Self.secret.prefix(8))), "\(error.description.suffix(40))")
    }
}
