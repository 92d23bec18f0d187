@testable import DetectQueue
import DetectSimulator
import DetectqTestSupport
import Foundation
import Logging
import ResembleDetect
import Testing

/// The worker's policy for the API's refusals (REFERENCE.md section 6), on the in-memory stores: a real
/// `RequestProcessor` and `ResultPoller` against the simulator, no database. Each test takes milliseconds, or
/// the second a throttle's pause lasts.
@Suite("The error policy, in memory", .stopsWhatItStarts)
struct ErrorPolicyTests {
    /// One worker's policy on in-memory stores, against a simulator of its own.
    struct Policy {
        let simulator: DetectSimulator
        let store: any RequestStorage
        let pauses = InMemoryPauses()
        let processor: RequestProcessor
        let poller: ResultPoller

        init(
            simulator configuration: SimulatorConfiguration = .init(latency: .milliseconds(5)), environment: [String: String] = [:],
            store: any RequestStorage = InMemoryRequestStore()
        ) async throws {
            self.store = store
            simulator = try await DetectSimulator.startForTest(configuration: configuration)
            let settings = [
                "DATABASE_URL": "postgresql://127.0.0.1:1/unused", "RESEMBLE_BASE_URL": simulator.baseURL, "DETECTQ_WORKER_ID": "policy",
                "DETECTQ_POLL_INTERVAL": "0.05", "DETECTQ_RETRY_BASE_SECONDS": "0.05", "DETECTQ_RETRY_MAX_SECONDS": "0.1",
                "DETECTQ_CREDIT_RECHECK_SECONDS": "60",
            ]
            let configuration = try WorkerConfiguration.fromEnvironment(settings.merging(environment) { $1 })
            let client = DetectClient(configuration: configuration.api)
            TestResources.stopAtEnd { try? await client.shutdown() }
            let budget = APIBudget(slots: InMemorySlots(pauses: pauses), pauses: pauses, ratePerSecond: 1_000)
            processor = RequestProcessor(
                store: store, client: client, budget: budget, configuration: configuration,
                postProcessing: PostProcessingHandOff(processors: []) { _, _, _ in },
                pause: WorkerPause(), gate: SubmissionGate(pause: pauses, recheck: configuration.creditRecheck),
                installation: "policy", logger: Logger(label: "detectq.policy-test")
            )
            poller = ResultPoller(processor: processor)
        }

        /// Enqueues a request for `url` and runs one attempt of it; returns its id and how the attempt ended.
        func attempt(_ url: String, intelligence: Bool = false, waitMode: String = "sync") async throws -> (Int, RequestProcessor.Ending) {
            var new = NewRequest(media: .url(url))
            new.intelligence = intelligence
            new.waitMode = waitMode
            let id = try await store.enqueue([new])[0]
            return (id, try await again(id))
        }

        /// Claims request `id` and runs one attempt of it.
        func again(_ id: Int) async throws -> RequestProcessor.Ending {
            let claimed = try await store.claim(workerID: "policy", limit: 100, lease: .seconds(30))
            let request = try #require(claimed.first { $0.id == id })
            return await processor.process(request) { false }
        }

        /// A quick simulator, changed by `change`.
        static func simulator(_ change: (inout SimulatorConfiguration) -> Void) -> SimulatorConfiguration {
            var configuration = SimulatorConfiguration(latency: .milliseconds(5))
            change(&configuration)
            return configuration
        }

        func stored(_ id: Int) async throws -> StoredRequest {
            try #require(try await store.stored(id: id))
        }
    }

