import DetectQueue
import Foundation
import ResembleDetect
import TextEncodings

/// Turns a request's row, history and result into the request page: the submission, the timeline, the
/// verdict with its charts and trees, the intelligence report, retention and every post-task's attempts.
enum RequestPageBuilder {
    static func page(_ detail: RequestDetail, chrome: Chrome) -> RequestPageModel {
        let item = detail.result.flatMap { try? DetectionItem(json: $0) }
        let alerts = detail.postTasks.filter { $0.processor.hasPrefix("alert.") }.map(postTask)
        let others = detail.postTasks.filter { !$0.processor.hasPrefix("alert.") }.map(postTask)
        return RequestPageModel(
            chrome: chrome,
            id: detail.id,
            state: detail.state.rawValue,
            verdictBadge: detail.isFake.map { $0 ? "fake" : "real" } ?? (detail.state == .completed ? "needs review" : nil),
            verdictClass: detail.isFake.map { $0 ? "fake" : "real" } ?? (detail.state == .completed ? "review" : ""),
            canRetry: !chrome.readOnly && detail.state == .failed,
            canCancel: !chrome.readOnly && detail.state.canChange(to: .cancelled),
            submission: submission(detail),
            metadata: detail.metadata,
            errorMessage: detail.errorMessage.flatMap { $0.isEmpty ? nil : $0 },
            events: detail.events.map(event),
            verdict: item.map { verdict($0, detail: detail) },
            intelligence: intelligence(item, detail: detail),
            retention: retention(detail, item: item),
            alerts: alerts,
            otherTasks: others,
            hasPostTasks: !detail.postTasks.isEmpty,
            rawResult: detail.result.map(prettyJSON),
            reusedFrom: detail.reusedFrom,
            waitingFor: detail.waitingFor
        )
    }

    private static func submission(_ detail: RequestDetail) -> [Field] {
        var fields: [Field] = []
        if let url = detail.mediaURL { fields.append(Field(name: "media_url", value: url)) }
        if let path = detail.mediaPath { fields.append(Field(name: "media_path", value: path)) }
        if detail.hasMediaToken { fields.append(Field(name: "media_token", value: "(set; a secret, not shown)")) }
        if let path = detail.submitPath { fields.append(Field(name: "submit path", value: path)) }
        if let sha256 = detail.mediaSHA256 { fields.append(Field(name: "media_sha256", value: sha256)) }
        if !detail.reuseVerdict { fields.append(Field(name: "reuse_verdict", value: "false: detected by itself")) }
        fields.append(Field(name: "wait_mode", value: detail.waitMode))
        for (name, value) in detail.options { fields.append(Field(name: name, value: value)) }
        fields.append(Field(name: "priority", value: String(detail.priority)))
        fields.append(Field(name: "attempt", value: "\(detail.attempt) of \(detail.maxAttempts)"))
        if let key = detail.idempotencyKey { fields.append(Field(name: "idempotency_key", value: key)) }
        if let uuid = detail.remoteUUID { fields.append(Field(name: "remote_uuid", value: uuid)) }
        if let worker = detail.lockedBy {
            fields.append(Field(name: "leased by", value: "\(worker), until \(Formatting.time(detail.lockedUntil))"))
        }
        fields.append(Field(name: "created", value: Formatting.time(detail.createdAt)))
        if detail.state.isClaimable || detail.state == .awaitingResult {
            fields.append(Field(name: detail.state == .awaitingResult ? "next poll" : "run_at", value: Formatting.time(detail.runAt)))
        }
        if let accepted = detail.acceptedAt { fields.append(Field(name: "accepted by the API", value: Formatting.time(accepted))) }
        if detail.pollCount > 0 { fields.append(Field(name: "polls", value: String(detail.pollCount))) }
        if let completed = detail.completedAt { fields.append(Field(name: "completed", value: Formatting.time(completed))) }
        fields.append(Field(name: "updated", value: Formatting.time(detail.updatedAt)))
        return fields
    }

    private static func event(_ event: RequestDetail.Event) -> RequestPageModel.Event {
        RequestPageModel.Event(
            at: Formatting.preciseTime(event.at), from: event.from ?? "(inserted)", to: event.to,
            worker: event.workerID ?? "", detail: event.detail ?? ""
        )
    }

