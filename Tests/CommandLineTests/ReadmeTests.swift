import DetectqTestSupport
import Foundation
import Testing

/// The README as a new user reads it: its quick start, its commands and its settings match the product.
@Suite("README")
struct ReadmeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    var readme: String {
        get throws { try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8) }
    }

    @Test func theQuickStartIsTwoCommandsThatExistAndCIRunsTheTestOne() throws {
        let quickStart = try #require(try readme.components(separatedBy: "## Quick start").dropFirst().first)
        let block = try #require(quickStart.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "```").first)
        let commands = block.split(separator: "\n").map { $0.split(separator: "#")[0].trimmingCharacters(in: .whitespaces) }
        #expect(commands == ["scripts/demo.sh", "scripts/test.sh"])
        for command in commands {
            #expect(FileManager.default.isExecutableFile(atPath: Self.root.appendingPathComponent(command).path), "\(command) is executable")
        }
        let demo = try String(contentsOf: Self.root.appendingPathComponent("scripts/demo.sh"), encoding: .utf8)
        #expect(demo.contains("detectq_install_prerequisites"))
        #expect(demo.split(separator: "\n").last == #"exec .build/debug/detectq demo "$@""#, "the demo script runs the command the demo tests check")
        let ci = try String(contentsOf: Self.root.appendingPathComponent(".ci/run"), encoding: .utf8)
        #expect(ci.split(separator: "\n").last == "exec scripts/test.sh")
    }

    @Test func everyCommandTheExecutableHasIsDocumented() async throws {
        let help = try await DetectqExecutable.run(["--help"])
        let subcommands = help.standardOutput.components(separatedBy: "SUBCOMMANDS:").last?.split(separator: "\n")
            .compactMap { line in line.prefixMatch(of: #/  ([a-z-]+)  /#).map { String($0.1) } } ?? []
        #expect(subcommands.count == 19, "\(help.standardOutput)")
        for command in subcommands where command != "help" {
            #expect(try readme.contains("`detectq \(command)"), "the README documents detectq \(command)")
        }
    }

    @Test func everySettingIsDocumented() async throws {
        let check = try await DetectqExecutable.run(["config", "check", "--help"])
        let names = check.standardOutput.matches(of: /\b(?:DATABASE_URL|RESEMBLE_[A-Z_]+|DETECTQ_[A-Z_]+)\b/).map { String($0.0) }
        #expect(Set(names).count >= 25)
        for name in Set(names) {
            #expect(try readme.contains("`\(name)`"), "the README documents \(name)")
        }
    }
}
