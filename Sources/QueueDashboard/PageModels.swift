import DetectQueue
import Foundation

// What each template renders: plain values, formatted here, so the templates hold no logic. Every string is
// escaped by the template engine except the `svg` charts, which `SVGChart` escapes as it draws them.
// Templates read stored properties only (the engine reflects with `Mirror`), so flags are stored too.

/// The frame around every page: navigation, the CSRF token for its forms, and the read-only flag.
struct Chrome: Sendable {
    var title: String
    var onOverview = false
    var onRequests = false
    var onFailures = false
    var onQueues = false
    var csrf: String
    var readOnly: Bool
    var generatedAt = Formatting.time(Date())
    /// Whether the page reloads itself (with script) every few seconds.
    var refreshes = false
    var notice: String?
}

/// A labelled option of a filter's `<select>`.
struct Choice: Sendable {
    var value: String
    var label: String
    var selected: Bool
}

/// A count of rows in one state, and for requests a link to the list of them.
struct StateCount: Sendable {
    var state: String
    var count: String
    var link: String?
    var isZero: Bool
}

struct OverviewPage: Sendable {
    struct Backlog: Sendable {
        var processor: String
        var queued: String
        var running: String
        var retrying: String
        var failed: String
        var oldest: String
        var hasFailed: Bool
    }

    struct Worker: Sendable {
        var workerID: String
        var host: String
        var status: String
        var statusClass: String
        var heartbeat: String
        var started: String
        var concurrency: String
        var requestLeases: String
        var postTaskLeases: String
        var nextExpiry: String
    }

    var chrome: Chrome
    var states: [StateCount]
    var postTaskStates: [StateCount]
    var oldestClaimable: String
    var completedLastHour: String
    var fakesLastHour: String
    var throughputChart: String
    var fakesChart: String
    var backlogs: [Backlog]
    var workers: [Worker]
    var liveWorkers: String
    var hasBacklogs: Bool
    var hasWorkers: Bool
    /// The shared pauses in force, and which of the two actions the page offers.
    var pauses: [Pause]
    var hasPauses: Bool
    var canPause: Bool
    var canResume: Bool

    /// A shared pause as the page shows it.
    struct Pause: Sendable {
        var kind: String
        var reason: String
        var pausedBy: String
        var since: String
        var until: String
    }
}

struct RequestListPageModel: Sendable {
    struct Row: Sendable {
        var id: Int
        var state: String
        var media: String
        /// The whole media URL or path, shown on hover.
        var mediaTitle: String
        var mediaType: String
        var submitPath: String
        /// Nil until a verdict is stored.
        var verdict: String?
        var verdictClass: String
        var score: String
        var attempts: String
        var created: String
        var error: String?
        var metadata: String
        var queue: String
        var queueLink: String
        /// Empty, and `hasGroup` false, when the request has no group (a section of an empty string would show).
        var group: String
        var hasGroup: Bool
        var groupLink: String
    }

    var chrome: Chrome
    var states: [Choice]
    var verdicts: [Choice]
    var mediaTypes: [Choice]
    var submitPaths: [Choice]
    var queues: [Choice]
    var group: String
    var from: String
    var to: String
    var q: String
    var reason: String?
    var rows: [Row]
    var isEmpty: Bool
    var isFiltered: Bool
    var newerLink: String?
    var olderLink: String?
    var elapsed: String
}

struct QueuesPageModel: Sendable {
    struct Queue: Sendable {
        var name: String
        /// The settings in words ("none" for no limit).
        var weight: String
        var maxInFlight: String
        var groupMaxInFlight: String
        var rateLimit: String
        var dailyLimit: String
        /// The settings as the form's fields hold them (empty for no limit).
        var formMaxInFlight: String
        var formGroupMaxInFlight: String
        var formRateLimit: String
        var formDailyLimit: String
        var due: String
        var inFlight: String
        var billedToday: String
        var claimsLastHour: String
        var status: String
        var statusClass: String
        /// Why its due requests wait, one sentence each, or its pause when nothing is due (empty when neither).
        var holds: [String]
        var hasHolds: Bool
        var chart: String
        var listLink: String
        var canPause: Bool
        var canResume: Bool
        var canChange: Bool
    }

    var chrome: Chrome
    var queues: [Queue]
    var isEmpty: Bool
    var canCreate: Bool
}

struct FailuresPageModel: Sendable {
    struct Group: Sendable {
        var reason: String
        /// Nil when none of the group is in that state.
        var failed: String?
        var retrying: String?
        var lastSeen: String
        var listLink: String
        var canRetry: Bool
        var canCancel: Bool
    }

    var chrome: Chrome
    var groups: [Group]
    var isEmpty: Bool
}

struct LoginPageModel: Sendable {
    var next: String
    var error: String?
}

struct MessagePageModel: Sendable {
    var chrome: Chrome
    var heading: String
    var message: String
}

/// A node of the video's analysis tree, rendered as nested lists by a recursive partial. No field is
/// optional: Mustache looks a missing (nil) name up in the enclosing node, which would show a parent's score
/// as its child's.
struct TreeNode: Sendable {
    var kind: String
    var conclusion: String
    var hasConclusion: Bool
    var conclusionClass: String
    /// Score, certainty and time, those the node has, in words ("score 0.950 · at 1.50 s").
    var details: String
    var children: [TreeNode]
    var hasChildren: Bool
}

/// A labelled value in a definition list.
struct Field: Sendable {
    var name: String
    var value: String
}

struct RequestPageModel: Sendable {
    struct Event: Sendable {
        var at: String
        var from: String
        var to: String
        var worker: String
        var detail: String
    }

    struct PostTask: Sendable {
        var processor: String
        var isAlert: Bool
        var state: String
        var attempts: String
        var lastError: String?
        /// When a waiting task runs next; nil once it is running or done.
        var nextRun: String?
        var completed: String?
        var events: [Event]
    }

    struct Verdict: Sendable {
        var label: String
        var verdictClass: String
        var score: String
        var fields: [Field]
        var audioChart: String?
        var windows: String?
        var image: [Field]
        var reverseSearch: [Field]
        var video: [Field]
        var videoTree: [TreeNode]
        var sourceTracing: String?
        var hasImage: Bool
        var hasReverseSearch: Bool
        var hasVideo: Bool
        var hasVideoTree: Bool
    }

    struct Retention: Sendable {
        var fields: [Field]
    }

    struct Intelligence: Sendable {
        var status: String
        var fields: [Field]
        var text: String?
        var archived: String?
        var archiveJSON: String?
    }

    var chrome: Chrome
    var id: Int
    var state: String
    var verdictBadge: String?
    var verdictClass: String
    var canRetry: Bool
    var canCancel: Bool
    var submission: [Field]
    var metadata: String
    var errorMessage: String?
    var events: [Event]
    var verdict: Verdict?
    var intelligence: Intelligence?
    var retention: Retention?
    var alerts: [PostTask]
    var otherTasks: [PostTask]
    var hasPostTasks: Bool
    var rawResult: String?
    /// The request whose verdict this one took (identical media and options, never sent), linked.
    var reusedFrom: Int?
    /// The request in flight with identical media and options whose verdict this queued one waits for, linked.
    var waitingFor: Int?
}
