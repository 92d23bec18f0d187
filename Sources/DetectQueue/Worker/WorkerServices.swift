import Foundation
import Logging
import ServiceLifecycle

/// The services a worker runs, each named and built from the worker's dependencies, in the order its
/// `ServiceGroup` starts them. The group stops them in the reverse order, each once the one after it has
/// finished: the token recheck and the poller first, then the request claims (they drain for the grace
/// period), the post-task claims, the listener, the rescue and the lease heartbeat (which keeps the in-flight
/// leases alive until then), the HTTP server (callbacks still arrive while claims drain), and the coalesced
/// writers last. The worker announces itself before the group starts, and closes the pool after it ends.
enum WorkerServices {
    /// Every service, in start order, with how the group treats its end: `.ignore` for one that may end
    /// early (the listener, with nothing to listen on); any other ending stops the worker.
    static func all(_ dependencies: WorkerDependencies, http: any Service) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        let writers = dependencies.requests.writers + dependencies.postTasks.writers + dependencies.budget.writers
        return writers.map { .init(service: $0) } + [
            .init(service: http),
            .init(service: leaseHeartbeat(dependencies)),
            .init(service: leaseRescue(dependencies)),
            .init(service: wakeListener(dependencies), successTerminationBehavior: .ignore),
            .init(service: postTaskClaims(dependencies)),
            .init(service: requestClaims(dependencies)),
            .init(service: polling(dependencies)),
            .init(service: tokenRecheck(dependencies)),
        ]
    }

    /// Claims requests while this worker has free slots, and runs each through `RequestProcessor`. Paused
    /// (a refused token, an operator's pause, out of credit) it claims nothing, but for the one probe.
    static func requestClaims(_ dependencies: WorkerDependencies) -> ClaimLoop {
        let (configuration, processor, requests) = (dependencies.configuration, dependencies.processor, dependencies.requests)
        let stopping = dependencies.stopping
        return ClaimLoop(
            slots: dependencies.requestSlots, kind: "requests", concurrency: configuration.concurrency,
            gracePeriod: configuration.shutdownGracePeriod, logger: dependencies.logger, onStop: { stopping.raise() }
        ) { limit in
            guard !processor.pause.isPaused else { return ([], .whenAnnounced) }
            let state = try await processor.gate.current()
            guard state != .closed else { return ([], .whenAnnounced) }
            let probe = state == .probe
            let started = Date()
            let claim = try await requests.claim(
                workerID: configuration.workerID, limit: probe ? 1 : limit, lease: configuration.lease, priorityAging: configuration.priorityAging,
                pacing: ClaimPacing(ratePerSecond: configuration.apiRateLimit)
            )
            let claimed = claim.requests
            let ended = Date()
            for request in claimed {
                RequestTracing.recordSpan(
                    "detectq.claim", requestID: request.id, traceparent: request.traceparent, from: started, to: ended,
                    attributes: [
                        "detectq.worker_id": configuration.workerID, "detectq.attempt": request.attempt, "detectq.claim_batch": claimed.count,
                    ]
                )
            }
            for request in claimed { QueueMetrics.claimed(inQueue: request.queue) }
            return (claimed.map { request in
                (request.id, {
                    // The claim reserved this attempt's first API call's slot of the shared budget.
                    _ = await APIBudget.$granted.withValue(request.apiSlot.map(SlotGrant.init)) {
                        await processor.process(request, probe: probe) { stopping.isRaised }
                    }
                })
            }, claim.claimAgain)
        }
    }

    /// Claims queued post-tasks, and runs the ones a completion handed it, each through `PostTaskRunner`.
    static func postTaskClaims(_ dependencies: WorkerDependencies) -> ClaimLoop {
        let (configuration, postTasks, runner) = (dependencies.configuration, dependencies.postTasks, dependencies.postTaskRunner)
        return ClaimLoop(
            slots: dependencies.postTaskSlots, kind: "post_tasks", concurrency: max(4, configuration.concurrency / 4),
            gracePeriod: configuration.shutdownGracePeriod, logger: dependencies.logger, inbox: dependencies.handedPostTasks, onStop: {}
        ) { limit in
            let claimed = try await postTasks.claim(workerID: configuration.workerID, limit: limit, lease: configuration.lease)
            return (claimed.map { task in (task.id, { await runner.run(task) }) }, .whenAnnounced)
        }
    }

    /// Renews the leases of everything this worker holds, and its row in `detectq.workers`, every third of a lease.
    static func leaseHeartbeat(_ dependencies: WorkerDependencies) -> PeriodicLoop {
        let (configuration, requestSlots, postTaskSlots) = (dependencies.configuration, dependencies.requestSlots, dependencies.postTaskSlots)
        return PeriodicLoop(name: "the lease heartbeat", interval: configuration.lease / 3, logger: dependencies.logger) {
            _ = try await dependencies.requests.heartbeat(workerID: configuration.workerID, ids: requestSlots.ids, lease: configuration.lease)
            _ = try await dependencies.postTasks.heartbeat(workerID: configuration.workerID, ids: postTaskSlots.ids, lease: configuration.lease)
            try await dependencies.registry.heartbeat()
            return false
        }
    }

    /// Takes over the expired leases of requests and post-tasks (says so when there were any), folds the state
    /// counts, and warns of a held-back vacuum horizon, every half lease.
    static func leaseRescue(_ dependencies: WorkerDependencies) -> PeriodicLoop {
        let logger = dependencies.logger
        return PeriodicLoop(
            name: "the lease rescue", interval: max(.seconds(1), dependencies.configuration.lease / 2), jitterMilliseconds: 500, logger: logger
        ) {
            // A stalled worker's send may reach the API up to a lease after its lease ran out (it checked the lease,
            // then stalled): the search for a lost answer waits that long before it looks.
            let report = try await dependencies.requests.rescueExpiredLeases(sendGrace: dependencies.configuration.lease)
            let tasks = try await dependencies.postTasks.rescueExpiredLeases()
            if !report.retrying.isEmpty || !report.failed.isEmpty || !tasks.retrying.isEmpty || !tasks.failed.isEmpty {
                logger.warning("took over expired leases", metadata: [
                    "requests_retrying": "\(report.retrying.count)", "requests_failed": "\(report.failed.count)",
                    "post_tasks_retrying": "\(tasks.retrying.count)", "post_tasks_failed": "\(tasks.failed.count)",
                ])
            }
            try await QueueDepth.foldCounts(dependencies.pool)
            try await warnOfHeldHorizon(dependencies)
            return false
        }
    }

    /// Logs once when a snapshot has held back vacuum for `VacuumHorizon.warningAfter` (claims slow as the claim
    /// index fills with row versions nobody can remove), and once when none does any longer.
    private static func warnOfHeldHorizon(_ dependencies: WorkerDependencies) async throws {
        let horizon = try await VacuumHorizon.read(dependencies.pool)
        switch await dependencies.horizonWatch.transition(horizon) {
        case true?:
            dependencies.logger.warning("a snapshot has held back vacuum for over \(Int(VacuumHorizon.warningAfter)) s: end it (or the transaction holding it)", metadata: [
                "holder": "\(horizon.holder?.description ?? "unknown")", "age_transactions": "\(horizon.ageTransactions)",
                "dead_request_versions": "\(horizon.deadRequestVersions)", "claim_index_bytes": "\(horizon.claimIndexBytes)",
            ])
        case false?:
            dependencies.logger.notice("vacuum's horizon is no longer held back", metadata: ["dead_request_versions": "\(horizon.deadRequestVersions)"])
        case nil:
            break
        }
    }

    /// Wakes the claim loops on `NOTIFY`.
    static func wakeListener(_ dependencies: WorkerDependencies) -> WakeListener {
        WakeListener(
            database: dependencies.configuration.database, listenDatabase: dependencies.configuration.listenDatabase,
            requests: dependencies.requestSlots, postTasks: dependencies.postTaskSlots, logger: dependencies.logger
        )
    }

    /// Polls the accepted requests whose poll is due, through `ResultPoller`.
    static func polling(_ dependencies: WorkerDependencies) -> PeriodicLoop {
        PeriodicLoop(name: "polling", interval: .milliseconds(250), logger: dependencies.logger) {
            try await dependencies.poller.pollDue(limit: 50) > 0
        }
    }

    /// While the API refuses the token, probes it every `DETECTQ_AUTH_RECHECK_SECONDS`, and claims again once
    /// it is accepted.
    static func tokenRecheck(_ dependencies: WorkerDependencies) -> PeriodicLoop {
        PeriodicLoop(name: "the token recheck", interval: dependencies.configuration.authRecheck, logger: dependencies.logger) {
            if await dependencies.authRecheck.probeIfPaused() { dependencies.requestSlots.announceWork() }
            return false
        }
    }
}
