import DetectQueue
import Foundation
import Postgres

/// The overview's figures: the queue's depth, the last hour minute by minute, post-task backlogs and workers.
struct Overview: Sendable {
    /// Completions and fakes in one minute of the last hour.
    struct Minute: Sendable, Hashable {
        var start: Date
        var completed: Int
        var fakes: Int
    }

    /// A worker process as it announced itself in `detectq.workers`.
    struct Registration: Sendable, Hashable {
        var host: String
        var pid: Int
        var concurrency: Int
        var startedAt: Date
        var heartbeatAge: Double
        var stoppedAt: Date?
        var leaseSeconds: Double
    }

    /// A worker: its registration (none for a lease holder that never announced itself, such as a worker
    /// older than migration 0004) and the leases it holds.
    struct WorkerRow: Sendable, Hashable {
        var workerID: String
        var registration: Registration?
        var leases: QueueBreakdown.LeaseHolder?

        /// Live while its heartbeat is younger than its lease, and it has not stopped.
        var isLive: Bool {
            guard let registration, registration.stoppedAt == nil else { return false }
            return registration.heartbeatAge <= registration.leaseSeconds
        }
    }

    var depth: QueueDepth
    var minutes: [Minute]
    var backlogs: [QueueBreakdown.Backlog]
    var workers: [WorkerRow]
    /// The shared pauses in force.
    var pauses: [SharedPause.Entry]
}

/// The Queues page's figures: every queue as `QueueOverview` reads it, and its claims in each minute of the last
/// hour (kept by migration 0018's `detectq.queue_claims`).
struct QueuesOverview: Sendable {
    var queues: [QueueOverview]
    /// The sixty minutes of the charts, oldest first.
    var minutes: [Date]
    /// Each queue's claims, one count per minute of `minutes`.
    var claims: [String: [Int]]
}

/// A request with everything the request page shows: its row, its history, its post-tasks and their
/// attempts, and its archived intelligence. Secrets (`media_token`, the secure-upload token, the callback
/// secret's hash) are not read.
struct RequestDetail: Sendable {
    struct Event: Sendable, Hashable {
        var from: String?
        var to: String
        var at: Date
        var workerID: String?
        var detail: String?
    }

    struct PostTaskRow: Sendable, Hashable {
        var id: Int
        var processor: String
        var state: String
        var attempt: Int
        var maxAttempts: Int
        var lastError: String?
        var runAt: Date
        var completedAt: Date?
        var events: [Event]
    }

    var id: Int
    var state: RequestState
    var mediaURL: String?
    var mediaPath: String?
    var hasMediaToken: Bool
    var options: [(String, String)]
    var waitMode: String
    var priority: Int
    var runAt: Date
    var attempt: Int
    var maxAttempts: Int
    var idempotencyKey: String?
    var metadata: String
    var lockedBy: String?
    var lockedUntil: Date?
    var remoteUUID: String?
    var submitPath: String?
    var mediaType: String?
    var label: String?
    var isFake: Bool?
    var score: Double?
    var result: String?
    var fileDeletedAt: Date?
    var zeroRetention: Bool
    var errorMessage: String?
    var createdAt: Date
    var updatedAt: Date
    var acceptedAt: Date?
    var completedAt: Date?
    var pollCount: Int
    var events: [Event]
    var postTasks: [PostTaskRow]
    var archivedIntelligence: String?
    var archivedAt: Date?
    /// CONTRACT section 9: the media's hash, the request whose verdict this one took, and the one in flight it waits for.
    var mediaSHA256: String?
    var reuseVerdict: Bool
    var reusedFrom: Int?
    var waitingFor: Int?
}

/// The dashboard's reads. Each is a handful of statements on indexed columns.
struct DashboardQueries: Sendable {
    let pool: PostgresConnectionPool

