import Foundation
import Testing

/// REFERENCE.md, the public contract users build on, against the code: every variable the product reads is
/// in its table, and every variable in its table is read.
@Suite("REFERENCE.md")
struct ReferenceDocumentTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The variable names written as string literals in the product's code (`Sources/`, `plugins/`; the tooling
    /// in `Tooling/` reads none of the product's settings).
    static func variablesReadByTheCode() throws -> Set<String> {
        var names: Set<String> = []
        for folder in ["Sources", "plugins"] {
            let root = repository.appendingPathComponent(folder)
            guard let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { continue }
            for case let file as URL in files where file.pathExtension == "swift" {
                let text = try String(contentsOf: file, encoding: .utf8)
                for match in text.matches(of: #/"((?:DETECTQ|RESEMBLE|OTEL)_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)"/#) {
                    names.insert(String(match.output.1))
                }
            }
        }
        return names
    }

    /// The names in the first column of REFERENCE.md's variables table.
    static func variablesInTheReference() throws -> Set<String> {
        let text = try String(contentsOf: repository.appendingPathComponent("REFERENCE.md"), encoding: .utf8)
        guard let table = text.components(separatedBy: "| variable | default | meaning |").dropFirst().first else { return [] }
        var names: Set<String> = []
        for line in table.split(separator: "\n").dropFirst() {
            guard line.hasPrefix("|") else { break }
            let firstCell = line.split(separator: "|", omittingEmptySubsequences: true).first ?? ""
            names.formUnion(firstCell.matches(of: #/(?:DETECTQ|RESEMBLE|OTEL)_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL/#).map { String($0.output) })
        }
        return names
    }

    @Test func theVariablesTableNamesEverySettingTheCodeReadsAndNoOther() throws {
        let read = try Self.variablesReadByTheCode()
        let documented = try Self.variablesInTheReference()
        #expect(read.count > 30 && documented.count > 30, "the scan found too little: \(read.count) read, \(documented.count) documented")
        #expect(read.subtracting(documented).sorted() == [], "read by the code but missing from REFERENCE.md's variables table")
        #expect(documented.subtracting(read).sorted() == [], "in REFERENCE.md's variables table but read nowhere")
    }
}
