import DetectqTestSupport
import Foundation
import Postgres
import Testing

@Suite("Values round-trip through PostgreSQL", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct TypeRoundTripTests {
    let pool: PostgresConnectionPool

    init() throws {
        pool = PostgresConnectionPool(configuration: try TestDatabase.serverConfiguration(), maximumConnections: 2)
    }

    /// Sends `value` as a parameter cast to `sqlType` and decodes what comes back.
    func roundTrip<T: PostgresEncodable & PostgresDecodable>(_ value: T, as sqlType: String) async throws -> T {
        let rows = try await pool.query(PostgresQuery(sql: "SELECT $1::\(sqlType) AS value", parameters: [value]))
        return try rows[0].decode("value", as: T.self)
    }

    @Test func integers() async throws {
        for value in [0, 1, -1, Int.max, Int.min, 42] {
            #expect(try await roundTrip(value, as: "int8") == value)
        }
        #expect(try await roundTrip(Int32.min, as: "int4") == Int32.min)
        #expect(try await roundTrip(Int16.max, as: "int2") == Int16.max)
        let widened = try await pool.query("SELECT 7::int2 AS small, 8::int4 AS medium")
        #expect(try widened[0].decode("small", as: Int.self) == 7)
        #expect(try widened[0].decode("medium", as: Int64.self) == 8)
    }

    @Test func booleans() async throws {
        #expect(try await roundTrip(true, as: "bool") == true)
        #expect(try await roundTrip(false, as: "bool") == false)
    }

    @Test func doubles() async throws {
        for value in [0.0, 1.5, -2.25, 0.1, 1e300, -1e-300, Double.pi, .infinity, -.infinity] {
            #expect(try await roundTrip(value, as: "float8") == value)
        }
        #expect(try await roundTrip(Double.nan, as: "float8").isNaN)
        let numeric = try await pool.query("SELECT 0.80::numeric AS score")
        #expect(try numeric[0].decode("score", as: Double.self) == 0.8)
    }

    @Test func numerics() async throws {
        let large = Decimal(string: "12345678901234567890.123456789", locale: Locale(identifier: "en_US_POSIX"))!
        #expect(try await roundTrip(large, as: "numeric") == large)
        #expect(try await roundTrip(Decimal(-5), as: "numeric") == Decimal(-5))
        #expect(try await roundTrip(Decimal.nan, as: "numeric").isNaN)
    }

    @Test func text() async throws {
        let samples = [
            "", "plain", "héllo wörld", "日本語のテキスト", "emoji 🎭🧪 and ZWJ 👩‍👩‍👧", "quotes ' and \" and \\ backslash",
            "line\nbreaks\tand tabs", "'; DROP TABLE detectq.requests; --", String(repeating: "x", count: 100_000),
        ]
        for sample in samples {
            #expect(try await roundTrip(sample, as: "text") == sample)
        }
    }

    @Test func timestamps() async throws {
        let dates = [
            Date(timeIntervalSince1970: 1_700_000_000.123456),
            Date(timeIntervalSince1970: 0),
            Date(timeIntervalSince1970: -1_000_000_000.5),
            Date(timeIntervalSince1970: 4_102_444_800.000001),
            Date.distantFuture,
            Date.distantPast,
        ]
        for date in dates {
            let back = try await roundTrip(date, as: "timestamptz")
            #expect(abs(back.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_001, "\(date)")
        }
        let rows = try await pool.query("""
            SELECT '2024-01-15 10:30:00.5+02'::timestamptz AS zoned, '2024-01-15 10:30:00'::timestamp AS plain,
                   '2024-02-29'::date AS day
            """)
        #expect(try rows[0].decode("zoned", as: Date.self) == Date(timeIntervalSince1970: 1_705_307_400.5))
        #expect(try rows[0].decode("plain", as: Date.self) == Date(timeIntervalSince1970: 1_705_314_600))
        #expect(try rows[0].decode("day", as: Date.self) == Date(timeIntervalSince1970: 1_709_164_800))
    }

    @Test func json() async throws {
        struct Item: Codable, Equatable {
            var uuid: String
            var score: [String]
            var nested: [String: Int]
        }
        let item = Item(uuid: "abc", score: ["0.9", "0.8"], nested: ["ünïcode 🎭": 1])
        let back = try await roundTrip(try PostgresJSON(encoding: item), as: "jsonb")
        #expect(try back.decode(Item.self) == item)
        let raw = try await roundTrip(PostgresJSON(text: #"{"a": [1, "two", null]}"#), as: "json")
        #expect(raw.text == #"{"a": [1, "two", null]}"#)
    }

    @Test func arrays() async throws {
        #expect(try await roundTrip([1, 2, 3], as: "int8[]") == [1, 2, 3])
        #expect(try await roundTrip([Int](), as: "int8[]") == [])
        let awkward = ["a,b", "{braces}", "\"quoted\"", "back\\slash", "NULL", "", " spaced ", "ünï"]
        #expect(try await roundTrip(awkward, as: "text[]") == awkward)
        #expect(try await roundTrip(["x", nil, "z"] as [String?], as: "text[]") == ["x", nil, "z"])
        #expect(try await roundTrip([1.5, -2.0], as: "float8[]") == [1.5, -2.0])
        #expect(try await roundTrip([true, false], as: "bool[]") == [true, false])
        let dates = [Date(timeIntervalSince1970: 1_700_000_000.25), Date(timeIntervalSince1970: 0)]
        #expect(try await roundTrip(dates, as: "timestamptz[]") == dates)
    }

    @Test func nullsDecodeAsNilForEveryType() async throws {
        let rows = try await pool.query("""
            SELECT NULL::int8 AS i, NULL::bool AS b, NULL::float8 AS d, NULL::numeric AS n, NULL::text AS t,
                   NULL::timestamptz AS ts, NULL::jsonb AS j, NULL::int8[] AS a
            """)
        let row = rows[0]
        #expect(try row.decode("i", as: Int?.self) == nil)
        #expect(try row.decode("b", as: Bool?.self) == nil)
        #expect(try row.decode("d", as: Double?.self) == nil)
        #expect(try row.decode("n", as: Decimal?.self) == nil)
        #expect(try row.decode("t", as: String?.self) == nil)
        #expect(try row.decode("ts", as: Date?.self) == nil)
        #expect(try row.decode("j", as: PostgresJSON?.self) == nil)
        #expect(try row.decode("a", as: [Int]?.self) == nil)
        #expect(try await roundTrip(String?.none, as: "text") == nil)
        #expect(try await roundTrip(Int?.none, as: "int8") == nil)
    }

    @Test func nullIntoNonOptionalIsAClearError() async throws {
        let rows = try await pool.query("SELECT NULL::text AS label")
        let error = try #require(throws: PostgresError.self) { try rows[0].decode("label", as: String.self) }
        #expect(error.kind == .decoding)
        #expect(error.description.contains("\"label\" is NULL"))
    }

    @Test func typeMismatchNamesTheColumnAndTypes() async throws {
        let rows = try await pool.query("SELECT 'fake'::text AS label, 3::int4 AS attempt, true AS flag")
        let asInt = try #require(throws: PostgresError.self) { try rows[0].decode("label", as: Int.self) }
        #expect(asInt.kind == .decoding)
        #expect(asInt.description.contains("\"label\" has type text"))
        #expect(asInt.description.contains("Int"))
        #expect(throws: PostgresError.self) { try rows[0].decode("attempt", as: String.self) }
        #expect(throws: PostgresError.self) { try rows[0].decode("flag", as: Double.self) }
        #expect(throws: PostgresError.self) { try rows[0].decode("attempt", as: Date.self) }
        #expect(throws: PostgresError.self) { try rows[0].decode("missing", as: Int.self) }
        let overflow = try await pool.query("SELECT 100000::int4 AS big")
        #expect(throws: PostgresError.self) { try overflow[0].decode("big", as: Int16.self) }
    }

    @Test func interpolatedValuesAreParametersNotSQL() async throws {
        let hostile = "x' OR '1'='1"
        let query: PostgresQuery = "SELECT \(hostile)::text AS value, \(7) + 1 AS sum"
        #expect(query.sql == "SELECT $1::text AS value, $2 + 1 AS sum")
        let rows = try await pool.query(query)
        #expect(try rows[0].decode("value", as: String.self) == hostile)
        #expect(try rows[0].decode("sum", as: Int.self) == 8)
        let identifier: PostgresQuery = "LISTEN \(identifier: "odd\"name")"
        #expect(identifier.sql == "LISTEN \"odd\"\"name\"")
    }
}
