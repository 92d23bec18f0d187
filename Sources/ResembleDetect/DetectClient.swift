import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import TextEncodings
import Tracing

/// How to reach the Detect API.
package struct DetectClientConfiguration: Sendable {
    /// The API's base URL, such as `https://app.resemble.ai/api/v2`.
    package var baseURL: String
    /// The bearer token; nil sends no `Authorization` header (for a simulator that requires none).
    package var token: String?
    /// `RESEMBLE_API_TOKEN_FILE`: a file (a mounted secret) the token was read from; `DetectClient.reloadToken`
    /// reads it again, so a rotated secret needs no restart.
    package var tokenFile: String?
    /// Longest wait to open a connection.
    package var connectTimeout: Duration
    /// Longest pause while sending a request body (an upload that stalls this long fails).
    package var uploadIdleTimeout: Duration
    /// Longest wait for the response once the request is sent; `Prefer: wait` may hold it for minutes.
    package var responseTimeout: Duration
    /// Responses larger than this are refused as malformed.
    package var maximumResponseBytes: Int
    /// Connections the client may hold open to the API at once. A `Prefer: wait` request holds one for as
    /// long as the API takes, so this must cover every request meant to be in flight together.
    package var maximumConnections: Int

    package static let defaultBaseURL = "https://app.resemble.ai/api/v2"

    package init(
        baseURL: String = DetectClientConfiguration.defaultBaseURL, token: String?, tokenFile: String? = nil,
        connectTimeout: Duration = .seconds(10), uploadIdleTimeout: Duration = .seconds(60),
        responseTimeout: Duration = .seconds(600), maximumResponseBytes: Int = 32 << 20, maximumConnections: Int = 64
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.tokenFile = tokenFile
        self.connectTimeout = connectTimeout
        self.uploadIdleTimeout = uploadIdleTimeout
        self.responseTimeout = responseTimeout
        self.maximumResponseBytes = maximumResponseBytes
        self.maximumConnections = maximumConnections
    }
}

