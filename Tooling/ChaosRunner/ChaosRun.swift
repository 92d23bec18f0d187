import DetectSimulator
import EmbeddedPostgres
import Foundation
import Postgres
import SchemaMigrations

/// How long and how hard a chaos run goes.
package struct ChaosOptions: Sendable {
    /// How long faults are injected while requests flow; the drain comes after.
    package var duration: Duration
    package var workers: Int
    /// Seeds the request mix, the fault order and the simulator's dice.
    package var seed: UInt64
    /// The time between two faults; a phase fault lasts two of these.
    package var faultInterval: Duration
    /// The time between two inserted requests.
    package var requestInterval: Duration
    /// `DETECTQ_LEASE_SECONDS` of the workers.
    package var leaseSeconds: Int
    /// How long the queue may take to drain once the faults stop.
    package var drainTimeout: Duration
    /// `DETECTQ_RESULT_TIMEOUT` of the workers: what ends the never-finishing hard cases. Long enough that
    /// no ordinary request, however the faults delay it, comes near it.
    package var resultTimeout: Duration
    /// Detections a second the team's other services create throughout the run, in List Detects beside ours.
    package var teamTraffic: Double

    package init(
        duration: Duration, workers: Int = 3, seed: UInt64, faultInterval: Duration = .seconds(4),
        requestInterval: Duration = .milliseconds(200), leaseSeconds: Int = 6, drainTimeout: Duration = .seconds(300),
        resultTimeout: Duration = .seconds(60), teamTraffic: Double = 0
    ) {
        self.duration = duration
        self.workers = workers
        self.seed = seed
        self.faultInterval = faultInterval
        self.requestInterval = requestInterval
        self.leaseSeconds = leaseSeconds
        self.drainTimeout = drainTimeout
        self.resultTimeout = resultTimeout
        self.teamTraffic = teamTraffic
    }
}