    @Test func outOfCreditPausesSubmittingSpendsNoAttemptAndTheProbeResumes() async throws {
        let policy = try await Policy(simulator: Policy.simulator { $0.outOfCredit = true })
        let (id, ending) = try await policy.attempt("https://cdn.example.com/credit.wav")
        #expect(ending == .released, "given back")
        let given = try await policy.stored(id)
        #expect(given.state == .queued && given.attempt == 0, "given back, its attempt unspent")
        #expect(try await policy.pauses.current().map(\.kind) == [.outOfCredit])
        #expect(try await policy.processor.gate.current() == .closed, "no submission until the probe is due")
        await policy.simulator.state.setOutOfCredit(false)
        let request = try #require(try await policy.store.claim(workerID: "policy", limit: 1, lease: .seconds(30)).first)
        #expect(await policy.processor.process(request, probe: true) { false } == .recorded)
        #expect(try await policy.stored(id).state == .completed)
        #expect(try await policy.pauses.current().isEmpty, "the accepted probe ends the pause")
    }

    @Test func aForbiddenProductFailsOnlyTheRequestThatAsksForIt() async throws {
        let policy = try await Policy(simulator: Policy.simulator { $0.forbiddenProducts = ["intelligence"] })
        let (asking, _) = try await policy.attempt("https://cdn.example.com/asks.wav", intelligence: true)
        let (plain, _) = try await policy.attempt("https://cdn.example.com/plain.wav")
        let failed = try await policy.stored(asking)
        #expect(failed.state == .failed && failed.errorMessage?.contains("intelligence") == true && failed.errorMessage?.contains("403") == true)
        #expect(try await policy.stored(plain).state == .completed)
        #expect(policy.processor.pause.currentReason == nil, "a product refused is no refused token: the worker goes on")
    }

    @Test func aThrottleWithoutRetryAfterPausesEveryCallAndSpendsNoAttempt() async throws {
        let policy = try await Policy(simulator: Policy.simulator { $0.throttled = true })
        let attempt = Task { try await policy.attempt("https://cdn.example.com/throttled.wav") }
        try await waitUntil("the 429 sets the shared pause") { try await policy.pauses.isRateLimited() }
        let pause = try #require(try await policy.pauses.current().first)
        #expect(pause.kind == .rateLimited && pause.reason.contains("without Retry-After"))
        await policy.simulator.state.setThrottled(false)
        let (id, ending) = try await attempt.value
        #expect(ending == .recorded)
        let stored = try await policy.stored(id)
        #expect(stored.state == .completed && stored.attempt == 1, "the 429s spent no attempt")
        #expect(await policy.simulator.state.snapshot().submissions == 1)
    }

    @Test func aThrottleWithRetryAfterPausesForIt() async throws {
        let policy = try await Policy(simulator: .init(
            latency: .milliseconds(5), faults: .init(rateLimitRate: 1, retryAfterSeconds: 1, endpoints: ["POST /detect"])
        ))
        let attempt = Task { try await policy.attempt("https://cdn.example.com/retry-after.wav") }
        try await waitUntil("the 429 sets the shared pause") { try await policy.pauses.isRateLimited() }
        let pause = try #require(try await policy.pauses.current().first)
        #expect(pause.reason.contains("Retry-After 1 s") && (pause.until ?? .distantPast) > pause.pausedAt.addingTimeInterval(0.9))
        await policy.simulator.state.setFaults(.none)
        let (id, _) = try await attempt.value
        let stored = try await policy.stored(id)
        #expect(stored.state == .completed && stored.attempt == 1)
    }

    @Test func aLostAnswerIsFoundAndAdoptedNotSubmittedAgain() async throws {
        let policy = try await Policy(simulator: .init(
            latency: .milliseconds(5), faults: .init(lostResponseRate: 1, endpoints: ["POST /detect"])
        ))
        let (id, _) = try await policy.attempt("https://cdn.example.com/lost.wav")
        let lost = try await policy.stored(id)
        #expect(lost.state == .retrying && lost.remoteUUID == nil && lost.unansweredSince != nil, "\(lost)")
        await policy.simulator.state.setFaults(.none)
        try await waitUntil("the retry is due") { try await policy.stored(id).runAt <= Date() }
        _ = try await policy.again(id)
        let adopted = try await policy.stored(id)
        #expect(adopted.state == .awaitingResult && adopted.remoteUUID != nil, "\(adopted)")
        #expect(await policy.simulator.state.snapshot().submissions == 1, "found, not paid for twice")
    }

