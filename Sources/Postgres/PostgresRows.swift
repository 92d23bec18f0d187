import CLibPQ

/// The rows a statement returned, read straight from libpq's result (which is immutable once made, and so
/// safe to read from any thread) and decoded column by column on demand.
package struct PostgresRows: Sendable, RandomAccessCollection {
    let result: ResultHandle
    /// The result's columns, in order.
    package let columns: [PostgresColumn]
    /// How many rows the statement inserted, updated or deleted (or returned, for a SELECT).
    package let affectedRows: Int

    init(result: ResultHandle) {
        self.result = result
        let pointer = result.pointer
        columns = (0..<Int(PQnfields(pointer))).map { index in
            PostgresColumn(
                name: String(cString: PQfname(pointer, Int32(index))),
                type: PostgresDataType(rawValue: PQftype(pointer, Int32(index)))
            )
        }
        affectedRows = Int(String(cString: PQcmdTuples(pointer))) ?? 0
        endIndex = Int(PQntuples(pointer))
    }

    package var startIndex: Int { 0 }
    package let endIndex: Int

    package subscript(position: Int) -> PostgresRow {
        PostgresRow(rows: self, index: position)
    }

    func columnIndex(named name: String) throws -> Int {
        guard let index = columns.firstIndex(where: { $0.name == name }) else {
            throw PostgresError.decoding("the result has no column \"\(name)\"")
        }
        return index
    }
}

/// One row of a result.
package struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    /// Decodes the named column as `type`.
    package func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try decode(at: try rows.columnIndex(named: column), as: type)
    }

    /// Decodes the column at a zero-based position as `type`.
    package func decode<T: PostgresDecodable>(at column: Int, as type: T.Type = T.self) throws -> T {
        guard rows.columns.indices.contains(column) else {
            throw PostgresError.decoding("the result has no column at position \(column)")
        }
        return try T.decode(from: PostgresCell(text: text(at: column), column: rows.columns[column]))
    }

    private func text(at column: Int) -> String? {
        let pointer = rows.result.pointer
        if PQgetisnull(pointer, Int32(index), Int32(column)) == 1 { return nil }
        return String(cString: PQgetvalue(pointer, Int32(index), Int32(column)))
    }
}

/// Owns a libpq result and frees it when the last row referring to it is gone.
final class ResultHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit {
        PQclear(pointer)
    }
}
