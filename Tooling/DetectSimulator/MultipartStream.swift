import Foundation
import NIOCore

/// A file part of a multipart request, streamed to disk as it arrived.
struct StreamedFile: Sendable {
    var fileName: String
    var contentType: String
    var size: Int64
    /// Whether the bytes contain the marker `FAKE`, which makes the simulator's verdict fake.
    var containsFakeMarker: Bool
    var path: URL?
}

/// The fields and file of a `multipart/form-data` request.
struct MultipartForm: Sendable {
    var fields: [String: String] = [:]
    var file: StreamedFile?
}

/// Reads a `multipart/form-data` body chunk by chunk: form fields are kept in memory (each up to 64 KiB),
/// the `file` part goes to disk, so an upload of any size uses a constant amount of memory.
///
/// The scanning is done by `memchr` and `memcmp` rather than byte by byte in Swift: the simulator serves
/// gigabyte uploads in the test suite's debug build, where a per-byte Swift loop (as in multipart-kit's
/// parser, measured at 2.7 MB/s here) takes minutes.
enum MultipartStream {
    static func read<Body: AsyncSequence>(
        _ body: Body, contentType: String, storage: URL, keepFileUpTo limit: Int64?
    ) async throws -> MultipartForm where Body.Element == ByteBuffer {
        guard let boundary = contentType.components(separatedBy: ";")
            .map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { $0.lowercased().hasPrefix("boundary=") })?
            .dropFirst("boundary=".count)
            .trimmingCharacters(in: CharacterSet(charactersIn: "\"")), !boundary.isEmpty
        else { throw SimulatorRejection.badRequest("multipart/form-data needs a boundary") }

        let parser = MultipartParser(boundary: boundary, storage: storage, keepFileUpTo: limit)
        do {
            for try await chunk in body {
                try chunk.readableBytesView.withContiguousStorageIfAvailable { try parser.consume($0) }
                    ?? parser.consume(Array(chunk.readableBytesView).withUnsafeBufferPointer { $0 })
            }
            return try parser.finish()
        } catch {
            parser.discard()
            if let rejection = error as? SimulatorRejection { throw rejection }
            throw SimulatorRejection.badRequest("the multipart body could not be read")
        }
    }
}

/// A streaming multipart parser; used by one task only.
private final class MultipartParser {
    private enum Stage {
        /// Before the first boundary line.
        case preamble
        /// Reading a part's header lines.
        case headers
        /// Reading a part's body, up to the next delimiter.
        case body
        /// After the closing boundary.
        case done
    }

    private let firstBoundary: [UInt8]
    /// `\r\n--boundary`: what ends a part's body.
    private let delimiter: [UInt8]
    private let storage: URL
    private let keepFileUpTo: Int64?

    private var stage = Stage.preamble
    private var pending: [UInt8] = []
    private var headers: [String: String] = [:]
    private var fieldValue: [UInt8] = []
    private var file: StreamedFile?
    private var descriptor: Int32 = -1
    private var markerTail: [UInt8] = []
    private var form = MultipartForm()

    init(boundary: String, storage: URL, keepFileUpTo: Int64?) {
        firstBoundary = Array("--\(boundary)".utf8)
        delimiter = Array("\r\n--\(boundary)".utf8)
        self.storage = storage
        self.keepFileUpTo = keepFileUpTo
    }

    func consume(_ chunk: UnsafeBufferPointer<UInt8>) throws {
        if stage == .body && pending.isEmpty {
            // The common case: stream straight from the chunk, keeping only a possible partial delimiter.
            try scanBody(chunk)
            return
        }
        pending.append(contentsOf: chunk)
        let buffered = pending
        pending = []
        try buffered.withUnsafeBufferPointer { try process($0) }
    }

    func finish() throws -> MultipartForm {
        closeFile()
        guard stage == .done else { throw SimulatorRejection.badRequest("the multipart body ended before its closing boundary") }
        return form
    }

    func discard() {
        closeFile()
        if let path = file?.path ?? form.file?.path { try? FileManager.default.removeItem(at: path) }
    }

    // MARK: - Stages

    private func process(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        var rest = bytes[...]
        while !rest.isEmpty {
            switch stage {
            case .preamble:
                guard let line = lineEnd(in: rest) else { return keep(rest) }
                if Array(rest[rest.startIndex..<line]) == firstBoundary { stage = .headers }
                rest = rest[(line + 2)...]
            case .headers:
                guard let line = lineEnd(in: rest) else { return keep(rest) }
                let text = String(decoding: rest[rest.startIndex..<line], as: UTF8.self)
                rest = rest[(line + 2)...]
                if text.isEmpty { try startPart() } else { addHeader(text) }
            case .body:
                try scanBody(UnsafeBufferPointer(rebasing: rest))
                return
            case .done:
                return
            }
        }
    }

