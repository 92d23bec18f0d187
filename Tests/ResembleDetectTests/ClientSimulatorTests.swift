import AsyncHTTPClient
import DetectSimulator
import DetectqTestSupport
import Foundation
import NIOCore
import ResembleDetect
import Testing

@Suite("The client against the simulator, over loopback", .stopsWhatItStarts)
struct ClientSimulatorTests {
    @Test func aURLWithPreferWaitReturnsTheVerdict() async throws {
        let harness = try await SimulatorHarness.start()
        let fake = try await harness.client.submit(.url("https://cdn.example.com/fake-call.wav"), wait: true)
        #expect(fake.status == .completed)
        #expect(fake.mediaType == .audio)
        #expect(fake.isFake == true && fake.label == "fake")
        #expect(fake.aggregatedScore == 0.92)
        let real = try await harness.client.submit(.url("https://cdn.example.com/interview.mp4"), wait: true)
        #expect(real.mediaType == .video && real.isFake == false)
        #expect(real.videoMetrics?.children.first?.children.first?.children.first?.type == "Segment")
        let image = try await harness.client.submit(
            .url("https://cdn.example.com/fake.png"), options: .init(useReverseSearch: true), wait: true
        )
        #expect(image.mediaType == .image && image.label == "Fake")
        #expect(image.imageMetrics?.reverseImageSearchSources?.first?.verdict == "known_fake")
        await harness.stop()
    }

    @Test func anAsynchronousSubmitIsPolledToCompletion() async throws {
        let harness = try await SimulatorHarness.start(.init(latency: .milliseconds(400)))
        let started = ContinuousClock.now
        let accepted = try await harness.client.submit(.url("https://cdn.example.com/a.mp3"), wait: false)
        #expect(accepted.status == .processing)
        #expect(accepted.label == nil)
        let item = try await waitFor("detection \(accepted.uuid) is finished", interval: .milliseconds(100)) {
            let polled = try await harness.client.detection(uuid: accepted.uuid)
            return polled.isFinished ? polled : nil
        }
        #expect(item.uuid == accepted.uuid && item.status == .completed && item.isFake == false)
        #expect(ContinuousClock.now - started >= .milliseconds(400), "the result came after the latency, not at once")
        await harness.stop()
    }

    @Test func aMultipartUploadCarriesTheOptionsAsFormFields() async throws {
        // The purge comes 2 s after completion: long enough that a loaded machine still answers before it.
        let harness = try await SimulatorHarness.start(.init(purgeDelay: .seconds(2)))
        let file = try harness.file("call-881.wav", "RIFF....FAKE voice")
        let item = try await harness.client.submit(
            .file(file), options: .init(frameLength: 2, intelligence: true, audioSourceTracing: true, zeroRetentionMode: true),
            wait: true
        )
        #expect(item.isFake == true)
        #expect(item.audioSourceTracing?.label == "resemble_ai")
        #expect(item.intelligence?.isCompleted == true)
        #expect(item.retention.zeroRetentionMode == true)
        #expect(item.retention.url == nil && item.retention.audioURL == nil)
        #expect(item.retention.filename?.hasPrefix("redacted_") == true && item.retention.filename?.hasSuffix(".wav") == true)
        #expect(!item.retention.isPurged)
        let purged = try await waitFor("the simulator purges the file", interval: .milliseconds(100)) {
            let polled = try await harness.client.detection(uuid: item.uuid)
            return polled.retention.fileDeletedAt != nil ? polled : nil
        }
        #expect(purged.retention.isPurged)
        let real = try await harness.client.submit(.file(try harness.file("real.png", "PNG bytes")), wait: true)
        #expect(real.mediaType == .image && real.isFake == false)
        #expect(await harness.simulator.state.snapshot().submissionsByMedia["file:call-881.wav"] == 1)
        await harness.stop()
    }

    @Test func aSecureUploadTokenIsSubmittedOnceAndOnlyOnce() async throws {
        let harness = try await SimulatorHarness.start()
        let token = try await harness.client.secureUpload(try harness.file("clip.mov", "moov FAKE"))
        #expect(token.token.split(separator: ".").count == 3, "a JWT")
        #expect(token.isUsable())
        let item = try await harness.client.submit(.mediaToken(token.token), wait: true)
        #expect(item.mediaType == .video && item.isFake == true)
        let again = await #expect(throws: DetectAPIError.self) { try await harness.client.submit(.mediaToken(token.token), wait: true) }
        guard case .permanent(400, let message)? = again else {
            Issue.record("a reused token is a permanent 400")
            return
        }
        #expect(message.contains("already been used"))
        #expect(!message.contains(token.token))
        await harness.stop()
    }

