import ArgumentParser
import DetectQueue
import EmbeddedPostgres
import Foundation
import Logging
import QueueBenchmarks
import ServiceLifecycle

/// `detectq bench`: every benchmark scenario in one run, each beside its reference, as one table and a line
/// of ratios. It starts what it needs: a throwaway PostgreSQL cluster unless `DATABASE_URL` is set, the
/// simulator in process, and worker processes of this same executable.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure detectq: queue core against bare SQL and PgQueuer, HTTP, in-flight, rate limit, uploads, latency.",
        discussion: "Build with -c release first (scripts/bench.sh does). Scenarios: " + BenchmarkRun.scenarioNames.joined(separator: ", ") + "."
    )

    @Option(help: "Comma-separated scenarios to run (default: all).") var only: String?

    @Option(help: "Scale every scenario's size (1 is full size; 0.1 for a quick look).") var scale = 1.0

    @Option(help: "PgQueuer's benchmark runner.") var pgqueuerScript = "benchmarks/pgqueuer.sh"

    func validate() throws {
        guard scale > 0, scale <= 1 else { throw ValidationError("--scale must be more than 0 and at most 1") }
        let unknown = chosen.subtracting(BenchmarkRun.scenarioNames)
        guard unknown.isEmpty else { throw ValidationError("unknown scenarios: \(unknown.sorted().joined(separator: ", "))") }
    }

    private var chosen: Set<String> {
        Set((only ?? BenchmarkRun.scenarioNames.joined(separator: ",")).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
    }

    func run() async throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-bench-\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        var cluster: ThrowawayPostgresCluster?
        let server: String
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty {
            server = url
        } else {
            let started = try await ThrowawayPostgresCluster.start(countsStatements: true)
            cluster = started
            server = started.connectionString
        }
        print(Self.machine())
        print("worker logs: \(logs.path)\n")
        print(BenchmarkRun.table([]))
        fflush(nil)
        let script = URL(fileURLWithPath: pgqueuerScript)
        let run = BenchmarkRun(
            scenarios: Scenarios(context: BenchContext(serverURI: server, executable: executable, logDirectory: logs), scale: scale),
            only: chosen, pgQueuerScript: FileManager.default.isExecutableFile(atPath: script.path) ? script : nil
        )
        do {
            let rows = try await run.run { row in
                print(BenchmarkRun.line(row))
                fflush(nil)
            }
            print("\n" + BenchmarkRun.ratios(rows))
        } catch {
            FileHandle.standardError.write(Data("detectq bench: \(error)\n".utf8))
            await cluster?.destroy()
            throw ExitCode.failure
        }
        await cluster?.destroy()
    }

    /// The machine, for the results' heading.
    static func machine() -> String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }?.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let memory = ProcessInfo.processInfo.physicalMemory / (1 << 30)
        return "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(memory) GiB"
    }
}

/// `detectq bench-worker`: `detectq worker` (the same post-processors and logging) with a Detect API that
/// answers instantly in process, for the queue-core benchmark: end to end differs from it by HTTP alone.
/// Hidden: it is no use outside `detectq bench`.
struct BenchWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-worker", abstract: "A worker with an instant in-process API (for detectq bench).", shouldDisplay: false
    )

    func run() async throws {
        let configuration: WorkerConfiguration
        let postProcessors: [any PostProcessor]
        do {
            configuration = try WorkerConfiguration.fromEnvironment()
            postProcessors = try WorkerCommand.postProcessors()
        } catch {
            FileHandle.standardError.write(Data("detectq bench-worker: \(error)\n".utf8))
            throw ExitCode.failure
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "detectq.bench-worker")
        let worker = Worker(configuration: configuration, postProcessors: postProcessors, logger: logger, api: InstantDetectAPI())
        try await ServiceGroup(configuration: .init(services: [worker], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)).run()
    }
}
