import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ResembleDetect
import TextEncodings

/// A local stand-in for the Resemble Detect API, served at `http://127.0.0.1:<port>/api/v2`: the endpoints,
/// validation and response shapes of the API's pages, deterministic verdicts (media whose URL contains
/// `fake` or whose bytes contain `FAKE` is fake), callbacks, zero-retention purges, and injected faults.
package final class DetectSimulator: Sendable {
    /// The simulator's detections, uploads and counters.
    package let state: SimulatorState
    /// The port it listens on.
    package let port: Int
    private let server: InProcessServer
    private let storage: URL

    /// The base URL to give a `DetectClient`.
    package var baseURL: String { "http://127.0.0.1:\(port)/api/v2" }

    private init(state: SimulatorState, port: Int, server: InProcessServer, storage: URL) {
        self.state = state
        self.port = port
        self.server = server
        self.storage = storage
    }

    /// Starts a simulator in this process on `port` (0 picks a free one) and returns once it listens.
    /// Uploads go to a directory of its own under `configuration.storageDirectory`, removed by `stop()`.
    package static func start(port: Int = 0, configuration: SimulatorConfiguration = .init()) async throws -> DetectSimulator {
        let state = SimulatorState(configuration: configuration)
        let storage = configuration.storageDirectory.appendingPathComponent(UUID().uuidString)
        let (listening, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = makeApplication(state: state, port: port, storage: storage) { channel in
            continuation.yield(channel.localAddress?.port ?? port)
            continuation.finish()
        }
        let server = InProcessServer(application)
        var ports = listening.makeAsyncIterator()
        guard let boundPort = await ports.next() else {
            await server.stop()
            throw SimulatorStartError()
        }
        return DetectSimulator(state: state, port: boundPort, server: server, storage: storage)
    }

    /// Runs a simulator until SIGINT or SIGTERM (for `detectq simulate`); `onListening` gets the port.
    package static func run(
        port: Int, configuration: SimulatorConfiguration, onListening: @escaping @Sendable (Int) -> Void
    ) async throws {
        let state = SimulatorState(configuration: configuration)
        let application = makeApplication(state: state, port: port, storage: configuration.storageDirectory) { channel in
            onListening(channel.localAddress?.port ?? port)
        }
        try await application.runService()
    }

    /// Stops the server and removes its uploads.
    package func stop() async {
        await server.stop()
        try? FileManager.default.removeItem(at: storage)
    }

    private static func makeApplication(
        state: SimulatorState, port: Int, storage: URL, onRunning: @escaping @Sendable (any Channel) async -> Void
    ) -> some ApplicationProtocol {
        let router = Router()
        let routes = SimulatorRoutes(state: state, storage: storage)
        router.post("/api/v2/detect") { request, _ in await routes.guarded(request, "POST /detect") { try await routes.submit(request) } }
        router.get("/api/v2/detect") { request, _ in await routes.guarded(request, "GET /detect") { try await routes.list(request) } }
        router.get("/api/v2/detect/:uuid") { request, context in
            await routes.guarded(request, "GET /detect/{uuid}") { try await routes.get(context.parameters.get("uuid") ?? "") }
        }
        router.delete("/api/v2/detect/:uuid") { request, context in
            await routes.guarded(request, "DELETE /detect/{uuid}") { try await routes.delete(context.parameters.get("uuid") ?? "") }
        }
        router.post("/api/v2/secure_uploads") { request, _ in
            await routes.guarded(request, "POST /secure_uploads") { try await routes.secureUpload(request) }
        }
        router.get("/_simulator/stats") { _, _ in try await routes.stats() }
        // For scripts that play a throttle that begins and ends while workers run: `?on=true` or `?on=false`.
        router.post("/_simulator/throttled") { request, _ in
            let on = request.uri.queryParameters.get("on") == "true"
            await state.setThrottled(on)
            return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "throttled: \(on)\n")))
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "detectq-simulator"),
            onServerRunning: onRunning,
            logger: Logger(label: "detectq.simulator", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }
}

/// The simulator could not start listening.
package struct SimulatorStartError: Error, CustomStringConvertible {
    package var description: String { "the simulator could not start listening" }
}

/// The handlers of the simulated API.
struct SimulatorRoutes: Sendable {
    let state: SimulatorState
    let storage: URL

