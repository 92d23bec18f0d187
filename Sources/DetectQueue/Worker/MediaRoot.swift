import Foundation
import ResembleDetect

/// The directory `media_path` values are resolved in (`DETECTQ_MEDIA_ROOT`). A path is opened once and the
/// opened file is what is checked and sent: its real location (read back from the open descriptor) must lie
/// inside the root, so neither `..`, an absolute path, nor a symlink (even one swapped in between a check
/// and the open) can reach a file outside it.
package struct MediaRoot: Sendable, Hashable {
    /// The root's canonical path, without a trailing slash.
    package let path: String

    /// Resolves the root itself; it must be an existing directory.
    package init(path: String) throws(MediaPathError) {
        guard let resolved = realpath(path, nil) else {
            throw MediaPathError("the media root \(path) does not exist")
        }
        defer { free(resolved) }
        var info = stat()
        guard stat(resolved, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw MediaPathError("the media root \(path) is not a directory")
        }
        self.path = String(cString: resolved)
    }

    /// Opens `relativePath` inside the root and checks it against the API's file constraints. The upload
    /// carries `uploadName` when given, else the file's own name.
    package func open(_ relativePath: String, as uploadName: String? = nil) throws(MediaPathError) -> MediaFile {
        guard !relativePath.hasPrefix("/") else {
            throw MediaPathError("media_path \(relativePath) is absolute; give a path relative to DETECTQ_MEDIA_ROOT")
        }
        guard !relativePath.split(separator: "/").contains("..") else {
            throw MediaPathError("media_path \(relativePath) contains '..'; give a path inside DETECTQ_MEDIA_ROOT")
        }
        let descriptor = Foundation.open(path + "/" + relativePath, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard descriptor >= 0 else {
            let reason = errno == ENOENT ? "does not exist" : "cannot be opened (\(String(cString: strerror(errno))))"
            throw MediaPathError("media_path \(relativePath) \(reason) under DETECTQ_MEDIA_ROOT")
        }
        guard let opened = Self.realPath(of: descriptor), opened.hasPrefix(path + "/") else {
            close(descriptor)
            throw MediaPathError("media_path \(relativePath) leads outside DETECTQ_MEDIA_ROOT (through a symlink); refusing to send it")
        }
        do {
            return try MediaFile(adopting: descriptor, fileName: uploadName ?? (relativePath as NSString).lastPathComponent)
        } catch {
            throw MediaPathError("media_path \(relativePath): \(error)")
        }
    }

    /// Where an open descriptor really points, from `/proc/self/fd`.
    private static func realPath(of descriptor: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/fd/\(descriptor)", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A `media_path` the worker will not send, with a reason a user can act on.
package struct MediaPathError: Error, Sendable, Hashable, CustomStringConvertible {
    package let description: String

    package init(_ description: String) {
        self.description = description
    }
}
