import ResembleDetect

/// The API's file constraints as the simulator enforces them, written from the API's pages
/// (`submit-detection-job.md`, "file") on their own and not shared with the client's `MediaFileConstraints`:
/// the client checks files before it sends them and the simulator judges what arrives, so a wrong table in
/// one is caught by the other (a test compares both with the pages).
enum APIFileRules {
    /// Files sent directly in `POST /detect` may be at most 150 MB; larger ones go through secure uploads.
    static let directUploadLimit: Int64 = 150_000_000

    static let extensions: [MediaType: Set<String>] = [
        .audio: ["wav", "mp3", "m4a", "ogg", "aac", "flac", "amr"],
        .video: ["mp4", "mov", "avi", "mkv", "webm", "3gp", "3gpp"],
        .image: ["jpg", "jpeg", "png", "gif", "webp"],
    ]

    /// Every extension the API takes.
    static var allowedExtensions: Set<String> { extensions.values.reduce(into: Set<String>()) { $0.formUnion($1) } }

    /// The media type of an extension (lowercase, without the dot), or nil when the API does not take it.
    static func mediaType(forExtension ext: String) -> MediaType? {
        extensions.first { $0.value.contains(ext.lowercased()) }?.key
    }

    /// The extension of a file name, lowercased, or nil when it has none.
    static func fileExtension(of fileName: String) -> String? {
        guard let dot = fileName.lastIndex(of: "."), fileName.index(after: dot) < fileName.endIndex else { return nil }
        let ext = fileName[fileName.index(after: dot)...].lowercased()
        return ext.contains("/") ? nil : ext
    }

    /// Whether an upload's content type fits its extension: the extension's family, or a generic binary type.
    static func accepts(contentType: String, forExtension ext: String) -> Bool {
        guard let mediaType = mediaType(forExtension: ext) else { return false }
        let type = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        return type == "application/octet-stream" || type.hasPrefix("\(mediaType.description)/")
    }
}