    /// Hands body bytes on up to the delimiter; on the delimiter, ends the part and reads what follows.
    private func scanBody(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        guard let base = bytes.baseAddress else { return }
        var searchFrom = 0
        while searchFrom < bytes.count {
            guard let found = memchr(base + searchFrom, Int32(delimiter[0]), bytes.count - searchFrom) else { break }
            let index = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(found))
            let available = bytes.count - index
            if available < delimiter.count + 2 {
                // Too close to the end to tell: keep from here for the next chunk.
                try emit(UnsafeBufferPointer(rebasing: bytes[..<index]))
                return keep(bytes[index...])
            }
            if memcmp(found, delimiter, delimiter.count) == 0 {
                try emit(UnsafeBufferPointer(rebasing: bytes[..<index]))
                try endPart()
                let after = index + delimiter.count
                if bytes[after] == UInt8(ascii: "-") && bytes[after + 1] == UInt8(ascii: "-") {
                    stage = .done
                } else if bytes[after] == 13 && bytes[after + 1] == 10 {
                    stage = .headers
                    try process(UnsafeBufferPointer(rebasing: bytes[(after + 2)...]))
                } else {
                    throw SimulatorRejection.badRequest("the multipart body has a malformed boundary")
                }
                return
            }
            searchFrom = index + 1
        }
        try emit(bytes)
    }

    private func keep(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) {
        pending.append(contentsOf: bytes)
        if pending.count > 64 * 1024 && stage != .body {
            pending = []
            stage = .done
        }
    }

    /// The index of the `\r\n` that ends the first line of `bytes`, if complete.
    private func lineEnd(in bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Int? {
        var index = bytes.startIndex
        while index + 1 < bytes.endIndex {
            if bytes[index] == 13 && bytes[index + 1] == 10 { return index }
            index += 1
        }
        return nil
    }

    // MARK: - Parts

    private func addHeader(_ line: String) {
        guard let colon = line.firstIndex(of: ":") else { return }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }

    private func startPart() throws {
        stage = .body
        let disposition = headers["content-disposition"].map(Self.parameters) ?? [:]
        if disposition["name"] == "file", let fileName = disposition["filename"] {
            file = StreamedFile(
                fileName: fileName, contentType: headers["content-type"] ?? "application/octet-stream", size: 0,
                containsFakeMarker: false, path: nil
            )
        }
    }

    private func emit(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        guard !bytes.isEmpty else { return }
        guard file != nil else {
            fieldValue.append(contentsOf: bytes)
            if fieldValue.count > 64 * 1024 { throw SimulatorRejection.badRequest("a form field is larger than 64 KiB") }
            return
        }
        if !file!.containsFakeMarker {
            file!.containsFakeMarker = (markerTail + Array(bytes.prefix(3))).withUnsafeBytes(Self.containsFakeMarker)
                || Self.containsFakeMarker(UnsafeRawBufferPointer(bytes))
            markerTail = Array(bytes.suffix(3))
        }
        file!.size += Int64(bytes.count)
        if keepFileUpTo.map({ file!.size <= $0 }) ?? true {
            if descriptor < 0 { openFile() }
            var written = 0
            while written < bytes.count, descriptor >= 0 {
                let result = write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                guard result > 0 else { throw SimulatorRejection(status: 507, message: "the upload could not be stored") }
                written += result
            }
        } else if let path = file?.path {
            closeFile()
            try? FileManager.default.removeItem(at: path)
            file?.path = nil
        }
    }

    private func endPart() throws {
        if let finished = file {
            closeFile()
            form.file = finished
            file = nil
        } else if let name = headers["content-disposition"].map(Self.parameters)?["name"] {
            form.fields[name] = String(decoding: fieldValue, as: UTF8.self)
        }
        headers = [:]
        fieldValue = []
        markerTail = []
    }

    private func openFile() {
        try? FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        let path = storage.appendingPathComponent(UUID().uuidString)
        descriptor = open(path.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if descriptor >= 0 { file?.path = path }
    }

    private func closeFile() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
    }

    /// Whether `bytes` contain `FAKE`; `memchr` finds each candidate `F`, so this stays fast on gigabytes.
    private static func containsFakeMarker(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, bytes.count >= 4 else { return false }
        var offset = 0
        while offset <= bytes.count - 4 {
            guard let found = memchr(base + offset, 0x46, bytes.count - 3 - offset) else { return false }
            let index = base.distance(to: UnsafeRawPointer(found))
            if bytes[index + 1] == 0x41, bytes[index + 2] == 0x4B, bytes[index + 3] == 0x45 { return true }
            offset = index + 1
        }
        return false
    }

    /// `form-data; name="file"; filename="a.wav"` as a dictionary. A quoted value may hold `;` and `=`, and
    /// a backslash in it escapes the next character (RFC 2183, RFC 7578).
    private static func parameters(_ value: String) -> [String: String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in value {
            if escaped {
                current.append(character)
                escaped = false
            } else if quoted && character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
            } else if character == ";" && !quoted {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        var result: [String: String] = [:]
        for part in parts.dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { continue }
            result[pair[0].lowercased()] = pair[1]
        }
        return result
    }
}
