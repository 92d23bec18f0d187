@testable import DetectQueue
import Foundation
import Postgres
import Testing

/// Each transition of the production machines with its effects, without I/O: what the specification says
/// each change does, written out once here, and the SQL the stores derive from it.
@Suite("The state machines, transition by transition")
struct RequestStateMachineTests {
    static let now = Date(timeIntervalSince1970: 1_000)

    func transition(_ state: RequestState, _ event: RequestEvent, attemptsLeft: Bool = true) throws -> RequestTransition {
        try RequestStateMachine.transition(from: state, on: event, attemptsLeft: attemptsLeft)
    }

    @Test(arguments: [RequestState.queued, .retrying])
    func aClaimTakesTheLeaseSpendsAnAttemptAndOpensTheAnswerWindow(from state: RequestState) throws {
        let claim = try transition(state, .claimed)
        #expect(claim.to == .submitting && claim.lease == .take && claim.attempts == .spendOne)
        #expect(claim.changes.clearsErrorMessage && claim.changes.stampsSubmitStarted)
        #expect(claim.changes.answerOwed == .fromNowUnlessOwed)
        #expect(!claim.createsPostTasks)
    }

    @Test func aSubmissionMarkKeepsStateAndLeaseAndStampsThePath() throws {
        let mark = try transition(.submitting, .sending(path: .multipart, callbackSecretHash: "abc"))
        #expect(!mark.changesState && mark.lease == .keep && mark.attempts == .unchanged)
        #expect(mark.changes.stampsSubmitStarted && mark.changes.submitPath == .multipart && mark.changes.callbackSecretHash == "abc")
        #expect(throws: RequestStateMachine.IllegalEvent.self) { try transition(.awaitingResult, .sending(path: .url, callbackSecretHash: nil)) }
    }

    @Test func anAcceptanceStoresTheUUIDAndEndsTheLeaseAndTheOwedAnswer() throws {
        let accepted = try transition(.submitting, .accepted(remoteUUID: "u-1"))
        #expect(accepted.to == .awaitingResult && accepted.lease == .release && accepted.changes.remoteUUID == "u-1")
        var parameters: [any PostgresEncodable] = []
        let sql = accepted.assignments(parameters: &parameters).joined(separator: ", ")
        #expect(sql.contains("unanswered_since = NULL") && sql.contains("accepted_at = coalesce(accepted_at, now())"), "\(sql)")
        #expect(throws: RequestStateMachine.IllegalEvent.self) { try transition(.retrying, .accepted(remoteUUID: "u")) }
    }

    @Test(arguments: [RequestState.submitting, .retrying])
    func anAdoptionNeedsNoUUIDYetAndPollsAtOnce(from state: RequestState) throws {
        let adopted = try transition(state, .adopted(remoteUUID: "u-2", via: "list"))
        #expect(adopted.to == .awaitingResult && adopted.requiresNoRemoteUUID && adopted.changes.remoteUUID == "u-2")
        #expect(adopted.changes.runAt != nil)
        #expect(adopted.update(id: 7, workerID: nil).sql.hasSuffix("AND r.remote_uuid IS NULL"))
    }

    @Test(arguments: [RequestState.submitting, .awaitingResult])
    func aCompletionCreatesThePostTasks(from state: RequestState) throws {
        let completed = try transition(state, .completed)
        #expect(completed.to == .completed && completed.lease == .release && completed.createsPostTasks)
        #expect(completed.changes.stampsCompletedAt && completed.changes.answerOwed == .answered)
    }

    @Test func aRetryableFailureRetriesOnlyWithAnAttemptLeft() throws {
        let at = Self.now
        let retried = try transition(.submitting, .failedRetryably(reason: "HTTP 503", retryAt: at))
        #expect(retried.to == .retrying && retried.changes.runAt == at && retried.changes.errorMessage == "HTTP 503")
        let spent = try transition(.submitting, .failedRetryably(reason: "HTTP 503", retryAt: at), attemptsLeft: false)
        #expect(spent.to == .failed && spent.changes.runAt == nil && spent.changes.errorMessage == "HTTP 503")
        #expect(try transition(.submitting, .leaseExpired).to == .retrying)
        #expect(try transition(.submitting, .leaseExpired, attemptsLeft: false).to == .failed)
        let lost = RequestEvent.answerLost(reason: "network error", retryAt: Date())
        #expect(try transition(.submitting, lost, attemptsLeft: false).to == .retrying, "a lost answer is looked for before the request fails")
        #expect(try RequestStateMachine.leaseLost().onLastAttemptOwingAnswer.to == .retrying)
        #expect(throws: RequestStateMachine.IllegalEvent.self) { try transition(.awaitingResult, .failedRetryably(reason: "x", retryAt: at)) }
    }

    @Test(arguments: [RequestState.submitting, .awaitingResult])
    func aPermanentFailureKeepsItsReason(from state: RequestState) throws {
        let failed = try transition(state, .failedPermanently(reason: "HTTP 400"), attemptsLeft: false)
        #expect(failed.to == .failed && failed.lease == .release && failed.changes.errorMessage == "HTTP 400")
    }

    @Test func aReleaseGivesTheAttemptBackAndRestoresTheOwedAnswer() throws {
        let released = try transition(.submitting, .released(answerOwedSince: Self.now))
        #expect(released.to == .queued && released.attempts == .giveBackOne && released.changes.clearsSubmitStarted)
        #expect(released.changes.answerOwed == .since(Self.now))
        #expect(try transition(.submitting, .released(answerOwedSince: nil)).changes.answerOwed == .since(nil))
    }

    @Test func aRetryByAUserStartsOver() throws {
        let retried = try transition(.failed, .retriedByUser, attemptsLeft: false)
        #expect(retried.to == .queued && retried.attempts == .reset)
        #expect(retried.changes.clearsErrorMessage && retried.changes.clearsCompletedAt && retried.changes.runAt != nil)
    }

