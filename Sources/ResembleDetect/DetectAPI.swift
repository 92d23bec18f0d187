/// What a queue needs of the Detect API: submit, upload, and read one detection. `DetectClient` is the
/// real thing; a benchmark that measures the queue alone plugs in an instant stand-in.
package protocol DetectAPI: Sendable {
    /// Submits media; with `wait`, sends `Prefer: wait` and returns what the API returned when it stopped waiting.
    func submit(_ source: MediaSource, options: DetectionOptions, wait: Bool) async throws(DetectAPIError) -> DetectionItem
    /// Uploads a file through `POST /secure_uploads` and returns its token.
    func secureUpload(_ file: MediaFile) async throws(DetectAPIError) -> SecureUploadToken
    /// `GET /detect/{uuid}`.
    func detection(uuid: String) async throws(DetectAPIError) -> DetectionItem
    /// `GET /detect?page=&page_size=` (List Detects): one page of the team's detections, newest first.
    func detections(page: Int, pageSize: Int) async throws(DetectAPIError) -> DetectionPage
}

extension DetectClient: DetectAPI {}
