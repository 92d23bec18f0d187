import ArgumentParser
import ChaosRunner
import Foundation
import TextEncodings

/// `detectq chaos`: kills, restarts and starves every part while requests flow, then checks the invariants.
struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Run the chaos suite: faults while requests flow through worker processes, then the invariants.",
        discussion: """
            Starts a throwaway PostgreSQL cluster, the simulator, an alert sink and worker processes of this \
            executable. While requests flow it kills workers with SIGKILL, restarts PostgreSQL (fast and immediate), \
            makes the API slow, drop connections, answer 503/429, lose answers after billing, run out of credit \
            (402), throttle every request (429 with no Retry-After) and lose or duplicate callbacks, fills List \
            Detects with the team's other detections, and makes the alert sink fail; every tenth request plays one of \
            the API's hard cases (a fake audio track under a real picture, a failed or never-ending detection, a \
            product the key may not use). Then it lets the queue drain and checks that nothing was lost, stuck, \
            submitted twice after its remote_uuid, adopted from other media, left unalerted, ended otherwise than \
            REFERENCE.md section 6 promises, or logged that must not be. Exits 1 if an invariant broke.
            """
    )

    @Option(help: "Seconds of faults (the drain comes after).") var duration: Int = 90
    @Option(help: "Worker processes.") var workers: Int = 3
    @Option(help: "Seconds between two faults.", transform: SecondsOption.parser("--fault-interval", in: .seconds(1)...(.seconds(86_400))))
    var faultInterval: Duration = .seconds(4)
    @Option(help: "Requests inserted per second.") var rate: Double = 5
    @Option(help: "Detections a second the team's other services create throughout the run (List Detects beside ours); the busy-team phases raise it to at least 40.")
    var teamTraffic: Double = 0
    @Option(help: "Seed of the request mix, the fault order and the API's dice (default: random).") var seed: UInt64?
    @Flag(help: "Print the report as JSON on standard output (progress goes to standard error).") var json = false

    func validate() throws {
        guard (1...31_536_000).contains(duration) else { throw ValidationError("--duration must be a whole number of seconds from 1 to 31536000") }
        guard (1...32).contains(workers) else { throw ValidationError("--workers must be from 1 to 32") }
        guard rate >= 0.01 && rate <= 200 else { throw ValidationError("--rate must be from 0.01 to 200 requests per second") }
        guard (0...1_000).contains(teamTraffic) else { throw ValidationError("--team-traffic must be from 0 to 1000 detections a second") }
    }

    func run() async throws {
        let json = json
        let options = ChaosOptions(
            duration: .seconds(duration), workers: workers, seed: seed ?? UInt64.random(in: 1 ... .max),
            faultInterval: faultInterval, requestInterval: .microseconds(Int64(1_000_000 / rate)), teamTraffic: teamTraffic
        )
        let run = ChaosRun(options: options, executable: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()) { line in
            (json ? FileHandle.standardError : FileHandle.standardOutput).write(Data((line + "\n").utf8))
        }
        let report = try await run.run()
        if json {
            FileHandle.standardOutput.write(try JSONText.encoder(pretty: true).encode(report) + Data("\n".utf8))
        } else {
            print(report.text)
        }
        if !report.allHeld { throw ExitCode.failure }
    }
}
