import Foundation

/// A local media file opened for upload. It holds the open descriptor, so what is checked (a regular,
/// non-empty file with an allowed extension) is exactly what gets sent, however the path changes meanwhile.
package final class MediaFile: Sendable {
    /// The open, read-only descriptor; closed when the `MediaFile` is released.
    package let descriptor: Int32
    /// The name sent to the API (the last path component).
    package let fileName: String
    package let size: Int64
    /// The content type the API expects for the extension.
    package let contentType: String

    /// Opens the file at `path` and checks it against the API's file constraints.
    package convenience init(path: String) throws(DetectAPIError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw .invalidMedia("cannot open the media file: \(String(cString: strerror(errno)))")
        }
        try self.init(adopting: descriptor, fileName: (path as NSString).lastPathComponent)
    }

    /// Takes ownership of an open descriptor (closing it if the checks fail) and checks the file it refers to.
    package init(adopting descriptor: Int32, fileName: String) throws(DetectAPIError) {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            close(descriptor)
            throw .invalidMedia("cannot read the media file's size: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            throw .invalidMedia("the media path is not a regular file")
        }
        guard let contentType = MediaFileConstraints.contentType(forFileName: fileName) else {
            close(descriptor)
            throw .invalidMedia(MediaFileConstraints.unsupportedExtensionMessage(fileName))
        }
        guard info.st_size > 0 else {
            close(descriptor)
            throw .invalidMedia("the media file is empty; the API rejects empty files")
        }
        self.descriptor = descriptor
        self.fileName = fileName
        self.size = Int64(info.st_size)
        self.contentType = contentType
    }

    deinit {
        close(descriptor)
    }

    /// How this file must reach the API: directly up to the cap, through a secure upload above it.
    package var uploadPath: UploadPath { MediaFileConstraints.uploadPath(forSize: size) }
}

/// How a local file reaches the API.
package enum UploadPath: String, Sendable {
    /// `multipart/form-data` to `POST /detect`, for files up to the direct-upload cap.
    case multipart
    /// `POST /secure_uploads`, then `POST /detect` with the token, for larger files.
    case secureUpload = "secure_upload"
}

/// The API's file constraints (`submit-detection-job.md`, "File constraints").
package enum MediaFileConstraints {
    /// The direct-upload cap: 150 MB, read as decimal megabytes so no file the API could call too large
    /// is sent directly.
    package static let directUploadLimit: Int64 = 150_000_000

    package static let audioExtensions: Set<String> = ["wav", "mp3", "m4a", "ogg", "aac", "flac", "amr"]
    package static let videoExtensions: Set<String> = ["3gp", "3gpp", "mp4", "mov", "avi", "mkv", "webm"]
    package static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "gif", "webp"]
    package static var allowedExtensions: Set<String> { audioExtensions.union(videoExtensions).union(imageExtensions) }

    private static let contentTypes: [String: String] = [
        "wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4", "ogg": "audio/ogg", "aac": "audio/aac",
        "flac": "audio/flac", "amr": "audio/amr", "3gp": "video/3gpp", "3gpp": "video/3gpp", "mp4": "video/mp4",
        "mov": "video/quicktime", "avi": "video/x-msvideo", "mkv": "video/x-matroska", "webm": "video/webm",
        "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    ]

    /// The extension of a file name, lowercased, or nil when it has none.
    package static func fileExtension(of fileName: String) -> String? {
        let ext = (fileName as NSString).pathExtension.lowercased()
        return ext.isEmpty ? nil : ext
    }

    /// The content type for an allowed extension, or nil when the API does not take the extension.
    package static func contentType(forFileName fileName: String) -> String? {
        fileExtension(of: fileName).flatMap { contentTypes[$0] }
    }

    /// Whether a content type is one the API accepts for the file's extension: the family of the extension
    /// (`audio/*` for audio), or `application/octet-stream`.
    package static func accepts(contentType: String, forFileName fileName: String) -> Bool {
        guard let ext = fileExtension(of: fileName), allowedExtensions.contains(ext) else { return false }
        let type = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        if type == "application/octet-stream" { return true }
        let family = audioExtensions.contains(ext) ? "audio/" : videoExtensions.contains(ext) ? "video/" : "image/"
        return type.hasPrefix(family)
    }

    package static func uploadPath(forSize size: Int64) -> UploadPath {
        size <= directUploadLimit ? .multipart : .secureUpload
    }

    static func unsupportedExtensionMessage(_ fileName: String) -> String {
        let ext = fileExtension(of: fileName).map { ".\($0)" } ?? "no extension"
        return "the media file has \(ext), which the API does not accept; allowed: "
            + allowedExtensions.sorted().map { ".\($0)" }.joined(separator: ", ")
    }
}
