import Crypto
import Foundation
import TextEncodings

/// One numbered SQL file of the schema: its version (the file name's leading number), name, text and checksum.
package struct Migration: Sendable, Hashable {
    package let version: Int
    /// The file name, such as `0001_create_schema.sql`.
    package let name: String
    package let sql: String
    /// SHA-256 of the file's bytes, in hex: an applied migration whose file changed is caught by it.
    package let checksum: String

    /// The first line that makes a migration run outside a transaction (`CREATE INDEX CONCURRENTLY`, which
    /// holds no lock against writers while it builds): its statements then run one by one, each ending a line
    /// with `;`, with no dollar-quoted bodies.
    package static let noTransactionMarker = "-- detectq: no transaction"

    /// Whether the migration runs outside a transaction (`noTransactionMarker` is its first line).
    package var runsOutsideATransaction: Bool {
        sql.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first?
            .trimmingCharacters(in: .whitespaces) == Self.noTransactionMarker
    }

    /// The statements of a migration that runs outside a transaction, in order: each ends at a line that ends
    /// with `;`, comment lines dropped.
    package var statements: [String] {
        var statements: [String] = []
        var current: [Substring] = []
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("--") || (trimmed.isEmpty && current.isEmpty) { continue }
            current.append(line)
            if trimmed.hasSuffix(";") {
                statements.append(current.joined(separator: "\n"))
                current = []
            }
        }
        let rest = current.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        if !rest.isEmpty { statements.append(rest) }
        return statements
    }

    /// A migration from a file named `<number>_<words>.sql` and its bytes.
    package init(fileName: String, bytes: [UInt8]) {
        guard let version = Int(fileName.prefix(while: \.isNumber)), fileName.hasSuffix(".sql") else {
            preconditionFailure("a migration file is named <number>_<words>.sql, not \(fileName)")
        }
        self.version = version
        self.name = fileName
        self.sql = String(decoding: bytes, as: UTF8.self)
        self.checksum = Hex.encode(SHA256.hash(data: bytes))
    }
}

/// detectq's own migrations, embedded in the binary at build time from the package's `migrations/` folder, so
/// `detectq migrate` needs no files beside it. Adding a migration is a new file there and one line here
/// (a test checks that the two lists agree).
package enum DetectqMigrations {
    package static let all: [Migration] = [
        Migration(fileName: "0001_create_schema.sql", bytes: PackageResources._001_create_schema_sql),
        Migration(fileName: "0002_worker.sql", bytes: PackageResources._002_worker_sql),
        Migration(fileName: "0003_post_task_history.sql", bytes: PackageResources._003_post_task_history_sql),
        Migration(fileName: "0004_dashboard.sql", bytes: PackageResources._004_dashboard_sql),
        Migration(fileName: "0005_api_hard_cases.sql", bytes: PackageResources._005_api_hard_cases_sql),
        Migration(fileName: "0006_shared_pause.sql", bytes: PackageResources._006_shared_pause_sql),
        Migration(fileName: "0007_lost_answers.sql", bytes: PackageResources._007_lost_answers_sql),
        Migration(fileName: "0008_actor_from_application_name.sql", bytes: PackageResources._008_actor_from_application_name_sql),
        Migration(fileName: "0009_traceparent.sql", bytes: PackageResources._009_traceparent_sql),
        Migration(fileName: "0010_kept_counts.sql", bytes: PackageResources._010_kept_counts_sql),
        Migration(fileName: "0011_statement_history.sql", bytes: PackageResources._011_statement_history_sql),
        Migration(fileName: "0012_history_pairs_by_grouping.sql", bytes: PackageResources._012_history_pairs_by_grouping_sql),
        Migration(fileName: "0013_sustained_trouble.sql", bytes: PackageResources._013_sustained_trouble_sql),
        Migration(fileName: "0014_least_privilege.sql", bytes: PackageResources._014_least_privilege_sql),
        Migration(fileName: "0015_first_release_budget.sql", bytes: PackageResources._015_first_release_budget_sql),
        Migration(fileName: "0016_queues.sql", bytes: PackageResources._016_queues_sql),
        Migration(fileName: "0017_queue_indexes.sql", bytes: PackageResources._017_queue_indexes_sql),
        Migration(fileName: "0018_queue_claims.sql", bytes: PackageResources._018_queue_claims_sql),
        Migration(fileName: "0019_fair_claim_under_load.sql", bytes: PackageResources._019_fair_claim_under_load_sql),
        Migration(fileName: "0020_early_slot_now.sql", bytes: PackageResources._020_early_slot_now_sql),
        Migration(fileName: "0021_spend_each_detection_once.sql", bytes: PackageResources._021_spend_each_detection_once_sql),
        Migration(fileName: "0022_identical_media_index.sql", bytes: PackageResources._022_identical_media_index_sql),
        Migration(fileName: "0023_cheaper_checks.sql", bytes: PackageResources._023_cheaper_checks_sql),
        Migration(fileName: "0024_validate_cheaper_checks.sql", bytes: PackageResources._024_validate_cheaper_checks_sql),
        Migration(fileName: "0025_metadata_search_skips_empty.sql", bytes: PackageResources._025_metadata_search_skips_empty_sql),
        Migration(fileName: "0026_claims_start_at_the_floor.sql", bytes: PackageResources._026_claims_start_at_the_floor_sql),
        Migration(fileName: "0027_lookups_keep_off_the_claim_index.sql", bytes: PackageResources._027_lookups_keep_off_the_claim_index_sql),
    ]
}