    func overview() async throws -> Overview {
        let depth = try await QueueDepth.read(pool)
        // Grouped by minute first, then joined to the sixty minutes by equality: a join on the time ranges
        // compared every completion of the hour with every minute (181 of 187 ms for 11,000 completions).
        let minuteRows = try await pool.query("""
            SELECT m.start, coalesce(c.completed, 0)::int8 AS completed, coalesce(c.fakes, 0)::int8 AS fakes
            FROM generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()),
                                 interval '1 minute') AS m(start)
            LEFT JOIN (
                SELECT date_trunc('minute', completed_at) AS start, count(*) AS completed, count(*) FILTER (WHERE is_fake) AS fakes
                FROM detectq.requests WHERE completed_at >= date_trunc('minute', now()) - interval '59 minutes'
                GROUP BY 1
            ) AS c ON c.start = m.start
            ORDER BY m.start
            """)
        let minutes = try minuteRows.map {
            Overview.Minute(start: try $0.decode("start"), completed: try $0.decode("completed"), fakes: try $0.decode("fakes"))
        }
        let registrations = try await pool.query("""
            SELECT worker_id, host, pid, concurrency, started_at, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age,
                   stopped_at, lease_seconds
            FROM detectq.workers WHERE stopped_at IS NULL OR stopped_at > now() - interval '1 hour'
            ORDER BY stopped_at IS NOT NULL, heartbeat_at DESC LIMIT 200
            """).map { row in
            (try row.decode("worker_id", as: String.self), Overview.Registration(
                host: try row.decode("host"), pid: try row.decode("pid"), concurrency: try row.decode("concurrency"),
                startedAt: try row.decode("started_at"), heartbeatAge: try row.decode("heartbeat_age"),
                stoppedAt: try row.decode("stopped_at"), leaseSeconds: try row.decode("lease_seconds")
            ))
        }
        let leases = Dictionary(uniqueKeysWithValues: try await QueueBreakdown.leaseHolders(pool).map { ($0.workerID, $0) })
        let registered = Set(registrations.map(\.0))
        let workers = registrations.map { Overview.WorkerRow(workerID: $0.0, registration: $0.1, leases: leases[$0.0]) }
            + leases.values.filter { !registered.contains($0.workerID) }.sorted { $0.workerID < $1.workerID }
                .map { Overview.WorkerRow(workerID: $0.workerID, registration: nil, leases: $0) }
        let backlogs = try await QueueBreakdown.postTaskBacklogs(pool)
        return Overview(depth: depth, minutes: minutes, backlogs: backlogs, workers: workers, pauses: try await SharedPause(pool: pool).current())
    }

    /// The names of every queue, for the request list's filter.
    func queueNames() async throws -> [String] {
        try await pool.query("SELECT name FROM detectq.queues ORDER BY name").map { try $0.decode("name") }
    }

    func queues() async throws -> QueuesOverview {
        let queues = try await QueueOverview.read(pool)
        // The sums of the hour first, then joined to the sixty minutes by equality (as the overview's chart).
        let rows = try await pool.query("""
            SELECT m.start, coalesce(c.queue, '') AS queue, coalesce(c.claims, 0)::int8 AS claims
            FROM generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()),
                                 interval '1 minute') AS m(start)
            LEFT JOIN (
                SELECT queue, minute, sum(n) AS claims FROM detectq.queue_claims
                WHERE minute >= date_trunc('minute', now()) - interval '59 minutes'
                GROUP BY queue, minute
            ) AS c ON c.minute = m.start
            ORDER BY m.start
            """)
        var minutes: [Date] = []
        var counts: [String: [Date: Int]] = [:]
        for row in rows {
            let start: Date = try row.decode("start")
            if minutes.last != start { minutes.append(start) }
            let queue: String = try row.decode("queue")
            if !queue.isEmpty { counts[queue, default: [:]][start] = try row.decode("claims") }
        }
        let claims = Dictionary(uniqueKeysWithValues: queues.map { queue in
            (queue.settings.name, minutes.map { counts[queue.settings.name]?[$0] ?? 0 })
        })
        return QueuesOverview(queues: queues, minutes: minutes, claims: claims)
    }

    /// The ids of a failure group's requests in `state`, oldest first, at most `limit`.
    func failureGroupMembers(reason: String, state: RequestState, limit: Int) async throws -> [Int] {
        let rows = try await pool.query("""
            SELECT id FROM detectq.requests
            WHERE state = \(state.rawValue)::detectq.request_state AND coalesce(error_message, '(no reason)') = \(reason)
            ORDER BY id LIMIT \(limit)
            """)
        return try rows.map { try $0.decode("id") }
    }

