@testable import ResembleDetect
import Testing

@Suite("API errors are classified by what to do about them")
struct ErrorClassificationTests {
    @Test(arguments: [408, 429, 500, 502, 503, 504])
    func retryable(status: Int) {
        guard case .retryable = DetectAPIError.from(status: status, body: [], retryAfter: nil, secrets: []) else {
            Issue.record("\(status) is retryable")
            return
        }
    }

    @Test(arguments: [401, 403])
    func authentication(status: Int) {
        guard case .authentication = DetectAPIError.from(status: status, body: [], retryAfter: nil, secrets: []) else {
            Issue.record("\(status) is an authentication failure")
            return
        }
    }

    @Test func outOfCreditIsNeitherTheRequestsFaultNorTheTokens() {
        let error = DetectAPIError.from(status: 402, body: Array(#"{"error_code": "insufficient_credits", "message": "No credit"}"#.utf8), retryAfter: nil, secrets: [])
        #expect(error == .outOfCredit(message: "No credit"))
    }

    @Test(arguments: [400, 404, 413, 422])
    func permanent(status: Int) {
        guard case .permanent = DetectAPIError.from(status: status, body: [], retryAfter: nil, secrets: []) else {
            Issue.record("\(status) is permanent")
            return
        }
    }

    @Test func retryAfterIsKeptInSecondsOrAsADate() {
        #expect(DetectAPIError.from(status: 429, body: [], retryAfter: "7", secrets: [])
            == .retryable("too many requests", status: 429, retryAfter: .seconds(7)))
        #expect(DetectAPIError.parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == .zero)
        #expect(DetectAPIError.parseRetryAfter("soon") == nil)
    }

    @Test func theAPIsMessageAndFieldErrorsAreKeptWithSecretsMasked() {
        let body = Array("""
            {"success": false, "message": "Invalid callback https://me.example/cb/s3cr3t-token", "errors": {"frame_length": ["must be 1-4"]}}
            """.utf8)
        let error = DetectAPIError.from(status: 400, body: body, retryAfter: nil, secrets: ["https://me.example/cb/s3cr3t-token"])
        #expect(error == .permanent(status: 400, message: "Invalid callback [redacted] — frame_length: must be 1-4"))
        let credit = DetectAPIError.from(status: 402, body: Array(#"{"error_code": "x", "error": "Insufficient credit"}"#.utf8), retryAfter: nil, secrets: [])
        #expect(credit.description.contains("Insufficient credit"))
    }

    @Test func optionsNeverShowTheCallbackURL() {
        let options = DetectionOptions(callbackURL: "https://worker.example/callbacks/7/s3cr3t", frameLength: 2)
        #expect(!options.description.contains("s3cr3t"))
        #expect(!String(describing: options).contains("s3cr3t"))
        #expect(options.description.contains("frame_length=2"))
    }
}
