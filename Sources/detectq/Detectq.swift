import ArgumentParser

/// The `detectq` command: one executable for every role: migrations, workers, operators' tools, the simulator and the demo.
@main
struct Detectq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detectq",
        abstract: "A PostgreSQL job queue that drives the Resemble Detect API.",
        subcommands: [MigrateCommand.self, RolesCommand.self, WorkerCommand.self, EnqueueCommand.self, StatusCommand.self, ShowCommand.self, RetryCommand.self, CancelCommand.self, PauseCommand.self, ResumeCommand.self, QueueCommand.self, PruneCommand.self, SimulateCommand.self, ConfigCommand.self, DemoCommand.self, ChaosCommand.self, UpgradeCheckCommand.self, DashboardCommand.self, BenchCommand.self, BenchWorkerCommand.self]
    )
}