    @Test func callbacksArriveWithTheSamePayloadAsTheSynchronousResponse() async throws {
        let recorder = try await HTTPRecorder.start()
        let harness = try await SimulatorHarness.start(.init(latency: .milliseconds(100)))
        let accepted = try await harness.client.submit(
            .url("https://cdn.example.com/fake.wav"), options: .init(callbackURL: recorder.baseURL + "/callbacks/1", intelligence: true), wait: false
        )
        let bodies = await recorder.deliveries(count: 1, within: .seconds(10)).map(\.body)
        #expect(bodies.count == 1)
        let item = try #require(try bodies.first.map { try DetectionItem(json: String(decoding: $0, as: UTF8.self).itemJSON) })
        #expect(item.uuid == accepted.uuid && item.status == .completed && item.isFake == true)
        #expect(item.intelligence?.isCompleted == true, "callbacks wait for intelligence")
        await harness.stop()
        await recorder.stop()
    }

    @Test func listingWalksEveryPage() async throws {
        let harness = try await SimulatorHarness.start()
        var uuids: Set<String> = []
        for index in 0..<25 {
            uuids.insert(try await harness.client.submit(.url("https://cdn.example.com/\(index).wav"), wait: false).uuid)
        }
        var listed: [String] = []
        for try await item in harness.client.allDetections(pageSize: 10) { listed.append(item.uuid) }
        #expect(listed.count == 25 && Set(listed) == uuids)
        let page = try await harness.client.detections(page: 3, pageSize: 10)
        #expect(page.pageCount == 3 && page.items.count == 5 && page.totalCount == 25)
        await harness.stop()
    }

    // MARK: - Errors

