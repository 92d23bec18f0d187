import Logging
import ResembleDetect

/// The probe that ends a worker's pause after the API refused its token (REFERENCE.md section 2): every
/// `DETECTQ_AUTH_RECHECK_SECONDS` while paused, it reads `RESEMBLE_API_TOKEN_FILE` again (a rotated secret)
/// and asks for one List Detects page, which bills nothing; once the API accepts, the worker claims again.
struct AuthRecheck: Sendable {
    let processor: RequestProcessor
    /// Reads the token file again; true when the token changed (nil: no file to read).
    let reloadToken: (@Sendable () -> Bool)?

    /// Probes once when the worker is paused for its token; returns true when the pause ended.
    func probeIfPaused() async -> Bool {
        guard processor.pause.isPaused else { return false }
        let logger = processor.logger
        if reloadToken?() == true {
            logger.notice("read a new token from RESEMBLE_API_TOKEN_FILE; probing the API with it")
        }
        do {
            _ = try await processor.budget.call(by: processor.configuration.workerID) {
                try await processor.client.detections(page: 1, pageSize: 10)
            }
        } catch {
            // A refusal keeps the pause; so does any other failure, which says nothing of the token yet.
            let seconds = Int(processor.configuration.authRecheck.seconds.rounded())
            if case .authentication? = error as? DetectAPIError {
                logger.warning("the API still refuses the token: \(error); probing again in \(seconds) s")
            } else {
                logger.warning("the token probe could not reach a verdict (\(error)); probing again in \(seconds) s")
            }
            return false
        }
        guard processor.pause.resume() else { return false }
        logger.notice("the API accepts the token again: this worker resumes claiming")
        return true
    }
}
