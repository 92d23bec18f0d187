import Foundation
import Postgres

/// What holds back vacuum in this database, and what it has cost the requests' table so far: a long
/// transaction (a report, a backup, a session left idle in a transaction), a prepared transaction or a
/// replication slot keeps every row version changed after its snapshot, so the claim's index fills with entries
/// that every claim steps over. `detectq status` prints it and warns; `/metrics` exports it; workers log it.
///
/// Any role can read a session's snapshot (`backend_xmin`) and its role; when it began (`xact_start`), what it
/// is and what it does are shown only to a superuser, a member of `pg_read_all_stats` (or `pg_monitor`), or the
/// session's own role. Without them, the age is known in transactions only, and how long it has held is what an
/// observer has seen (`HorizonWatch`).
package struct VacuumHorizon: Sendable, Hashable {
    /// What holds the oldest snapshot.
    package enum Holder: Sendable, Hashable {
        /// A session: its process id, its role, and (when this role may see them) its application and state.
        case session(pid: Int, role: String?, application: String?, state: String?)
        /// A prepared transaction (`PREPARE TRANSACTION`), by its global id and owner.
        case preparedTransaction(gid: String, owner: String?)
        /// A replication slot's `xmin` (a standby with `hot_standby_feedback`, or a slot nobody reads).
        case replicationSlot(name: String)

        /// It in words, for a person.
        package var description: String {
            switch self {
            case .session(let pid, let role, let application, let state):
                "session pid \(pid)" + ([role.map { "role \($0)" }, application.flatMap { $0.isEmpty ? nil : "application \($0)" }, state]
                    .compactMap { $0 }.map { ", " + $0 }.joined())
            case .preparedTransaction(let gid, let owner): "prepared transaction \(gid)" + (owner.map { " of role \($0)" } ?? "")
            case .replicationSlot(let name): "replication slot \(name)"
            }
        }

        /// Who holds it, across reads: a session by its pid, a prepared transaction by its id, a slot by its name.
        fileprivate var identity: String {
            switch self {
            case .session(let pid, _, _, _): "session \(pid)"
            case .preparedTransaction(let gid, _): "prepared \(gid)"
            case .replicationSlot(let name): "slot \(name)"
            }
        }
    }

    /// The holder of the oldest snapshot, if any other than this session holds one.
    package var holder: Holder?
    /// The transaction id the horizon is held at (the holder's snapshot xmin, or its own transaction id): the same
    /// holder holding a newer one holds a new horizon.
    package var heldAt: String?
    /// Transactions begun since that snapshot (`age()` of its xmin, or of its transaction id when it has no snapshot
    /// between statements): every row version changed since is kept.
    package var ageTransactions: Int
    /// When its transaction began, when this role may see it (always, for a prepared transaction).
    package var since: Date?
    /// The database's clock when read.
    package var readAt: Date
    /// Row versions of `detectq.requests` that are dead, as the statistics count them: vacuum removes them, unless the
    /// horizon holds them.
    package var deadRequestVersions: Int
    /// The size on disk of the index the claims read (`requests_queue_claimable_idx`), in bytes.
    package var claimIndexBytes: Int

    package init(
        holder: Holder?, heldAt: String?, ageTransactions: Int, since: Date?, readAt: Date, deadRequestVersions: Int, claimIndexBytes: Int
    ) {
        (self.holder, self.heldAt, self.ageTransactions, self.since, self.readAt) = (holder, heldAt, ageTransactions, since, readAt)
        (self.deadRequestVersions, self.claimIndexBytes) = (deadRequestVersions, claimIndexBytes)
    }

    /// How long a snapshot may be held before `detectq status` and the workers warn.
    package static let warningAfter: TimeInterval = 300
    /// Without the right to see when a session's transaction began, how many transactions old its snapshot may be
    /// before `detectq status` warns.
    package static let warningAfterTransactions = 1_000_000

    /// Seconds the holder has held its snapshot, when its start is known.
    package var heldSeconds: Double? { since.map { readAt.timeIntervalSince($0) } }

    /// Whether `detectq status` warns: held longer than `warningAfter`, or, its start unknown, more than
    /// `warningAfterTransactions` old.
    package var warrantsWarning: Bool {
        guard holder != nil else { return false }
        if let held = heldSeconds { return held >= Self.warningAfter }
        return ageTransactions >= Self.warningAfterTransactions
    }

    /// Reads it in one statement.
    package static func read(_ pool: PostgresConnectionPool) async throws -> VacuumHorizon {
        // Sessions of other databases hold back only the shared catalogs, and vacuum's own snapshot holds nothing
        // back (to a role that may not see another's backend_type, an autovacuum worker is a session without a
        // role); a walsender holds what its standby's feedback asks for.
        let rows = try await pool.query("""
            WITH holders AS (
                SELECT 'session' AS kind, a.pid::int8 AS pid, a.usename::text AS name, a.application_name AS detail, a.state AS state,
                       a.xact_start AS since, greatest(age(a.backend_xmin), age(a.backend_xid))::int8 AS age,
                       coalesce(a.backend_xmin, a.backend_xid)::text AS held_at
                FROM pg_stat_activity AS a
                WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.pid <> pg_backend_pid()
                  AND (a.datname = current_database() OR a.backend_type = 'walsender')
                  AND a.usename IS NOT NULL AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
                UNION ALL
                SELECT 'prepared', NULL, p.gid, p.owner::text, NULL, p.prepared, age(p.transaction)::int8, p.transaction::text
                FROM pg_prepared_xacts AS p WHERE p.database = current_database()
                UNION ALL
                SELECT 'slot', NULL, s.slot_name::text, NULL, NULL, NULL, age(s.xmin)::int8, s.xmin::text
                FROM pg_replication_slots AS s WHERE s.xmin IS NOT NULL
            )
            SELECT h.kind, h.pid, h.name, h.detail, h.state, h.since, h.age, h.held_at, clock_timestamp() AS read_at,
                   pg_stat_get_dead_tuples('detectq.requests'::regclass)::int8 AS dead,
                   pg_relation_size('detectq.requests_queue_claimable_idx'::regclass)::int8 AS claim_index_bytes
            FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT * FROM holders ORDER BY age DESC LIMIT 1) AS h ON true
            """)
        let row = rows[0]
        let holder: Holder?
        switch try row.decode("kind", as: String?.self) {
        case "session":
            holder = .session(
                pid: try row.decode("pid"), role: try row.decode("name"), application: try row.decode("detail"), state: try row.decode("state")
            )
        case "prepared": holder = .preparedTransaction(gid: try row.decode("name"), owner: try row.decode("detail"))
        case "slot": holder = .replicationSlot(name: try row.decode("name"))
        default: holder = nil
        }
        return VacuumHorizon(
            holder: holder, heldAt: try row.decode("held_at"), ageTransactions: try row.decode("age", as: Int?.self) ?? 0,
            since: try row.decode("since"),
            readAt: try row.decode("read_at"), deadRequestVersions: try row.decode("dead"), claimIndexBytes: try row.decode("claim_index_bytes")
        )
    }
}

/// How long the same holder has held back the horizon at the same transaction, as one process has watched it:
/// for a holder whose start this role may not see, the time since this process first saw it hold that snapshot
/// (a lower bound).
package actor HorizonWatch {
    private var first: (identity: String, at: Date)?
    private var warned = false

    package init() {}

    /// Seconds the horizon's holder has held it: from its start when known, else since this watch first saw it.
    package func heldSeconds(_ horizon: VacuumHorizon) -> Double {
        guard let holder = horizon.holder else {
            first = nil
            return 0
        }
        let identity = "\(holder.identity) at \(horizon.heldAt ?? "?")"
        if first?.identity != identity { first = (identity, horizon.readAt) }
        let observed = horizon.readAt.timeIntervalSince(first?.at ?? horizon.readAt)
        return max(horizon.heldSeconds ?? 0, observed)
    }

    /// Whether to log now: once when a holder passes `VacuumHorizon.warningAfter`, and once more when none does
    /// any longer. Nil when nothing changed.
    package func transition(_ horizon: VacuumHorizon) -> Bool? {
        let held = heldSeconds(horizon) >= VacuumHorizon.warningAfter
        guard held != warned else { return nil }
        warned = held
        return held
    }
}
