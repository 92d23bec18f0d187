import Foundation
import ResembleDetect

/// A Detect API that answers at once, in process, with a finished detection: the queue measured alone, with
/// no HTTP and no waiting. Media whose URL contains "fake" is judged fake, as the simulator does.
package struct InstantDetectAPI: DetectAPI {
    package init() {}

    package func submit(_ source: MediaSource, options: DetectionOptions, wait: Bool) async throws(DetectAPIError) -> DetectionItem {
        var fake = false
        if case .url(let url) = source { fake = url.contains("fake") }
        return try Self.item(uuid: UUID().uuidString.lowercased(), fake: fake)
    }

    package func secureUpload(_ file: MediaFile) async throws(DetectAPIError) -> SecureUploadToken {
        SecureUploadToken(token: "instant-" + UUID().uuidString, issuedAt: Date())
    }

    /// The benchmarks lose no answer, so nothing is ever looked for.
    package func detections(page: Int, pageSize: Int) async throws(DetectAPIError) -> DetectionPage {
        DetectionPage(page: page, pageCount: 1, pageSize: pageSize, totalCount: 0, items: [])
    }

    package func detection(uuid: String) async throws(DetectAPIError) -> DetectionItem {
        try Self.item(uuid: uuid, fake: false)
    }

    /// A completed audio detection as `GET /detect/{uuid}` shows one.
    static func item(uuid: String, fake: Bool) throws(DetectAPIError) -> DetectionItem {
        let label = fake ? "fake" : "real"
        let score = fake ? "0.92" : "0.08"
        let json = """
            {"uuid":"\(uuid)","media_type":"audio","status":"completed","duration":"5.2","visualize":false,\
            "zero_retention_mode":false,"file_deleted_at":null,"error_message":null,"url":"https://bench.invalid/\(uuid).wav",\
            "metrics":{"label":"\(label)","score":["\(score)"],"consistency":"0.85","aggregated_score":"\(score)","image":""}}
            """
        do {
            return try DetectionItem(json: json)
        } catch {
            throw .malformedResponse("the instant API's template does not decode: \(error)")
        }
    }
}
