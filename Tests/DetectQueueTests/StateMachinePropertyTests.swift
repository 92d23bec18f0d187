import DetectQueue
import Foundation
import PropertyBased
import SchemaMigrations
import Testing

/// Random histories of events run through the state machine, as the worker and users would send them, with
/// the attempt count kept the way the database keeps it.
@Suite("The request state machine, as properties over random event sequences")
struct StateMachinePropertyTests {
    static let events = RequestEvent.everyKind
    static let history = Gen.int(in: 0...(events.count - 1)).map { events[$0] }.array(of: 0...60)
    static let postTaskHistory = Gen.int(in: 0...(PostTaskEvent.everyKind.count - 1)).map { PostTaskEvent.everyKind[$0] }.array(of: 0...40)

    /// The legal changes as the schema lists them (`detectq.request_state_transitions`, filled by migration
    /// 0001 and extended by later ones), read from the SQL, so the Swift state machine is checked against the
    /// table the trigger enforces and not against its own copy of it.
    static let schemaTransitions = transitions(inTable: "detectq.request_state_transitions")
    /// The same for post-tasks (`detectq.post_task_state_transitions`, migration 0003).
    static let schemaPostTaskTransitions = transitions(inTable: "detectq.post_task_state_transitions")

    static func transitions(inTable table: String) -> Set<[String]> {
        var transitions: Set<[String]> = []
        for migration in DetectqMigrations.all {
            var sql = Substring(migration.sql.replacing(/--[^\n]*/, with: ""))
            while let start = sql.range(of: "INSERT INTO \(table)"),
                  let end = sql[start.upperBound...].firstIndex(of: ";") {
                for pair in sql[start.upperBound..<end].matches(of: /\('(\w+)',\s*'(\w+)'\)/) {
                    transitions.insert([String(pair.output.1), String(pair.output.2)])
                }
                sql = sql[end...]
            }
        }
        return transitions
    }

    /// A request as the worker's UPDATEs leave it: its state and attempts, both as the production machine's
    /// transitions say.
    struct Model {
        var state = RequestState.queued
        var attempt = 0
        let maxAttempts: Int
        /// Every state it was in, oldest first.
        var path: [RequestState] = [.queued]

        /// Applies `event` as the store writes it: the machine's next state and attempt change.
        mutating func apply(_ event: RequestEvent) -> Bool {
            // The worker reports a lost answer only for an attempt within max_attempts (the claim after the last
            // one only searches, and never sends).
            if case .answerLost = event, attempt > maxAttempts { return false }
            guard let transition = try? RequestStateMachine.transition(from: state, on: event, attemptsLeft: attempt < maxAttempts) else {
                return false
            }
            attempt = transition.attempts.applied(to: attempt)
            state = transition.to
            if transition.changesState { path.append(state) }
            return true
        }
    }

    @Test func everyHistoryIsALegalPathThatNeverLeavesAnEnd() async {
        #expect(Self.schemaTransitions.count == 17, "the migration's table was read: \(Self.schemaTransitions)")
        #expect(Self.schemaPostTaskTransitions.count == 7, "the migration's table was read: \(Self.schemaPostTaskTransitions)")
        await propertyCheck(count: 3_000, input: Self.history, Gen.int(in: 1...6)) { events, maxAttempts in
            var model = Model(maxAttempts: maxAttempts)
            for event in events {
                let before = model.state
                let applied = model.apply(event)
                if applied && before != model.state {
                    #expect(Self.schemaTransitions.contains([before.rawValue, model.state.rawValue]), "\(before) → \(model.state) on \(event.name) is in the schema's table")
                }
                if before == .completed || before == .cancelled {
                    #expect(!applied, "\(before) is an end: \(event.name) must be refused")
                }
            }
        }
    }

    @Test func attemptsAreSpentNeverOverspentAndARetryNeedsOneLeft() async {
        await propertyCheck(count: 3_000, input: Self.history, Gen.int(in: 1...6)) { events, maxAttempts in
            var model = Model(maxAttempts: maxAttempts)
            for event in events {
                let before = model
                guard model.apply(event) else { continue }
                #expect(model.attempt <= maxAttempts + 1, "never more attempts than max_attempts, and one search after them")
                if model.state == .retrying, case .answerLost = event {
                    #expect(model.attempt <= maxAttempts, "a lost answer is looked for once after the last attempt")
                } else if model.state == .retrying {
                    #expect(model.attempt < maxAttempts, "retrying only with an attempt left")
                }
                switch event {
                case .failedRetryably, .leaseExpired:
                    #expect((model.state == .failed) == (before.attempt >= maxAttempts), "a retryable failure fails the request only on its last attempt")
                default:
                    break
                }
            }
        }
    }

    @Test func noHistoryLeavesARequestStuck() async {
        await propertyCheck(count: 3_000, input: Self.history, Gen.int(in: 1...6)) { events, maxAttempts in
            var model = Model(maxAttempts: maxAttempts)
            for event in events { _ = model.apply(event) }
            let ended: Set<RequestState> = [.completed, .failed, .cancelled]
            if !ended.contains(model.state) {
                var cancelled = model
                let cancellable = cancelled.apply(.cancelled)
                #expect(cancellable, "\(model.state) can always be cancelled")
                var finished = model
                let toEnd: [RequestEvent] = [.claimed, .accepted(remoteUUID: "u"), .completed]
                for event in toEnd { _ = finished.apply(event) }
                #expect(finished.state == .completed, "\(model.state) can still reach completed")
            }
        }
    }

    /// Random post-task histories through the production post-task machine: every change is in migration
    /// 0003's table, an end is never left, attempts are never overspent, and a run can always still end.
    @Test func postTaskHistoriesStayInTheTableAndEnd() async {
        #expect(Self.schemaPostTaskTransitions.count == 7)
        await propertyCheck(count: 3_000, input: Self.postTaskHistory, Gen.int(in: 1...6)) { events, maxAttempts in
            var state = PostTask.State.queued
            var attempt = 0
            for event in events {
                guard let transition = try? PostTaskStateMachine.transition(from: state, on: event, attemptsLeft: attempt < maxAttempts) else {
                    continue
                }
                #expect(state != .completed && state != .failed, "\(state) is an end: \(event.name) must be refused")
                if transition.to != state {
                    #expect(Self.schemaPostTaskTransitions.contains([state.rawValue, transition.to.rawValue]), "\(state) → \(transition.to)")
                }
                attempt = transition.attempts.applied(to: attempt)
                state = transition.to
                #expect(attempt >= 0 && attempt <= maxAttempts, "attempts stay within 0...max_attempts")
            }
            if state != .completed && state != .failed {
                var finishing = state
                for event in [PostTaskEvent.claimed, .succeeded] {
                    if let next = try? PostTaskStateMachine.transition(from: finishing, on: event, attemptsLeft: true) { finishing = next.to }
                }
                #expect(finishing == .completed, "\(state) can still complete")
            }
        }
    }
}
