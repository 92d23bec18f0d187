import Foundation

/// Where and how to reach PostgreSQL: a libpq connection string or URI (as in `DATABASE_URL`), with the
/// standard `PG*` environment variables and service files filling in whatever it leaves out.
package struct PostgresConfiguration: Sendable {
    /// A libpq connection string (`host=… dbname=…`) or URI (`postgresql://…`); empty means `PG*` variables only.
    package var connectionString: String
    /// Overrides the database named in the connection string, when set.
    package var database: String?
    /// `application_name` for the server's views (`pg_stat_activity`); overrides the connection string's. It
    /// is also who the event history says made a change (`detectq.current_actor()`): `detectq worker <id>`
    /// records `<id>`, `detectq <verb> (<who>)` records the whole name. A startup parameter rather than a
    /// session setting, because a transaction-pooling PgBouncer sets it on every server connection it lends.
    package var applicationName: String?

    /// The longest `application_name` the server keeps (NAMEDATALEN - 1 bytes); it cuts longer ones.
    package static let applicationNameLimit = 63

    package init(connectionString: String = "", database: String? = nil, applicationName: String? = nil) {
        self.connectionString = connectionString
        self.database = database
        self.applicationName = applicationName
    }

    /// The configuration named by `DATABASE_URL` (or by the `PG*` variables alone when it is unset).
    package static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        applicationName: String? = nil
    ) -> PostgresConfiguration {
        PostgresConfiguration(connectionString: environment["DATABASE_URL"] ?? "", applicationName: applicationName)
    }

    /// The keyword/value pairs handed to `PQconnectdbParams`, in order. The first `dbname` is expanded as a
    /// connection string; a later `dbname` is a plain database name that overrides it.
    var connectionParameters: [(String, String)] {
        var parameters = [("dbname", connectionString), ("fallback_application_name", "detectq")]
        if let database { parameters.append(("dbname", database)) }
        if let applicationName { parameters.append(("application_name", applicationName)) }
        return parameters
    }
}
