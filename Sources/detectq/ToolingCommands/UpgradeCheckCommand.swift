import ArgumentParser
import Foundation
import UpgradeCheck

/// `detectq upgrade-check`: a rolling upgrade from a previous release's `detectq` to this one, tried for real.
struct UpgradeCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade-check",
        abstract: "Try a rolling upgrade from a previous release's detectq to this one, with requests in flight.",
        discussion: """
            Starts a throwaway PostgreSQL cluster, the simulator and an alert sink; runs the previous release's \
            migrate and workers with requests in flight; runs this release's migrate beside them; stops them (the \
            first with SIGKILL); then runs this release's workers until everything has finished, and checks that \
            every request completed, no media was billed twice, every post-task completed and the kept counts agree \
            with count(*). scripts/upgrade-check.sh builds the previous release from a git ref and calls this. \
            Exits 1 when a check failed.
            """
    )

    @Option(help: "The previous release's detectq executable.") var previous: String
    @Option(help: "Requests enqueued before the upgrade.") var requests: Int = 90

    func validate() throws {
        guard FileManager.default.isExecutableFile(atPath: previous) else { throw ValidationError("--previous must name an executable file: \(previous)") }
        guard (10...100_000).contains(requests) else { throw ValidationError("--requests must be from 10 to 100000") }
    }

    func run() async throws {
        let check = UpgradeCheck(
            previous: URL(fileURLWithPath: previous), current: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath(),
            options: UpgradeCheckOptions(requests: requests)
        ) { line in
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
        let report = try await check.run()
        print(report.text)
        if !report.passed { throw ExitCode.failure }
    }
}
