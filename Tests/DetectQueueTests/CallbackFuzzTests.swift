import AsyncHTTPClient
import DetectSimulator
import DetectqTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import WorkerTestSupport

/// Mutated requests thrown at a live worker's HTTP port: callbacks with broken paths, secrets, methods,
/// headers and bodies. None may get a 5xx, change a request, or take the worker down.
@Suite("Fuzzing the callback receiver", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct CallbackFuzzTests {
    @Test func mutatedCallbacksChangeNothingAndNeverBreakTheReceiver() async throws {
        let harness = try await WorkerHarness.start(.init(latency: .seconds(600)))
        let configuration = try harness.configuration(callbacks: true, environment: ["DETECTQ_CALLBACK_TIMEOUT": "600"])
        let waiting = try await harness.insert("media_url, wait_mode", ["https://cdn.example.com/fake-waiting.wav", "callback"])
        let worker = harness.startWorker(configuration)
        let deadline = ContinuousClock.now + .seconds(10)
        while try await harness.row(waiting).decode("state", as: String.self) != "awaiting_result" && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let base = configuration.callbackURL!
        let callbackPath = try #require(await harness.simulator.state.callbackURLs().values.first).replacingOccurrences(of: base, with: "")
        let body = #"{"success": true, "item": {"uuid": "forged", "status": "completed", "metrics": {"label": "fake", "score": ["0.9"], "aggregated_score": "0.9"}}}"#
        var mutator = Mutator(corpus: [Array(body.utf8), Array("{}".utf8), []], tokens: ["\(waiting)"])
        // Said first, so that a crash (which ends the process before the summary) still names its seed.
        print("fuzzing the callback receiver (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        let paths = [
            callbackPath, callbackPath, callbackPath, callbackPath + "x", "/callbacks/\(waiting)/0123456789abcdef", "/callbacks/\(waiting)/", "/callbacks/-1/x", "/callbacks/99999999999999999999999/x",
            "/callbacks/\(waiting)/x/extra", "/callbacks/%2e%2e/%2e%2e/metrics", "//callbacks/\(waiting)/x", "/callbacks/\(waiting)/x?y=1#z",
            "/healthz/../callbacks/\(waiting)/x", "/admin", "/", "/metrics/x", "/callbacks/0x10/x",
        ]
        let methods: [HTTPMethod] = [.POST, .POST, .POST, .GET, .PUT, .DELETE, .PATCH, .OPTIONS, .HEAD, .TRACE]
        let budget = fuzzBudget(defaultSeconds: 6)
        let stop = ContinuousClock.now + budget
        var statuses: [UInt: Int] = [:]
        var refusedByTheClient = 0
        var sent = 0
        // The budget, but at least 300 requests (a loaded machine sends fewer), and never past a minute.
        while (ContinuousClock.now < stop || sent < 300) && ContinuousClock.now < stop + .seconds(60) {
            sent += 1
            // Always a path after the port: digits glued to it would make a port AsyncHTTPClient traps on.
            let path = mutator.shortString(from: paths).filter { !$0.isWhitespace && $0.isASCII }
            var request = HTTPClientRequest(url: base + (sent % 25 == 0 ? callbackPath : path.hasPrefix("/") ? path : "/" + path))
            request.method = sent % 25 == 0 ? .POST : methods.randomElement(using: &mutator)!
            request.headers.add(name: "Content-Type", value: ["application/json", "text/plain", "multipart/form-data; boundary=x"].randomElement(using: &mutator)!)
            if request.method == .POST || request.method == .PUT {
                let input = mutator.input()
                // Every 25th request is a callback over the 1 MiB limit, behind the right secret.
                request.body = .bytes(ByteBuffer(bytes: sent % 25 == 0 ? input + [UInt8](repeating: 0x20, count: 2 << 20) : input))
            }
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                _ = try? await response.body.collect(upTo: 1 << 20)
                statuses[UInt(response.status.code), default: 0] += 1
            } catch {
                refusedByTheClient += 1
            }
        }
        print("fuzzed the callback receiver with \(statuses.values.reduce(0, +)) requests in \(budget): \(statuses.sorted { $0.key < $1.key }), \(refusedByTheClient) refused by the client (DETECTQ_FUZZ_SEED=\(mutator.seed))")
        #expect(statuses.keys.allSatisfy { $0 < 500 }, "no request makes the receiver fail: \(statuses)")
        #expect(statuses.values.reduce(0, +) > 200)
        #expect(statuses[404, default: 0] > 0 && statuses[413, default: 0] > 0)
        #expect(statuses[202, default: 0] > 0, "bodies reached the receiver behind the right secret")
        #expect(refusedByTheClient < statuses.values.reduce(0, +) / 2, "most requests reached the receiver")
        #expect(try await harness.row(waiting).decode("state", as: String.self) == "awaiting_result",
                "a forged body changes nothing, even with the right secret: the API still says processing")
        let health = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/healthz"), timeout: .seconds(10))
        #expect(health.status == .ok, "the worker is still up")
        await worker.stop()
        await harness.stop()
    }
}