    private static func postTask(_ task: RequestDetail.PostTaskRow) -> RequestPageModel.PostTask {
        RequestPageModel.PostTask(
            processor: task.processor, isAlert: task.processor.hasPrefix("alert."), state: task.state,
            attempts: "\(task.attempt) of \(task.maxAttempts)", lastError: task.lastError.flatMap { $0.isEmpty ? nil : $0 },
            nextRun: ["queued", "retrying"].contains(task.state) ? Formatting.time(task.runAt) : nil,
            completed: task.completedAt.map { Formatting.time($0) },
            events: task.events.map(event)
        )
    }

    private static func verdict(_ item: DetectionItem, detail: RequestDetail) -> RequestPageModel.Verdict {
        var fields: [Field] = []
        if let mediaType = item.mediaType { fields.append(Field(name: "media type", value: mediaType.description)) }
        if let status = item.status { fields.append(Field(name: "API status", value: status.description)) }
        if let duration = item.duration { fields.append(Field(name: "duration", value: String(format: "%.1f s", duration))) }
        if let consistency = item.metrics?.consistency { fields.append(Field(name: "audio consistency", value: Formatting.score(consistency))) }
        if let audioLabel = item.metrics?.label, item.mediaType != .audio {
            fields.append(Field(name: "audio track", value: "\(audioLabel) (\(Formatting.score(item.metrics?.aggregatedScore)))"))
        }
        if let error = item.errorMessage, !error.isEmpty { fields.append(Field(name: "API error", value: error)) }
        if let image = item.metrics?.image, !image.isEmpty { fields.append(Field(name: "visualisation", value: image)) }

        var audioChart: String?
        var windows: String?
        if let scores = item.metrics?.score, !scores.isEmpty {
            let seconds = Double(detail.options.first { $0.0 == "frame_length" }.flatMap { Int($0.1) } ?? 2)
            audioChart = SVGChart.scores(scores, title: "Audio score per window (\(Int(seconds)) s each)") { index in
                "\(Int(Double(index) * seconds)) s"
            }
            let fake = scores.filter { $0 > 0.5 }.count
            windows = "\(scores.count) windows of \(Int(seconds)) s; \(fake) above 0.5"
        }

        var image: [Field] = []
        var reverseSearch: [Field] = []
        if let metrics = item.imageMetrics {
            if let type = metrics.type { image.append(Field(name: "type", value: type)) }
            if let label = metrics.label { image.append(Field(name: "label", value: label)) }
            if let score = metrics.score { image.append(Field(name: "score", value: Formatting.score(score))) }
            if let ifl = metrics.ifl?.score { image.append(Field(name: "forgery localisation score", value: Formatting.score(ifl))) }
            if let heatmap = metrics.ifl?.heatmap, !heatmap.isEmpty { image.append(Field(name: "heatmap", value: heatmap)) }
            if let visual = metrics.image, !visual.isEmpty { image.append(Field(name: "visualisation", value: visual)) }
            for source in metrics.reverseImageSearchSources ?? [] {
                let summary = [source.verdict, source.similarity.map { "similarity \(Formatting.score($0))" }, source.reason]
                    .compactMap { $0 }.joined(separator: "; ")
                reverseSearch.append(Field(name: source.title ?? source.url ?? "source", value: [source.url, summary].compactMap { $0 }.joined(separator: " — ")))
            }
        }

        var video: [Field] = []
        var tree: [TreeNode] = []
        if let metrics = item.videoMetrics {
            if let label = metrics.label { video.append(Field(name: "label", value: label)) }
            if let score = metrics.score { video.append(Field(name: "score", value: Formatting.score(score))) }
            if let certainty = metrics.certainty { video.append(Field(name: "certainty", value: Formatting.score(certainty))) }
            tree = metrics.children.map(treeNode)
        }

        let label = item.label ?? detail.label ?? "(no label)"
        return RequestPageModel.Verdict(
            label: label,
            verdictClass: (detail.isFake ?? item.isFake).map { $0 ? "fake" : "real" } ?? "",
            score: Formatting.score(detail.score ?? item.aggregatedScore),
            fields: fields, audioChart: audioChart, windows: windows, image: image, reverseSearch: reverseSearch,
            video: video, videoTree: tree,
            sourceTracing: item.audioSourceTracing.map { tracing in
                [tracing.label, tracing.errorMessage].compactMap { $0 }.joined(separator: " — ")
            }.flatMap { $0.isEmpty ? nil : $0 },
            hasImage: !image.isEmpty, hasReverseSearch: !reverseSearch.isEmpty, hasVideo: !video.isEmpty, hasVideoTree: !tree.isEmpty
        )
    }

