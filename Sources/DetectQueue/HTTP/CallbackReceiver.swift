import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Postgres
import ResembleDetect

/// The worker's HTTP endpoints: the API's callbacks (`POST /callbacks/{id}/{secret}`), `/healthz`, `/readyz`
/// and `/metrics`. Nothing else answers.
///
/// A callback is a hint, not a verdict: it must name a request that is awaiting a result and carry that
/// request's secret (compared in constant time), and then the result is confirmed with
/// `GET /detect/{uuid}` before it is stored. Duplicates change nothing.
struct CallbackReceiver: Sendable {
    let processor: RequestProcessor
    let poller: ResultPoller
    /// Renders the metrics for `/metrics`; nil answers 404 there.
    let metricsExposition: (@Sendable () -> String)?
    /// Where `/metrics` samples the queue's depth from.
    let pool: PostgresConnectionPool
    /// How long vacuum's horizon has been held, as this worker has watched it.
    let horizonWatch: HorizonWatch
    /// Callback bodies larger than this are refused.
    static let maximumBody = 1 << 20

    func routes(into router: Router<BasicRequestContext>) {
        router.post("/callbacks/:id/:secret") { request, context -> Response in
            await receive(request, id: context.parameters.get("id"), secret: context.parameters.get("secret"))
        }
        router.get("/healthz") { _, _ -> Response in
            text("ok\n", status: .ok)
        }
        router.get("/metrics") { _, _ -> Response in
            guard let metricsExposition else { return text("metrics are not enabled in this process\n", status: .notFound) }
            do {
                try await QueueMetrics.sampleDepth(pool)
                try await QueueMetrics.sampleHorizon(pool, watch: horizonWatch)
            } catch {
                processor.logger.warning("could not sample the queue depth for /metrics: \(error)")
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: .init(string: metricsExposition()))
            )
        }
        router.get("/readyz") { _, _ -> Response in
            if let reason = processor.pause.currentReason { return text("paused: \(reason)\n", status: .serviceUnavailable) }
            do {
                // Out of credit, no worker can submit: not ready, and saying why.
                if let credit = try await processor.gate.pause.current().first(where: { $0.kind == .outOfCredit }) {
                    return text("paused: the account is out of credit; submitting is paused for every worker (\(credit.reason))\n", status: .serviceUnavailable)
                }
                return text("ready\n", status: .ok)
            } catch {
                return text("database unreachable: \(error)\n", status: .serviceUnavailable)
            }
        }
    }

    private func receive(_ request: Request, id: String?, secret: String?) async -> Response {
        guard let id = id.flatMap(Int.init), let secret, !secret.isEmpty else {
            QueueMetrics.callback(.unknown)
            return text("not found\n", status: .notFound)
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maximumBody)
        } catch {
            QueueMetrics.callback(.tooLarge)
            return text("callback body too large\n", status: .contentTooLarge)
        }
        let hash = RequestProcessor.hash(secret)
        let found: (DetectionRequest, [String])?
        do {
            found = try await processor.store.awaitingCallback(id: id)
        } catch {
            // Not "not found": the callback may be genuine, and the API may send it again.
            QueueMetrics.callback(.unavailable)
            QueueMetrics.databaseFailed(.readCallbackRequest)
            processor.logger.error("could not read the request a callback names: \(error)", metadata: ["request_id": "\(id)"])
            return text("cannot read the request now; try again later\n", status: .serviceUnavailable)
        }
        guard let (waiting, storedHashes) = found, storedHashes.map({ SecretComparison.equal(hash, $0) }).contains(true) else {
            QueueMetrics.callback(.unknown)
            return text("not found\n", status: .notFound)
        }
        if waiting.remoteUUID == nil, waiting.state.adoptsACallback {
            return await adoptEarly(waiting, body: body, secretHash: hash)
        }
        guard waiting.state == .awaitingResult else {
            QueueMetrics.callback(.duplicate)
            return text("already recorded\n", status: waiting.state == .completed ? .ok : .conflict)
        }
        QueueMetrics.callback(.accepted)
        await poller.poll(waiting)
        return text("received\n", status: .accepted)
    }

    /// A genuine callback (its secret is right) for a request whose answer has not been stored, because it is
    /// still on its way or was lost: the detection it names, once `GET /detect/{uuid}` confirms it, is adopted,
    /// and the request waits for it (its poll due now) instead of being submitted again.
    private func adoptEarly(_ waiting: DetectionRequest, body: ByteBuffer, secretHash: String) async -> Response {
        guard let uuid = try? DetectResponses.item(from: Array(body.readableBytesView)).uuid else {
            QueueMetrics.callback(.unreadable)
            return text("the callback names no detection\n", status: .badRequest)
        }
        do {
            let confirmed = try await processor.budget.call(by: processor.configuration.workerID) {
                try await processor.client.detection(uuid: uuid)
            }
            guard confirmed.uuid == uuid, try await adopt(uuid, for: waiting, secretHash: secretHash) else {
                QueueMetrics.callback(.duplicate)
                return text("already recorded\n", status: .conflict)
            }
            QueueMetrics.callback(.adopted)
            processor.logger.notice("adopted the detection a callback named before the submission's answer was stored", metadata: [
                "request_id": "\(waiting.id)", "remote_uuid": "\(uuid)",
            ])
            return text("received\n", status: .accepted)
        } catch {
            // Not confirmed now: the API sends the callback as a hint, and the request's own path goes on.
            QueueMetrics.callback(.unconfirmed)
            processor.logger.warning("could not confirm an early callback: \(error)", metadata: ["request_id": "\(waiting.id)"])
            return text("not confirmed; try again\n", status: .serviceUnavailable)
        }
    }

    /// Adopts `uuid` for the request, in whichever unfinished state it is in now: a `Prefer: wait` answer cut
    /// off when the detection finishes arrives with its callback, so the worker may move the request from
    /// `submitting` to `retrying` (or give it back to `queued`) while the callback is being confirmed. Returns false when the request moved
    /// on otherwise (it has a uuid, or it ended), or while a newer attempt that marked its send with another secret
    /// may be sending (adopting then would store a uuid with a second submission on its way).
    private func adopt(_ uuid: String, for waiting: DetectionRequest, secretHash: String) async throws -> Bool {
        var request = waiting
        for _ in 0..<4 {
            if try await processor.store.adopt(uuid, for: request, workerID: nil, via: "callback", callbackSecretHash: secretHash) { return true }
            guard let now = try await processor.store.request(id: request.id), now.remoteUUID == nil,
                  now.state.adoptsACallback, now.state != request.state || now.attempt != request.attempt
            else { return false }
            request = now
        }
        return false
    }

    private func text(_ body: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: .init(string: body)))
    }
}
