import Foundation

/// Where and how to reach PostgreSQL: a libpq connection string or URI (as in `DATABASE_URL`), with the
/// standard `PG*` environment variables and service files filling in whatever it leaves out.
package struct PostgresConfiguration: Sendable {
    /// A libpq connection string (`host=… dbname=…`) or URI (`postgresql://…`); empty means `PG*` variables only.
    package var connectionString: String
    /// Overrides the database named in the connection string, when set.
    package var database: String?
    /// `application_name` for the server's views (`pg_stat_activity`); overrides the connection string's.
    package var applicationName: String?
    /// Run-time settings applied to every session as it opens (and again after a reconnection), such as
    /// `detectq.worker_id`, which the event history records. Values are sent as parameters.
    package var sessionSettings: [String: String]

    package init(
        connectionString: String = "", database: String? = nil, applicationName: String? = nil,
        sessionSettings: [String: String] = [:]
    ) {
        self.connectionString = connectionString
        self.database = database
        self.applicationName = applicationName
        self.sessionSettings = sessionSettings
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