    /// Counts the request, injects a fault when the dice say so, checks the bearer token, then handles it.
    func guarded(_ request: Request, _ endpoint: String, _ handle: () async throws -> Response) async -> Response {
        switch await state.admit(endpoint: endpoint) {
        case .drop?:
            return Self.cutConnection
        case .loseResponse?:
            _ = await SimulatorState.$answerWillBeLost.withValue(true) { await handleAuthorized(request, handle) }
            return Self.cutConnection
        case .rateLimit(let seconds)?:
            var response = json(.object(["success": .bool(false), "message": .string("Too many requests")]), status: .tooManyRequests)
            if let seconds { response.headers[.retryAfter] = String(seconds) }
            return response
        case .serverError?:
            return json(.object(["success": .bool(false), "message": .string("Service temporarily unavailable")]), status: .serviceUnavailable)
        case nil:
            return await handleAuthorized(request, handle)
        }
    }

    /// A response that promises a body and cuts the connection instead, as a network failure would.
    static var cutConnection: Response {
        Response(status: .ok, headers: [.contentLength: "128"], body: ResponseBody { _ in throw DroppedConnection() })
    }

    /// Checks the bearer token, then handles the request.
    private func handleAuthorized(_ request: Request, _ handle: () async throws -> Response) async -> Response {
        if let token = await state.configuration.requiredToken {
            let given = request.headers[.authorization] ?? ""
            guard given == "Bearer \(token)" else {
                return json(.object(["success": .bool(false), "message": .string("Invalid or missing API token")]), status: .unauthorized)
            }
        }
        do {
            return try await handle()
        } catch let rejection as SimulatorRejection {
            return json(rejection.body, status: .init(code: rejection.status))
        } catch {
            return json(.object(["success": .bool(false), "message": .string("Internal error")]), status: .internalServerError)
        }
    }

    // MARK: - Endpoints

