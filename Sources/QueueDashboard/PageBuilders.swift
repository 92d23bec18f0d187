import DetectQueue
import Foundation

/// Turns the overview's figures into its page: state counts that link to the list, the last hour's charts,
/// post-task backlogs and workers.
enum OverviewPageBuilder {
    static func page(_ overview: Overview, chrome: Chrome) -> OverviewPage {
        let states = RequestState.allCases.map { state in
            let count = overview.depth.requests[state] ?? 0
            return StateCount(
                state: state.rawValue, count: Formatting.count(count),
                link: "/dashboard/requests?" + Formatting.query([("state", state.rawValue)]), isZero: count == 0
            )
        }
        let postTaskStates = PostTask.State.allCases.map { state in
            let count = overview.depth.postTasks[state] ?? 0
            return StateCount(state: state.rawValue, count: Formatting.count(count), link: nil, isZero: count == 0)
        }
        let completed = overview.minutes.map { SVGChart.Bar(label: Formatting.minute($0.start), value: $0.completed) }
        let fakes = overview.minutes.map { SVGChart.Bar(label: Formatting.minute($0.start), value: $0.fakes) }
        return OverviewPage(
            chrome: chrome,
            states: states,
            postTaskStates: postTaskStates,
            oldestClaimable: overview.depth.oldestClaimableAge.map(Formatting.age) ?? "nothing waiting",
            completedLastHour: Formatting.count(completed.map(\.value).reduce(0, +)),
            fakesLastHour: Formatting.count(fakes.map(\.value).reduce(0, +)),
            throughputChart: SVGChart.bars(completed, title: "Requests completed per minute, last hour (UTC)", style: "bar"),
            fakesChart: SVGChart.bars(fakes, title: "Fakes found per minute, last hour (UTC)", style: "bar bar-fake"),
            backlogs: overview.backlogs.map { backlog in
                func count(_ state: PostTask.State) -> String { Formatting.count(backlog.counts[state] ?? 0) }
                return OverviewPage.Backlog(
                    processor: backlog.processor, queued: count(.queued), running: count(.running), retrying: count(.retrying),
                    failed: count(.failed), oldest: backlog.oldestDueAge.map(Formatting.age) ?? "",
                    hasFailed: (backlog.counts[.failed] ?? 0) > 0
                )
            },
            workers: overview.workers.map(worker),
            liveWorkers: Formatting.count(overview.workers.filter(\.isLive).count),
            hasBacklogs: !overview.backlogs.isEmpty,
            hasWorkers: !overview.workers.isEmpty,
            pauses: overview.pauses.map { pause in
                OverviewPage.Pause(
                    kind: pause.kind.rawValue, reason: pause.reason, pausedBy: pause.pausedBy ?? "unknown",
                    since: Formatting.time(pause.pausedAt), until: pause.until.map { Formatting.time($0) } ?? "detectq resume"
                )
            },
            hasPauses: !overview.pauses.isEmpty,
            canPause: !chrome.readOnly && !overview.pauses.contains { $0.kind == .operator },
            canResume: !chrome.readOnly && overview.pauses.contains { $0.kind == .operator }
        )
    }

    private static func worker(_ row: Overview.WorkerRow) -> OverviewPage.Worker {
        let registration = row.registration
        let status: (String, String) =
            if registration?.stoppedAt != nil { ("stopped", "muted") }
            else if registration == nil { ("unregistered", "warn") }
            else if row.isLive { ("live", "ok") }
            else { ("silent", "bad") }
        return OverviewPage.Worker(
            workerID: row.workerID,
            host: registration.map { "\($0.host), pid \($0.pid)" } ?? "",
            status: status.0, statusClass: status.1,
            heartbeat: registration.map { Formatting.age($0.heartbeatAge) + " ago" } ?? "",
            started: Formatting.time(registration?.startedAt),
            concurrency: registration.map { String($0.concurrency) } ?? "",
            requestLeases: Formatting.count(row.leases?.requests ?? 0),
            postTaskLeases: Formatting.count(row.leases?.postTasks ?? 0),
            nextExpiry: row.leases.map { $0.nextExpiry >= 0 ? "in " + Formatting.age($0.nextExpiry) : "expired " + Formatting.age(-$0.nextExpiry) + " ago" } ?? ""
        )
    }
}