/// A client of the Resemble Detect API: submits media by each of its three paths, waits with `Prefer: wait`,
/// reads and lists detections, and sorts every failure into a `DetectAPIError`. It knows nothing of queues.
package final class DetectClient: Sendable {
    package let configuration: DetectClientConfiguration
    private let http: HTTPClientShards
    /// The token sent now: the configured one, or the token file's content as last read.
    private let token: Mutex<String?>

    package init(configuration: DetectClientConfiguration) {
        self.configuration = configuration
        token = Mutex(configuration.token)
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.timeout = .init(
            connect: .nanoseconds(Int64(configuration.connectTimeout.seconds * 1e9)),
            read: .nanoseconds(Int64(configuration.responseTimeout.seconds * 1e9)),
            write: .nanoseconds(Int64(configuration.uploadIdleTimeout.seconds * 1e9))
        )
        httpConfiguration.decompression = .enabled(limit: .ratio(50))
        // `send` makes the client spans itself, named after the route; the client's own would repeat them.
        httpConfiguration.tracing.tracer = nil
        http = HTTPClientShards(
            configuration: httpConfiguration, maximumConnections: configuration.maximumConnections, idleTimeout: .seconds(60)
        )
    }

    /// Reads `RESEMBLE_API_TOKEN_FILE` again (after the API refused the token: the secret may have been
    /// rotated). Returns true when the token changed; false when there is no file, it is unreadable or empty,
    /// or it holds the same token.
    @discardableResult
    package func reloadToken() -> Bool {
        guard let file = configuration.tokenFile, let read = try? TokenFile.read(file) else { return false }
        return token.withLock { current in
            guard current != read else { return false }
            current = read
            return true
        }
    }

    /// Closes the client's connections; call it once, when done.
    package func shutdown() async throws {
        try await http.shutdown()
    }

    // MARK: - Detections

    /// Submits media for detection. With `wait`, sends `Prefer: wait` and returns the finished item (or
    /// whatever the API returned when it stopped waiting); without, returns the accepted item at once.
    package func submit(_ source: MediaSource, options: DetectionOptions = .init(), wait: Bool) async throws(DetectAPIError) -> DetectionItem {
        var request = makeRequest("/detect", method: .POST)
        if wait { request.headers.add(name: "Prefer", value: "wait") }
        var secrets = [options.callbackURL].compactMap { $0 }
        switch source {
        case .url(let url):
            try setJSON(&request, source: ["url": url], options: options)
        case .mediaToken(let token):
            secrets.append(token)
            try setJSON(&request, source: ["media_token": token], options: options)
        case .file(let file):
            guard file.uploadPath == .multipart else {
                throw .invalidMedia("the media file is \(file.size) bytes, over the API's 150 MB direct-upload cap; send it through a secure upload")
            }
            let body = MultipartUploadBody(fields: options.formFields, fileField: "file", file: file)
            request.headers.add(name: "Content-Type", value: body.contentType)
            request.body = .stream(body, length: .known(body.length))
        }
        return try DetectResponses.item(from: try await send(request, endpoint: "POST /detect", secrets: secrets))
    }

    /// Uploads a file with `POST /secure_uploads` and returns its token (valid one hour, single use).
    package func secureUpload(_ file: MediaFile) async throws(DetectAPIError) -> SecureUploadToken {
        var request = makeRequest("/secure_uploads", method: .POST)
        let body = MultipartUploadBody(fields: [], fileField: "file", file: file)
        request.headers.add(name: "Content-Type", value: body.contentType)
        request.body = .stream(body, length: .known(body.length))
        let issuedAt = Date()
        let response = try await send(request, endpoint: "POST /secure_uploads", secrets: [])
        struct Envelope: Decodable {
            var token: String?
        }
        guard let token = (try? JSONText.decode(Envelope.self, from: Data(response)))?.token, !token.isEmpty else {
            throw .malformedResponse("the secure upload response has no token")
        }
        return SecureUploadToken(token: token, issuedAt: issuedAt)
    }

    /// Uploads a file by the path its size calls for and submits it: multipart up to 150 MB, else a
    /// secure upload and then the token. Returns the item and the path taken.
    package func submit(file: MediaFile, options: DetectionOptions = .init(), wait: Bool) async throws(DetectAPIError) -> (DetectionItem, UploadPath) {
        switch file.uploadPath {
        case .multipart:
            return (try await submit(.file(file), options: options, wait: wait), .multipart)
        case .secureUpload:
            let token = try await secureUpload(file)
            return (try await submit(.mediaToken(token.token), options: options, wait: wait), .secureUpload)
        }
    }

    /// `GET /detect/{uuid}`: the detection as it stands.
    package func detection(uuid: String) async throws(DetectAPIError) -> DetectionItem {
        guard let escaped = uuid.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) else {
            throw .permanent(status: 404, message: "not a detection uuid")
        }
        return try DetectResponses.item(from: try await send(makeRequest("/detect/\(escaped)", method: .GET), endpoint: "GET /detect/{uuid}", secrets: []))
    }

    /// `GET /detect?page=&page_size=`: one page of the team's detections.
    package func detections(page: Int, pageSize: Int = 100) async throws(DetectAPIError) -> DetectionPage {
        let request = makeRequest("/detect?page=\(max(1, page))&page_size=\(min(max(pageSize, 10), 1000))", method: .GET)
        return try DetectResponses.page(from: try await send(request, endpoint: "GET /detect", secrets: []))
    }

    /// Every detection of the team, page after page, as an asynchronous sequence.
    package func allDetections(pageSize: Int = 100) -> DetectionList {
        DetectionList(client: self, pageSize: pageSize)
    }

    // MARK: - Requests

    private func makeRequest(_ path: String, method: HTTPMethod) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: configuration.baseURL + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "detectq")
        if let token = token.withLock({ $0 }) { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }

    private func setJSON(_ request: inout HTTPClientRequest, source: [String: String], options: DetectionOptions) throws(DetectAPIError) {
        do {
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(SubmissionBody(source: source, options: options))))
        } catch {
            throw .invalidMedia("the request options could not be encoded: \(error)")
        }
        request.headers.add(name: "Content-Type", value: "application/json")
    }

    /// Sends a request and returns the body of a 2xx response; everything else becomes a `DetectAPIError`.
    /// Its duration and status are reported to the metrics under `endpoint`, the route's template, and it is an
    /// HTTP client span (OpenTelemetry's semantic conventions) in the caller's trace: method, host, port, the
    /// URL without credentials or query, and the status. No header or body goes into the span.
    private func send(_ request: HTTPClientRequest, endpoint: String, secrets: [String]) async throws(DetectAPIError) -> [UInt8] {
        let span = startSpan(endpoint, ofKind: .client)
        defer { span.end() }
        // With no tracer bootstrapped the span records nothing: the URL is not parsed for it.
        if span.isRecording, let url = URLComponents(string: request.url), let host = url.host {
            span.attributes["http.request.method"] = request.method.rawValue
            span.attributes["server.address"] = host
            span.attributes["server.port"] = url.port ?? (url.scheme == "http" ? 80 : 443)
            span.attributes["url.full"] = "\(url.scheme ?? "https")://\(host)\(url.port.map { ":\($0)" } ?? "")\(url.path)"
        }
        do {
            let body = try await exchange(request, endpoint: endpoint, secrets: secrets, span: span)
            return body
        } catch {
            span.attributes["error.type"] = error.httpStatus.map(String.init) ?? error.kind
            span.setStatus(SpanStatus(code: .error))
            throw error
        }
    }

    private func exchange(_ request: HTTPClientRequest, endpoint: String, secrets: [String], span: any Span) async throws(DetectAPIError) -> [UInt8] {
        let secrets = secrets + [token.withLock { $0 }].compactMap { $0 }
        let started = ContinuousClock.now
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            let limit = configuration.maximumResponseBytes
            (response, body) = try await http.withLeastBusy { client in
                let response = try await client.execute(request, timeout: .hours(24))
                return (response, try await response.body.collect(upTo: limit))
            }
        } catch let error as DetectAPIError {
            APIMetrics.record(endpoint: endpoint, status: "error", duration: ContinuousClock.now - started)
            throw error
        } catch let error as NIOTooManyBytesError {
            APIMetrics.record(endpoint: endpoint, status: "error", duration: ContinuousClock.now - started)
            throw .malformedResponse("the response is larger than \(error.maxBytes.map(String.init) ?? "the limit") bytes")
        } catch {
            APIMetrics.record(endpoint: endpoint, status: "network_error", duration: ContinuousClock.now - started)
            throw .retryable("network error: \(Self.describe(error))", status: nil, retryAfter: nil)
        }
        let bytes = Array(body.readableBytesView)
        let status = Int(response.status.code)
        span.attributes["http.response.status_code"] = status
        APIMetrics.record(endpoint: endpoint, status: String(status), duration: ContinuousClock.now - started)
        guard (200..<300).contains(status) else {
            throw DetectAPIError.from(
                status: status, body: bytes, retryAfter: response.headers.first(name: "Retry-After"), secrets: secrets
            )
        }
        return bytes
    }

    /// A one-line description of a transport error that names no URL, header or body.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connect timeout"
            case .readTimeout: return "response timeout"
            case .writeTimeout: return "upload stalled (write timeout)"
            case .remoteConnectionClosed: return "the server closed the connection"
            case .cancelled: return "cancelled"
            default: return String(describing: error)
            }
        }
        if let error = error as? DetectAPIError { return error.description }
        return String(describing: type(of: error)) + ": " + String(describing: error)
    }
}