    @Test func aResultThatNeverComesFailsAtItsTimeoutNamingTheDetection() async throws {
        let policy = try await Policy(environment: ["DETECTQ_RESULT_TIMEOUT": "1"])
        let (id, _) = try await policy.attempt("https://cdn.example.com/never-finishes.wav", waitMode: "poll")
        let accepted = try await policy.stored(id)
        #expect(accepted.state == .awaitingResult)
        try await waitUntil("the result times out") {
            _ = try await policy.poller.pollDue(limit: 10)
            return try await policy.stored(id).state == .failed
        }
        let failed = try await policy.stored(id)
        #expect(failed.errorMessage?.contains(try #require(accepted.remoteUUID)) == true && failed.errorMessage?.contains("DETECTQ_RESULT_TIMEOUT") == true)
    }

    @Test func aDatabaseOutageBeforeAnythingIsSentSpendsNoAttempt() async throws {
        // The database goes away as the attempt marks its submission, and stays away for the first two tries of
        // giving the claim back.
        let store = OutageStore { call, refusedBefore in
            switch call {
            case .markSubmitStarted: refusedBefore == 0
            case .apply(.released): refusedBefore < 3
            default: false
            }
        }
        let policy = try await Policy(environment: ["DETECTQ_CALLBACK_URL": "http://127.0.0.1:9/detectq"], store: store)
        let (id, ending) = try await policy.attempt("https://cdn.example.com/outage-before.wav", waitMode: "callback")
        #expect(ending == .released)
        #expect(store.refusedCalls == 3, "the claim was given back once the database answered")
        let given = try await policy.stored(id)
        #expect(given.state == .queued && given.attempt == 0 && given.errorMessage == nil, "\(given)")
        #expect(await policy.simulator.state.snapshot().submissions == 0)
        #expect(try await policy.again(id) == .recorded)
        let sent = try await policy.stored(id)
        // Accepted, and on a loaded machine perhaps answered done already: the simulator's 5 ms detection can finish
        // before its answer to the submission is written.
        #expect([.awaitingResult, .completed].contains(sent.state) && sent.attempt == 1, "the next claim sends it, as its first attempt: \(sent)")
        #expect(await policy.simulator.state.snapshot().submissions == 1)
    }

    @Test func anAnswerTheDatabaseWouldNotTakeSpendsTheAttemptAndIsFoundNotSentAgain() async throws {
        // The database refuses the acceptance for longer than a lease (through every try), then comes back.
        let refusing = OutageStore { call, _ in
            if case .apply(.accepted) = call { return true }
            return false
        }
        let policy = try await Policy(environment: ["DETECTQ_LEASE_SECONDS": "0.4"], store: refusing)
        let (id, ending) = try await policy.attempt("https://cdn.example.com/outage-after.wav", waitMode: "poll")
        #expect(ending == .recorded)
        #expect(refusing.refusedCalls >= 2, "the acceptance was asked again through the outage")
        let spent = try await policy.stored(id)
        #expect(spent.state == .retrying && spent.attempt == 1 && spent.unansweredSince != nil, "the attempt is spent, its answer owed: \(spent)")
        #expect(spent.errorMessage?.contains("could not store what the API answered") == true, "\(spent.errorMessage ?? "")")
        try await waitUntil("the retry is due") { try await policy.stored(id).runAt <= Date() }
        _ = try await policy.again(id)
        let adopted = try await policy.stored(id)
        #expect(adopted.state == .awaitingResult && adopted.remoteUUID != nil, "\(adopted)")
        #expect(await policy.simulator.state.snapshot().submissions == 1, "found, not paid for twice")
    }
}