/// Turns a page of requests and its filters into the list page, with its filter form and page links.
enum RequestListPageBuilder {
    static func page(
        _ page: RequestListPage, filter: RequestListFilter, queues: [String], chrome: Chrome, elapsed: Duration
    ) -> RequestListPageModel {
        func choices(_ values: [String], selected: String?, any: String) -> [Choice] {
            [Choice(value: "", label: any, selected: selected == nil)]
                + values.map { Choice(value: $0, label: $0.replacingOccurrences(of: "_", with: " "), selected: $0 == selected) }
        }
        func link(_ direction: String, _ row: RequestSummary) -> String {
            "/dashboard/requests?" + Formatting.query(filter.queryItems + [(direction, row.cursor.text)])
        }
        let newest = "/dashboard/requests" + (filter.isFiltered ? "?" + Formatting.query(filter.queryItems) : "")
        return RequestListPageModel(
            chrome: chrome,
            states: choices(RequestState.allCases.map(\.rawValue), selected: filter.state?.rawValue, any: "any state"),
            verdicts: choices(RequestListFilter.Verdict.allCases.map(\.rawValue), selected: filter.verdict?.rawValue, any: "any verdict"),
            mediaTypes: choices(RequestListFilter.mediaTypes, selected: filter.mediaType, any: "any media"),
            submitPaths: choices(RequestListFilter.submitPaths, selected: filter.submitPath, any: "any submit path"),
            queues: [Choice(value: "", label: "any queue", selected: filter.queue == nil)]
                + (queues.contains { $0 == filter.queue } || filter.queue == nil ? queues : queues + [filter.queue ?? ""]).map {
                    Choice(value: $0, label: $0, selected: $0 == filter.queue)
                },
            group: filter.group ?? "",
            from: filter.createdFrom.map(RequestListFilter.formInputTime) ?? "",
            to: filter.createdBefore.map(RequestListFilter.formInputTime) ?? "",
            q: filter.text ?? "",
            reason: filter.reason,
            rows: page.rows.map { row($0, filter: filter) },
            isEmpty: page.rows.isEmpty,
            isFiltered: filter.isFiltered,
            newerLink: page.hasNewer ? page.rows.first.map { link("after", $0) } ?? newest : nil,
            olderLink: page.hasOlder ? page.rows.last.map { link("before", $0) } : nil,
            elapsed: String(format: "%.1f ms", elapsed / .milliseconds(1))
        )
    }

    /// A URL as its host and file name, which say more in a narrow column than its path does.
    static func shortMedia(_ media: String) -> String {
        guard let url = URL(string: media), let host = url.host, url.pathComponents.count > 1 else { return media }
        return url.pathComponents.count > 2 ? "\(host)/…/\(url.lastPathComponent)" : "\(host)/\(url.lastPathComponent)"
    }

    private static func row(_ summary: RequestSummary, filter: RequestListFilter) -> RequestListPageModel.Row {
        func narrowed(queue: String, group: String?) -> String {
            var narrower = filter
            narrower.queue = queue
            narrower.group = group
            return "/dashboard/requests?" + Formatting.query(narrower.queryItems)
        }
        return
RequestListPageModel.Row(
            id: summary.id,
            state: summary.state.rawValue,
            media: shortMedia(summary.media),
            mediaTitle: summary.media,
            mediaType: summary.mediaType ?? "",
            submitPath: summary.submitPath?.replacingOccurrences(of: "_", with: " ") ?? "",
            verdict: summary.isFake.map { $0 ? "fake" : "real" } ?? (summary.state == .completed ? "needs review" : nil),
            verdictClass: summary.isFake.map { $0 ? "fake" : "real" } ?? (summary.state == .completed ? "review" : ""),
            score: Formatting.score(summary.score),
            attempts: "\(summary.attempt)/\(summary.maxAttempts)",
            created: Formatting.compactTime(summary.createdAt),
            error: summary.errorMessage.flatMap { $0.isEmpty ? nil : $0 },
            metadata: summary.metadata == "{}" ? "" : summary.metadata,
            queue: summary.queue,
            queueLink: narrowed(queue: summary.queue, group: nil),
            group: summary.groupKey ?? "",
            hasGroup: summary.groupKey != nil,
            groupLink: summary.groupKey.map { narrowed(queue: summary.queue, group: $0) } ?? ""
        )
    }
}

