import Crypto
import DetectQueue
import DetectSimulator
import Foundation
import Postgres
import TextEncodings

/// The stream of work of a chaos run: plain INSERTs at a steady rate, as a producer would write them, that
/// outlast database restarts, spread over the run's queues (`QueueLanes`), plus the odd cancellation, and a few
/// of the API's hard cases (`HardCase`).
///
/// Every insert carries `idempotency_key = chaos-<n>`, so one retried after an ambiguous failure (a commit
/// whose answer was lost in a restart) is inserted at most once, and what was confirmed can be checked later.
///
/// A URL request carries the `media_sha256` its producer would know (of a stand-in for its bytes); a file's the
/// worker computes. One request in ten repeats a recent one's media and options (CONTRACT section 9): a re-upload
/// (another file with the same bytes) or the same media at another URL, so that the simulator's count of each URL
/// or upload stays the request's own.
actor Producer {
    /// What the producer did.
    struct Figures: Sendable {
        var confirmed: Set<String> = []
        var insertRetries = 0
        var cancellationsAsked = 0
        var cancellationsApplied = 0
        var mediaFiles = 0
        /// Requests dealt as each of the API's hard cases.
        var hardCases: [HardCase: Int] = [:]
        /// Requests that repeat an earlier one's media and options.
        var duplicates = 0
    }

    /// Media and options a later request may repeat.
    private struct Original {
        var key: String
        var verdict: String
        var isFile: Bool
        var zeroRetention: Bool
        var intelligence: Bool
    }

    private let pool: PostgresConnectionPool
    private let mediaRoot: URL
    private var random: SeededRandom
    private(set) var figures = Figures()
    private var next = 0
    private var recent: [Original] = []

    init(pool: PostgresConnectionPool, mediaRoot: URL, seed: UInt64) {
        self.pool = pool
        self.mediaRoot = mediaRoot
        random = SeededRandom(seed: seed)
    }

    /// Inserts one request every `interval` until cancelled.
    func run(interval: Duration) async {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            await insertNext()
            try? await Task.sleep(until: started + interval)
        }
    }

    /// One request of a random kind, retried until the database takes it (or the run is cancelled).
    private func insertNext() async {
        next += 1
        let key = "chaos-\(next)"
        let hardCase = HardCase.dealt(toRequest: next)
        let repeated = hardCase == nil && !recent.isEmpty && random.chance(0.1) ? recent.randomElement(using: &random) : nil
        let fake = repeated.map { $0.verdict == "fake" } ?? random.chance(0.3)
        let verdict = fake ? "fake" : "real"
        // Whose bytes the media carries: its own, or the repeated request's.
        let identity = repeated?.key ?? key
        var media: (column: String, value: String)
        var sha256: String?
        if let hardCase {
            media = ("media_url", hardCase.mediaURL(key: key))
            figures.hardCases[hardCase, default: 0] += 1
        } else if repeated.map(\.isFile) ?? random.chance(0.15) {
            let name = "\(key)-\(verdict).wav"
            do {
                try Data("RIFF chaos \(fake ? "FAKE" : "REAL") \(identity)".utf8).write(to: mediaRoot.appendingPathComponent(name))
                figures.mediaFiles += 1
                media = ("media_path", name)
            } catch {
                media = ("media_url", "https://media.chaos.invalid/\(key)-\(verdict).wav")
                sha256 = Self.sha256(of: identity)
            }
        } else {
            media = ("media_url", "https://media.chaos.invalid/\(key)-\(verdict).wav")
            sha256 = Self.sha256(of: identity)
        }
        let waitMode = ["sync", "sync", "callback", "callback", "callback", "poll", "poll", "auto"].randomElement(using: &random)!
        let zeroRetention = repeated?.zeroRetention ?? random.chance(0.15)
        let intelligence = repeated?.intelligence ?? random.chance(0.15)
        let sourceTracing = hardCase == .forbiddenProduct
        let cancelLater = random.chance(0.03)
        let lane = QueueLanes.lane(using: &random)
        if repeated != nil {
            figures.duplicates += 1
        } else if hardCase == nil {
            recent.append(Original(key: key, verdict: verdict, isFile: media.column == "media_path", zeroRetention: zeroRetention, intelligence: intelligence))
            if recent.count > 20 { recent.removeFirst() }
        }
        let statement = PostgresQuery(sql: """
            INSERT INTO detectq.requests (\(media.column), wait_mode, zero_retention_mode, intelligence, audio_source_tracing,
                                          idempotency_key, metadata, queue, group_key, media_sha256)
            VALUES ($1, $2, $3, $4, $5, $6, jsonb_strip_nulls(jsonb_build_object('chaos', $6::text, 'case', $7::text, 'repeats', $10::text)),
                    $8, $9, $11)
            ON CONFLICT (idempotency_key) DO NOTHING
            """, parameters: [
                media.value, waitMode, zeroRetention, intelligence, sourceTracing, key, hardCase?.rawValue, lane.queue, lane.group,
                repeated?.key, sha256,
            ])
        while !Task.isCancelled {
            do {
                try await pool.query(statement)
                figures.confirmed.insert(key)
                break
            } catch {
                figures.insertRetries += 1
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        if cancelLater {
            figures.cancellationsAsked += 1
            Task { await self.cancel(key: key, after: .milliseconds(Int.random(in: 0...2_000))) }
        }
    }

    /// The hash a producer would give for the media of request `identity` (a stand-in for its bytes).
    static func sha256(of identity: String) -> String {
        Hex.encode(SHA256.hash(data: Data("chaos media \(identity)".utf8)))
    }

    /// Cancels the request `key` through the same state machine `detectq cancel` uses.
    private func cancel(key: String, after delay: Duration) async {
        try? await Task.sleep(for: delay)
        guard let rows = try? await pool.query("SELECT id FROM detectq.requests WHERE idempotency_key = \(key)"),
              let id = try? rows.first?.decode("id", as: Int.self),
              let outcomes = try? await RequestAdministration(store: RequestStore(pool: pool)).cancel([id])
        else { return }
        if case .changed? = outcomes.first?.1 { figures.cancellationsApplied += 1 }
    }
}
