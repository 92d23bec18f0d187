import DetectQueue
import Foundation
import Postgres
import ResembleDetect

/// Tracks the purge of zero-retention media: records `file_deleted_at` on the request as soon as the API
/// reports it (at once when the result already has it, else by polling `GET /detect/{uuid}` on a growing
/// interval). When no purge has happened within the SLA (`DETECTQ_RETENTION_SLA`), it raises a
/// `retention.overdue` alert through every alert sink, once, and keeps watching.
public struct RetentionTracker: PostProcessor {
    public let name = "retention.tracking"
    /// How long after completion a purge may take.
    public let sla: Duration
    /// The processors that deliver a `retention.overdue` alert (one per alert sink).
    public let overdueAlertProcessors: [String]

    public init(sla: Duration, overdueAlertProcessors: [String]) {
        self.sla = sla
        self.overdueAlertProcessors = overdueAlertProcessors
    }

    public func applies(to outcome: DetectionOutcome) -> Bool {
        outcome.zeroRetentionMode
    }

    public func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        var deletedAt = outcome.item.retention.fileDeletedAt
        if deletedAt == nil {
            try await context.budget.acquire()
            deletedAt = try await context.client.detection(uuid: outcome.remoteUUID).retention.fileDeletedAt
        }
        if let deletedAt {
            try await context.pool.query("""
                UPDATE detectq.requests SET file_deleted_at = \(deletedAt) WHERE id = \(outcome.requestID)
                """)
            return .done
        }
        let deadline = outcome.completedAt.addingTimeInterval(sla.seconds)
        if Date() >= deadline && !overdueAlertProcessors.isEmpty {
            try await context.pool.query("""
                INSERT INTO detectq.post_tasks (request_id, processor)
                SELECT \(outcome.requestID), unnest(\(overdueAlertProcessors)::text[])
                ON CONFLICT (request_id, processor) DO NOTHING
                """)
        }
        let elapsed = Date().timeIntervalSince(outcome.completedAt)
        var next = Date().addingTimeInterval(min(300, max(1, elapsed / 4)))
        if Date() < deadline { next = min(next, deadline) }
        return .reschedule(at: next)
    }
}
