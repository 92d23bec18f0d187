/// A detection's verdict from every track it has: the audio track's (`metrics`) and the picture's
/// (`video_metrics` for a video, `image_metrics` for an image). The request is fake when any track reads
/// fake, or when its score passes the fake threshold: a cloned voice over real footage is a fake.
///
/// This is the one place `is_fake` is decided, so the stored row, the alerts, the dashboard and
/// `detectq status` cannot disagree.
package struct Verdict: Sendable, Hashable {
    /// A track of a detection.
    package enum Track: String, Sendable, Hashable, CaseIterable {
        case audio
        case visual
    }

    /// One track's own verdict, as the API gave it.
    package struct TrackVerdict: Sendable, Hashable {
        package var track: Track
        package var label: String?
        package var score: Double?

        /// Whether this track reads fake: its label says so, or its score is at or above `threshold`.
        package func readsFake(threshold: Double?) -> Bool {
            if let label, DetectionItem.reading(ofLabel: label) == .fake { return true }
            if let threshold, let score, score.isFinite { return score >= threshold }
            return false
        }

        /// Whether this track says anything a verdict can be read from: a label of the vocabulary, or a score
        /// that `threshold` can judge.
        package func isReadable(threshold: Double?) -> Bool {
            if let label, DetectionItem.reading(ofLabel: label) != .unreadable { return true }
            if threshold != nil, let score, score.isFinite { return true }
            return false
        }
    }

    /// Every track with a label or a score, the primary one first (the picture's for a video or an image,
    /// else the audio's).
    package let tracks: [TrackVerdict]
    /// The tracks that read fake, in the same order.
    package let fakeTracks: [Track]

    package init(tracks: [TrackVerdict], threshold: Double?) {
        self.tracks = tracks
        let fake = tracks.filter { $0.readsFake(threshold: threshold) }
        fakeTracks = fake.map(\.track)
        decisive = fake.first ?? tracks.first
        decided = !tracks.isEmpty && tracks.allSatisfy { $0.isReadable(threshold: threshold) }
    }

    /// The track whose verdict is the request's: the first that reads fake, else the primary one.
    private let decisive: TrackVerdict?
    /// Whether every track said something a verdict can be read from.
    private let decided: Bool

    /// Fake when any track reads fake; else real when every track reads real; else nil, which is no verdict
    /// (no track, or a track whose label and score say nothing readable): a screen must never read silence as
    /// real, so such a detection is raised for review (`isUnreadable`).
    package var isFake: Bool? { !fakeTracks.isEmpty ? true : decided ? false : nil }

    /// True when the detection gives no verdict a screen can act on: it is raised as `detection.unreadable`.
    package var isUnreadable: Bool { isFake == nil }
    /// The label of the verdict that made the request fake, else the primary track's.
    package var label: String? { decisive?.label }
    /// The score that goes with `label`.
    package var score: Double? { decisive?.score }
    /// Each track's own label.
    package func label(of track: Track) -> String? { tracks.first { $0.track == track }?.label }
}

extension DetectionItem {
    /// Each track's own verdict, the primary track first.
    package var trackVerdicts: [Verdict.TrackVerdict] {
        let audio = metrics.map { Verdict.TrackVerdict(track: .audio, label: $0.label, score: $0.aggregatedScore) }
        let visual: Verdict.TrackVerdict? = switch mediaType {
        case .video: videoMetrics.map { .init(track: .visual, label: $0.label, score: $0.score) }
        case .image: imageMetrics.map { .init(track: .visual, label: $0.label, score: $0.score) }
        default:
            videoMetrics.map { .init(track: .visual, label: $0.label, score: $0.score) }
                ?? imageMetrics.map { .init(track: .visual, label: $0.label, score: $0.score) }
        }
        let ordered = mediaType == .video || mediaType == .image ? [visual, audio] : [audio, visual]
        return ordered.compactMap { $0 }.filter { $0.label != nil || $0.score != nil }
    }

    /// The verdict over every track; `threshold` is `DETECTQ_FAKE_THRESHOLD` when one is set.
    package func verdict(threshold: Double? = nil) -> Verdict {
        Verdict(tracks: trackVerdicts, threshold: threshold)
    }
}
