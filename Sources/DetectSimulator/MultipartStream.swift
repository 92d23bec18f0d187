import Foundation
import MultipartKit
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

/// Reads a multipart body chunk by chunk, keeping form fields in memory (each up to 64 KiB) and writing the
/// `file` part to disk, so an upload of any size uses a constant amount of memory.
enum MultipartStream {
    static func read<Body: AsyncSequence>(
        _ body: Body, contentType: String, storage: URL, keepFileUpTo limit: Int64?
    ) async throws -> MultipartForm where Body.Element == ByteBuffer {
        guard let boundary = contentType.components(separatedBy: ";")
            .map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { $0.lowercased().hasPrefix("boundary=") })?
            .dropFirst("boundary=".count)
            .trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        else { throw SimulatorRejection.badRequest("multipart/form-data needs a boundary") }

        let collector = PartCollector(storage: storage, keepFileUpTo: limit)
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { name, value in collector.header(name, value) }
        parser.onBody = { buffer in collector.body(&buffer) }
        parser.onPartComplete = { collector.complete() }
        do {
            for try await chunk in body {
                try parser.execute(chunk)
                if let error = collector.error { throw error }
            }
        } catch {
            collector.discard()
            if let rejection = error as? SimulatorRejection { throw rejection }
            throw SimulatorRejection.badRequest("the multipart body could not be read")
        }
        collector.finish()
        return collector.form
    }
}

/// Accumulates the parser's callbacks; used by one task only.
private final class PartCollector {
    let storage: URL
    let keepFileUpTo: Int64?
    var form = MultipartForm()
    var error: SimulatorRejection?

    private var headers: [String: String] = [:]
    private var fieldValue: [UInt8] = []
    private var file: StreamedFile?
    private var handle: FileHandle?
    private var tail: [UInt8] = []

    init(storage: URL, keepFileUpTo: Int64?) {
        self.storage = storage
        self.keepFileUpTo = keepFileUpTo
    }

    func header(_ name: String, _ value: String) {
        headers[name.lowercased()] = value
        guard name.lowercased() == "content-disposition", let disposition = Self.parameters(value),
              disposition["name"] == "file", let fileName = disposition["filename"]
        else { return }
        file = StreamedFile(fileName: fileName, contentType: "application/octet-stream", size: 0, containsFakeMarker: false, path: nil)
    }

    func body(_ buffer: inout ByteBuffer) {
        guard file != nil else {
            fieldValue.append(contentsOf: buffer.readableBytesView)
            if fieldValue.count > 64 * 1024 { error = .badRequest("a form field is larger than 64 KiB") }
            return
        }
        let bytes = Array(buffer.readableBytesView)
        if !file!.containsFakeMarker {
            let window = tail + bytes
            file!.containsFakeMarker = window.withUnsafeBytes(Self.containsFakeMarker)
            tail = Array(window.suffix(3))
        }
        file!.size += Int64(bytes.count)
        if keepFileUpTo.map({ file!.size <= $0 }) ?? true {
            if handle == nil { openFile() }
            handle?.write(Data(bytes))
        } else if handle != nil {
            discard()
        }
    }

    func complete() {
        if var finished = file {
            finished.contentType = headers["content-type"] ?? "application/octet-stream"
            try? handle?.close()
            handle = nil
            form.file = finished
            file = nil
        } else if let name = headers["content-disposition"].flatMap(Self.parameters)?["name"] {
            form.fields[name] = String(decoding: fieldValue, as: UTF8.self)
        }
        headers = [:]
        fieldValue = []
        tail = []
    }

    func finish() {
        try? handle?.close()
    }

    func discard() {
        try? handle?.close()
        handle = nil
        if let path = file?.path { try? FileManager.default.removeItem(at: path) }
        file?.path = nil
    }

    private func openFile() {
        try? FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        let path = storage.appendingPathComponent(UUID().uuidString)
        _ = FileManager.default.createFile(atPath: path.path, contents: nil)
        handle = try? FileHandle(forWritingTo: path)
        file?.path = path
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

    /// `form-data; name="file"; filename="a.wav"` as a dictionary.
    private static func parameters(_ value: String) -> [String: String]? {
        var result: [String: String] = [:]
        for part in value.split(separator: ";").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { continue }
            result[pair[0].lowercased()] = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return result
    }
}
