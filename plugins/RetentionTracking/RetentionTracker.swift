import DetectQueue
import Foundation
import ResembleDetect

extension AlertKind {
    /// A zero-retention file was not purged within `DETECTQ_RETENTION_SLA`.
    package static let retentionOverdue = AlertKind("retention.overdue", title: "Zero-retention purge overdue")
}

/// Tracks the purge of zero-retention media: records `file_deleted_at` on the request as soon as the API
/// reports it (at once when the result already has it, else by polling `GET /detect/{uuid}` on a growing
/// interval). When no purge has happened within the SLA (`DETECTQ_RETENTION_SLA`), it raises a
/// `retention.overdue` alert through every alert sink, once, and keeps watching.
package struct RetentionTracker: PostProcessor {
    package let name = "retention.tracking"
    package let effects: Set<PostProcessingEffect> = [.recordFileDeleted, .raise(.retentionOverdue)]
    /// How long after completion a purge may take.
    package let sla: Duration

    package init(sla: Duration) {
        self.sla = sla
    }

    /// What the task's history says of a reused verdict's request.
    static func noMediaSent(_ outcome: DetectionOutcome) -> String {
        "no media was sent: the verdict was reused from request \(outcome.reusedFrom ?? 0), so the API holds nothing of this request to purge"
    }

    package func applies(to outcome: DetectionOutcome) -> Bool {
        outcome.zeroRetentionMode
    }

    package func process(_ outcome: DetectionOutcome, context: PostProcessingContext) async throws -> PostProcessingResult {
        // A reused verdict sent no media of this request: there is nothing to purge, and file_deleted_at stays empty.
        guard outcome.reusedFrom == nil else {
            context.logger.info("\(Self.noMediaSent(outcome))")
            return .done
        }
        var deletedAt = outcome.item.retention.fileDeletedAt
        if deletedAt == nil {
            deletedAt = try await context.api.detection(uuid: outcome.remoteUUID).retention.fileDeletedAt
        }
        if let deletedAt {
            try await context.recordFileDeleted(at: deletedAt)
            return .done
        }
        let deadline = outcome.completedAt.addingTimeInterval(sla.seconds)
        if Date() >= deadline {
            try await context.raise(.retentionOverdue)
        }
        let elapsed = Date().timeIntervalSince(outcome.completedAt)
        var next = Date().addingTimeInterval(min(300, max(1, elapsed / 4)))
        if Date() < deadline { next = min(next, deadline) }
        return .reschedule(at: next)
    }
}
