import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("The state machine: one table in Swift, enforced by the database", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct StateTransitionTests {
    /// Every ordered pair of different states.
    static let pairs: [(RequestState, RequestState)] = RequestState.allCases.flatMap { from in
        RequestState.allCases.filter { $0 != from }.map { (from, $0) }
    }

    /// Moves a request to `state`, setting what that state requires (a lease, a remote uuid, a result, a reason).
    static func update(_ id: Int, to state: RequestState) -> PostgresQuery {
        PostgresQuery(sql: """
            UPDATE detectq.requests SET
                state = $2::text::detectq.request_state,
                locked_by = CASE WHEN $2::text = 'submitting' THEN 'test-worker' END,
                locked_until = CASE WHEN $2::text = 'submitting' THEN now() + interval '30 seconds' END,
                remote_uuid = CASE WHEN $2::text = 'awaiting_result' THEN coalesce(remote_uuid, 'uuid-' || id) ELSE remote_uuid END,
                result = CASE WHEN $2::text = 'completed' THEN '{}'::jsonb ELSE result END,
                completed_at = CASE WHEN $2::text = 'completed' THEN now() ELSE completed_at END,
                error_message = CASE WHEN $2::text IN ('failed', 'retrying') THEN 'test failure' ELSE error_message END
            WHERE id = $1
            """, parameters: [id, state.rawValue])
    }

    /// The shortest legal path from `queued` to `target`, by the Swift table.
    static func path(to target: RequestState) -> [RequestState] {
        var paths: [RequestState: [RequestState]] = [.queued: []]
        var frontier: [RequestState] = [.queued]
        while !frontier.isEmpty {
            let state = frontier.removeFirst()
            for next in state.successors.sorted(by: { $0.rawValue < $1.rawValue }) where paths[next] == nil {
                paths[next] = paths[state]! + [next]
                frontier.append(next)
            }
        }
        return paths[target]!
    }

    @Test func everyStateIsReachableFromQueued() {
        for state in RequestState.allCases {
            #expect(Self.path(to: state).last ?? .queued == state)
        }
    }

    @Test(arguments: pairs)
    func theTriggerAgreesWithSwift(from: RequestState, to: RequestState) async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let id = try await pool.query(
            "INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/t.mp4') RETURNING id"
        )[0].decode("id", as: Int.self)
        for step in Self.path(to: from) {
            try await pool.query(Self.update(id, to: step))
        }
        let eventsBefore = try await eventCount(id, pool)

        if from.canChange(to: to) {
            try await pool.query(Self.update(id, to: to))
            let events = try await pool.query("""
                SELECT from_state, to_state FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
                """)
            #expect(events.count == eventsBefore + 1, "exactly one event per transition")
            #expect(try events.last!.decode("from_state", as: RequestState.self) == from)
            #expect(try events.last!.decode("to_state", as: RequestState.self) == to)
        } else {
            let error = try await #require(throws: PostgresError.self) { try await pool.query(Self.update(id, to: to)) }
            #expect(error.constraint == "requests_legal_state_transition", "\(error)")
            #expect(try await eventCount(id, pool) == eventsBefore)
            let state = try await pool.query("SELECT state FROM detectq.requests WHERE id = \(id)")[0]
                .decode("state", as: RequestState.self)
            #expect(state == from)
        }
    }

    @Test func theTransitionTableInTheDatabaseIsTheSwiftTable() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let rows = try await pool.query("SELECT from_state, to_state FROM detectq.request_state_transitions")
        let database = Set(try rows.map { "\(try $0.decode("from_state", as: RequestState.self)) -> \(try $0.decode("to_state", as: RequestState.self))" })
        let swift = Set(RequestState.allCases.flatMap { from in from.successors.map { "\(from) -> \($0)" } })
        #expect(database == swift)
        let labels = try await pool.query("SELECT unnest(enum_range(NULL::detectq.request_state))::text AS label")
        #expect(try labels.map { try $0.decode("label", as: String.self) } == RequestState.allCases.map(\.rawValue))
    }

    @Test func anUpdateThatKeepsTheStateAppendsNoEvent() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let id = try await pool.query(
            "INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/s.mp4') RETURNING id"
        )[0].decode("id", as: Int.self)
        try await pool.query("UPDATE detectq.requests SET state = 'queued', priority = 5 WHERE id = \(id)")
        #expect(try await eventCount(id, pool) == 1)
    }

    /// The history trigger pairs a statement's old and new rows by grouping them (migration 0012), so an UPDATE
    /// of thousands of rows (a lease heartbeat) costs it time in proportion to its rows, even in a session whose
    /// first UPDATE changed one row: the planner sizes the transition tables at that first parse, and the join
    /// it planned then for one row compared 25 million pairs for 5,000 (2.5 s of trigger for an UPDATE of 0.1 s).
    /// The trigger's time is read against the UPDATE's own in the same statement's plan, so a loaded machine slows
    /// both alike; the best of five readings keeps a moment's noise out. Grouped, the trigger costs about what the
    /// UPDATE does; joined, tens of times more.
    @Test func aHeartbeatOverThousandsOfLeasesCostsTheHistoryTriggerTimeInProportion() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        try await pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/' || n || '.wav' FROM generate_series(1, 5001) AS n
            """)
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_until = now() + interval '1 minute', locked_by = 'one'
            WHERE id = (SELECT max(id) FROM detectq.requests)
            """)
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', attempt = 1, locked_until = now() + interval '1 minute', locked_by = 'many'
            WHERE state = 'queued'
            """)
        #expect(try await pool.query("""
            SELECT count(*)::int8 AS n FROM detectq.request_events WHERE from_state = 'queued' AND to_state = 'submitting'
            """)[0].decode("n", as: Int.self) == 5001, "each row's change of state is one event")
        var best = Double.infinity
        var plans: [String] = []
        for _ in 0..<5 {
            let plan = try await pool.query("""
                EXPLAIN (ANALYZE) UPDATE detectq.requests SET locked_until = now() + interval '1 minute' WHERE locked_by = 'many'
                """).map { try $0.decode("QUERY PLAN", as: String.self) }.joined(separator: "\n")
            let trigger = try #require(plan.firstMatch(of: /Trigger requests_record_transitions: time=([0-9.]+)/), "\(plan)")
            let total = try #require(plan.firstMatch(of: /Execution Time: ([0-9.]+) ms/), "\(plan)")
            let triggerTime = try #require(Double(trigger.1))
            let updateTime = try #require(Double(total.1)) - triggerTime
            best = min(best, triggerTime / max(updateTime, 0.001))
            plans.append(plan)
        }
        print("history trigger over 5,000 leases: \(best) times the UPDATE's own time")
        #expect(best < 4, "the trigger took \(best) times the UPDATE's own time over 5,000 rows:\n\(plans.joined(separator: "\n\n"))")
    }

    /// The history is written once per statement (migration 0011): a backfill by INSERT … SELECT or COPY, and an
    /// UPDATE of many rows, record one event per row; one illegal row refuses its whole statement; a DELETE takes
    /// its requests' events with it.
    @Test func aStatementOfManyRowsRecordsEachRowsEventAndIsRefusedWholeForOneIllegalRow() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let batch = "many-" + String(UInt32.random(in: .min ... .max))
        try await pool.query("""
            INSERT INTO detectq.requests (media_url, metadata)
            SELECT 'https://cdn.example.com/many-' || n || '.wav', jsonb_build_object('batch', \(batch)::text) FROM generate_series(1, 40) AS n
            """)
        let copied = try await pool.withConnection { connection in
            try await connection.copyIn(
                "COPY detectq.requests (media_url, metadata) FROM STDIN",
                data: Data((1...40).map { "https://cdn.example.com/copied-\($0).wav\t{\"batch\": \"\(batch)\"}\n" }.joined().utf8)
            )
        }
        #expect(copied == 40)
        let ids = try await pool.query("SELECT id FROM detectq.requests WHERE metadata->>'batch' = \(batch) ORDER BY id")
            .map { try $0.decode("id", as: Int.self) }
        #expect(ids.count == 80)
        func events(_ condition: String) async throws -> Int {
            try await pool.query(PostgresQuery(sql: """
                SELECT count(*)::int8 AS n FROM detectq.request_events WHERE request_id = ANY($1) AND \(condition)
                """, parameters: [ids]))[0].decode("n", as: Int.self)
        }
        #expect(try await events("from_state IS NULL AND to_state = 'queued'") == 80, "the insert is each row's first event")

        let moved = Array(ids.prefix(30))
        try await pool.query("""
            UPDATE detectq.requests SET state = 'submitting', locked_by = 'w', locked_until = now() + interval '1 minute'
            WHERE id = ANY(\(moved))
            """)
        #expect(try await events("from_state = 'queued' AND to_state = 'submitting'") == 30)
        // Nineteen legal moves (queued to cancelled) and one illegal (queued to failed) in one statement.
        let mixed = Array(ids[30..<50])
        let illegal = try await #require(throws: PostgresError.self) {
            try await pool.query("""
                UPDATE detectq.requests SET state = CASE WHEN id = \(mixed[0]) THEN 'failed'::detectq.request_state ELSE 'cancelled' END,
                    error_message = CASE WHEN id = \(mixed[0]) THEN 'no reason to skip the attempt' END
                WHERE id = ANY(\(mixed))
                """)
        }
        #expect(illegal.constraint == "requests_legal_state_transition", "\(illegal)")
        #expect(try await events("to_state IN ('cancelled', 'failed')") == 0, "the whole statement was refused")
        #expect(try await pool.query("SELECT count(*)::int8 AS n FROM detectq.requests WHERE id = ANY(\(mixed)) AND state = 'queued'")[0]
            .decode("n", as: Int.self) == 20)

        try await pool.query("DELETE FROM detectq.requests WHERE id = ANY(\(ids))")
        #expect(try await events("true") == 0, "a request's events go with it")
    }

    @Test func eventsRecordTheWorkerAndTheReason() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let id = try await pool.query(
            "INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/w.mp4') RETURNING id"
        )[0].decode("id", as: Int.self)
        try await pool.transaction { connection in
            try await connection.query("SELECT set_config('detectq.worker_id', \("host-a:42"), true)")
            try await connection.query(Self.update(id, to: .submitting))
            try await connection.query(Self.update(id, to: .failed))
        }
        let events = try await pool.query("""
            SELECT to_state, worker_id, detail FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
            """)
        #expect(try events.map { try $0.decode("worker_id", as: String?.self) } == [nil, "host-a:42", "host-a:42"])
        #expect(try events[2].decode("detail", as: String?.self) == "test failure")
    }

    @Test func stateInvariantsAreConstraints() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let id = try await pool.query(
            "INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/i.mp4') RETURNING id"
        )[0].decode("id", as: Int.self)
        let unleased = try await #require(throws: PostgresError.self) {
            try await pool.query("UPDATE detectq.requests SET state = 'submitting' WHERE id = \(id)")
        }
        #expect(unleased.constraint == "requests_submitting_has_lease")
        try await pool.query(Self.update(id, to: .submitting))
        let noUUID = try await #require(throws: PostgresError.self) {
            try await pool.query("""
                UPDATE detectq.requests SET state = 'awaiting_result', locked_by = NULL, locked_until = NULL WHERE id = \(id)
                """)
        }
        #expect(noUUID.constraint == "requests_awaiting_result_has_remote_uuid")
        let noResult = try await #require(throws: PostgresError.self) {
            try await pool.query("""
                UPDATE detectq.requests SET state = 'completed', locked_by = NULL, locked_until = NULL WHERE id = \(id)
                """)
        }
        #expect(noResult.constraint == "requests_completed_has_result")
        let noReason = try await #require(throws: PostgresError.self) {
            try await pool.query("""
                UPDATE detectq.requests SET state = 'failed', locked_by = NULL, locked_until = NULL WHERE id = \(id)
                """)
        }
        #expect(noReason.constraint == "requests_failed_has_reason")
    }

    private func eventCount(_ id: Int, _ pool: PostgresConnectionPool) async throws -> Int {
        try await pool.query("SELECT count(*) AS n FROM detectq.request_events WHERE request_id = \(id)")[0]
            .decode("n", as: Int.self)
    }
}
