import DetectqTestSupport
import DetectQueue
import Foundation
import Postgres
import Testing

/// The claim floors of migration 0026 against real PostgreSQL: beside a snapshot that keeps every claimed request's
/// entry in the claim index, a claim starts where the due requests begin, and a request that becomes claimable
/// below a queue's floor (a past `run_at`, another priority, a queue named by hand) is claimed all the same.
@Suite("Claim floors: claims start where the due requests begin", .enabled(if: TestDatabase.isEnabled))
struct ClaimFloorTests {
    let configuration: PostgresConfiguration
    let pool: PostgresConnectionPool
    let store: RequestStore

    init() async throws {
        configuration = try await TestDatabase.createMigratedDatabase()
        pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 4)
        store = RequestStore(pool: pool)
    }

    /// One call of the fair claim in a transaction of its own on `connection` (its rows stay queued: nothing
    /// moves them), with what the claim index handed it: every entry, the dead ones' included.
    struct ClaimRead {
        var claimed: [Int]
        var indexEntries: Int
        /// Whether this call walked the floors (it set a floor's `walked_at`), rather than started at them.
        var walked: Bool
    }

    func claimOnce(on connection: PostgresConnection, limit: Int) async throws -> ClaimRead {
        try await connection.query("BEGIN")
        let before = try await latestWalk(on: connection)
        let entriesBefore = try await claimIndexEntriesRead(on: connection)
        let ids = try await connection.query(PostgresQuery(sql: """
            SELECT claimable_id FROM detectq.next_fair_claims($1, 600, NULL, 0.02) WHERE claimable_id IS NOT NULL
            """, parameters: [limit])).map { try $0.decode("claimable_id", as: Int.self) }
        let entries = try await claimIndexEntriesRead(on: connection) - entriesBefore
        let after = try await latestWalk(on: connection)
        try await connection.query("COMMIT")
        return ClaimRead(claimed: ids, indexEntries: entries, walked: after != before)
    }

    /// The claim index's entries this session handed out and has not yet reported (a session reports between
    /// transactions, never within one, so two reads in one transaction differ by what happened between them).
    func claimIndexEntriesRead(on connection: PostgresConnection) async throws -> Int {
        try await connection.query("SELECT pg_stat_get_xact_tuples_returned('detectq.requests_queue_claimable_idx'::regclass) AS n")
            .first!.decode("n", as: Int.self)
    }

    func latestWalk(on connection: PostgresConnection) async throws -> Date? {
        try await connection.query("SELECT max(walked_at) FILTER (WHERE walked_at > '-infinity') AS at FROM detectq.claim_floors")
            .first!.decode("at", as: Date?.self)
    }

    /// A claim that walks and then one that starts at the floor it set: tried again until the second came
    /// within the floor's second (on a loaded machine two statements can be further apart).
    func walkThenStartAtTheFloor(on connection: PostgresConnection, limit: Int) async throws -> (walk: ClaimRead, floored: ClaimRead) {
        for _ in 0..<20 {
            try await pool.query("UPDATE detectq.claim_floors SET walked_at = '-infinity'")
            let walk = try await claimOnce(on: connection, limit: limit)
            let floored = try await claimOnce(on: connection, limit: limit)
            if walk.walked && !floored.walked { return (walk, floored) }
        }
        throw ClaimFloorTestError(description: "twenty times the second claim came a second after the first's walk")
    }

    struct ClaimFloorTestError: Error, CustomStringConvertible {
        let description: String
    }

    @Test func besideAHeldSnapshotAClaimReadsTheDeadEntriesOnlyWhenItWalks() async throws {
        let snapshot = try await PostgresConnection.connect(configuration)
        try await snapshot.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try await snapshot.query("SELECT count(*) FROM detectq.requests")
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, run_at)
            SELECT 'https://cdn.example.com/gone-' || n || '.wav', now() - interval '1 minute' FROM generate_series(1, 3000) AS n
            """)
        // (Due a minute before the rest: a floor is never later than a second before its walk.)
        try await pool.query("UPDATE detectq.requests SET state = 'cancelled'")
        try await pool.query("INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/due-' || n || '.wav' FROM generate_series(1, 5) AS n")
        let claimer = try await PostgresConnection.connect(configuration)
        let (walk, floored) = try await walkThenStartAtTheFloor(on: claimer, limit: 100)
        try await snapshot.query("COMMIT")
        await snapshot.close()
        await claimer.close()
        #expect(walk.claimed.count == 5 && floored.claimed == walk.claimed)
        #expect(walk.indexEntries >= 3_000, "the walk steps over the 3,000 cancelled requests' entries: \(walk.indexEntries)")
        #expect(floored.indexEntries < 100, "the claim after it starts at the floor: \(floored.indexEntries) entries")
    }

    @Test func aRequestMadeClaimableBelowTheFloorIsClaimedByTheNextClaim() async throws {
        try await pool.query("INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/first-' || n || '.wav' FROM generate_series(1, 3) AS n")
        let claimer = try await PostgresConnection.connect(configuration)
        for _ in 0..<20 {
            try await pool.query("DELETE FROM detectq.requests WHERE media_url NOT LIKE '%/first-%'")
            try await pool.query("UPDATE detectq.claim_floors SET walked_at = '-infinity'")
            _ = try await claimOnce(on: claimer, limit: 100)
            let floor = try await pool.query("SELECT run_at FROM detectq.claim_floors WHERE queue = 'default'").first!.decode("run_at", as: Date.self)
            // A past run_at: the insert lowers the floor, and the lane keeps its one priority.
            let backdated = try await pool.query("""
                INSERT INTO detectq.requests (media_url, run_at) VALUES ('https://cdn.example.com/backdated.wav', now() - interval '1 hour')
                RETURNING id
                """).first!.decode("id", as: Int.self)
            let lowered = try await pool.query("SELECT run_at, levels::text AS levels FROM detectq.claim_floors WHERE queue = 'default'").first!
            #expect(try lowered.decode("run_at", as: Date.self) < floor.addingTimeInterval(-3_000), "the backdated insert lowered the floor")
            #expect(try lowered.decode("levels", as: String.self) == "{0}")
            let fromTheFloor = try await claimOnce(on: claimer, limit: 100)
            // Another priority, and a request moved by hand to a queue that had no row.
            let others = try await pool.query("""
                INSERT INTO detectq.requests (media_url, priority) VALUES ('https://cdn.example.com/urgent.wav', 5), ('https://cdn.example.com/moved.wav', 0)
                RETURNING id
                """).map { try $0.decode("id", as: Int.self) }
            try await pool.query(PostgresQuery(sql: "UPDATE detectq.requests SET queue = 'moved-by-hand' WHERE id = $1", parameters: [others[1]]))
            #expect(try await pool.query("SELECT levels::text AS levels FROM detectq.claim_floors WHERE queue = 'default'").first!
                .decode("levels", as: String.self) == "{5,0}")
            #expect(try await pool.query("SELECT 1 FROM detectq.claim_floors WHERE queue = 'moved-by-hand'").count == 1)
            let afterThem = try await claimOnce(on: claimer, limit: 100)
            guard !fromTheFloor.walked && !afterThem.walked else { continue }
            #expect(fromTheFloor.claimed.first == backdated && fromTheFloor.claimed.count == 4, "the claim from the lowered floor: \(fromTheFloor.claimed)")
            #expect(afterThem.claimed.first { $0 != others[1] } == others[0], "the default queue's higher priority first: \(afterThem.claimed)")
            #expect(afterThem.claimed.contains(others[1]) && afterThem.claimed.count == 6)
            await claimer.close()
            return
        }
        await claimer.close()
        Issue.record("twenty times a claim came a second after the floor's walk")
    }

    @Test func aClaimThatStartedAtAFloorAndFoundNothingComesBackWhenTheFloorIsASecondOld() async throws {
        for _ in 0..<20 {
            try await pool.query("UPDATE detectq.claim_floors SET walked_at = '-infinity'")
            let walked = try await store.claim(workerID: "floors", limit: 10, lease: .seconds(60), priorityAging: .seconds(600), pacing: nil)
            let walkedAt = try await pool.query("SELECT walked_at FROM detectq.claim_floors WHERE queue = 'default'").first!
                .decode("walked_at", as: Date.self)
            let floored = try await store.claim(workerID: "floors", limit: 10, lease: .seconds(60), priorityAging: .seconds(600), pacing: nil)
            let unchanged = try await pool.query(PostgresQuery(
                sql: "SELECT 1 FROM detectq.claim_floors WHERE queue = 'default' AND walked_at = $1", parameters: [walkedAt]
            )).count == 1
            guard unchanged else { continue }
            #expect(walked.requests.isEmpty && walked.claimAgain == .whenAnnounced, "the claim that walked saw everything")
            guard case .after(let wait) = floored.claimAgain else {
                Issue.record("the claim from the floor should say when to come back: \(floored.claimAgain)")
                return
            }
            #expect(floored.requests.isEmpty && wait <= .milliseconds(1_100))
            return
        }
        Issue.record("twenty times the second claim came a second after the first's walk")
    }
}
