import Foundation
import ResembleDetect
import TextEncodings

/// A Detect API that answers at once, in process, with a finished detection: the queue measured alone, with
/// no HTTP and no waiting. Media whose URL contains "fake" is judged fake, as the simulator does.
package struct InstantDetectAPI: DetectAPI {
    package init() {}

    package func submit(_ source: MediaSource, options: DetectionOptions, wait: Bool) async throws(DetectAPIError) -> DetectionItem {
        var fake = false
        if case .url(let url) = source { fake = url.contains("fake") }
        return try Self.item(uuid: Self.uuid(), fake: fake)
    }

    /// A random version-4 uuid in lower case. Foundation's `UUID()` opens /dev/urandom on each call here (an
    /// `open`, a `read` and a `close` for every job); the standard library's generator asks the kernel once.
    static func uuid() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = withUnsafeBytes(of: (generator.next() as UInt64, generator.next() as UInt64)) { Array($0) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = Array(Hex.encode(bytes).utf8)
        var text: [UInt8] = []
        for (index, digit) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { text.append(UInt8(ascii: "-")) }
            text.append(digit)
        }
        return String(decoding: text, as: UTF8.self)
    }

    package func secureUpload(_ file: MediaFile) async throws(DetectAPIError) -> SecureUploadToken {
        SecureUploadToken(token: "instant-" + Self.uuid(), issuedAt: Date())
    }

    /// The benchmarks lose no answer, so nothing is ever looked for.
    package func detections(page: Int, pageSize: Int) async throws(DetectAPIError) -> DetectionPage {
        DetectionPage(page: page, pageCount: 1, pageSize: pageSize, totalCount: 0, items: [])
    }

    package func detection(uuid: String) async throws(DetectAPIError) -> DetectionItem {
        try Self.item(uuid: uuid, fake: false)
    }

    /// A completed audio detection as `GET /detect/{uuid}` shows one. Each kind is decoded once: decoding it
    /// again for every job (`JSONDecoder`, about 40 µs) was a fifth of the worker's CPU per job in the queue
    /// core, the instant API's cost rather than the queue's.
    static func item(uuid: String, fake: Bool) throws(DetectAPIError) -> DetectionItem {
        guard var item = fake ? fakeTemplate : realTemplate else {
            throw .malformedResponse("the instant API's template does not decode")
        }
        item.uuid = uuid
        item.retention.url = "https://bench.invalid/\(uuid).wav"
        item.rawJSON = json(uuid: uuid, fake: fake)
        return item
    }

    private static let realTemplate = try? DetectionItem(json: json(uuid: "template", fake: false))
    private static let fakeTemplate = try? DetectionItem(json: json(uuid: "template", fake: true))

    private static func json(uuid: String, fake: Bool) -> String {
        let label = fake ? "fake" : "real"
        let score = fake ? "0.92" : "0.08"
        return """
            {"uuid":"\(uuid)","media_type":"audio","status":"completed","duration":"5.2","visualize":false,\
            "zero_retention_mode":false,"file_deleted_at":null,"error_message":null,"url":"https://bench.invalid/\(uuid).wav",\
            "metrics":{"label":"\(label)","score":["\(score)"],"consistency":"0.85","aggregated_score":"\(score)","image":""}}
            """
    }
}
