import DetectQueue
import DetectqTestSupport
import FakeAlerts
import Foundation
import Postgres
import ResembleDetect
import Testing
import WorkerTestSupport
import TextEncodings

@Suite("Alert sinks", .enabled(if: TestDatabase.isEnabled), .stopsWhatItStarts)
struct AlertSinkTests {
    @Test func fakesAreAlertedThroughPgNotifyOnceEachAndRealsNot() async throws {
        let harness = try await WorkerHarness.start()
        var alerts = PostgresNotificationListener.listen(harness.database, channels: ["detectq_alerts"]).makeAsyncIterator()
        #expect(await alerts.next() == .listening)
        let fake = try await harness.insert("media_url, metadata", ["https://cdn.example.com/fake-call.wav", PostgresJSON(text: #"{"case": 881}"#)])
        let real = try await harness.insert("media_url", ["https://cdn.example.com/real-call.wav"])
        let worker = harness.startWorker(try harness.configuration(), postProcessors: [PgNotifyAlertSink()])
        try await harness.waitUntilProcessed([fake, real])
        guard case .notification(let notification)? = await alerts.next() else {
            Issue.record("no alert")
            return
        }
        await worker.stop()

        let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(notification.payload.utf8))
        let uuid = try await harness.row(fake).decode("remote_uuid", as: String.self)
        #expect(event["event"] == .string("detection.fake"))
        #expect(event["event_id"] == .string("detection.fake:\(uuid)"))
        #expect(event["request_id"] == .number(Double(fake)))
        #expect(event["remote_uuid"] == .string(uuid))
        #expect(event["label"] == .string("fake") && event["score"] == .number(0.92) && event["media_type"] == .string("audio"))
        #expect(event["metadata"] == .object(["case": .number(881)]))
        #expect(event["detected_at"]?.stringValue.flatMap(ISO8601Timestamp.parse) != nil)
        let tasks = try await harness.pool.query("SELECT request_id, processor, state::text AS state FROM detectq.post_tasks")
        #expect(tasks.count == 1, "one task for the fake, none for the real")
        #expect(try tasks[0].decode("request_id", as: Int.self) == fake && tasks[0].decode("state", as: String.self) == "completed")
        await harness.stop()
    }

    @Test func webhookSlackAndPagerDutyEachGetOneAlertPerFakeEvenWhenTheSinkFailsHalfTheTime() async throws {
        let sink = try await HTTPRecorder.start(refuseEveryOther: true)
        let harness = try await WorkerHarness.start()
        let fakes = [
            try await harness.insert("media_url, metadata", ["https://cdn.example.com/fake-1.wav", PostgresJSON(text: #"{"case": 1}"#)]),
            try await harness.insert("media_url, metadata", ["https://cdn.example.com/fake-2.mp4", PostgresJSON(text: #"{"case": 2}"#)]),
        ]
        let real = try await harness.insert("media_url", ["https://cdn.example.com/real.png"])
        let secret = "whsec-test-123"
        let processors: [any PostProcessor] = [
            WebhookAlertSink(url: sink.baseURL + "/hook", secret: secret),
            SlackAlertSink(url: sink.baseURL + "/slack"),
            PagerDutyAlertSink(routingKey: "routing-key-1", url: sink.baseURL + "/pagerduty"),
        ]
        let worker = harness.startWorker(try harness.configuration(), postProcessors: processors)
        // Every post-task finished: no delivery can come after this.
        try await harness.waitUntilProcessed(fakes + [real])
        await worker.stop()

        let delivered = sink.deliveries.filter { !$0.refused }
        #expect(delivered.count == 6, "one accepted alert per fake per sink: \(delivered.map(\.path))")
        #expect(sink.deliveries.contains { $0.refused }, "the sink refused some deliveries")
        let hooks = delivered.filter { $0.path == "/hook" }
        #expect(Set(hooks.compactMap { $0.header("X-Detectq-Event-Id") }).count == 2, "distinct event ids")
        for hook in hooks {
            let signature = try #require(hook.header("X-Detectq-Signature"))
            let timestamp = try #require(signature.split(separator: ",").first?.dropFirst(2)).description
            let expected = WebhookAlertSink.signature(body: hook.text, secret: secret, at: Date(timeIntervalSince1970: Double(timestamp)!))
            #expect(signature == expected, "the HMAC verifies with the secret over <t>.<raw body>")
            let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(hook.body))
            #expect(event["event"] == .string("detection.fake") && event["event_id"]?.stringValue == hook.header("X-Detectq-Event-Id"))
            for key in ["request_id", "remote_uuid", "media_type", "label", "score", "metadata", "detected_at"] { #expect(event[key] != nil, "\(key)") }
        }
        let retriedIDs = sink.deliveries.filter { $0.path == "/hook" }.compactMap { $0.header("X-Detectq-Event-Id") }
        #expect(Set(retriedIDs).count == 2, "retries repeat the same event id, never a new one")
        for slack in delivered.filter({ $0.path == "/slack" }) {
            let message = try JSONDecoder().decode([String: JSONValue].self, from: Data(slack.body))
            #expect(message["text"]?.stringValue?.contains("Fake") == true)
            guard case .array(let blocks)? = message["blocks"] else { Issue.record("Slack blocks"); continue }
            #expect(blocks.count >= 3)
        }
        for page in delivered.filter({ $0.path == "/pagerduty" }) {
            let event = try JSONDecoder().decode([String: JSONValue].self, from: Data(page.body))
            #expect(event["routing_key"] == .string("routing-key-1") && event["event_action"] == .string("trigger"))
            #expect(event["dedup_key"]?.stringValue?.hasPrefix("detection.fake:") == true)
            #expect(event["payload"]?["severity"] == .string("critical") && event["payload"]?["source"] == .string("detectq"))
            #expect(event["payload"]?["summary"]?.stringValue?.isEmpty == false)
        }
        let attempts = try await harness.pool.query("SELECT max(attempt) AS n FROM detectq.post_tasks")[0].decode("n", as: Int.self)
        #expect(attempts >= 2, "failed deliveries were retried and recorded")
        #expect(try await harness.pool.query("SELECT count(*) AS n FROM detectq.post_tasks WHERE state <> 'completed'")[0].decode("n", as: Int.self) == 0)
        #expect(await harness.simulator.state.snapshot().submissions == 3, "detections untouched")
        await sink.stop()
        await harness.stop()
    }
}