/// A chaos run: a throwaway PostgreSQL cluster, the simulator in this process, an alert sink, and worker
/// processes of the `detectq` executable, with requests flowing while faults are injected one after
/// another; then the faults stop, the queue drains, and the invariants are checked.
package struct ChaosRun: Sendable {
    let options: ChaosOptions
    let executable: URL
    let say: @Sendable (String) -> Void

    package init(options: ChaosOptions, executable: URL, say: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.executable = executable
        self.say = say
    }

    /// The simulator's base latency, outside the slow phases.
    static let baseLatency = Duration.milliseconds(300)
    /// Detections a second the team's other services create while the busy-team phase is on: the API's rate.
    static let busyTeamRate = 40.0
    /// The most intervals a phase that has injected nothing is kept on past its own two.
    static let maximumExtensions = 4

    package func run() async throws -> ChaosReport {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-chaos-\(UUID().uuidString.prefix(8).lowercased())")
        let mediaRoot = work.appendingPathComponent("media")
        let logs = work.appendingPathComponent("logs")
        for directory in [mediaRoot, logs] { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }
        let token = "chaos-token-" + UUID().uuidString
        let webhookSecret = "chaos-webhook-" + UUID().uuidString

        let cluster = try await ReplicatedPostgres.start(durableCommits: true)
        let database = PostgresConfiguration(connectionString: cluster.connectionString, applicationName: "detectq chaos")
        _ = try await MigrationRunner(configuration: database).migrate()
        var api = SimulatorConfiguration(
            requiredToken: token, latency: Self.baseLatency, intelligenceDelay: .seconds(1), purgeDelay: .seconds(1),
            faults: Fault.simulatorFaults(active: []), seed: options.seed,
            storageDirectory: work.appendingPathComponent("simulator")
        )
        api.forbiddenProducts = [HardCase.forbiddenProductName]
        api.teamTraffic = options.teamTraffic
        let simulator = try await DetectSimulator.start(configuration: api)
        let ledger = try await AlertLedger.start(secret: webhookSecret)
        let fleet = WorkerFleet(executable: executable, environment: [
            "DATABASE_URL": cluster.connectionString, "RESEMBLE_API_TOKEN": token, "RESEMBLE_BASE_URL": simulator.baseURL,
            "DETECTQ_MEDIA_ROOT": mediaRoot.path, "DETECTQ_CONCURRENCY": "16", "DETECTQ_LEASE_SECONDS": "\(options.leaseSeconds)",
            "DETECTQ_CALLBACK_TIMEOUT": "8", "DETECTQ_POLL_INTERVAL": "1", "DETECTQ_RETRY_BASE_SECONDS": "0.5",
            "DETECTQ_API_RATE_LIMIT": "100", "DETECTQ_SHUTDOWN_GRACE_SECONDS": "5",
            "DETECTQ_RESULT_TIMEOUT": "\(Int(options.resultTimeout.seconds))", "DETECTQ_CREDIT_RECHECK_SECONDS": "2",
            "DETECTQ_ALERT_WEBHOOK_URL": ledger.url, "DETECTQ_ALERT_WEBHOOK_SECRET": webhookSecret,
        ], logDirectory: logs)
        let pool = PostgresConnectionPool(configuration: database, maximumConnections: 4)
        try await QueueLanes.configure(pool)
        let producer = Producer(pool: pool, mediaRoot: mediaRoot, seed: options.seed)
        let monitor = LeaseMonitor(pool: pool, fleet: fleet)

        var report = ChaosReport()
        report.seed = options.seed
        report.workers = options.workers
        let started = ContinuousClock.now
        var background: [Task<Void, Never>] = []
        var pausing: Task<QueueLanes.PauseWindow?, Never>?
        do {
            for _ in 0..<options.workers { try await fleet.spawn() }
            say("chaos: \(options.workers) workers, simulator on \(simulator.baseURL), PostgreSQL primary on port \(await cluster.primary.port) "
                + "and its standby on \(await cluster.standby.port); "
                + "faults for \(options.duration), one every \(options.faultInterval)")
            let producing = Task { await producer.run(interval: options.requestInterval) }
            let monitoring = Task { await monitor.run() }
            // One lane is paused for a fifth of the faults' time, from a third of the way in.
            pausing = Task { [duration = options.duration] in
                await QueueLanes.pauseOnce(pool, after: duration * 0.3, for: max(duration * 0.2, .seconds(3)))
            }
            background = [producing, monitoring]
            let injected = try await injectFaults(cluster: cluster, simulator: simulator, ledger: ledger, fleet: fleet, monitor: monitor, started: started)
            report.faults = injected.counts
            if let lastFailover = injected.failovers.last {
                await awaitClaim(after: lastFailover, pool: pool)
            }
            producing.cancel()
            await producing.value
            let pauseWindow = await pausing?.value
            await simulator.state.setFaults(.none)
            await simulator.state.setOutOfCredit(false)
            await simulator.state.setThrottled(false)
            await simulator.state.setTeamTraffic(options.teamTraffic)
            await simulator.state.setLatency(Self.baseLatency)
            await ledger.setFailureRate(0)
            say("chaos: faults stopped at \(Int((ContinuousClock.now - started).seconds)) s; draining")
            try await drain(pool: pool, fleet: fleet, started: started)
            monitoring.cancel()
            await monitoring.value
            await fleet.stopAll(grace: .seconds(15))
            report.seconds = (ContinuousClock.now - started).seconds

            let stats = await simulator.state.snapshot()
            let deliveries = await ledger.deliveries()
            let produced = await producer.figures
            let exits = await fleet.unexpectedExits
            report.injected = [
                "API 503s": stats.injectedServerErrors, "API 429s": stats.injectedRateLimits,
                "API connections dropped": stats.injectedDrops, "API responses lost after handling": stats.injectedLostResponses,
                "callbacks lost": stats.callbacksLost, "callbacks duplicated": stats.callbacksDuplicated,
                "callbacks that found no worker": stats.callbackFailures,
                "alert deliveries failed by the sink": deliveries.injectedFailures,
                "inserts retried by the producer": produced.insertRetries,
                "cancellations asked": produced.cancellationsAsked, "cancellations applied": produced.cancellationsApplied,
                "workers that exited on their own": exits.count, "requests uploaded from media_path": produced.mediaFiles,
                "requests repeating an earlier one's media and options": produced.duplicates,
                "API submissions answered 402 (out of credit)": stats.creditRefusals,
                "API submissions answered 403 (a product the key may not use)": stats.productRefusals,
                "API requests answered 429 with no Retry-After (throttle phases)": stats.throttledRequests,
                "detections the team's other services created (busy-team phases)": stats.teamDetections,
            ]
            report.hardCases.throttleSeconds = injected.throttledSeconds
            report.hardCases.throttledRequests = stats.throttledRequests
            report.hardCases.teamDetections = stats.teamDetections
            for hardCase in HardCase.allCases {
                report.injected["hard case dealt: \(hardCase.rawValue)"] = produced.hardCases[hardCase, default: 0]
            }
            try await InvariantChecks(
                pool: pool, detectionsByMedia: await simulator.state.detectionsByMedia(), createdAt: await simulator.state.creationTimes(),
                deliveries: deliveries,
                confirmedInserts: produced.confirmed, leases: await monitor.figures, lease: Double(options.leaseSeconds),
                behindLostAnswers: await simulator.state.detectionsBehindLostAnswers(),
                creditWindows: report.faults[Fault.apiOutOfCredit.rawValue, default: 0], creditRefusals: stats.creditRefusals,
                logs: await fleet.logs(),
                secrets: [
                    "the API token": [token], "the webhook secret": [webhookSecret],
                    "callback secrets": await simulator.state.callbackURLs().values.compactMap { $0.split(separator: "/").last.map(String.init) },
                ],
                unexpectedExits: exits, failovers: injected.failovers, pauseWindow: pauseWindow
            ).run(into: &report)
        } catch {
            for task in background { task.cancel() }
            pausing?.cancel()
            await fleet.stopAll(grace: .seconds(5))
            await cleanUp(pool: pool, ledger: ledger, simulator: simulator, cluster: cluster)
            say("chaos: stopped by an error; worker logs kept in \(logs.path)")
            throw error
        }
        await cleanUp(pool: pool, ledger: ledger, simulator: simulator, cluster: cluster)
        if report.allHeld {
            try? FileManager.default.removeItem(at: work)
        } else {
            report.logDirectory = logs.path
        }
        return report
    }

    /// Injects one fault every `faultInterval` until the duration is over, keeping a phase on while it has
    /// injected nothing (up to `maximumExtensions` intervals more); returns the count of each kind, when
    /// each failover's promotion ended, and how long the API throttled in all.
    private func injectFaults(
        cluster: ReplicatedPostgres, simulator: DetectSimulator, ledger: AlertLedger, fleet: WorkerFleet,
        monitor: LeaseMonitor, started: ContinuousClock.Instant
    ) async throws -> (counts: [String: Int], failovers: [Date], throttledSeconds: Double) {
        var failovers: [Date] = []
        var throttled = 0.0
        var random = SeededRandom(seed: options.seed ^ 0x5EED_FA17)
        var deck: [Fault] = []
        var counts: [String: Int] = [:]
        var phases: [Fault: ContinuousClock.Instant] = [:]
        // A throttle stops every API call (and its backoff for up to 8 s after): no phase that needs the API's
        // traffic shares it, or that phase would inject nothing.
        var throttleBusyUntil = started
        // Nor does the alert sink's failing share a phase in which few requests complete (and alert).
        var completionsThinUntil = started
        // What each phase's effect counted when it began, and how many intervals it was kept on for lack of any.
        var injectedBefore: [Fault: Int] = [:]
        var extensions: [Fault: Int] = [:]
        let end = started + options.duration
        var tick = started
        while true {
            tick += options.faultInterval
            guard tick < end else { break }
            try await Task.sleep(until: tick)
            try await fleet.replaceExited()
            let api = await simulator.state.snapshot()
            let sinkFailures = await ledger.deliveries().injectedFailures
            for (fault, phaseEnd) in phases where phaseEnd <= tick {
                guard let now = fault.injected(api: api, sinkFailures: sinkFailures), now == injectedBefore[fault],
                      extensions[fault, default: 0] < Self.maximumExtensions else { continue }
                phases[fault] = tick + options.faultInterval
                extensions[fault, default: 0] += 1
                if fault == .apiThrottled {
                    throttled += (min(end, tick + options.faultInterval) - tick).seconds
                    throttleBusyUntil = tick + options.faultInterval + .seconds(8)
                }
                if fault.thinsCompletions { completionsThinUntil = max(completionsThinUntil, tick + options.faultInterval * 2) }
                say("[\(Int((tick - started).seconds)) s] \(fault.rawValue): nothing injected yet, on for another \(options.faultInterval)")
            }
            phases = phases.filter { $0.value > tick }
            if deck.isEmpty { deck = Fault.deck(using: &random) }
            let fault = Fault.deal(
                from: &deck, throttleBusy: throttleBusyUntil > tick, apiPhaseActive: phases.keys.contains { $0.needsAPITraffic },
                completionsThin: completionsThinUntil > tick, sinkFailing: phases.keys.contains(.sinkFailing)
            )
            if fault == .apiThrottled { throttleBusyUntil = tick + options.faultInterval * 2 + .seconds(8) }
            if fault.thinsCompletions { completionsThinUntil = tick + options.faultInterval * 3 }
            counts[fault.rawValue, default: 0] += 1
            let elapsed = Int((tick - started).seconds)
            switch fault {
            case .workerKilled:
                let running = await fleet.ids
                guard let victim = await monitor.busiest(of: running) ?? running.randomElement(using: &random) else { break }
                let orphaned = await monitor.noteKill(of: victim)
                guard try await fleet.killAndReplace(victim) else {
                    say("[\(elapsed) s] \(victim) exited before it could be killed")
                    break
                }
                say("[\(elapsed) s] killed \(victim) with SIGKILL, holding \(orphaned) leases; started a replacement")
            case .postgresFastRestart, .postgresImmediateRestart:
                let mode: ThrowawayPostgresCluster.ShutdownMode = fault == .postgresFastRestart ? .fast : .immediate
                let primary = await cluster.primary
                try await primary.stopServer(mode)
                try await Task.sleep(for: .milliseconds(Int.random(in: 200...1_500, using: &random)))
                try await primary.startServer()
                say("[\(elapsed) s] restarted PostgreSQL (\(mode.rawValue) shutdown)")
            case .postgresFailover:
                let unavailable = try await cluster.failOver()
                failovers.append(Date())
                say("[\(elapsed) s] failed over: primary stopped, standby on port \(await cluster.primary.port) promoted "
                    + "(\(unavailable.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))) without a primary); "
                    + "a new standby follows it")
            case .apiSlow, .apiDroppingConnections, .apiErrors, .apiLosingAnswers, .apiOutOfCredit, .callbacksLostAndDuplicated, .sinkFailing,
                 .apiThrottled, .busyTeam:
                if fault == .apiThrottled { throttled += (min(end, tick + options.faultInterval * 2) - max(tick, phases[fault] ?? tick)).seconds }
                if phases[fault] == nil {
                    injectedBefore[fault] = fault.injected(api: api, sinkFailures: sinkFailures)
                    extensions[fault] = 0
                }
                phases[fault] = tick + options.faultInterval * 2
                say("[\(elapsed) s] \(fault.rawValue) for \(options.faultInterval * 2)")
            }
            let active = Set(phases.keys)
            await simulator.state.setFaults(Fault.simulatorFaults(active: active))
            await simulator.state.setOutOfCredit(active.contains(.apiOutOfCredit))
            await simulator.state.setLatency(active.contains(.apiSlow) ? .seconds(4) : Self.baseLatency)
            await simulator.state.setThrottled(active.contains(.apiThrottled))
            await simulator.state.setTeamTraffic(active.contains(.busyTeam) ? max(Self.busyTeamRate, options.teamTraffic) : options.teamTraffic)
            await ledger.setFailureRate(active.contains(.sinkFailing) ? 0.6 : 0)
        }
        // The last fault's phase has the run's remaining time.
        try await Task.sleep(until: end)
        return (counts, failovers, throttled)
    }

    /// Keeps the run going (the producer inserting) until some worker has claimed after `failover`, or 30 s
    /// have passed: a failover dealt as the last fault would otherwise leave nothing to claim once the producer
    /// stops, and the failover invariant would have nothing to measure.
    private func awaitClaim(after failover: Date, pool: PostgresConnectionPool) async {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try? await InvariantChecks.firstClaim(after: failover, on: pool)) != nil { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits until every request and post-task has ended, or the drain timeout passes.
    private func drain(pool: PostgresConnectionPool, fleet: WorkerFleet, started: ContinuousClock.Instant) async throws {
        let deadline = ContinuousClock.now + options.drainTimeout
        var lastReport = ContinuousClock.now
        while ContinuousClock.now < deadline {
            try await fleet.replaceExited()
            // (A queue's requests that its daily limit holds until the next UTC day are not waited for.)
            if let row = try? await pool.query("""
                SELECT (SELECT count(*) FROM detectq.requests AS r WHERE state NOT IN ('completed', 'failed', 'cancelled')
                        AND NOT (r.queue = 'metered' AND r.state IN ('queued', 'retrying')
                                 AND (SELECT coalesce(sum(n), 0) FROM detectq.queue_billing
                                      WHERE queue = 'metered' AND day = (now() AT TIME ZONE 'UTC')::date) >= \(QueueLanes.meteredDailyLimit)))::int8
                       AS requests,
                       (SELECT count(*) FROM detectq.post_tasks WHERE state NOT IN ('completed', 'failed'))::int8 AS tasks
                """).first {
                let requests: Int = try row.decode("requests")
                let tasks: Int = try row.decode("tasks")
                if requests == 0 && tasks == 0 { return }
                if ContinuousClock.now - lastReport > .seconds(10) {
                    say("[\(Int((ContinuousClock.now - started).seconds)) s] draining: \(requests) requests and \(tasks) post-tasks unfinished")
                    lastReport = ContinuousClock.now
                }
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        say("chaos: the queue did not drain within \(options.drainTimeout)")
    }

    private func cleanUp(pool: PostgresConnectionPool, ledger: AlertLedger, simulator: DetectSimulator, cluster: ReplicatedPostgres) async {
        await pool.close()
        await ledger.stop()
        await simulator.stop()
        await cluster.destroy()
    }
}

/// Watches the leases of killed workers: how many each kill left behind, and, sampled once a second, how
/// long any of them has stayed expired without being taken over.
actor LeaseMonitor {
    /// What the monitor saw.
    struct Figures: Sendable {
        /// Leases (requests and post-tasks) held by workers at the moment they were killed.
        var orphaned = 0
        var samples = 0
        /// The longest a dead worker's lease stayed expired, in seconds.
        var worstOverdue = 0.0
    }

    private let pool: PostgresConnectionPool
    private let fleet: WorkerFleet
    private(set) var figures = Figures()

    init(pool: PostgresConnectionPool, fleet: WorkerFleet) {
        self.pool = pool
        self.fleet = fleet
    }

    /// The worker among `ids` holding the most leases now (the worst moment for it to die), if any holds one.
    func busiest(of ids: [String]) async -> String? {
        guard let rows = try? await pool.query(PostgresQuery(sql: """
            SELECT locked_by, count(*)::int8 AS n FROM (
                SELECT locked_by FROM detectq.requests WHERE locked_by = ANY($1)
                UNION ALL SELECT locked_by FROM detectq.post_tasks WHERE locked_by = ANY($1)
            ) AS held GROUP BY locked_by ORDER BY n DESC LIMIT 1
            """, parameters: [ids])) else { return nil }
        return try? rows.first?.decode("locked_by", as: String.self)
    }

    /// Counts the leases `worker` holds as it is about to be killed; returns the count.
    func noteKill(of worker: String) async -> Int {
        guard let row = try? await pool.query("""
            SELECT (SELECT count(*) FROM detectq.requests WHERE locked_by = \(worker))
                 + (SELECT count(*) FROM detectq.post_tasks WHERE locked_by = \(worker)) AS n
            """).first, let held = try? row.decode("n", as: Int.self)
        else { return 0 }
        figures.orphaned += held
        return held
    }

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let dead = await fleet.killed
            guard !dead.isEmpty, let row = try? await pool.query(PostgresQuery(sql: """
                SELECT coalesce(max(extract(epoch FROM now() - locked_until)), 0)::float8 AS overdue FROM (
                    SELECT locked_until FROM detectq.requests WHERE locked_by = ANY($1)
                    UNION ALL SELECT locked_until FROM detectq.post_tasks WHERE locked_by = ANY($1)
                ) AS held
                """, parameters: [dead])).first, let overdue = try? row.decode("overdue", as: Double.self)
            else { continue }
            figures.samples += 1
            figures.worstOverdue = max(figures.worstOverdue, overdue)
        }
    }
}
