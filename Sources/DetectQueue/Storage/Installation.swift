import Postgres

/// This deployment's name: a short random one that the first `detectq migrate` stores in
/// `detectq.installation`. Upload names carry it (`detectq-<installation>-<id>-<attempt>.<ext>`), so two
/// deployments that share one API team never adopt each other's detections.
package enum Installation {
    /// The name stored in the database behind `pool`.
    package static func name(_ pool: PostgresConnectionPool) async throws -> String {
        try await pool.query("SELECT name FROM detectq.installation")[0].decode("name", as: String.self)
    }
}
