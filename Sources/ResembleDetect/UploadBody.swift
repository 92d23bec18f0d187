import Dispatch
import Foundation
import NIOCore

/// A `multipart/form-data` body of form fields and one file, streamed from the file's descriptor in chunks
/// with a known total length, so memory stays flat whatever the file's size.
struct MultipartUploadBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    let boundary: String
    let head: ByteBuffer
    let tail: ByteBuffer
    let file: MediaFile
    static let chunkSize = 256 * 1024

    init(fields: [(name: String, value: String)], fileField: String, file: MediaFile) {
        boundary = "detectq-" + (0..<4).map { _ in String(UInt64.random(in: .min ... .max), radix: 16) }.joined()
        var head = ""
        for field in fields {
            head += "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(Self.quoted(field.name))\"\r\n\r\n\(field.value)\r\n"
        }
        head += "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(fileField)\"; filename=\"\(Self.quoted(file.fileName))\"\r\n"
        head += "Content-Type: \(file.contentType)\r\n\r\n"
        self.head = ByteBuffer(string: head)
        tail = ByteBuffer(string: "\r\n--\(boundary)--\r\n")
        self.file = file
    }

    var contentType: String { "multipart/form-data; boundary=\(boundary)" }
    var length: Int64 { Int64(head.readableBytes) + file.size + Int64(tail.readableBytes) }

    /// A header parameter value with the characters that would break it replaced.
    private static func quoted(_ value: String) -> String {
        String(value.map { $0 == "\"" || $0 == "\r" || $0 == "\n" || $0 == "\\" ? "_" : $0 })
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(body: self)
    }

    /// Yields the head, then the file chunk by chunk, then the tail.
    struct AsyncIterator: AsyncIteratorProtocol {
        let body: MultipartUploadBody
        var stage = 0
        var offset: Int64 = 0

        mutating func next() async throws -> ByteBuffer? {
            switch stage {
            case 0:
                stage = 1
                return body.head
            case 1:
                if offset < body.file.size {
                    let count = Int(Swift.min(Int64(MultipartUploadBody.chunkSize), body.file.size - offset))
                    let chunk = try await FileChunkReader.read(body.file, offset: offset, count: count)
                    offset += Int64(count)
                    return chunk
                }
                stage = 2
                return body.tail
            default:
                return nil
            }
        }
    }
}

/// Reads a chunk of a file with `pread` on a dispatch thread, never blocking Swift's cooperative pool.
enum FileChunkReader {
    static func read(_ file: MediaFile, offset: Int64, count: Int) async throws -> ByteBuffer {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var buffer = ByteBufferAllocator().buffer(capacity: count)
                var filled = 0
                while filled < count {
                    let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - filled) { pointer in
                        max(0, pread(file.descriptor, pointer.baseAddress, count - filled, off_t(offset) + off_t(filled)))
                    }
                    if read == 0 {
                        continuation.resume(throwing: DetectAPIError.invalidMedia("the media file shrank while it was being uploaded"))
                        return
                    }
                    filled += read
                }
                continuation.resume(returning: buffer)
            }
        }
    }
}
