import ArgumentParser
import DetectSimulator
import Foundation

/// `detectq simulate --port P`: the built-in simulator of the Detect API, for demos and tests.
struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the built-in simulator of the Resemble Detect API on loopback.",
        discussion: """
            Serves http://127.0.0.1:<port>/api/v2. When RESEMBLE_API_TOKEN is set, every request must carry it as a \
            bearer token. Media whose URL contains "fake", or whose bytes contain "FAKE", is judged fake; a URL with \
            "unreadable-label" completes with labels no reader can act on, "detection-fails" fails, "never-finishes" \
            stays processing. --throttled, --not-found-reads, --team-traffic and --out-of-credit play the API's \
            sustained trouble for a whole run.
            """
    )

    @Option(help: "The loopback port to listen on (0 picks a free one).")
    var port: Int = 8787

    @Option(help: "Seconds a detection takes to process.", transform: SecondsOption.parser("--latency", in: .zero...day))
    var latency: Duration = .zero

    @Option(help: "Seconds after the detection that an intelligence report completes.", transform: SecondsOption.parser("--intelligence-delay", in: .zero...day))
    var intelligenceDelay: Duration = .zero

    @Option(help: "Seconds after completion that a zero-retention file is purged.", transform: SecondsOption.parser("--purge-delay", in: .zero...day))
    var purgeDelay: Duration = .seconds(1)

    private static let day = Duration.seconds(86_400)

    @Option(help: "Probability (0-1) of answering 503.")
    var errorRate: Double = 0

    @Option(help: "Probability (0-1) of answering 429 with Retry-After.")
    var rateLimitRate: Double = 0

    @Option(help: "Retry-After seconds sent with an injected 429.")
    var retryAfter: Int = 1

    @Option(help: "Probability (0-1) of cutting the connection before handling a request.")
    var dropRate: Double = 0

    @Option(help: "Probability (0-1) of handling a request but cutting the connection before the response.")
    var lostResponseRate: Double = 0

    @Option(help: "Probability (0-1) that a callback is never sent.")
    var lostCallbackRate: Double = 0

    @Option(help: "Probability (0-1) that a callback is sent twice.")
    var duplicateCallbackRate: Double = 0

    @Option(help: "Seed for the fault dice, to repeat a run.")
    var seed: UInt64?

    @Flag(help: "Answer every submission 402, as an account out of credit does.")
    var outOfCredit = false

    @Flag(help: "Answer every request 429 with no Retry-After, as a sustained throttle does.")
    var throttled = false

    @Option(help: "How many reads of each detection GET /detect/{uuid} answers 404 before it finds it (the API lagging).")
    var notFoundReads = 0

    @Option(help: "Detections a second that the team's other services create, shown in List Detects beside ours (a busy team).")
    var teamTraffic: Double = 0

    @Option(help: "An optional product the key may not use (intelligence, audio_source_tracing, use_reverse_search, use_ood_detector): submissions asking for it get 403. Repeatable.")
    var forbiddenProduct: [String] = []

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be from 0 to 65535") }
        for (name, value) in [("--error-rate", errorRate), ("--rate-limit-rate", rateLimitRate), ("--drop-rate", dropRate),
                              ("--lost-response-rate", lostResponseRate),
                              ("--lost-callback-rate", lostCallbackRate), ("--duplicate-callback-rate", duplicateCallbackRate)]
        where !(0...1).contains(value) {
            throw ValidationError("\(name) must be a probability from 0 to 1")
        }
        let products: Set = ["intelligence", "audio_source_tracing", "use_reverse_search", "use_ood_detector"]
        if let unknown = forbiddenProduct.first(where: { !products.contains($0) }) {
            throw ValidationError("--forbidden-product \(unknown) is not one of \(products.sorted().joined(separator: ", "))")
        }
        guard (0...1_000).contains(notFoundReads) else { throw ValidationError("--not-found-reads must be from 0 to 1000") }
        guard (0...1_000).contains(teamTraffic) else { throw ValidationError("--team-traffic must be from 0 to 1000 detections a second") }
        guard (0...86_400).contains(retryAfter) else { throw ValidationError("--retry-after must be a whole number of seconds from 0 to 86400") }
    }

    func run() async throws {
        let token = ProcessInfo.processInfo.environment["RESEMBLE_API_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        var configuration = SimulatorConfiguration(
            requiredToken: token, latency: latency, intelligenceDelay: intelligenceDelay, purgeDelay: purgeDelay,
            faults: FaultInjection(
                serverErrorRate: errorRate, rateLimitRate: rateLimitRate, retryAfterSeconds: retryAfter, dropRate: dropRate,
                lostResponseRate: lostResponseRate, lostCallbackRate: lostCallbackRate, duplicateCallbackRate: duplicateCallbackRate
            ),
            seed: seed
        )
        configuration.outOfCredit = outOfCredit
        configuration.throttled = throttled
        configuration.notFoundReads = notFoundReads
        configuration.teamTraffic = teamTraffic
        configuration.forbiddenProducts = Set(forbiddenProduct)
        try await DetectSimulator.run(port: port, configuration: configuration) { port in
            let line = "detectq simulator listening on http://127.0.0.1:\(port)/api/v2"
                + (token == nil ? " (no token required)" : " (bearer token required)") + "\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
    }
}
