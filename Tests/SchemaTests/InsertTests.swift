import DetectQueue
import DetectqTestSupport
import Foundation
import Postgres
import Testing

/// A producer's INSERT that the database must refuse, and the constraint (or column) it must name.
struct BadInsert: Sendable, CustomTestStringConvertible {
    let sql: String
    let constraint: String?
    let column: String?
    let sqlState: SQLState

    static func violates(_ constraint: String, _ sql: String, sqlState: SQLState = .checkViolation) -> BadInsert {
        BadInsert(sql: sql, constraint: constraint, column: nil, sqlState: sqlState)
    }

    static func nullIn(_ column: String, _ sql: String) -> BadInsert {
        BadInsert(sql: sql, constraint: nil, column: column, sqlState: .notNullViolation)
    }

    static func badType(_ sqlState: SQLState, _ sql: String) -> BadInsert {
        BadInsert(sql: sql, constraint: nil, column: nil, sqlState: sqlState)
    }

    var testDescription: String { constraint ?? column.map { "NULL \($0)" } ?? sqlState.code }
}

private let url = "'https://cdn.example.com/a.mp4'"

@Suite("Producers' INSERTs are checked by the database", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct InsertTests {
    static let badInserts: [BadInsert] = [
        .violates("requests_exactly_one_media_source", "INSERT INTO detectq.requests (intelligence) VALUES (true)"),
        .violates("requests_exactly_one_media_source",
                  "INSERT INTO detectq.requests (media_url, media_path) VALUES (\(url), 'a.wav')"),
        .violates("requests_exactly_one_media_source",
                  "INSERT INTO detectq.requests (media_path, media_token) VALUES ('a.wav', 'tok')"),
        .violates("requests_exactly_one_media_source",
                  "INSERT INTO detectq.requests (media_url, media_path, media_token) VALUES (\(url), 'a.wav', 'tok')"),
        .violates("requests_media_url_not_blank", "INSERT INTO detectq.requests (media_url) VALUES ('  ')"),
        .violates("requests_media_url_https", "INSERT INTO detectq.requests (media_url) VALUES ('http://cdn.example.com/a.wav')"),
        .violates("requests_media_url_https", "INSERT INTO detectq.requests (media_url) VALUES ('ftp://cdn.example.com/a.wav')"),
        .violates("requests_media_url_https", "INSERT INTO detectq.requests (media_url) VALUES ('cdn.example.com/https://a.wav')"),
        .violates("requests_media_path_not_blank", "INSERT INTO detectq.requests (media_path) VALUES ('')"),
        .violates("requests_media_token_not_blank", "INSERT INTO detectq.requests (media_token) VALUES ('')"),
        .violates("requests_frame_length_range", "INSERT INTO detectq.requests (media_url, frame_length) VALUES (\(url), 0)"),
        .violates("requests_frame_length_range", "INSERT INTO detectq.requests (media_url, frame_length) VALUES (\(url), 5)"),
        .violates("requests_start_region_non_negative",
                  "INSERT INTO detectq.requests (media_url, start_region) VALUES (\(url), -1)"),
        .violates("requests_start_region_non_negative",
                  "INSERT INTO detectq.requests (media_url, start_region) VALUES (\(url), 'NaN')"),
        .violates("requests_end_region_non_negative",
                  "INSERT INTO detectq.requests (media_url, end_region) VALUES (\(url), -0.5)"),
        .violates("requests_end_region_after_start_region",
                  "INSERT INTO detectq.requests (media_url, start_region, end_region) VALUES (\(url), 5, 3)"),
        .violates("requests_end_region_after_start_region",
                  "INSERT INTO detectq.requests (media_url, start_region, end_region) VALUES (\(url), 2.5, 2.5)"),
        .violates("requests_max_video_secs_non_negative",
                  "INSERT INTO detectq.requests (media_url, max_video_secs) VALUES (\(url), -10)"),
        .violates("requests_max_video_fps_non_negative",
                  "INSERT INTO detectq.requests (media_url, max_video_fps) VALUES (\(url), -1)"),
        .violates("requests_model_types_valid",
                  "INSERT INTO detectq.requests (media_url, model_types) VALUES (\(url), 'audio')"),
        .violates("requests_pipeline_not_blank", "INSERT INTO detectq.requests (media_url, pipeline) VALUES (\(url), '')"),
        .violates("requests_wait_mode_valid", "INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\(url), 'later')"),
        .violates("requests_max_attempts_positive",
                  "INSERT INTO detectq.requests (media_url, max_attempts) VALUES (\(url), 0)"),
        .violates("requests_metadata_is_object", "INSERT INTO detectq.requests (media_url, metadata) VALUES (\(url), '[]')"),
        .violates("requests_metadata_is_object",
                  "INSERT INTO detectq.requests (media_url, metadata) VALUES (\(url), '\"text\"')"),
        .violates("requests_new_request_starts_queued",
                  "INSERT INTO detectq.requests (media_url, state) VALUES (\(url), 'completed')"),
        .violates("requests_new_request_starts_queued",
                  "INSERT INTO detectq.requests (media_url, remote_uuid) VALUES (\(url), 'already-submitted')"),
        .nullIn("metadata", "INSERT INTO detectq.requests (media_url, metadata) VALUES (\(url), NULL)"),
        .nullIn("wait_mode", "INSERT INTO detectq.requests (media_url, wait_mode) VALUES (\(url), NULL)"),
        .badType(.numericValueOutOfRange, "INSERT INTO detectq.requests (media_url, priority) VALUES (\(url), 40000)"),
        .badType(.invalidTextRepresentation,
                 "INSERT INTO detectq.requests (media_url, frame_length) VALUES (\(url), 'two')"),
        .badType(.invalidTextRepresentation,
                 "INSERT INTO detectq.requests (media_url, metadata) VALUES (\(url), '{not json')"),
    ]

    @Test(arguments: badInserts)
    func aBadInsertIsRejectedByName(_ insert: BadInsert) async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let error = try await #require(throws: PostgresError.self) {
            try await pool.query(PostgresQuery(sql: insert.sql, parameters: []))
        }
        #expect(error.sqlState == insert.sqlState, "\(error)")
        if let constraint = insert.constraint { #expect(error.constraint == constraint, "\(error)") }
        if let column = insert.column { #expect(error.column == column, "\(error)") }
    }

    @Test func aDuplicateIdempotencyKeyIsRejected() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let key = "order-\(UUID().uuidString)"
        try await pool.query("INSERT INTO detectq.requests (media_url, idempotency_key) VALUES ('https://a/b.mp4', \(key))")
        let error = try await #require(throws: PostgresError.self) {
            try await pool.query("INSERT INTO detectq.requests (media_token, idempotency_key) VALUES ('t', \(key))")
        }
        #expect(error.sqlState == .uniqueViolation)
        #expect(error.constraint == "requests_idempotency_key_unique")
        let many = try await pool.query("""
            INSERT INTO detectq.requests (media_url) VALUES ('https://a/1.mp4'), ('https://a/2.mp4') RETURNING id
            """)
        #expect(many.count == 2, "requests without a key never collide")
    }

    @Test(arguments: [
        ("media_url", "https://cdn.example.com/a.mp4", "url"),
        ("media_path", "calls/2026/11/22/call-881.wav", "path"),
        ("media_token", "eyJhbGciOiJIUzI1NiJ9.payload.signature", "token"),
    ])
    func aValidInsertGetsTheContractsDefaults(column: String, value: String, label: String) async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let before = Date()
        let rows = try await pool.query(PostgresQuery(
            sql: "INSERT INTO detectq.requests (\(column)) VALUES ($1) RETURNING *", parameters: [value]
        ))
        let row = try #require(rows.first)
        let id = try row.decode("id", as: Int.self)
        #expect(try row.decode(column, as: String.self) == value)
        #expect(try row.decode("state", as: RequestState.self) == .queued)
        #expect(try row.decode("attempt", as: Int.self) == 0)
        #expect(try row.decode("wait_mode", as: String.self) == "auto")
        #expect(try row.decode("priority", as: Int.self) == 0)
        #expect(try row.decode("max_attempts", as: Int.self) == 8)
        #expect(try row.decode("metadata", as: PostgresJSON.self).text == "{}")
        for flag in ["visualize", "intelligence", "audio_source_tracing", "use_reverse_search", "use_ood_detector",
                     "zero_retention_mode"] {
            #expect(try row.decode(flag, as: Bool.self) == false, "\(flag)")
        }
        for unset in ["frame_length", "idempotency_key", "locked_by", "remote_uuid", "label", "error_message"] {
            #expect(try row.decode(unset, as: String?.self) == nil || unset == "frame_length", "\(unset)")
        }
        #expect(try row.decode("frame_length", as: Int?.self) == nil)
        #expect(try row.decode("is_fake", as: Bool?.self) == nil)
        let runAt = try row.decode("run_at", as: Date.self)
        #expect(abs(runAt.timeIntervalSince(before)) < 60)
        #expect(try row.decode("created_at", as: Date.self) == runAt)

        let events = try await pool.query("""
            SELECT from_state, to_state FROM detectq.request_events WHERE request_id = \(id) ORDER BY id
            """)
        #expect(events.count == 1)
        #expect(try events[0].decode("from_state", as: RequestState?.self) == nil)
        #expect(try events[0].decode("to_state", as: RequestState.self) == .queued)
    }

    @Test func everyOptionTheContractNamesIsAccepted() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        let rows = try await pool.query("""
            INSERT INTO detectq.requests (
                media_url, visualize, intelligence, audio_source_tracing, use_reverse_search, use_ood_detector,
                zero_retention_mode, frame_length, start_region, end_region, max_video_secs, max_video_fps,
                model_types, pipeline, wait_mode, priority, run_at, max_attempts, idempotency_key, metadata)
            VALUES (\("https://cdn.example.com/v.mp4"), true, true, true, true, true, true, 4, 1.5, 9.25, 120, 2.5,
                    'talking_head', 'general->facial->object', 'callback', -3, now() + interval '1 hour', 1,
                    \(UUID().uuidString), '{"case": 881, "tags": ["a"]}')
            RETURNING end_region, pipeline, priority, metadata
            """)
        #expect(try rows[0].decode("end_region", as: Decimal.self) == Decimal(string: "9.25"))
        #expect(try rows[0].decode("pipeline", as: String.self) == "general->facial->object")
        #expect(try rows[0].decode("priority", as: Int.self) == -3)
        struct Metadata: Decodable, Equatable {
            var `case`: Int
            var tags: [String]
        }
        #expect(try rows[0].decode("metadata", as: PostgresJSON.self).decode(Metadata.self) == Metadata(case: 881, tags: ["a"]))
    }

    /// The queue's name and the media's hash are checked as the contract words them (1 to 63 of `a-z 0-9 _ - .`;
    /// 64 hex characters, any case, stored lower), judged here character by character, not by the constraint's SQL:
    /// migration 0023 rewrote both without a counted repetition, which cost 2 and 5 us on every update of a row.
    @Test func theQueueNameAndTheHashAcceptExactlyWhatTheContractSays() async throws {
        // A database of its own: each accepted name becomes a queue.
        let pool = PostgresConnectionPool(configuration: try await TestDatabase.createMigratedDatabase(), maximumConnections: 1)
        let hex = "0123456789abcdef"
        func isQueueName(_ name: String) -> Bool {
            (1...63).contains(name.count) && name.allSatisfy { "abcdefghijklmnopqrstuvwxyz0123456789_-.".contains($0) }
        }
        func isHash(_ hash: String) -> Bool { hash.count == 64 && hash.lowercased().allSatisfy { hex.contains($0) } }
        let sixtyFour = String(repeating: "0123456789abcdef", count: 4)
        let names = ["default", "a", "a.b_c-9", String(repeating: "q", count: 63), String(repeating: "q", count: 64), "", "Live",
                     "a b", "ü", "queue\n", String(repeating: "q", count: 62) + "é", "-", "..", "a/b"]
        for name in names {
            let accepted = await insertSucceeds(pool, "queue", name, constraint: "requests_queue_name")
            #expect(accepted == isQueueName(name), "queue \(name.debugDescription)")
        }
        let hashes = [sixtyFour, sixtyFour.uppercased(), "ABCDEF" + sixtyFour.dropFirst(6), String(sixtyFour.dropLast()),
                      sixtyFour + "0", String(repeating: "g", count: 64), String(sixtyFour.dropLast()) + "é",
                      String(sixtyFour.dropLast(2)) + "é", sixtyFour + "\n", String(sixtyFour.dropLast()) + " ", ""]
        for hash in hashes {
            let accepted = await insertSucceeds(pool, "media_sha256", hash, constraint: "requests_media_sha256_hex")
            #expect(accepted == isHash(hash), "hash \(hash.debugDescription)")
        }
        await pool.close()
    }

    /// Whether a request with `value` in `column` is accepted; a refusal must name `constraint`.
    private func insertSucceeds(_ pool: PostgresConnectionPool, _ column: String, _ value: String, constraint: String) async -> Bool {
        do {
            try await pool.query(PostgresQuery(
                sql: "INSERT INTO detectq.requests (media_url, \(column)) VALUES ('https://cdn.example.com/a.mp4', $1)", parameters: [value]
            ))
            return true
        } catch {
            #expect((error as? PostgresError)?.constraint == constraint, "\(column) \(value.debugDescription): \(error)")
            return false
        }
    }

    /// A burst into a table whose statistics saw none of it (here never analyzed, as on a fresh install) is
    /// claimed through the claimable index, not by reading and sorting every waiting row for each claim of a
    /// hundred (what the planner chose before migration 0011: 1,200 pages and a sort spilled to disk, 20 ms).
    @Test func aClaimFromABurstOnStaleStatisticsReadsTheIndexNotTheWholeTable() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        try await pool.query("""
            INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/burst-' || n || '.wav' FROM generate_series(1, 50000) AS n
            """)
        // The session's first call also reads the catalogs it plans with (up to ~1,000 pages under load): warm it.
        try await pool.query("SELECT count(*) FROM detectq.next_claimable_requests(100)")
        for round in 1...3 {
            let text = try await pool.query("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM detectq.next_claimable_requests(100)")[0]
                .decode(at: 0, as: PostgresJSON.self).text
            let plan = try #require((try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])?.first?["Plan"] as? [String: Any])
            let pages = try #require(plan["Shared Hit Blocks"] as? Int)
            let spilled = try #require(plan["Temp Written Blocks"] as? Int)
            #expect(spilled == 0, "round \(round): no sort spilled to disk")
            #expect(pages < 600, "round \(round): \(pages) pages read for 100 of 50,000 waiting rows")
        }
        await pool.close()
    }

    /// The claim function takes exactly the states the state machine claims from, due now, in claim order.
    @Test func theClaimTakesWhatTheStateMachineClaimsInClaimOrder() async throws {
        let configuration = try await TestDatabase.createMigratedDatabase()
        let pool = PostgresConnectionPool(configuration: configuration, maximumConnections: 1)
        var byState: [RequestState: Int] = [:]
        for state in RequestState.allCases {
            let id = try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://cdn.example.com/s.wav') RETURNING id")[0]
                .decode("id", as: Int.self)
            for step in StateTransitionTests.path(to: state) { try await pool.query(StateTransitionTests.update(id, to: step)) }
            byState[state] = id
        }
        let urgent = try await pool.query("INSERT INTO detectq.requests (media_url, priority) VALUES ('https://cdn.example.com/u.wav', 5) RETURNING id")[0]
            .decode("id", as: Int.self)
        try await pool.query("INSERT INTO detectq.requests (media_url, run_at) VALUES ('https://cdn.example.com/l.wav', now() + interval '1 hour')")
        let claimed = try await pool.query("SELECT claimable_id, claimed_from FROM detectq.next_claimable_requests(100)")
            .map { (try $0.decode("claimable_id", as: Int.self), try $0.decode("claimed_from", as: String.self)) }
        let claimable = Set(RequestStateMachine.claims.map(\.from))
        let expected = [urgent] + byState.filter { claimable.contains($0.key) }.map(\.value).sorted()
        #expect(claimed.map(\.0) == expected, "highest priority first, then by run_at; nothing not yet due")
        #expect(Set(claimed.dropFirst().map(\.1)) == Set(claimable.map(\.rawValue)))
        await pool.close()
    }

    @Test func anInsertWakesListeners() async throws {
        let pool = try await SchemaDatabase.shared.pool()
        var events = PostgresNotificationListener.listen(
            try await SchemaDatabase.shared.configuration(), channels: ["detectq_requests"]
        ).makeAsyncIterator()
        #expect(await events.next() == .listening)
        try await pool.query("INSERT INTO detectq.requests (media_url) VALUES ('https://a/wake.mp4')")
        guard case .notification(let notification)? = await events.next() else {
            Issue.record("no notification after an insert")
            return
        }
        #expect(notification.channel == "detectq_requests")
    }
}
