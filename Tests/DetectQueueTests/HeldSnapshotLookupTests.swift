import DetectqTestSupport
@testable import DetectQueue
import Foundation
import Postgres
import ResembleDetect
import Testing

/// The worker's lookups by id and by `waiting_for` beside a transaction that holds back vacuum: the claim index
/// and the leased rows' index keep an entry for every request ever queued or leased, and once `ANALYZE` has seen
/// few rows queued and leased the planner would read either whole, filtering each entry, if a statement let it.
/// The lease renewal and the completion batch read neither.
@Suite("Lookups beside a held snapshot keep off the claim and lease indexes", .enabled(if: TestDatabase.isEnabled))
struct HeldSnapshotLookupTests {
    let configuration: PostgresConfiguration
    let pool: PostgresConnectionPool

    init() async throws {
        configuration = try await TestDatabase.createMigratedDatabase()
        pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 4)
    }

    /// Entries the claim index and the leased rows' index handed this session in its transaction so far.
    func indexEntriesRead(on connection: PostgresConnection) async throws -> (claim: Int, leased: Int) {
        let row = try await connection.query("""
            SELECT pg_stat_get_xact_tuples_returned('detectq.requests_queue_claimable_idx'::regclass)
                   + pg_stat_get_xact_tuples_returned('detectq.requests_claimable_idx'::regclass) AS claim,
                   pg_stat_get_xact_tuples_returned('detectq.requests_leased_idx'::regclass) AS leased
            """).first!
        return (try row.decode("claim", as: Int.self), try row.decode("leased", as: Int.self))
    }

    @Test func theLeaseRenewalAndTheCompletionBatchReadNeitherIndexWhole() async throws {
        let snapshot = try await PostgresConnection.connect(configuration)
        try await snapshot.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try await snapshot.query("SELECT count(*) FROM detectq.requests")
        // 3,000 requests queued, leased and completed beside the snapshot: each leaves its queued version's entry in
        // the claim index and its leased version's in the lease index, and no scan may mark them dead.
        try await pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/' || n || '.wav' FROM generate_series(1, 3000) AS n
            """)
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', locked_by = 'earlier', locked_until = now() + interval '1 hour', attempt = 1
            """)
        try await pool.query("""
            UPDATE detectq.requests SET state = 'completed', locked_by = NULL, locked_until = NULL, completed_at = now(), result = '{}'
            """)
        try await pool.query("INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/now-' || n || '.wav' FROM generate_series(1, 200) AS n")
        let store = RequestStore(pool: pool)
        var held: [DetectionRequest] = []
        while held.count < 200, case let claimed = try await store.claim(workerID: "w1", limit: 200 - held.count, lease: .seconds(60)), !claimed.isEmpty {
            held += claimed
        }
        #expect(held.count == 200)
        try await pool.query("ANALYZE detectq.requests")

        let connection = try await PostgresConnection.connect(configuration)
        try await connection.query("BEGIN")
        let before = try await indexEntriesRead(on: connection)
        let renewed = try await connection.query(NonStateWrite.leaseRenewal(
            table: "detectq.requests", workerID: "w1", ids: held.map(\.id), lease: .seconds(60)
        ))
        let afterRenewal = try await indexEntriesRead(on: connection)
        let item = try DetectionItem(json: #"{"uuid":"u","status":"completed","media_type":"audio","metrics":{"label":"real","score":["0.1"],"aggregated_score":"0.1"}}"#)
        let batch = held.map { request in
            var changes = RequestChanges()
            changes.remoteUUID = "uuid-\(request.id)"
            changes.label = item.label
            changes.isFake = item.isFake
            changes.aggregatedScore = item.aggregatedScore
            changes.result = PostgresJSON(text: item.rawJSON)
            return RequestStore.Completion(request: request, event: .completed, workerID: "w1", lease: .seconds(60), result: changes, postProcessors: [])
        }
        let completed = try await connection.query(try RequestStore.completionStatement(batch))
        let afterCompletion = try await indexEntriesRead(on: connection)
        try await connection.query("COMMIT")
        await connection.close()
        try await snapshot.query("COMMIT")
        await snapshot.close()

        #expect(renewed.count == 200)
        #expect(completed.count == 200)
        #expect(afterRenewal.leased - before.leased < 100, "the renewal read \(afterRenewal.leased - before.leased) lease index entries for 200 leases")
        #expect(afterRenewal.claim - before.claim < 100, "the renewal read \(afterRenewal.claim - before.claim) claim index entries")
        #expect(afterCompletion.claim - afterRenewal.claim < 100, "the completion batch read \(afterCompletion.claim - afterRenewal.claim) claim index entries for 200 requests")
        #expect(afterCompletion.leased - afterRenewal.leased < 100, "the completion batch read \(afterCompletion.leased - afterRenewal.leased) lease index entries")
    }
}