    @Test func aWrongTokenIsAnAuthenticationError() async throws {
        let harness = try await SimulatorHarness.start(.init(requiredToken: "right-token"), clientToken: "wrong-token-123")
        let error = await #expect(throws: DetectAPIError.self) {
            try await harness.client.submit(.url("https://cdn.example.com/a.wav"), wait: true)
        }
        #expect(error == .authentication(status: 401, message: "Invalid or missing API token"))
        #expect(!(error?.description.contains("wrong-token-123") ?? true))
        #expect(await harness.simulator.state.snapshot().submissions == 0)
        await harness.stop()
    }

    @Test func validationErrorsArePermanentWithTheAPIsMessage() async throws {
        let harness = try await SimulatorHarness.start()
        let cases: [(MediaSource, DetectionOptions, String)] = [
            (.url("http://cdn.example.com/a.wav"), .init(), "url must be a public HTTPS URL"),
            (.url("https://cdn.example.com/a.exe"), .init(), ".exe is not supported"),
            (.url("https://cdn.example.com/a.wav"), .init(frameLength: 5), "frame_length must be an integer from 1 to 4"),
            (.url("https://cdn.example.com/a.wav"), .init(startRegion: 5, endRegion: 2), "end_region must be greater than start_region"),
            (.url("https://cdn.example.com/a.mp4"), .init(modelTypes: "audio"), "model_types must be image or talking_head"),
            (.mediaToken("not-a-token"), .init(), "media_token is invalid"),
        ]
        for (source, options, expected) in cases {
            let error = await #expect(throws: DetectAPIError.self) { try await harness.client.submit(source, options: options, wait: true) }
            guard case .permanent(400, let message)? = error else {
                Issue.record("expected a permanent 400 for \(expected), got \(String(describing: error))")
                continue
            }
            #expect(message.contains(expected), "\(message)")
        }
        let missing = await #expect(throws: DetectAPIError.self) { try await harness.client.detection(uuid: "no-such-uuid") }
        #expect(missing == .permanent(status: 404, message: "Detect not found"))
        #expect(await harness.simulator.state.snapshot().submissions == 0)
        await harness.stop()
    }

    @Test func fileConstraintsAreCheckedBeforeAnyByteIsSent() async throws {
        let harness = try await SimulatorHarness.start()
        #expect(throws: DetectAPIError.self) { try harness.file("empty.wav", "") }
        #expect(throws: DetectAPIError.self) { try harness.file("notes.txt", "text") }
        #expect(throws: DetectAPIError.self) { try harness.file("noextension", "bytes") }
        #expect(throws: DetectAPIError.self) { try MediaFile(path: harness.media.path) }
        #expect(throws: DetectAPIError.self) { try MediaFile(path: harness.media.appendingPathComponent("missing.wav").path) }
        let big = try harness.sparseFile("big.mp4", size: MediaFileConstraints.directUploadLimit + 1)
        #expect(big.uploadPath == .secureUpload)
        let refused = await #expect(throws: DetectAPIError.self) { try await harness.client.submit(.file(big), wait: true) }
        #expect(refused?.description.contains("secure upload") == true)
        #expect(try harness.file("ok.WAV", "x").contentType == "audio/wav")
        #expect(MediaFileConstraints.uploadPath(forSize: MediaFileConstraints.directUploadLimit) == .multipart)
        #expect(await harness.simulator.state.snapshot().requests == 0)
        await harness.stop()
    }

    // MARK: - Faults

    @Test func injectedServerErrorsAndRateLimitsAreRetryable() async throws {
        let harness = try await SimulatorHarness.start(.init(faults: .init(serverErrorRate: 1)))
        let serverError = await #expect(throws: DetectAPIError.self) {
            try await harness.client.submit(.url("https://cdn.example.com/a.wav"), wait: true)
        }
        #expect(serverError == .retryable("Service temporarily unavailable", status: 503, retryAfter: nil))
        await harness.simulator.state.setFaults(.init(rateLimitRate: 1, retryAfterSeconds: 3))
        let limited = await #expect(throws: DetectAPIError.self) {
            try await harness.client.submit(.url("https://cdn.example.com/a.wav"), wait: true)
        }
        #expect(limited == .retryable("Too many requests", status: 429, retryAfter: .seconds(3)))
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.injectedServerErrors == 1 && stats.injectedRateLimits == 1 && stats.submissions == 0)
        await harness.stop()
    }

    @Test func aDroppedConnectionIsARetryableNetworkError() async throws {
        let harness = try await SimulatorHarness.start(.init(faults: .init(dropRate: 1)))
        let error = await #expect(throws: DetectAPIError.self) {
            try await harness.client.submit(.url("https://cdn.example.com/a.wav"), wait: true)
        }
        guard case .retryable(let reason, nil, nil)? = error else {
            Issue.record("expected a retryable network error, got \(String(describing: error))")
            return
        }
        #expect(reason.hasPrefix("network error"))
        #expect(await harness.simulator.state.snapshot().injectedDrops == 1)
        await harness.stop()
    }

    @Test func lostAndDuplicatedCallbacks() async throws {
        let recorder = try await HTTPRecorder.start()
        let lossy = try await SimulatorHarness.start(.init(faults: .init(lostCallbackRate: 1)))
        _ = try await lossy.client.submit(.url("https://cdn.example.com/a.wav"), options: .init(callbackURL: recorder.baseURL + "/callbacks/1"), wait: false)
        try await waitUntil("the simulator drops the callback") { await lossy.simulator.state.snapshot().callbacksLost == 1 }
        #expect(recorder.deliveries.isEmpty)
        await lossy.stop()

        let doubled = try await SimulatorHarness.start(.init(faults: .init(duplicateCallbackRate: 1)))
        let accepted = try await doubled.client.submit(
            .url("https://cdn.example.com/a.wav"), options: .init(callbackURL: recorder.baseURL + "/callbacks/1"), wait: false
        )
        let bodies = await recorder.deliveries(count: 2, within: .seconds(10)).map(\.body)
        #expect(bodies.count == 2)
        #expect(bodies.allSatisfy { String(decoding: $0, as: UTF8.self).contains(accepted.uuid) })
        await doubled.stop()
        await recorder.stop()
    }

    @Test func aResponseSlowerThanTheResponseTimeoutIsRetryable() async throws {
        // The answer would take 30 s; the client gives up after 300 ms. The bound below leaves a busy machine room.
        let simulator = try await DetectSimulator.startForTest(configuration: .init(latency: .seconds(30)))
        let client = DetectClient(configuration: .init(baseURL: simulator.baseURL, token: nil, responseTimeout: .milliseconds(300)))
        let started = ContinuousClock.now
        let error = await #expect(throws: DetectAPIError.self) {
            try await client.submit(.url("https://cdn.example.com/slow.wav"), wait: true)
        }
        #expect(error == .retryable("network error: response timeout", status: nil, retryAfter: nil))
        #expect(ContinuousClock.now - started < .seconds(10))
        try await client.shutdown()
        await simulator.stop()
    }

    @Test func aRefusedConnectionIsRetryable() async throws {
        let simulator = try await DetectSimulator.startForTest()
        let baseURL = simulator.baseURL
        await simulator.stop()
        let client = DetectClient(configuration: .init(baseURL: baseURL, token: "secret-token-xyz", connectTimeout: .seconds(2)))
        let error = await #expect(throws: DetectAPIError.self) { try await client.detection(uuid: "x") }
        guard case .retryable(let reason, nil, nil)? = error else {
            Issue.record("a refused connection is retryable, got \(String(describing: error))")
            return
        }
        #expect(!reason.contains("secret-token-xyz"))
        try await client.shutdown()
    }

    @Test func latencyIsInjected() async throws {
        let harness = try await SimulatorHarness.start(.init(latency: .milliseconds(600)))
        let started = ContinuousClock.now
        _ = try await harness.client.submit(.url("https://cdn.example.com/a.wav"), wait: true)
        #expect(ContinuousClock.now - started >= .milliseconds(550))
        await harness.stop()
    }

    @Test func theSimulatorRefusesADirectUploadOverTheCapWithThePointerToSecureUploads() async throws {
        let harness = try await SimulatorHarness.start()
        let size = Int(MediaFileConstraints.directUploadLimit) + 1
        let boundary = "x-boundary"
        let head = ByteBuffer(string: "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
        let tail = ByteBuffer(string: "\r\n--\(boundary)--\r\n")
        let zeros = ByteBuffer(repeating: 0, count: 1 << 20)
        let chunks = [head] + Array(repeating: zeros, count: size >> 20) + [ByteBuffer(repeating: 0, count: size & ((1 << 20) - 1)), tail]
        var request = HTTPClientRequest(url: harness.simulator.baseURL + "/detect")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "multipart/form-data; boundary=\(boundary)")
        request.body = .stream(chunks.async, length: .known(Int64(chunks.map(\.readableBytes).reduce(0, +))))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
        #expect(response.status.code == 400)
        #expect(body.contains("POST /api/v2/secure_uploads"))
        #expect(await harness.simulator.state.snapshot().submissions == 0)
        await harness.stop()
    }
}