    func submit(_ request: Request) async throws -> Response {
        let contentType = request.headers[.contentType] ?? ""
        var fields: [String: JSONValue]
        var upload: StreamedFile?
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            let form = try await MultipartStream.read(
                request.body, contentType: contentType, storage: storage, keepFileUpTo: APIFileRules.directUploadLimit
            )
            fields = form.fields.mapValues(JSONValue.string)
            upload = form.file
        } else {
            let body = try await request.body.collect(upTo: 1 << 20)
            guard case .object(let object)? = try? JSONText.decode(JSONValue.self, from: Data(body.readableBytesView)) else {
                throw SimulatorRejection.badRequest("The request body must be a JSON object or multipart/form-data")
            }
            fields = object
        }
        if let upload { await state.noteUpload(size: upload.size) }
        do {
            return try await createDetection(fields: fields, upload: upload, wait: Self.prefersWait(request))
        } catch {
            if let path = upload?.path { try? FileManager.default.removeItem(at: path) }
            throw error
        }
    }

    private func createDetection(fields: [String: JSONValue], upload: StreamedFile?, wait: Bool) async throws -> Response {
        let url = fields["url"].flatMap { $0 == .null ? nil : $0 }
        let token = fields["media_token"].flatMap { $0 == .null ? nil : $0 }
        guard [url != nil, token != nil, upload != nil].filter({ $0 }).count == 1 else {
            throw SimulatorRejection.badRequest("Provide exactly one of file, url, or media_token")
        }
        let options = try SubmissionValidation.options(fields)
        try await state.checkAccount(asking: options)
        let detection: SimulatedDetection
        if let url {
            let (text, mediaType) = try SubmissionValidation.mediaURL(url)
            detection = await state.createDetection(
                mediaType: mediaType, scenario: SimulatedScenario(markers: text), options: options, sourceURL: text,
                fileName: URL(string: text)?.lastPathComponent ?? "media", mediaKey: text, storedFile: nil
            )
        } else if let token {
            guard let text = token.stringValue else {
                throw SimulatorRejection.badRequest("media_token must be a string", field: "media_token")
            }
            let secure = try await state.redeem(text)
            detection = await state.createDetection(
                mediaType: secure.mediaType, scenario: .init(fakeAudio: secure.file.containsFakeMarker, fakePicture: secure.file.containsFakeMarker),
                options: options, sourceURL: nil,
                fileName: secure.file.fileName, mediaKey: "upload:" + Self.mediaName(secure.file.fileName), storedFile: secure.file.path
            )
        } else {
            let file = upload!
            let mediaType = try SubmissionValidation.file(file, capped: true)
            detection = await state.createDetection(
                mediaType: mediaType, scenario: .init(fakeAudio: file.containsFakeMarker, fakePicture: file.containsFakeMarker),
                options: options, sourceURL: nil,
                fileName: file.fileName, mediaKey: "file:" + Self.mediaName(file.fileName), storedFile: file.path
            )
        }
        if wait {
            try await Task.sleep(for: .seconds(max(0, detection.completesAt.timeIntervalSinceNow)))
        }
        return json(.object(["success": .bool(true), "item": detection.item(at: Date())]), status: .ok)
    }

    func secureUpload(_ request: Request) async throws -> Response {
        let contentType = request.headers[.contentType] ?? ""
        guard contentType.lowercased().hasPrefix("multipart/form-data") else {
            throw SimulatorRejection.badRequest("Upload the file as multipart/form-data in the field file", field: "file")
        }
        let form = try await MultipartStream.read(request.body, contentType: contentType, storage: storage, keepFileUpTo: nil)
        guard let file = form.file else {
            throw SimulatorRejection.badRequest("Upload the file as multipart/form-data in the field file", field: "file")
        }
        await state.noteUpload(size: file.size)
        let mediaType: ResembleDetect.MediaType
        do {
            mediaType = try SubmissionValidation.file(file, capped: false)
        } catch {
            if let path = file.path { try? FileManager.default.removeItem(at: path) }
            throw error
        }
        let token = await state.issueToken(for: file, mediaType: mediaType)
        return json(.object(["success": .bool(true), "token": .string(token)]), status: .ok)
    }

    func get(_ uuid: String) async throws -> Response {
        let now = Date()
        guard let detection = await state.detection(uuid), await !state.lagsBehind(detection) else { throw Self.notFound }
        return json(.object(["success": .bool(true), "item": detection.item(at: now)]), status: .ok)
    }

    func delete(_ uuid: String) async throws -> Response {
        guard await state.deleteDetection(uuid) else { throw Self.notFound }
        return json(.object(["success": .bool(true), "message": .string("Detect deleted")]), status: .ok)
    }

    func list(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let page = query.get("page").map { Int($0) } ?? 1
        let size = query.get("page_size").map { Int($0) } ?? 10
        guard let page, page >= 1 else { throw SimulatorRejection.badRequest("page must be an integer >= 1", field: "page") }
        guard let size, (10...1000).contains(size) else {
            throw SimulatorRejection.badRequest("page_size must be an integer from 10 to 1000", field: "page_size")
        }
        let (items, pages, total) = await state.page(page, size: size)
        let now = Date()
        return json(.object([
            "success": .bool(true), "page": .number(Double(page)), "num_pages": .number(Double(pages)),
            "page_size": .number(Double(size)), "total_count": .number(Double(total)),
            "items": .array(items.map { $0.item(at: now) }),
        ]), status: .ok)
    }

    func stats() async throws -> Response {
        let body = try JSONEncoder().encode(await state.snapshot())
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    // MARK: - Helpers

    static let notFound = SimulatorRejection(status: 404, message: "Detect not found")

    /// The media an uploaded file stands for, in the submission counts: detectq names each upload after its
    /// installation, request and attempt (`detectq-k3f9q-42-3.wav`), and every attempt of a request uploads the
    /// same media (`detectq-k3f9q-42.wav`), so that a second submission of it shows as billed twice.
    static func mediaName(_ fileName: String) -> String {
        guard let match = fileName.wholeMatch(of: /detectq-([a-z0-9]+)-(\d+)-\d+(\.[A-Za-z0-9]+)?/) else { return fileName }
        return "detectq-\(match.1)-\(match.2)\(match.3 ?? "")"
    }

    static func prefersWait(_ request: Request) -> Bool {
        request.headers[values: .prefer].contains { $0.lowercased().contains("wait") }
    }

    func json(_ value: JSONValue, status: HTTPResponse.Status) -> Response {
        let encoder = JSONText.encoder()
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Thrown inside a response body to cut the connection, as a network failure would.
struct DroppedConnection: Error {}

extension HTTPField.Name {
    static let prefer = HTTPField.Name("Prefer")!
}
