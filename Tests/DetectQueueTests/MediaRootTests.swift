import DetectQueue
import Foundation
import Synchronization
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

@Suite("A symlink swapped in between a check and the open never leads outside the media root")
struct MediaRootRaceTests {
    @Test func aSymlinkFlippingBetweenInsideAndOutsideOnlyEverYieldsTheInsideFile() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("detectq-race-\(UUID().uuidString)")
        let media = base.appendingPathComponent("media")
        try FileManager.default.createDirectory(at: media, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: base.appendingPathComponent("outside"), withIntermediateDirectories: true)
        try Data("RIFF inside".utf8).write(to: media.appendingPathComponent("inside.wav"))
        try Data("SECRET".utf8).write(to: base.appendingPathComponent("outside/secret.wav"))
        let root = try MediaRoot(path: media.path)
        let link = media.appendingPathComponent("swap.wav").path
        let staging = media.appendingPathComponent(".staging").path
        let targets = [media.appendingPathComponent("inside.wav").path, base.appendingPathComponent("outside/secret.wav").path]
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: targets[0])

        // A thread of its own (not a task, which a busy cooperative pool may never run) swaps the link
        // atomically (symlink + rename) between the two targets, as fast as it can.
        let stop = Atomic<Bool>(false)
        let flipper = Thread {
            var index = 0
            while !stop.load(ordering: .relaxed) {
                index += 1
                unlink(staging)
                symlink(targets[index % 2], staging)
                rename(staging, link)
            }
        }
        flipper.start()
        var inside = 0
        var refused = 0
        let deadline = ContinuousClock.now + .seconds(5)
        while (inside < 500 || refused < 500) && ContinuousClock.now < deadline {
            do {
                let file = try root.open("swap.wav")
                var buffer = [UInt8](repeating: 0, count: 32)
                let count = pread(file.descriptor, &buffer, buffer.count, 0)
                #expect(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self) == "RIFF inside", "only the inside file is ever sent")
                inside += 1
            } catch {
                #expect(error.description.contains("leads outside DETECTQ_MEDIA_ROOT") || error.description.contains("does not exist"), "\(error)")
                refused += 1
            }
        }
        stop.store(true, ordering: .relaxed)
        #expect(inside > 0 && refused > 0, "the race was run both ways: \(inside) opened inside, \(refused) refused")
        try? FileManager.default.removeItem(at: base)
    }
}