    /// Deep trees are cut at this depth; the raw result below the page keeps all of it.
    static let maximumTreeDepth = 12

    private static func treeNode(_ node: VideoMetrics.Node) -> TreeNode {
        treeNode(node, depth: 1)
    }

    private static func treeNode(_ node: VideoMetrics.Node, depth: Int) -> TreeNode {
        let conclusion = node.conclusion ?? ""
        let details = [
            node.score.map { "score \(Formatting.score($0))" },
            node.certainty.map { "certainty \(Formatting.score($0))" },
            node.timestamp.map { String(format: "at %.2f s", $0) },
        ].compactMap { $0 }
        return TreeNode(
            kind: node.type ?? "node",
            conclusion: conclusion,
            hasConclusion: !conclusion.isEmpty,
            conclusionClass: DetectionItem.labelReadsFake(conclusion) ? "fake" : "real",
            details: details.joined(separator: " · "),
            children: depth < maximumTreeDepth ? node.children.map { treeNode($0, depth: depth + 1) } : [],
            hasChildren: depth < maximumTreeDepth && !node.children.isEmpty
        )
    }

    private static func intelligence(_ item: DetectionItem?, detail: RequestDetail) -> RequestPageModel.Intelligence? {
        let report = item?.intelligence
        guard report != nil || detail.archivedIntelligence != nil else { return nil }
        var fields: [Field] = []
        var text: String?
        switch report?.description {
        case .text(let prose)? where !prose.isEmpty:
            text = prose
        case .structured(let structured)?:
            if let fraud = structured.fraud {
                let confidence = fraud.confidence.map { " (confidence \(Int($0)))" } ?? ""
                fields.append(Field(name: "fraud", value: "\(fraud.type ?? "unspecified")\(confidence)\(fraud.reasoning.map { ": " + $0 } ?? "")"))
            }
            for key in structured.fields.keys.sorted() where key != "fraud" {
                if let value = structured.fields[key] { fields.append(Field(name: key.replacingOccurrences(of: "_", with: " "), value: display(value))) }
            }
        case .text?, nil:
            break
        }
        if let error = report?.errorMessage, !error.isEmpty { fields.append(Field(name: "error", value: error)) }
        return RequestPageModel.Intelligence(
            status: report?.status?.description ?? (detail.archivedIntelligence != nil ? "completed" : "pending"),
            fields: fields, text: text,
            archived: detail.archivedAt.map(Formatting.time),
            archiveJSON: detail.archivedIntelligence
        )
    }

    private static func retention(_ detail: RequestDetail, item: DetectionItem?) -> RequestPageModel.Retention? {
        guard detail.zeroRetention || detail.fileDeletedAt != nil || item?.retention.zeroRetentionMode == true else { return nil }
        var fields = [Field(name: "zero_retention_mode", value: detail.zeroRetention ? "requested" : "not requested")]
        if let source = detail.reusedFrom {
            fields.append(Field(name: "file_deleted_at", value: "no media was sent: the verdict was reused from request \(source)"))
            return RequestPageModel.Retention(fields: fields)
        }
        if let deleted = detail.fileDeletedAt {
            fields.append(Field(name: "file_deleted_at", value: Formatting.time(deleted)))
            if let completed = detail.completedAt {
                fields.append(Field(name: "purged after", value: Formatting.age(deleted.timeIntervalSince(completed))))
            }
        } else {
            fields.append(Field(name: "file_deleted_at", value: "not yet purged"))
        }
        if let tracker = detail.postTasks.first(where: { $0.processor == "retention.tracking" }) {
            fields.append(Field(name: "tracking", value: "\(tracker.state), attempt \(tracker.attempt) of \(tracker.maxAttempts)"))
        }
        if let filename = item?.retention.filename { fields.append(Field(name: "filename at the API", value: filename)) }
        return RequestPageModel.Retention(fields: fields)
    }

    /// A JSON value as a person reads it: strings bare, everything else as compact JSON.
    private static func display(_ value: JSONValue) -> String {
        if let string = value.stringValue { return string }
        let encoder = JSONText.encoder()
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    private static func prettyJSON(_ text: String) -> String {
        guard let object = try? JSONText.object(from: Data(text.utf8)),
              let data = try? JSONText.serialize(object, pretty: true)
        else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}
