import Foundation
import Postgres

/// What the lookup of identical media (CONTRACT section 9) found for a claimed request with a hash: whether it is
/// sent, completes with a verdict detected before, or waits for one in flight.
package enum IdenticalMediaFinding: Sendable, Hashable {
    /// No request with the same hash and options completed within the window or is in flight (or the request
    /// may not reuse a verdict): it is sent.
    case send
    /// Request `source` completed with a detection of its own within the window: its verdict is reused.
    case reuse(source: Int)
    /// Request `inFlight` has the same hash and options and is in flight: the request waits for its verdict.
    case wait(inFlight: Int)
    /// The worker no longer holds the request (cancelled, taken over).
    case movedOn
}

/// One lookup: a claimed request, the hash to store with it, and whether it may take another's verdict.
struct IdenticalMediaLookup: Sendable {
    var id: Int
    var workerID: String
    var sha256: String
    var within: Duration
    var mayReuse: Bool

    /// What the claim returns of each request (`hash_alone`): whether its hash, a producer's, is one no other
    /// request has, so that it is sent without the lookup. Taken with a shared advisory lock on the hash, held
    /// until the claim commits: a lookup storing the same hash (a worker's, computed meanwhile for a
    /// `media_path`) holds that lock exclusively, so either the claim cannot take it (and the request is looked
    /// up) or the lookup waits for the claim to commit and then finds this request in flight. A request marked
    /// as waiting is never alone.
    static let aloneAtClaim = """
        (r.media_sha256 IS NOT NULL AND r.waiting_for IS NULL \
        AND NOT EXISTS (SELECT 1 FROM detectq.request_media_hashes h WHERE h.media_sha256 = r.media_sha256 AND h.request_id <> r.id) \
        AND pg_try_advisory_xact_lock_shared(20261207, hashtext(r.media_sha256))) AS hash_alone
        """
}

extension RequestStore {
    /// Looks up batches of claimed requests in `detectq.find_identical_media` (migration 0021), one call per
    /// worker and window: the hashes are locked in order, each request's hash is stored, and a request that
    /// will wait is marked as waiting in the same transaction.
    static func findIdenticalMedia(_ batch: [IdenticalMediaLookup], on pool: PostgresConnectionPool) async throws -> [IdenticalMediaFinding] {
        var found: [Int: IdenticalMediaFinding] = [:]
        let groups = Dictionary(grouping: batch) { "\($0.workerID)\u{0}\($0.within.seconds)" }
        for lookups in groups.values {
            let first = lookups[0]
            let rows = try await pool.query(PostgresQuery(
                sql: """
                    SELECT id, outcome, other_id FROM detectq.find_identical_media($1, make_interval(secs => $2), $3, $4, $5)
                    """,
                parameters: [first.workerID, first.within.seconds, lookups.map(\.id), lookups.map(\.sha256), lookups.map(\.mayReuse)]
            ))
            for row in rows {
                let id = try row.decode("id", as: Int.self)
                let other = try row.decode("other_id", as: Int?.self)
                switch (try row.decode("outcome", as: String.self), other) {
                case ("reuse", let source?): found[id] = .reuse(source: source)
                case ("wait", let inFlight?): found[id] = .wait(inFlight: inFlight)
                case ("send", _): found[id] = .send
                default: found[id] = .movedOn
                }
            }
        }
        return batch.map { found[$0.id] ?? .movedOn }
    }

    /// The verdict request `id` completed with by a detection of its own (its stored `result`, the API's item);
    /// nil when it is not such a request (any more).
    package func detectedVerdict(of id: Int) async throws -> PostgresJSON? {
        let rows = try await pool.query(PostgresQuery(
            sql: "SELECT result FROM detectq.requests WHERE id = $1 AND state = 'completed' AND reused_from IS NULL",
            parameters: [id]
        ))
        return try rows.first?.decode("result", as: PostgresJSON?.self)
    }
}