    func request(id: Int) async throws -> RequestDetail? {
        let rows = try await pool.query("""
            SELECT id, state::text AS state, media_url, media_path, (media_url IS NULL AND media_path IS NULL) AS has_media_token,
                   visualize, intelligence, audio_source_tracing, use_reverse_search, use_ood_detector, zero_retention_mode,
                   frame_length, start_region::text AS start_region, end_region::text AS end_region,
                   max_video_secs::text AS max_video_secs, max_video_fps::text AS max_video_fps, model_types, pipeline,
                   wait_mode, priority::int4 AS priority, run_at, attempt, max_attempts, idempotency_key,
                   jsonb_pretty(metadata) AS metadata, locked_by, locked_until, remote_uuid, submit_path, media_type,
                   label, is_fake, aggregated_score, result::text AS result, file_deleted_at, error_message,
                   created_at, updated_at, accepted_at, completed_at, poll_count, media_sha256, reuse_verdict, reused_from,
                   CASE WHEN state = 'queued' THEN waiting_for END AS waiting_for
            FROM detectq.requests WHERE id = \(id)
            """)
        guard let row = rows.first else { return nil }
        var options: [(String, String)] = []
        for flag in ["visualize", "intelligence", "audio_source_tracing", "use_reverse_search", "use_ood_detector", "zero_retention_mode"]
        where try row.decode(flag, as: Bool.self) {
            options.append((flag, "true"))
        }
        if let frameLength = try row.decode("frame_length", as: Int?.self) { options.append(("frame_length", String(frameLength))) }
        for column in ["start_region", "end_region", "max_video_secs", "max_video_fps", "model_types", "pipeline"] {
            if let text = try row.decode(column, as: String?.self) { options.append((column, text)) }
        }
        let events = try await pool.query("""
            SELECT from_state::text AS from_state, to_state::text AS to_state, at, worker_id, detail
            FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
            """).map(Self.event)
        let taskRows = try await pool.query("""
            SELECT id, processor, state::text AS state, attempt, max_attempts, last_error, run_at, completed_at
            FROM detectq.post_tasks WHERE request_id = \(id) ORDER BY id
            """)
        var tasks = try taskRows.map { task in
            RequestDetail.PostTaskRow(
                id: try task.decode("id"), processor: try task.decode("processor"), state: try task.decode("state"),
                attempt: try task.decode("attempt"), maxAttempts: try task.decode("max_attempts"),
                lastError: try task.decode("last_error"), runAt: try task.decode("run_at"),
                completedAt: try task.decode("completed_at"), events: []
            )
        }
        if !tasks.isEmpty {
            let taskEvents = try await pool.query("""
                SELECT task_id, from_state::text AS from_state, to_state::text AS to_state, at, worker_id, detail
                FROM detectq.post_task_events WHERE task_id = ANY(\(tasks.map(\.id))) ORDER BY id
                """)
            for eventRow in taskEvents {
                let taskID: Int = try eventRow.decode("task_id")
                if let index = tasks.firstIndex(where: { $0.id == taskID }) { tasks[index].events.append(try Self.event(eventRow)) }
            }
        }
        let archive = try await pool.query("""
            SELECT jsonb_pretty(intelligence) AS intelligence, archived_at FROM detectq.intelligence_archive WHERE request_id = \(id)
            """).first
        return RequestDetail(
            id: try row.decode("id"), state: try row.decode("state"), mediaURL: try row.decode("media_url"),
            mediaPath: try row.decode("media_path"), hasMediaToken: try row.decode("has_media_token"), options: options,
            waitMode: try row.decode("wait_mode"), priority: try row.decode("priority"), runAt: try row.decode("run_at"),
            attempt: try row.decode("attempt"), maxAttempts: try row.decode("max_attempts"),
            idempotencyKey: try row.decode("idempotency_key"), metadata: try row.decode("metadata"),
            lockedBy: try row.decode("locked_by"), lockedUntil: try row.decode("locked_until"),
            remoteUUID: try row.decode("remote_uuid"), submitPath: try row.decode("submit_path"),
            mediaType: try row.decode("media_type"), label: try row.decode("label"), isFake: try row.decode("is_fake"),
            score: try row.decode("aggregated_score"), result: try row.decode("result"),
            fileDeletedAt: try row.decode("file_deleted_at"), zeroRetention: try row.decode("zero_retention_mode"),
            errorMessage: try row.decode("error_message"), createdAt: try row.decode("created_at"),
            updatedAt: try row.decode("updated_at"), acceptedAt: try row.decode("accepted_at"),
            completedAt: try row.decode("completed_at"), pollCount: try row.decode("poll_count"),
            events: events, postTasks: tasks,
            archivedIntelligence: try archive?.decode("intelligence"), archivedAt: try archive?.decode("archived_at"),
            mediaSHA256: try row.decode("media_sha256"), reuseVerdict: try row.decode("reuse_verdict"),
            reusedFrom: try row.decode("reused_from"), waitingFor: try row.decode("waiting_for")
        )
    }

    private static func event(_ row: PostgresRow) throws -> RequestDetail.Event {
        RequestDetail.Event(
            from: try row.decode("from_state"), to: try row.decode("to_state"), at: try row.decode("at"),
            workerID: try row.decode("worker_id"), detail: try row.decode("detail")
        )
    }
}
