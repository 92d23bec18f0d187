import Logging
import Postgres

/// Runs a database write again and again through an outage (a failover, a restart), for up to `limit`: for
/// writes a worker must not give up on at the first refused connection, such as what the API has just
/// accepted, or a claim given back whose attempt would otherwise be spent by the rescue. A write still refused
/// at the limit, or refused for good, throws.
func throughOutage<Result>(for limit: Duration, logger: Logger, _ write: () async throws -> Result) async throws -> Result {
    let deadline = ContinuousClock.now + limit
    var delay = Duration.milliseconds(100)
    while true {
        do {
            return try await write()
        } catch let error as PostgresError where error.isTransient && ContinuousClock.now + delay < deadline {
            logger.warning("the database did not take the write (\(error)); trying again in \(delay)")
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }
}