/// Turns failure groups into the failures page, with each group's link to its requests and its actions.
enum FailuresPageBuilder {
    static func page(_ groups: [QueueBreakdown.FailureGroup], chrome: Chrome) -> FailuresPageModel {
        FailuresPageModel(
            chrome: chrome,
            groups: groups.map { group in
                FailuresPageModel.Group(
                    reason: group.reason, failed: group.failed > 0 ? Formatting.count(group.failed) : nil,
                    retrying: group.retrying > 0 ? Formatting.count(group.retrying) : nil,
                    lastSeen: Formatting.time(group.lastSeen),
                    listLink: "/dashboard/requests?" + Formatting.query([("reason", group.reason)]),
                    canRetry: !chrome.readOnly && group.failed > 0, canCancel: !chrome.readOnly && group.retrying > 0
                )
            },
            isEmpty: groups.isEmpty
        )
    }
}

/// Turns the queues' overview into the Queues page: each queue's settings, load, why it waits, its claims per
/// minute, and the actions of `detectq queue set|pause|resume`.
enum QueuesPageBuilder {
    static func page(_ overview: QueuesOverview, chrome: Chrome) -> QueuesPageModel {
        QueuesPageModel(
            chrome: chrome,
            queues: overview.queues.map { queue in
                let settings = queue.settings
                let claims = overview.claims[settings.name] ?? []
                let bars = zip(overview.minutes, claims).map { SVGChart.Bar(label: Formatting.minute($0), value: $1) }
                let status: (String, String) =
                    if settings.pause != nil { ("paused", "bad") }
                    else if !queue.holds.isEmpty { ("waits", "warn") }
                    else if queue.due > 0 { ("claiming", "ok") }
                    else { ("idle", "muted") }
                return QueuesPageModel.Queue(
                    name: settings.name,
                    weight: String(settings.weight),
                    maxInFlight: settings.maxInFlight.map(Formatting.count) ?? "none",
                    groupMaxInFlight: settings.groupMaxInFlight.map(Formatting.count) ?? "none",
                    rateLimit: settings.rateLimit.map { Formatting.rate($0) + " /s" } ?? "none",
                    dailyLimit: settings.dailyLimit.map(Formatting.count) ?? "none",
                    formMaxInFlight: settings.maxInFlight.map(String.init) ?? "",
                    formGroupMaxInFlight: settings.groupMaxInFlight.map(String.init) ?? "",
                    formRateLimit: settings.rateLimit.map(Formatting.rate) ?? "",
                    formDailyLimit: settings.dailyLimit.map(String.init) ?? "",
                    due: Formatting.count(queue.due), inFlight: Formatting.count(queue.inFlight),
                    billedToday: Formatting.count(queue.billedToday),
                    claimsLastHour: Formatting.count(claims.reduce(0, +)),
                    status: status.0, statusClass: status.1,
                    holds: queue.holds.isEmpty
                        ? settings.pause.map { ["Nothing due; " + QueueOverview.Hold.paused($0).description] } ?? []
                        : queue.holds.map { "Waits: " + $0.description },
                    hasHolds: !queue.holds.isEmpty || settings.pause != nil,
                    chart: SVGChart.bars(bars, title: "Requests of \(settings.name) claimed per minute, last hour (UTC)", style: "bar"),
                    listLink: "/dashboard/requests?" + Formatting.query([("queue", settings.name)]),
                    canPause: !chrome.readOnly && settings.pause == nil,
                    canResume: !chrome.readOnly && settings.pause != nil,
                    canChange: !chrome.readOnly
                )
            },
            isEmpty: overview.queues.isEmpty,
            canCreate: !chrome.readOnly
        )
    }
}
