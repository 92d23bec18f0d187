import DetectQueue
import Foundation
import Testing

@Suite("media_path never leaves the media root")
struct MediaRootTests {
    let base: URL
    let root: MediaRoot

    init() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-root-\(UUID().uuidString)")
        let media = base.appendingPathComponent("media")
        let outside = base.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: media.appendingPathComponent("calls/2026"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try Data("RIFF voice".utf8).write(to: media.appendingPathComponent("calls/2026/call-881.wav"))
        try Data().write(to: media.appendingPathComponent("empty.wav"))
        try Data("notes".utf8).write(to: media.appendingPathComponent("notes.txt"))
        try Data("secret".utf8).write(to: outside.appendingPathComponent("secret.wav"))
        try FileManager.default.createSymbolicLink(atPath: media.appendingPathComponent("escape.wav").path, withDestinationPath: outside.appendingPathComponent("secret.wav").path)
        try FileManager.default.createSymbolicLink(atPath: media.appendingPathComponent("linked-dir").path, withDestinationPath: outside.path)
        try FileManager.default.createSymbolicLink(atPath: media.appendingPathComponent("alias.wav").path, withDestinationPath: "calls/2026/call-881.wav")
        root = try MediaRoot(path: media.path)
    }

    @Test func aFileInsideTheRootOpens() throws {
        let file = try root.open("calls/2026/call-881.wav")
        #expect(file.fileName == "call-881.wav" && file.size == 10 && file.contentType == "audio/wav")
        #expect(try root.open("alias.wav").size == 10, "a symlink that stays inside is fine")
    }

    @Test(arguments: [
        ("../outside/secret.wav", "contains '..'"),
        ("calls/../../outside/secret.wav", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("escape.wav", "leads outside DETECTQ_MEDIA_ROOT"),
        ("linked-dir/secret.wav", "leads outside DETECTQ_MEDIA_ROOT"),
        ("missing.wav", "does not exist"),
        ("empty.wav", "empty"),
        ("notes.txt", ".txt, which the API does not accept"),
        ("calls", "not a regular file"),
    ])
    func aBadPathIsRefusedWithAReason(path: String, reason: String) {
        let error = #expect(throws: MediaPathError.self) { try root.open(path) }
        #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
        #expect(error?.description.hasPrefix("media_path \(path)") == true)
    }

    @Test func theRootMustBeADirectory() {
        #expect(throws: MediaPathError.self) { try MediaRoot(path: base.appendingPathComponent("nowhere").path) }
        #expect(throws: MediaPathError.self) { try MediaRoot(path: base.appendingPathComponent("outside/secret.wav").path) }
    }
}
