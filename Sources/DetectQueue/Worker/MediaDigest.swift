import Crypto
import Dispatch
import Foundation
import ResembleDetect
import TextEncodings

/// The SHA-256 of a media file (CONTRACT section 9's `media_sha256`), read once from its open descriptor in
/// chunks of a fixed size, so memory stays flat whatever the file's size; the reading runs off the worker's
/// own threads, as a blocking read of a large file would hold one of them for seconds.
package enum MediaDigest {
    /// The chunk read at a time.
    static let chunkSize = 1 << 20

    /// The file's SHA-256 as lower-case hex.
    package static func sha256(of file: MediaFile) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .utility).async {
                continuation.resume(with: Result { try digest(of: file) })
            }
        }
    }

    private static func digest(of file: MediaFile) throws -> String {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var offset: off_t = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(file.descriptor, $0.baseAddress, chunkSize, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw MediaPathError("the media file could not be read to hash it: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            offset += off_t(count)
        }
        return Hex.encode(Array(hasher.finalize()))
    }
}