/// A token file (`RESEMBLE_API_TOKEN_FILE`, a mounted secret): its content, less surrounding white space.
package enum TokenFile {
    /// Why a token file cannot be used; it never repeats the file's content.
    package struct Unusable: Error, CustomStringConvertible {
        package let description: String
    }

    /// The token in `path`.
    package static func read(_ path: String) throws(Unusable) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw Unusable(description: "\(path) cannot be read") }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw Unusable(description: "\(path) is empty") }
        guard !token.contains(where: { $0.isNewline || $0 == " " }) else { throw Unusable(description: "\(path) holds more than one token") }
        return token
    }
}

/// A secure-upload token and when it was issued: it expires one hour after issue.
package struct SecureUploadToken: Sendable, Hashable {
    /// The JWT to send as `media_token`; a secret.
    package var token: String
    package var issuedAt: Date

    package init(token: String, issuedAt: Date) {
        self.token = token
        self.issuedAt = issuedAt
    }

    /// The API's one-hour lifetime.
    package static let lifetime: TimeInterval = 3600

    /// True while the token can still be used, allowing `margin` seconds for the submission itself.
    package func isUsable(at date: Date = Date(), margin: TimeInterval = 120) -> Bool {
        date.timeIntervalSince(issuedAt) < Self.lifetime - margin
    }
}

/// Every detection of the team, fetched one page at a time as the sequence is consumed.
package struct DetectionList: AsyncSequence, Sendable {
    package typealias Element = DetectionItem
    let client: DetectClient
    let pageSize: Int

    package func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(client: client, pageSize: pageSize)
    }

    /// Walks the pages, yielding their items in order.
    package struct AsyncIterator: AsyncIteratorProtocol {
        let client: DetectClient
        let pageSize: Int
        var nextPage = 1
        var pageCount = Int.max
        var buffered: [DetectionItem] = []

        package mutating func next() async throws(DetectAPIError) -> DetectionItem? {
            while buffered.isEmpty {
                guard nextPage <= pageCount else { return nil }
                let page = try await client.detections(page: nextPage, pageSize: pageSize)
                pageCount = page.pageCount
                nextPage += 1
                buffered = page.items.reversed()
                if page.items.isEmpty { return nil }
            }
            return buffered.popLast()
        }
    }
}

extension Duration {
    /// The duration in seconds, as a `Double` (for `Date` arithmetic and SQL intervals).
    package var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// The JSON body of a submission: the media's source (`url` or `media_token`) beside the options, in one
/// object, encoded in one pass.
struct SubmissionBody: Encodable {
    let source: [String: String]
    let options: DetectionOptions

    private struct Key: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        try options.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in source.sorted(by: { $0.key < $1.key }) { try container.encode(value, forKey: Key(stringValue: name)) }
    }
}
