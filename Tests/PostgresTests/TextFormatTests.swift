import Foundation
@testable import Postgres
import Testing

@Suite("PostgreSQL text formats, without a server")
struct TextFormatTests {
    @Test func arrayTextRoundTrips() {
        let elements: [String?] = ["a", nil, "b,c", "\"q\"", "\\", "{x}", "", "NULL"]
        #expect(PostgresArrayText.parse(PostgresArrayText.format(elements)) == elements)
    }

    @Test func arrayTextAsTheServerWritesIt() {
        #expect(PostgresArrayText.parse("{1,2,NULL}") == ["1", "2", nil])
        #expect(PostgresArrayText.parse("{}") == [])
        #expect(PostgresArrayText.parse("[0:1]={7,8}") == ["7", "8"])
        #expect(PostgresArrayText.parse("{{1,2},{3,4}}") == nil)
        #expect(PostgresArrayText.parse("{\"unterminated}") == nil)
        #expect(PostgresArrayText.parse("not an array") == nil)
    }

    @Test func timestampsParseEveryOffsetForm() {
        let base = Date(timeIntervalSince1970: 1_705_314_600)
        #expect(PostgresTimestamp.parse("2024-01-15 10:30:00+00") == base)
        #expect(PostgresTimestamp.parse("2024-01-15 12:30:00+02") == base)
        #expect(PostgresTimestamp.parse("2024-01-15 05:00:00-05:30") == base)
        #expect(PostgresTimestamp.parse("2024-01-15T10:30:00Z") == base)
        #expect(PostgresTimestamp.parse("2024-01-15 10:30:00.25+00") == base.addingTimeInterval(0.25))
        #expect(PostgresTimestamp.parse("1969-12-31 23:59:59+00") == Date(timeIntervalSince1970: -1))
        #expect(PostgresTimestamp.parse("infinity") == .distantFuture)
        #expect(PostgresTimestamp.parse("2024-01-15 10:30") == nil)
        #expect(PostgresTimestamp.parse("yesterday") == nil)
    }

    @Test func timestampsFormatWithMicroseconds() {
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 1_705_314_600.000123)) == "2024-01-15T10:30:00.000123Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -0.5)) == "1969-12-31T23:59:59.500000Z")
    }
}