@Suite("Large uploads stream in flat memory", .stopsWhatItStarts, .serialized)
struct LargeUploadTests {
    @Test func aFileOver150MBGoesThroughASecureUpload() async throws {
        let harness = try await SimulatorHarness.start()
        let file = try harness.sparseFile("long-call.wav", size: 160_000_000)
        let (item, path) = try await harness.client.submit(file: file, wait: true)
        #expect(path == .secureUpload)
        #expect(item.status == .completed && item.mediaType == .audio)
        let stats = await harness.simulator.state.snapshot()
        #expect(stats.secureUploads == 1 && stats.largestUpload == 160_000_000 && stats.submissions == 1)
        await harness.stop()
    }

    @Test func oneGigabyteThroughMultipartKeepsPeakMemoryFlat() async throws {
        let harness = try await SimulatorHarness.start()
        let file = try harness.sparseFile("archive.mkv", size: 1 << 30)
        PeakMemory.resetPeak()
        let before = PeakMemory.peakBytes()
        let started = ContinuousClock.now
        let token = try await harness.client.secureUpload(file)
        let elapsed = ContinuousClock.now - started
        let growth = PeakMemory.peakBytes() - before
        #expect(!token.token.isEmpty)
        #expect(await harness.simulator.state.snapshot().largestUpload == 1 << 30)
        print("1 GiB multipart upload: peak RSS growth \(growth >> 20) MiB in \(elapsed) (client and simulator in one process)")
        // scripts/test.sh runs this suite alone: VmHWM is the whole process's, so other suites would blur it.
        #expect(growth < 32 << 20, "peak memory grew by \(growth >> 20) MiB")
        await harness.stop()
    }
}

extension String {
    /// The `item` object of a `{success, item}` body, as text.
    var itemJSON: String {
        get throws {
            let object = try JSONDecoder().decode([String: JSONValue].self, from: Data(utf8))
            let encoded = try JSONEncoder().encode(object["item"] ?? .null)
            return String(decoding: encoded, as: UTF8.self)
        }
    }
}

extension Array where Element: Sendable {
    /// The elements as an asynchronous sequence.
    var async: AsyncStream<Element> {
        AsyncStream { continuation in
            for element in self { continuation.yield(element) }
            continuation.finish()
        }
    }
}
