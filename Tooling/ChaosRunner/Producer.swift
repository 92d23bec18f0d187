import DetectQueue
import DetectSimulator
import Foundation
import Postgres

/// The stream of work of a chaos run: plain INSERTs at a steady rate, as a producer would write them, that
/// outlast database restarts, spread over the run's queues (`QueueLanes`), plus the odd cancellation, and a few
/// of the API's hard cases (`HardCase`).
///
/// Every insert carries `idempotency_key = chaos-<n>`, so one retried after an ambiguous failure (a commit
/// whose answer was lost in a restart) is inserted at most once, and what was confirmed can be checked later.
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
    }

    private let pool: PostgresConnectionPool
    private let mediaRoot: URL
    private var random: SeededRandom
    private(set) var figures = Figures()
    private var next = 0

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
        let fake = random.chance(0.3)
        let verdict = fake ? "fake" : "real"
        var media: (column: String, value: String)
        if let hardCase {
            media = ("media_url", hardCase.mediaURL(key: key))
            figures.hardCases[hardCase, default: 0] += 1
        } else if random.chance(0.15) {
            let name = "\(key)-\(verdict).wav"
            do {
                try Data("RIFF chaos \(fake ? "FAKE" : "REAL") \(key)".utf8).write(to: mediaRoot.appendingPathComponent(name))
                figures.mediaFiles += 1
                media = ("media_path", name)
            } catch {
                media = ("media_url", "https://media.chaos.invalid/\(key)-\(verdict).wav")
            }
        } else {
            media = ("media_url", "https://media.chaos.invalid/\(key)-\(verdict).wav")
        }
        let waitMode = ["sync", "sync", "callback", "callback", "callback", "poll", "poll", "auto"].randomElement(using: &random)!
        let zeroRetention = random.chance(0.15)
        let intelligence = random.chance(0.15)
        let sourceTracing = hardCase == .forbiddenProduct
        let cancelLater = random.chance(0.03)
        let lane = QueueLanes.lane(using: &random)
        let statement = PostgresQuery(sql: """
            INSERT INTO detectq.requests (\(media.column), wait_mode, zero_retention_mode, intelligence, audio_source_tracing,
                                          idempotency_key, metadata, queue, group_key)
            VALUES ($1, $2, $3, $4, $5, $6, jsonb_strip_nulls(jsonb_build_object('chaos', $6::text, 'case', $7::text)), $8, $9)
            ON CONFLICT (idempotency_key) DO NOTHING
            """, parameters: [media.value, waitMode, zeroRetention, intelligence, sourceTracing, key, hardCase?.rawValue, lane.queue, lane.group])
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