    @Test func cancellationEndsEveryUnfinishedStateAndNoEnd() throws {
        for state in RequestState.allCases {
            let cancelled = try? transition(state, .cancelled)
            #expect((cancelled?.to == .cancelled) == [.queued, .submitting, .awaitingResult, .retrying].contains(state), "\(state)")
        }
    }

    @Test func theEndsTakeNoEventButARetryOfAFailure() {
        for event in RequestEvent.everyKind {
            for state in [RequestState.completed, .cancelled] {
                #expect(throws: RequestStateMachine.IllegalEvent.self) { try transition(state, event) }
            }
            if event != .retriedByUser {
                #expect(throws: RequestStateMachine.IllegalEvent.self) { try transition(.failed, event) }
            }
        }
    }

    @Test func theMachineMakesExactlyTheChangesTheMigrationsAllow() {
        let made = Set(RequestStateMachine.stateChanges.map { [$0.from.rawValue, $0.to.rawValue] })
        #expect(made == StateMachinePropertyTests.schemaTransitions)
    }

    @Test func aBatchIsRenderedFromItsTransitionsAndRefusesMixedShapes() throws {
        let request = DetectionRequest(id: 7, media: .url("https://cdn.example.com/a.wav"))
        var result = RequestChanges()
        result.remoteUUID = "u-7"
        result.label = "fake"
        let completion = try RequestStateMachine.transition(of: request, on: .completed, changes: result)
        let batch = RequestBatch(rows: [RequestBatch.Row(id: 7, expected: .submitting, workerID: "w", transition: completion)], extras: [])
        let update = try batch.update(returning: "r.id")
        #expect(update.contains("state = 'completed'") && update.contains("completed_at = now()") && update.contains("unanswered_since = NULL"))
        #expect(update.contains("label = coalesce(v.label, r.label)") && update.contains("remote_uuid = coalesce(v.remote_uuid, r.remote_uuid)"))
        #expect(!update.contains("run_at"), "a column no row gives is not written")
        var parameters: [any PostgresEncodable] = []
        #expect(try batch.values(parameters: &parameters).contains("label text") && parameters.count == 1)
        let mark = try RequestStateMachine.transition(of: request, on: .sending(path: .url, callbackSecretHash: nil))
        let mixed = RequestBatch(rows: batch.rows + [RequestBatch.Row(id: 8, expected: .submitting, workerID: "w", transition: mark)], extras: [])
        #expect(throws: RequestBatch.MixedShapes.self) { try mixed.update(returning: "r.id") }
    }

    @Test func theClaimAndTheRescueAreWrittenFromTheMachine() throws {
        let table = try LeaseTable.requests()
        // The claim function takes these states (SchemaTests checks it against the same list).
        #expect(Set(RequestStateMachine.claims.map(\.from)) == [.queued, .retrying] && table.runningState == "submitting")
        #expect(table.claimAssignments.contains("unanswered_since = coalesce(unanswered_since, now())"))
        #expect(table.claimAssignments.contains("submit_started_at = now()") && table.claimAssignments.contains("error_message = NULL"))
        #expect(table.retryingState == "retrying" && table.failedState == "failed")
    }
}

@Suite("The post-task state machine, transition by transition")
struct PostTaskStateMachineTests {
    func transition(_ state: PostTask.State, _ event: PostTaskEvent, attemptsLeft: Bool = true) throws -> PostTaskTransition {
        try PostTaskStateMachine.transition(from: state, on: event, attemptsLeft: attemptsLeft)
    }

    @Test func aRunEndsInOneOfThreeWays() throws {
        let at = Date(timeIntervalSince1970: 5)
        let done = try transition(.running, .succeeded)
        #expect(done.to == .completed && done.stampsCompletedAt && done.clearsLastError && done.lease == .release)
        let retry = try transition(.running, .failed(reason: "HTTP 500", retryAt: at))
        #expect(retry.to == .retrying && retry.runAt == at && retry.lastError == "HTTP 500")
        #expect(try transition(.running, .failed(reason: "HTTP 500", retryAt: at), attemptsLeft: false).to == .failed)
        #expect(try transition(.running, .failed(reason: "bad config", retryAt: nil)).to == .failed, "no retry time: failed for good")
        let later = try transition(.running, .rescheduled(at: at))
        #expect(later.to == .queued && later.attempts == .giveBackOne && later.runAt == at)
        #expect(try transition(.running, .released).attempts == .giveBackOne)
    }

    @Test func claimsAndLostLeases() throws {
        for state in [PostTask.State.queued, .retrying] {
            let claim = try transition(state, .claimed)
            #expect(claim.to == .running && claim.lease == .take && claim.attempts == .spendOne)
        }
        #expect(try transition(.running, .leaseExpired).to == .retrying)
        #expect(try transition(.running, .leaseExpired, attemptsLeft: false).to == .failed)
        for event in PostTaskEvent.everyKind {
            #expect(throws: PostTaskStateMachine.IllegalEvent.self) { try transition(.completed, event) }
        }
        #expect(try LeaseTable.postTasks().runningState == "running" && LeaseTable.postTasks().claimAssignments.isEmpty)
    }

    /// Migration 0003's table allows one more change, `failed → queued`: an operator's retry by hand in SQL.
    @Test func theMachineMakesTheChangesOfTheMigrationsTableButTheOperatorsRetry() {
        let made = Set(PostTaskStateMachine.stateChanges.map { [$0.from.rawValue, $0.to.rawValue] })
        #expect(made.union([["failed", "queued"]]) == StateMachinePropertyTests.schemaPostTaskTransitions)
    }
}
