import ArgumentParser
import DetectQueue
import Foundation
import Postgres
import TextEncodings

/// `detectq enqueue`: inserts one request from the command line (programs use SQL) and prints its id.
struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue", abstract: "Insert a detection request and print its id (give exactly one of --url, --path, --token)."
    )

    @Option(help: "A public HTTPS URL the API fetches.") var url: String?
    @Option(help: "A file relative to the worker's DETECTQ_MEDIA_ROOT.") var path: String?
    @Option(help: "A token from POST /secure_uploads.") var token: String?
    @Option(help: "auto, sync, callback or poll.") var waitMode: String?
    @Option(help: "Higher is claimed first.") var priority: Int?
    @Option(help: "Attempts before the request fails for good.") var maxAttempts: Int?
    @Option(help: "A key a second insert may not repeat.") var idempotencyKey: String?
    @Option(help: "Your own data, as a JSON object.") var metadata: String?
    @Option(help: "Not claimed before this ISO 8601 time.") var runAt: String?
    @Option(help: "Window size in seconds, 1-4.") var frameLength: Int?
    @Option(help: "Start of the segment to analyse, in seconds.") var startRegion: Double?
    @Option(help: "End of the segment to analyse, in seconds.") var endRegion: Double?
    @Option(help: "Cap on the video duration processed, in seconds.") var maxVideoSecs: Double?
    @Option(help: "Cap on the video frame rate processed.") var maxVideoFps: Double?
    @Option(help: "image or talking_head.") var modelTypes: String?
    @Option(help: "Such as general->facial->object.") var pipeline: String?
    @Flag(help: "Generate visualisations.") var visualize = false
    @Flag(help: "Run the intelligence analysis.") var intelligence = false
    @Flag(help: "Trace the source of synthetic audio.") var audioSourceTracing = false
    @Flag(help: "Use reverse image search.") var useReverseSearch = false
    @Flag(help: "Use the out-of-distribution detector.") var useOodDetector = false
    @Flag(help: "Delete the media after detection; redact URLs and file names.") var zeroRetentionMode = false
    @Option(help: "A W3C traceparent (00-<trace id>-<span id>-<flags>) whose trace the request's spans continue.") var traceparent: String?

    func validate() throws {
        guard [url, path, token].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --url, --path and --token")
        }
        if let runAt, ISO8601Timestamp.parse(runAt) == nil {
            throw ValidationError("--run-at must be an ISO 8601 time such as 2026-11-22T18:00:00Z")
        }
    }

    func run() async throws {
        let media: NewRequest.Media = if let url { .url(url) } else if let path { .path(path) } else { .token(token ?? "") }
        var request = NewRequest(media: media)
        request.waitMode = waitMode
        request.priority = priority
        request.maxAttempts = maxAttempts
        request.idempotencyKey = idempotencyKey
        request.metadata = metadata
        request.runAt = runAt.flatMap(ISO8601Timestamp.parse)
        request.frameLength = frameLength
        request.startRegion = startRegion
        request.endRegion = endRegion
        request.maxVideoSecs = maxVideoSecs
        request.maxVideoFps = maxVideoFps
        request.modelTypes = modelTypes
        request.pipeline = pipeline
        request.visualize = visualize
        request.intelligence = intelligence
        request.audioSourceTracing = audioSourceTracing
        request.useReverseSearch = useReverseSearch
        request.useOodDetector = useOodDetector
        request.zeroRetentionMode = zeroRetentionMode
        request.traceparent = traceparent
        let pool = PostgresConnectionPool(configuration: .fromEnvironment(applicationName: "detectq enqueue"), maximumConnections: 1)
        do {
            let id = try await RequestStore(pool: pool).enqueue([request])[0]
            await pool.close()
            print(id)
        } catch let error as PostgresError {
            await pool.close()
            let reason = error.constraint.map { "rejected by \($0): \(error.message)" } ?? "\(error)"
            FileHandle.standardError.write(Data("detectq enqueue: \(reason)\n".utf8))
            throw ExitCode.failure
        }
    }
}
