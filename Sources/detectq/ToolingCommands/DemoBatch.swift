import DetectQueue
import Foundation

/// The demo's sample requests for one lane (queue): public URLs, small audio files it writes itself, and one
/// file over the API's 150 MB direct-upload cap, mixing fakes and reals, sync, callback and poll waits,
/// intelligence and zero retention. Every row carries `metadata.demo`, so the demo can follow its own batch in a
/// shared database.
struct DemoBatch {
    /// One request of the batch: where its media is and which options it sets.
    struct Sample {
        enum Media {
            case url(String)
            case file(String)
        }

        var name: String
        var media: Media
        var waitMode: String
        var intelligence = false
        var zeroRetention = false
        var audioSourceTracing = false
        var reverseSearch = false
        /// The sample whose bytes a file carries: its own name, or the sample it is a copy of.
        var bytesOf: String?
    }

    /// Size of the large file: over the 150 MB cap, so it takes the secure-upload path.
    static let largeFileBytes: Int64 = 160_000_000

    /// The lanes of the demo: a backfill enqueued at once, and a live trickle beside it with four times its weight.
    static let backfillQueue = "demo-backfill"
    static let liveQueue = "demo-live"

    let runID: String
    /// The queue the batch's requests name.
    let queue: String
    let samples: [Sample]

    /// `count` samples in a repeating pattern, then `duplicates` copies of the first files (the same bytes under
    /// another name, the same options: a re-upload, detected once), plus the large file when `largeFile`. With `simulated`, URLs
    /// point at the simulator's invented media (a URL containing "fake" is judged fake); against the real API
    /// only `urls` given by the user are used, since invented URLs cannot be fetched.
    /// `prefix` starts every sample's name (and so its file and simulated URL), so two batches of one run never
    /// share media.
    init(
        runID: String, queue: String, prefix: String = "", count: Int, duplicates: Int = 0, largeFile: Bool, simulated: Bool, urls: [String]
    ) {
        self.runID = runID
        self.queue = queue
        var samples: [Sample] = []
        for index in 0..<count {
            let number = String(format: "%03d", index + 1)
            let fake = index % 2 == 1
            let kind = prefix + (fake ? "fake" : "real")
            let url: String? = simulated
                ? "https://media.detectq-demo.invalid/\(kind)-\(number).\(["mp3", "mp4", "jpg"][index % 3])"
                : (urls.isEmpty ? nil : urls[index % urls.count])
            let waitMode = ["sync", "callback", "poll", "auto"][index % 4]
            var sample = Sample(name: "\(kind)-\(number)", media: .file("\(kind)-\(number).wav"), waitMode: waitMode)
            if index % 3 != 2, let url { sample.media = .url(url) }
            sample.intelligence = index % 4 == 1
            sample.zeroRetention = index % 5 == 2
            sample.audioSourceTracing = fake && index % 3 == 2
            sample.reverseSearch = url?.hasSuffix(".jpg") == true && index % 3 != 2
            samples.append(sample)
        }
        let files = samples.filter { if case .file = $0.media { true } else { false } }
        for original in files.prefix(duplicates) {
            var copy = original
            copy.name = original.name + "-again"
            copy.media = .file(copy.name + ".wav")
            copy.bytesOf = original.name
            copy.waitMode = "poll"
            samples.append(copy)
        }
        if largeFile {
            samples.append(Sample(name: "large-fake", media: .file("large-fake.wav"), waitMode: "poll", intelligence: true))
        }
        self.samples = samples
    }

    /// Writes the batch's files into `directory`: one second of a tone for each small file, and a sparse file
    /// of `largeFileBytes` (silence, so it costs no disk) for the large one. A fake file carries the marker the
    /// simulator looks for; each file's note names its sample, so two files hold the same bytes only when one is a
    /// copy of the other.
    func writeMedia(into directory: URL) throws {
        for sample in samples {
            guard case .file(let name) = sample.media else { continue }
            let fake = name.contains("fake")
            let path = directory.appendingPathComponent(name)
            if name.hasPrefix("large") {
                let header = Self.waveHeader(dataBytes: UInt32(Self.largeFileBytes - 44 - 12), comment: fake ? "FAKE" : "REAL")
                try header.write(to: path)
                let handle = try FileHandle(forWritingTo: path)
                try handle.truncate(atOffset: UInt64(Self.largeFileBytes))
                try handle.close()
            } else {
                var samples = Data()
                for index in 0..<16_000 {
                    let value = Int16(8_000 * sin(Double(index) * 2 * .pi * 440 / 16_000))
                    withUnsafeBytes(of: value.littleEndian) { samples.append(contentsOf: $0) }
                }
                let note = (fake ? "FAKE " : "REAL ") + (sample.bytesOf ?? sample.name)
                try (Self.waveHeader(dataBytes: UInt32(samples.count), comment: note) + samples).write(to: path)
            }
        }
    }

    /// The batch as the requests a producer would insert.
    var requests: [NewRequest] {
        samples.map { sample in
            var request: NewRequest
            switch sample.media {
            case .url(let url): request = NewRequest(media: .url(url))
            case .file(let path): request = NewRequest(media: .path(path))
            }
            request.waitMode = sample.waitMode
            request.intelligence = sample.intelligence
            request.zeroRetentionMode = sample.zeroRetention
            request.audioSourceTracing = sample.audioSourceTracing
            request.useReverseSearch = sample.reverseSearch
            request.queue = queue
            request.metadata = #"{"demo": "\#(runID)", "sample": "\#(sample.name)"}"#
            return request
        }
    }

    /// A 16 kHz, 16-bit mono WAV header with a `LIST` chunk as a note (padded to an even length).
    static func waveHeader(dataBytes: UInt32, comment: String) -> Data {
        var data = Data()
        func append(_ text: String) { data.append(contentsOf: Array(text.utf8)) }
        func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        var note = Array(comment.utf8)
        if note.count % 2 == 1 { note.append(0x20) }
        append("RIFF"); append32(36 + 8 + UInt32(note.count) + dataBytes); append("WAVE")
        append("fmt "); append32(16); append16(1); append16(1); append32(16_000); append32(32_000); append16(2); append16(16)
        append("LIST"); append32(UInt32(note.count)); data.append(contentsOf: note)
        append("data"); append32(dataBytes)
        return data
    }
}
